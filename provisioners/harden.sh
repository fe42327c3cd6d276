#!/bin/sh
# A small, reviewable baseline for golden images (CIS-flavoured, nothing exotic):
#   - SSH: no root login, no passwords, no X11/agent forwarding
#   - kernel: no source routing or redirects, SYN cookies, restricted dmesg and kernel pointers
#   - no core dumps from setuid programs; a umask of 027 for login shells
# Idempotent: re-running it on an image that has it changes nothing.
set -eu

mkdir -p /etc/ssh/sshd_config.d
cat > /etc/ssh/sshd_config.d/10-golden.conf <<'CONF'
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
X11Forwarding no
AllowAgentForwarding no
CONF

cat > /etc/sysctl.d/60-golden.conf <<'CONF'
net.ipv4.conf.all.accept_source_route = 0
net.ipv4.conf.all.accept_redirects = 0
net.ipv4.conf.default.accept_redirects = 0
net.ipv6.conf.all.accept_redirects = 0
net.ipv4.conf.all.send_redirects = 0
net.ipv4.tcp_syncookies = 1
kernel.dmesg_restrict = 1
kernel.kptr_restrict = 2
fs.suid_dumpable = 0
CONF

echo 'umask 027' > /etc/profile.d/golden-umask.sh
sshd -t
echo "harden: sshd and sysctl baseline written"
