#!/bin/sh
# baker's built-in image policy, run as root in the guest right before generalize + poweroff.
# Prints one record per line: CHECK<TAB>name<TAB>status<TAB>detail, ITEM<TAB>name<TAB>text.
# status: pass | fail | warn | info | skip. Sensitive values to look for arrive on stdin, one per line.
# Environment: BAKER_POLICY_USER (build user), BAKER_POLICY_KEY (its public key, base64 part),
#   BAKER_POLICY_GEN_USER=1 if generalize removes the build user, BAKER_POLICY_GEN_LOGS=1 if it
#   clears logs and temp files, BAKER_POLICY_SECURITY=1 to count pending security updates,
#   BAKER_POLICY_MAX_SECURITY (empty: report only), BAKER_POLICY_PORTS (allowed ports; empty: report).
set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH LC_ALL=C
tab=$(printf '\t')
check() { printf 'CHECK\t%s\t%s\t%s\n' "$1" "$2" "$3"; }
item() { printf 'ITEM\t%s\t%s\n' "$1" "$2"; }
u=${BAKER_POLICY_USER:-}
work=$(mktemp -d /run/baker-policy.XXXXXX 2>/dev/null || mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/secrets"

# -- password_ssh_login: sshd's effective configuration, not the text of sshd_config
if command -v sshd >/dev/null 2>&1 && sshd -T -C user=nobody,host=localhost,addr=127.0.0.1 > "$work/sshd" 2>/dev/null; then
  pa=$(awk '$1=="passwordauthentication"{print $2}' "$work/sshd")
  kbd=$(awk '$1=="kbdinteractiveauthentication"{print $2}' "$work/sshd")
  pam=$(awk '$1=="usepam"{print $2}' "$work/sshd")
  empty=$(awk '$1=="permitemptypasswords"{print $2}' "$work/sshd")
  bad=""
  [ "$pa" = yes ] && bad="$bad PasswordAuthentication=yes"
  [ "$kbd" = yes ] && [ "$pam" = yes ] && bad="$bad KbdInteractiveAuthentication=yes(PAM)"
  [ "$empty" = yes ] && bad="$bad PermitEmptyPasswords=yes"
  if [ -n "$bad" ]; then check password_ssh_login fail "sshd allows password login:$bad"
  else check password_ssh_login pass "sshd: PasswordAuthentication=$pa KbdInteractiveAuthentication=$kbd"; fi
else
  check password_ssh_login pass "no sshd (or its configuration does not load)"
fi

# -- empty_passwords: an empty hash field means login without any password
n=0
for name in $(awk -F: '$2=="" {print $1}' /etc/shadow 2>/dev/null); do
  item empty_passwords "$name"; n=$((n+1))
done
if [ "$n" -gt 0 ]; then check empty_passwords fail "$n accounts with an empty password hash"
else check empty_passwords pass "no account has an empty password hash"; fi

# -- build_user: what generalize will leave. It removes the user, its home (and authorized_keys),
# cloud-init's sudo rule and the disable_root line in root's authorized_keys; anything else stays.
left=0
if [ -n "$u" ]; then
  uhome=$(getent passwd "$u" | cut -d: -f6)
  if [ "${BAKER_POLICY_GEN_USER:-0}" != 1 ] && getent passwd "$u" >/dev/null; then
    item build_user "user $u still exists (generalize.remove_build_user is off)"; left=$((left+1))
  fi
  if [ -n "${BAKER_POLICY_KEY:-}" ]; then
    for f in $(getent passwd | cut -d: -f6 | sort -u | sed 's,$,/.ssh/authorized_keys,') \
             $(getent passwd | cut -d: -f6 | sort -u | sed 's,$,/.ssh/authorized_keys2,') /etc/ssh/authorized_keys*; do
      [ -f "$f" ] || continue
      if [ "${BAKER_POLICY_GEN_USER:-0}" = 1 ]; then
        [ -n "$uhome" ] && [ "$f" = "$uhome/.ssh/authorized_keys" ] && continue
        hits=$(grep -F "$BAKER_POLICY_KEY" "$f" | grep -v -c -F "Please login as the user \\\"$u\\\"")
      else
        hits=$(grep -c -F "$BAKER_POLICY_KEY" "$f")
      fi
      if [ "${hits:-0}" -gt 0 ]; then item build_user "build key in $f"; left=$((left+1)); fi
    done
  fi
  for f in /etc/sudoers /etc/sudoers.d/*; do
    [ -f "$f" ] || continue
    [ "${BAKER_POLICY_GEN_USER:-0}" = 1 ] && [ "$f" = /etc/sudoers.d/90-cloud-init-users ] && continue
    if grep -q -E "^${u}[[:space:]]" "$f"; then item build_user "sudo rule for $u in $f"; left=$((left+1)); fi
  done
fi
if [ "$left" -gt 0 ]; then check build_user fail "$left traces of build user ${u} survive generalize"
elif [ "${BAKER_POLICY_GEN_USER:-0}" = 1 ]; then check build_user pass "user $u, its key and sudo rule are removed by generalize; no copies elsewhere"
else check build_user pass "no build user or key found"; fi

# -- leftover_secrets: sensitive variable values in files that stay in the image
if [ -s "$work/secrets" ]; then
  dirs="/etc /root /home /opt /srv /usr/local /var/www /var/lib /var/spool /var/backups /var/mail"
  [ "${BAKER_POLICY_GEN_LOGS:-0}" = 1 ] || dirs="$dirs /var/log /tmp /var/tmp"
  excl=""
  [ "${BAKER_POLICY_GEN_USER:-0}" = 1 ] && [ -n "$u" ] && excl="$(getent passwd "$u" | cut -d: -f6)"
  n=0
  # shellcheck disable=SC2086
  for f in $(grep -rlsIF -f "$work/secrets" --exclude-dir=apt --exclude-dir=dpkg $dirs 2>/dev/null); do
    case "$f" in "$excl"/*) [ -n "$excl" ] && continue ;; esac
    item leftover_secrets "$f"; n=$((n+1))
  done
  if [ "$n" -gt 0 ]; then check leftover_secrets fail "a sensitive variable's value is in $n files"
  else check leftover_secrets pass "no sensitive value found in files that stay in the image"; fi
else
  check leftover_secrets pass "the template has no sensitive values"
fi

# -- security_updates: pending upgrades from the distribution's security archive
if [ "${BAKER_POLICY_SECURITY:-1}" != 1 ]; then
  check security_updates skip "disabled (policy.security_updates: false)"
elif command -v apt-get >/dev/null 2>&1; then
  if timeout 300 apt-get update -qq >"$work/apt.log" 2>&1; then
    apt-get -s -o Debug::NoLocking=1 upgrade 2>/dev/null | awk '$1=="Inst" && tolower($0) ~ /security/ {print $2, $3, $4}' \
      | tr -d '[]()' > "$work/sec"
    n=$(wc -l < "$work/sec" | tr -d ' ')
    while IFS= read -r line; do item security_updates "$line"; done < "$work/sec"
    max=${BAKER_POLICY_MAX_SECURITY:-}
    if [ -n "$max" ] && [ "$n" -gt "$max" ]; then check security_updates fail "$n pending security updates (allowed: $max)"
    elif [ "$n" -gt 0 ]; then check security_updates warn "$n pending security updates"
    else check security_updates pass "no pending security updates"; fi
  else
    check security_updates warn "apt-get update failed: $(tail -n 1 "$work/apt.log")"
  fi
elif command -v dnf >/dev/null 2>&1; then
  n=$(dnf -q updateinfo list --security 2>/dev/null | wc -l | tr -d ' ')
  if [ "$n" -gt 0 ]; then check security_updates warn "$n pending security updates"; else check security_updates pass "no pending security updates"; fi
else
  check security_updates skip "no apt-get or dnf"
fi

# -- listening_services: what answers on the network (loopback-only listeners are not exposed)
bad=0
if command -v ss >/dev/null 2>&1; then
  ss -Htulnp 2>/dev/null | while read -r proto _state _rq _sq local _peer proc; do
    printf '%s\t%s\t%s\n' "$proto" "$local" "$(echo "$proc" | sed -n 's/.*(("\([^"]*\)".*/\1/p')"
  done > "$work/listen"
  while IFS="$tab" read -r proto local prog; do
    port=${local##*:}
    case "$local" in 127.*|"[::1]"*|"::1"*) exposed=loopback ;; *) exposed=exposed ;; esac
    item listening_services "$proto $local ${prog:-?} ($exposed)"
    if [ -n "${BAKER_POLICY_PORTS:-}" ] && [ "$exposed" = exposed ]; then
      case " $BAKER_POLICY_PORTS " in *" $port "*) ;; *) bad=$((bad+1)) ;; esac
    fi
  done < "$work/listen"
  n=$(wc -l < "$work/listen" | tr -d ' ')
  if [ "$bad" -gt 0 ]; then check listening_services fail "$bad listeners on ports not in allowed_ports ($BAKER_POLICY_PORTS)"
  else check listening_services info "$n listening sockets"; fi
else
  check listening_services skip "no ss in the guest"
fi
exit 0
