#!/bin/sh
# The baseline for `make bench`: what a build does with nothing but qemu, ssh and qemu-img.
#
#   bench/plain-bake.sh BASE_QCOW2 OUT_QCOW2 SSH_PORT [CPUS] [MEMORY_MB] [DISK_SIZE]
#
# Boots BASE through a qcow2 overlay under TCG with a cloud-init NoCloud seed (a user with a fresh key;
# a read-only virtio disk labelled cidata, since cloud kernels often lack the CD-ROM drivers),
# waits for SSH and cloud-init, installs nginx-light, powers off and writes a compressed qcow2.
# Prints "phase NAME SECONDS" lines (ssh, provision, shutdown, export) for bench/run.py.
set -eu
base=$1 out=$2 port=$3 cpus=${4:-2} mem=${5:-1024} size=${6:-4G}
work=$(mktemp -d "${TMPDIR:-/tmp}/plain-bake-XXXXXX")
qemu_pid=
cleanup() {
  [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
now() { date +%s.%N; }
phase() { awk -v name="$1" -v a="$(now)" -v b="$2" 'BEGIN { printf "phase %s %.2f\n", name, a - b }'; }

ssh-keygen -q -t ed25519 -N '' -f "$work/key"
mkdir "$work/seed"
cat > "$work/seed/user-data" <<EOF
#cloud-config
users:
  - name: bench
    sudo: ALL=(ALL) NOPASSWD:ALL
    shell: /bin/bash
    lock_passwd: true
    ssh_authorized_keys: ["$(cat "$work/key.pub")"]
ssh_pwauth: false
EOF
printf 'instance-id: plain-bake\nlocal-hostname: plain-bake\n' > "$work/seed/meta-data"
xorriso -as mkisofs -quiet -V cidata -J -r -o "$work/seed.iso" "$work/seed/user-data" "$work/seed/meta-data"
qemu-img create -q -f qcow2 -F qcow2 -b "$(readlink -f "$base")" "$work/disk.qcow2" "$size"

t=$(now)
qemu-system-x86_64 -machine q35,accel=tcg -cpu max -smp "$cpus" -m "$mem" -display none \
  -drive "file=$work/disk.qcow2,if=virtio,format=qcow2,discard=unmap" \
  -drive "file=$work/seed.iso,if=virtio,format=raw,readonly=on" \
  -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:22" -device virtio-net-pci,netdev=n0 \
  -serial "file:$work/serial.log" &
qemu_pid=$!
ssh_opts="-i $work/key -p $port -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
  -o LogLevel=ERROR -o ConnectTimeout=5 -o BatchMode=yes"
deadline=$(($(date +%s) + 900))
# shellcheck disable=SC2086
until ssh $ssh_opts bench@127.0.0.1 true 2>/dev/null; do
  kill -0 "$qemu_pid" || { echo "qemu died" >&2; exit 1; }
  [ "$(date +%s)" -lt "$deadline" ] || { echo "no SSH after 900 s" >&2; tail -20 "$work/serial.log" >&2; exit 1; }
  sleep 1
done
phase ssh "$t"

t=$(now)
# shellcheck disable=SC2086
ssh $ssh_opts bench@127.0.0.1 'sudo cloud-init status --wait >/dev/null;
  sudo DEBIAN_FRONTEND=noninteractive apt-get update -q &&
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx-light' >/dev/null
phase provision "$t"

t=$(now)
# shellcheck disable=SC2086
ssh $ssh_opts bench@127.0.0.1 'sudo poweroff' || true
wait "$qemu_pid" || true
qemu_pid=
phase shutdown "$t"

t=$(now)
qemu-img convert -c -O qcow2 "$work/disk.qcow2" "$out"
phase export "$t"
