#!/bin/sh
# Generalize a guest right before it powers off, so every clone is a distinct machine and no build
# credential survives. Runs as root (baker runs it through `sudo -n`) and is the shutdown command
# itself: its last act is removing the build user we are logged in as, then sync + poweroff.
#
# Controlled by environment variables (1 = do it, 0 = skip), matching the template's `generalize:`:
#   BAKER_GEN_CLOUD_INIT_CLEAN  cloud-init clean --logs --seed, and drop cloud-init's generated network config
#   BAKER_GEN_MACHINE_ID        empty /etc/machine-id (a fresh ID is generated at next boot)
#   BAKER_GEN_SSH_HOST_KEYS     delete /etc/ssh/ssh_host_* (cloud-init regenerates them per instance)
#   BAKER_GEN_LOGS              truncate logs, vacuum the journal, remove shell histories and temp files
#   BAKER_GEN_FSTRIM            fstrim -av, so the exported image is small
#   BAKER_GEN_REMOVE_USER       remove the build user, its home, authorized_keys and sudoers rule
#   BAKER_GEN_USER              the build user's name
#   BAKER_GEN_MIN_APT           apt-get clean and drop /var/lib/apt/lists (a clone runs apt-get update first)
#   BAKER_GEN_MIN_DOCS          remove /usr/share/doc (copyright files stay), info, lintian overrides
#   BAKER_GEN_MIN_MAN           remove man pages
#   BAKER_GEN_MIN_LOCALES       space-separated message catalogs to keep in /usr/share/locale; empty: all
#   BAKER_GEN_POWEROFF          the command that powers off (default: poweroff); empty: don't power off
#
# Best-effort steps warn and go on; the credential steps are mandatory: if they fail we exit non-zero
# WITHOUT powering off, so the build fails instead of shipping an image with a backdoor.
set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH LC_ALL=C
cd /  # the build user's home (our cwd) is about to be deleted

: "${BAKER_GEN_CLOUD_INIT_CLEAN:=1}" "${BAKER_GEN_MACHINE_ID:=1}" "${BAKER_GEN_SSH_HOST_KEYS:=1}"
: "${BAKER_GEN_LOGS:=1}" "${BAKER_GEN_FSTRIM:=1}" "${BAKER_GEN_REMOVE_USER:=1}"
: "${BAKER_GEN_USER:=}" "${BAKER_GEN_POWEROFF=poweroff}"
: "${BAKER_GEN_MIN_APT:=0}" "${BAKER_GEN_MIN_DOCS:=0}" "${BAKER_GEN_MIN_MAN:=0}" "${BAKER_GEN_MIN_LOCALES:=}"

