#!/bin/sh
# Noninteractive full-upgrade for Debian/Ubuntu guests. Keeps changed config files (confdef/confold),
# never prompts, and waits out apt/dpkg locks held by apt-daily or unattended-upgrades at first boot.
#
#   BAKER_APT_LOCK_TIMEOUT   seconds to wait for the dpkg lock (default 600)
#   BAKER_APT_RETRIES        attempts per apt step (default 5; network hiccups and lock races)
#   BAKER_APT_AUTOREMOVE     1 (default): autoremove --purge afterwards
set -eu
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true NEEDRESTART_MODE=a
lock_timeout=${BAKER_APT_LOCK_TIMEOUT:-600}
retries=${BAKER_APT_RETRIES:-5}
autoremove=${BAKER_APT_AUTOREMOVE:-1}

[ "$(id -u)" = 0 ] || { echo "apt-upgrade: run as root (sudo: true)" >&2; exit 1; }

# apt >= 1.9.11 (Debian 11+) waits for the lock itself with DPkg::Lock::Timeout
APT="apt-get -y -q -o DPkg::Lock::Timeout=$lock_timeout -o Dpkg::Options::=--force-confdef \
-o Dpkg::Options::=--force-confold -o APT::Get::Always-Include-Phased-Updates=true"

retry() {
  n=1
  while :; do
    # shellcheck disable=SC2086 # $APT is a word list on purpose
    if $APT "$@"; then return 0; fi
    [ "$n" -ge "$retries" ] && { echo "apt-upgrade: apt-get $* failed $n times" >&2; return 1; }
    echo "apt-upgrade: apt-get $* failed (attempt $n of $retries), retrying in $((n * 10))s" >&2
    sleep $((n * 10))
    n=$((n + 1))
  done
}

# an interrupted dpkg run (e.g. a killed unattended-upgrade) blocks everything until configured
dpkg --configure -a --force-confdef --force-confold || true
retry update
retry full-upgrade
[ "$autoremove" = 1 ] && retry autoremove --purge
retry clean
if [ -f /var/run/reboot-required ]; then
  echo "apt-upgrade: a reboot is required (new kernel or libc); add a provisioner with" \
       "'reboot' and expect_disconnect: true if later steps need it"
fi
echo "apt-upgrade: done"
