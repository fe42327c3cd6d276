"""Issue 'Install from an ISO', through the real pipeline: boot_command, HTTP server, cd_content, UEFI.

1. An ISO source (a small GRUB ISO): baker types at the boot prompt over QMP, waits for text on the
   serial console with <waitFor>, and the typed `halt` powers the VM off (communicator none).
2. A UEFI cloud-image build whose provisioners fetch from baker's HTTP server and read the extra CD
   from inside the guest.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers.boot import have_grub_mkrescue, make_test_boot_iso
from tests.helpers.faults import build, write_template

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(not have_grub_mkrescue(), reason="needs grub-mkrescue, xorriso, mtools")
def test_boot_command_typed_at_an_iso_boot_prompt(tmp_path: Path):
    iso = make_test_boot_iso(tmp_path / "boot.iso")
    t = write_template(tmp_path / "iso.yaml", """name: isotype
source:
  iso: {iso_url: boot.iso, iso_checksum: none}
  boot_wait: 0s
  boot_key_interval: 30ms
  boot_command:
    - '<waitFor "BAKER-GRUB-READY" 2m>c<waitFor "grub>">'
    - 'set who={{ build.name }}<enter>'
    - 'echo "TYPED-${who}-<>|~Xyz:?!"<enter>'
    - '<waitFor "TYPED-isotype-<>|~Xyz:?!">halt<enter>'
machine: {accelerator: tcg, cpus: 1, memory: 256, disk_size: 64M, machine_type: pc}
communicator: {type: none}
shutdown: {timeout: 2m}
exports: [{type: qcow2}]
""")
    assert iso.exists()
    run = build(t, tmp_path / "out", timeout=600)
    assert run.rc == 0, run.failure or run.stderr[-2000:]
    serial = (tmp_path / "out" / "serial.log").read_text(errors="replace")
    assert "TYPED-isotype-<>|~Xyz:?!" in serial  # shifted characters arrived, template var rendered
    steps = [e["step"] for e in run.events if e["event"] == "step_done"]
    assert "boot-command" in steps and "wait-ssh" not in steps


def test_uefi_build_with_http_server_and_cd_content(tmp_path: Path, base_image: Path):
    t = write_template(tmp_path / "media.yaml", f"""name: media
source:
  cloud_image: {{url: '{base_image}', checksum: none}}
  http_content:
    /hello.txt: "served to {{{{ build.name }}}} on port {{{{ build.http_port }}}}"
  cd_label: BAKERCD
  cd_content:
    answers/config.txt: "from the extra CD"
machine: {{accelerator: auto, cpus: 1, memory: 1024, disk_size: 3G, firmware: uefi}}
provisioners:
  - type: shell
    inline:
      - >-
        python3 -c "import urllib.request as u, os;
        print(u.urlopen('http://' + os.environ['BAKER_HTTP_ADDR'] + '/hello.txt').read().decode())"
        > /root/http.txt
      - mkdir -p /mnt/cd && mount -o ro -L BAKERCD /mnt/cd
      - cp /mnt/cd/answers/config.txt /root/cd.txt && umount /mnt/cd
      - test -d /sys/firmware/efi && echo uefi > /root/firmware.txt
  - type: file
    direction: download
    source: /root/http.txt
    destination: {tmp_path}/http.txt
  - type: file
    direction: download
    source: /root/cd.txt
    destination: {tmp_path}/cd.txt
  - type: file
    direction: download
    source: /root/firmware.txt
    destination: {tmp_path}/firmware.txt
exports: [{{type: qcow2}}, {{type: libvirt}}]
""")
    run = build(t, tmp_path / "out", timeout=1800)
    assert run.rc == 0, run.failure or run.stderr[-2000:]
    port = next(e["message"] for e in run.events
                if e["event"] == "log" and "serving HTTP on" in e.get("message", ""))
    assert (tmp_path / "http.txt").read_text().startswith("served to media on port ")
    assert (tmp_path / "http.txt").read_text().split()[-1] in port
    assert (tmp_path / "cd.txt").read_text() == "from the extra CD"
    assert (tmp_path / "firmware.txt").read_text().strip() == "uefi"
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["machine"]["firmware"] == "uefi"
    xml = (tmp_path / "out" / "media.xml").read_text()
    assert "<loader" in xml and "OVMF" in xml  # exported metadata records the firmware
    subprocess.run(["qemu-img", "check", str(tmp_path / "out" / "media.qcow2")], check=True,
                   capture_output=True)


DI = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64")


@pytest.mark.skipif(not (DI / "linux").exists(), reason="needs debian-installer-12-netboot-amd64")
def test_direct_kernel_boot_with_rendered_append(tmp_path: Path):
    """kernel/initrd/append boot a kernel without any bootloader; `append` sees build.* values."""
    empty = tmp_path / "empty.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(empty), "64M"], check=True)
    t = write_template(tmp_path / "kernel.yaml", f"""name: kboot
source:
  cloud_image: {{url: '{empty}', checksum: none}}
  cloud_init: {{enabled: false}}
  kernel: {DI}/linux
  initrd: {DI}/initrd.gz
  append: "console=ttyS0 baker_build={{{{ build.name }}}} init=/no/such/init panic=-1"
machine: {{accelerator: tcg, cpus: 1, memory: 512, disk_size: 64M, qemuargs: ["-no-reboot"]}}
communicator: {{type: none}}
shutdown: {{timeout: 3m}}
exports: [{{type: raw}}]
""")
    run = build(t, tmp_path / "out", timeout=600)
    assert run.rc == 0, run.failure or run.stderr[-2000:]
    serial = (tmp_path / "out" / "serial.log").read_text(errors="replace")
    assert "baker_build=kboot" in serial  # the kernel printed our rendered command line