say() { echo "generalize: $*"; }
warn() { echo "generalize: WARNING: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
  echo "generalize: must run as root (through sudo)" >&2
  exit 1
fi

cloud_init_clean() {
  if command -v cloud-init >/dev/null 2>&1; then
    # --logs: /var/log/cloud-init*.log; --seed: /var/lib/cloud/seed. (Not --machine-id: it deletes
    # the file, which systemd treats as "first boot" - see machine_id below.)
    cloud-init clean --logs --seed || warn "cloud-init clean failed"
    say "cloud-init state cleaned: it runs again as a new instance at next boot"
  else
    say "cloud-init not installed; nothing to clean"
  fi
  # network config cloud-init rendered for THIS instance (may pin the build VM's MAC address);
  # cloud-init renders a fresh one for each new instance
  rm -f /etc/network/interfaces.d/50-cloud-init /etc/network/interfaces.d/50-cloud-init.cfg \
        /etc/netplan/50-cloud-init.yaml /etc/systemd/network/10-cloud-init-*.network \
        /etc/NetworkManager/system-connections/cloud-init-*.nmconnection \
        /etc/sysconfig/network-scripts/ifcfg-eth0 2>/dev/null || true
  rm -f /etc/udev/rules.d/70-persistent-net.rules
}

machine_id() {
  # Empty, not "uninitialized" and not deleted: systemd 252 (Debian 12) generates a new ID at boot
  # either way, but "uninitialized"/missing also means ConditionFirstBoot=yes, which makes PID 1 run
  # `preset-all` and may re-enable or disable units the provisioners configured. Empty = new ID only.
  if [ -e /etc/machine-id ]; then
    : > /etc/machine-id
    say "/etc/machine-id emptied"
  fi
  # D-Bus' copy: a symlink to /etc/machine-id on Debian 12; a real file elsewhere would keep the old ID
  if [ -f /var/lib/dbus/machine-id ] && [ ! -L /var/lib/dbus/machine-id ]; then
    rm -f /var/lib/dbus/machine-id
  fi
  # per-machine secrets that clones must not share
  rm -f /var/lib/systemd/random-seed /var/lib/systemd/credential.secret
}

ssh_host_keys() {
  rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub /etc/ssh/ssh_host_*_key-cert.pub
  say "SSH host keys removed"
  # cloud-init's cc_ssh (per instance, ssh_deletekeys default true) generates new keys before sshd
  # starts. If cloud-init does not run on a clone, Debian's ssh.service would fail (`sshd -t`: no host
  # keys), so a drop-in generates missing keys first - only when there are none at all.
  if [ -f /lib/systemd/system/ssh.service ] || [ -f /usr/lib/systemd/system/ssh.service ]; then
    mkdir -p /etc/systemd/system/ssh.service.d
    cat > /etc/systemd/system/ssh.service.d/10-baker-hostkeys.conf <<'UNIT'
# Installed by baker's generalize: regenerate SSH host keys if none exist (cloud-init normally does it).
[Service]
ExecStartPre=
ExecStartPre=/bin/sh -c 'ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || ssh-keygen -A'
ExecStartPre=/usr/sbin/sshd -t
UNIT
  fi
}

clean_logs() {
  if command -v journalctl >/dev/null 2>&1; then
    journalctl --rotate >/dev/null 2>&1 || true
    journalctl --vacuum-time=1s >/dev/null 2>&1 || true
  fi
  # rotated logs go, live ones are truncated (daemons keep them open; deleting would lose the inode)
  find /var/log -type f \( -name '*.gz' -o -name '*.[0-9]' -o -name '*.old' -o -name '*.xz' \) \
    -delete 2>/dev/null || true
  find /var/log -type f ! -path '/var/log/journal/*' -exec sh -c ': > "$1"' _ {} \; 2>/dev/null || true
  rm -f /root/.bash_history /root/.lesshst /root/.viminfo /root/.wget-hsts
  for h in /home/*; do
    [ -d "$h" ] && rm -f "$h/.bash_history" "$h/.lesshst" "$h/.viminfo" "$h/.wget-hsts"
  done
  find /tmp /var/tmp -mindepth 1 -maxdepth 1 ! -name 'systemd-private-*' -exec rm -rf {} + \
    2>/dev/null || true
  say "logs, shell histories and temp files cleared"
}

used_kib() { df -Pk / 2>/dev/null | awk 'NR == 2 { print $3 }'; }

minimize() {
  before=$(used_kib)
  if [ "$BAKER_GEN_MIN_APT" = 1 ]; then
    # the lists are stale by the time a clone boots anyway; pkgcache.bin and the .debs go with clean
    if command -v apt-get >/dev/null 2>&1; then
      apt-get clean || warn "apt-get clean failed"
      find /var/lib/apt/lists -mindepth 1 -maxdepth 1 ! -name lock ! -name partial -exec rm -rf {} + \
        2>/dev/null || true
    fi
    rm -f /var/cache/debconf/*-old /var/lib/dpkg/*-old
  fi
  excludes=""
  if [ "$BAKER_GEN_MIN_DOCS" = 1 ]; then
    find /usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete 2>/dev/null || true
    find /usr/share/doc -mindepth 1 -type d -empty -delete 2>/dev/null || true
    rm -rf /usr/share/info/* /usr/share/lintian/* /usr/share/linda/*
    excludes="$excludes
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/info/*
path-exclude=/usr/share/lintian/*"
  fi
  if [ "$BAKER_GEN_MIN_MAN" = 1 ]; then
    rm -rf /usr/share/man/* /var/cache/man/*
    excludes="$excludes
path-exclude=/usr/share/man/*"
  fi
  if [ -n "$BAKER_GEN_MIN_LOCALES" ]; then
    for d in /usr/share/locale/*/; do
      [ -d "$d" ] || continue
      l=$(basename "$d")
      keep=0
      for k in $BAKER_GEN_MIN_LOCALES; do
        # "en" keeps en, en_GB, en@quot; "en_GB" keeps en_GB and en_GB@...
        case $l in "$k"|"$k"_*|"$k"@*) keep=1 ;; esac
      done
      [ "$keep" = 1 ] || rm -rf "$d"
    done
    excludes="$excludes
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias"
    for k in $BAKER_GEN_MIN_LOCALES; do
      excludes="$excludes
path-include=/usr/share/locale/$k/*
path-include=/usr/share/locale/${k}_*/*
path-include=/usr/share/locale/$k@*/*"
    done
  fi
  if [ -n "$excludes" ] && [ -d /etc/dpkg/dpkg.cfg.d ]; then
    printf '# Written by baker generalize (minimize): packages installed later stay lean too.\n# Delete this file and reinstall packages to get the removed files back.%s\n' "$excludes" \
      > /etc/dpkg/dpkg.cfg.d/90-baker-minimize
  fi
  after=$(used_kib)
  if [ -n "$before" ] && [ -n "$after" ]; then
    say "minimize freed $(( (before - after) / 1024 )) MiB"
  fi
}

do_fstrim() {
  if command -v fstrim >/dev/null 2>&1; then
    fstrim -av || warn "fstrim failed (the disk may not support discard)"
  fi
}

remove_user() {
  u=$BAKER_GEN_USER
  if [ -z "$u" ] || [ "$u" = root ]; then
    say "no build user to remove (${u:-unset})"
    return 0
  fi
  home=$(getent passwd "$u" | cut -d: -f6)
  ok=0
  # cloud-init's rule for the build user (it may list other seeded users: only drop our lines)
  f=/etc/sudoers.d/90-cloud-init-users
  if [ -f "$f" ]; then
    if grep -v -E "^(# User rules for )?${u}( |$)" "$f" | grep -q -v -E '^[[:space:]]*(#|$)'; then
      grep -v -E "^(# User rules for )?${u}( |$)" "$f" > "$f.new" && chmod 0440 "$f.new" && mv "$f.new" "$f" || ok=1
    else
      rm -f "$f" || ok=1
    fi
  fi
  # disable_root copies the build key into root's authorized_keys behind a "login as <user>" message
  ak=/root/.ssh/authorized_keys
  pat="Please login as the user \\\"$u\\\""  # the literal text is: ... the user \"baker\" ...
  if [ -f "$ak" ] && grep -q -F "$pat" "$ak"; then
    grep -v -F "$pat" "$ak" > "$ak.new" && mv "$ak.new" "$ak" || ok=1
    [ -s "$ak" ] || rm -f "$ak"
  fi
  if getent passwd "$u" >/dev/null; then
    # -f: we are logged in as this user right now; the session dies with the poweroff that follows
    userdel -f -r "$u" 2>&1 | grep -v -e 'mail spool' -e 'currently used by process' || true
    if getent passwd "$u" >/dev/null; then
      warn "userdel $u failed"
      ok=1
    fi
  fi
  [ -n "$home" ] && [ "$home" != / ] && [ -d "$home" ] && rm -rf "$home"
  rm -f "/var/lib/AccountsService/users/$u" "/var/spool/mail/$u" "/var/mail/$u"
  for f in /etc/sudoers.d/*; do
    [ -f "$f" ] && grep -q -E "^${u}[[:space:]]" "$f" && { warn "sudoers rule for $u left in $f"; ok=1; }
  done
  if [ "$ok" = 0 ]; then say "build user $u, its home, keys and sudo rule removed"; fi
  return "$ok"
}

# cloud-init clean is a Python start (seconds under emulation) touching only its own files: run it
# beside the rest and wait for it before trimming
ci_pid=
if [ "$BAKER_GEN_CLOUD_INIT_CLEAN" = 1 ]; then
  cloud_init_clean &
  ci_pid=$!
fi
[ "$BAKER_GEN_SSH_HOST_KEYS" = 1 ] && ssh_host_keys
[ "$BAKER_GEN_LOGS" = 1 ] && clean_logs
[ "$BAKER_GEN_MACHINE_ID" = 1 ] && machine_id
if [ "$BAKER_GEN_REMOVE_USER" = 1 ]; then
  if ! remove_user; then
    echo "generalize: could not remove every trace of the build user; NOT powering off" >&2
    exit 3
  fi
fi
minimize
[ -n "$ci_pid" ] && wait "$ci_pid"
# last: after the deletions above, so the freed blocks are trimmed too
[ "$BAKER_GEN_FSTRIM" = 1 ] && do_fstrim
sync
say "done"
if [ -n "$BAKER_GEN_POWEROFF" ]; then
  say "powering off: $BAKER_GEN_POWEROFF"
  sh -c "$BAKER_GEN_POWEROFF"
fi
exit 0
