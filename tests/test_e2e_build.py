"""End to end: `baker build` of the demo template under TCG, then look inside what it produced.

One build per session (about 3 minutes under TCG) and one boot of its output, shared by every test.
The build runs with --apt-cache, as nightly builds do: the guest's apt goes through the host's cache.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from baker.events import event_problems
from tests.helpers.guest import BootedImage
from tests.helpers.paths import ROOT

pytestmark = pytest.mark.e2e

SECRET = "s3cr3t-T0ken-e2e-4711"
TEMPLATE = ROOT / "templates" / "debian-12-nginx.yaml"


@pytest.fixture(scope="session")
def built(base_image: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("e2e") / "out"
    # the session's isolated cache (session fixtures run before the per-test one sets it)
    cache = tmp_path_factory.getbasetemp() / "baker-cache"
    env = {**os.environ, "BAKER_BASE_IMAGE": str(base_image), "BAKER_CACHE_DIR": str(cache)}
    proc = subprocess.run(
        [sys.executable, "-m", "baker", "build", str(TEMPLATE), "-var", "nginx_port=8080",
         "-var", f"api_token={SECRET}", "--output-dir", str(out), "--json", "--apt-cache"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800, check=False,
    )
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0:
        failed = [e for e in events if e["event"] == "build_failed"]
        pytest.fail(f"build failed ({proc.returncode}): {failed or proc.stderr[-3000:]}")
    return {"out": out, "events": events, "stdout": proc.stdout, "stderr": proc.stderr, "cache": cache}


@pytest.fixture(scope="session")
def booted(built: dict):
    with BootedImage(built["out"] / "debian-12-nginx.qcow2", guest_ports=[8080]) as vm:
        yield vm


def test_artifacts_are_all_there(built: dict):
    names = {p.name for p in built["out"].iterdir()}
    assert {"debian-12-nginx.qcow2", "manifest.json", "SHA256SUMS", "build.log", "serial.log"} <= names
    assert not [n for n in names if n.endswith(".part")]


def test_qcow2_is_standalone_compressed_and_consistent(built: dict):
    image = built["out"] / "debian-12-nginx.qcow2"
    subprocess.run(["qemu-img", "check", str(image)], check=True, capture_output=True)
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(image)], check=True,
                                     capture_output=True, text=True).stdout)
    assert info["format"] == "qcow2" and "backing-filename" not in info
    assert info["virtual-size"] == 4 * 1024**3


def test_manifest_describes_the_build(built: dict):
    m = json.loads((built["out"] / "manifest.json").read_text())
    assert m["name"] == "debian-12-nginx"
    assert m["variables"]["nginx_port"] == 8080
    assert m["variables"]["api_token"] == "<sensitive>"
    assert m["machine"]["accelerator"] in ("kvm", "tcg")
    assert m["source"]["sha256"] and m["template"]["sha256"]
    art = {a["file"]: a for a in m["artifacts"]}
    import hashlib

    digest = hashlib.sha256((built["out"] / "debian-12-nginx.qcow2").read_bytes()).hexdigest()
    assert art["debian-12-nginx.qcow2"]["sha256"] == digest
    assert [s["step"] for s in m["steps"]][:3] == ["prepare", "fetch-source", "create-disk"]


def test_json_events_trace_every_step(built: dict):
    assert [p for e in built["events"] for p in event_problems(e)] == []  # the schema in docs/events.md
    kinds = [e["event"] for e in built["events"]]
    assert kinds[0] == "build_start" and kinds[-1] == "build_done"
    started = [e["step"] for e in built["events"] if e["event"] == "step_start"]
    done = [e["step"] for e in built["events"] if e["event"] == "step_done"]
    assert started == done and "wait-ssh" in done and "shutdown" in done


def test_secret_never_leaves_the_process(built: dict):
    for f in built["out"].iterdir():
        if f.suffix in (".json", ".log") or f.name == "SHA256SUMS":
            assert SECRET not in f.read_text(errors="replace"), f.name
    assert SECRET not in built["stdout"] and SECRET not in built["stderr"]


def test_nginx_serves_the_uploaded_site(booted: BootedImage):
    port = booted.machine.host_ports[8080]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
        body = r.read().decode()
        assert r.headers["X-Baked-By"] == "baker"
    assert "Baked by baker" in body


def test_build_credentials_are_gone_from_the_image(booted: BootedImage, built: dict):
    m = json.loads((built["out"] / "manifest.json").read_text())
    build_key = m["guest"]["build_key_public"].split()[1]
    _, out = booted.run("id baker || echo NO-USER")
    assert "NO-USER" in out
    _, out = booted.run("sudo grep -E '^baker:' /etc/passwd /etc/shadow /etc/group; "
                        "sudo grep -rlw baker /etc/sudoers /etc/sudoers.d; "
                        "test -e /home/baker && echo HOME-LEFT; echo DONE")
    assert out.strip() == "DONE", out
    _, out = booted.run(f"sudo grep -rlF '{build_key}' /home /root /etc/ssh || echo CLEAN")
    assert out.strip().endswith("CLEAN"), out


def test_apt_went_through_the_hosts_cache_and_its_setting_is_not_in_the_image(booted: BootedImage,
                                                                              built: dict):
    assert "apt-cache" in [e.get("step") for e in built["events"] if e["event"] == "step_done"]
    said = re.compile(r"apt cache: (\d+) from cache .* (\d+) fetched and kept")
    summary = [m for e in built["events"] if (m := said.search(e.get("message", "")))]
    assert summary and int(summary[-1][1]) + int(summary[-1][2]) > 0, "no package went through the cache"
    kept = [p for p in (built["cache"] / "apt").rglob("*") if p.is_file()]
    assert kept, "no package file was kept in the host's cache"
    _, out = booted.run("ls /etc/apt/apt.conf.d/; sudo grep -rs 10.0.2.2 /etc/apt || echo NO-PROXY")
    assert "00baker-apt-cache" not in out and out.strip().endswith("NO-PROXY"), out


def test_image_is_generalized(booted: BootedImage, built: dict):
    m = json.loads((built["out"] / "manifest.json").read_text())
    rc, out = booted.run("sudo cat /etc/ssh/ssh_host_ed25519_key.pub")
    assert rc == 0
    build_key = m["guest"]["ssh_host_key_used_during_build"].split()[1]
    assert build_key not in out  # the clone has its own host key, not the one used while baking
    rc, out = booted.run("systemctl is-enabled nginx && test -s /etc/machine-id && echo OK")
    assert out.strip().endswith("OK")


def test_image_is_minimized_and_stays_lean(booted: BootedImage, built: dict):
    freed = [e["message"] for e in built["events"] if "minimize freed" in e.get("message", "")]
    assert freed, "generalize did not report what minimize freed"
    _, out = booted.run("ls /var/lib/apt/lists/ | grep -c _Packages; ls /var/cache/apt/*.bin 2>&1 | head -1")
    assert out.splitlines()[0].strip() == "0" and "No such file" in out, out
    _, out = booted.run("cat /etc/dpkg/dpkg.cfg.d/90-baker-minimize; ls /usr/share/locale; "
                        "find /usr/share/doc -type f ! -name copyright | wc -l; "
                        "find /usr/share/doc -name copyright | wc -l")
    lines = out.splitlines()
    assert "path-exclude=/usr/share/man/*" in lines and "path-include=/usr/share/doc/*/copyright" in lines
    assert "path-include=/usr/share/locale/en/*" in lines
    assert int(lines[-2]) == 0 and int(lines[-1]) > 100  # licences stay
    assert not [d for d in lines if re.fullmatch(r"[a-z]{2,3}(_[A-Z]{2})?", d) and not d.startswith("en")]


# --- every export from the same build (issue: export to every hypervisor) --------------------------

DISKS = {  # file → qemu-img format
    "debian-12-nginx.vmdk": "vmdk",
    "debian-12-nginx.vhd": "vpc",
    "debian-12-nginx.vhdx": "vhdx",
    "debian-12-nginx-libvirt.qcow2": "qcow2",
}


def test_every_export_is_there_with_checksums(built: dict):
    out = built["out"]
    names = {p.name for p in out.iterdir()}
    for expected in ["debian-12-nginx.ova", "debian-12-nginx.tar.gz", "debian-12-nginx.xml",
                     "debian-12-nginx.box.json", *DISKS]:
        assert expected in names, f"{expected} missing from {sorted(names)}"
    assert sum(n.endswith(".box") for n in names) == 2
    subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=out, check=True)


@pytest.mark.parametrize("name,fmt", sorted(DISKS.items()))
def test_export_has_the_same_content_as_the_master(built: dict, name: str, fmt: str):
    out = built["out"]
    subprocess.run(["qemu-img", "compare", "-f", fmt, "-F", "qcow2", str(out / name),
                    str(out / "debian-12-nginx.qcow2")], check=True, capture_output=True)


@pytest.mark.parametrize("name,fmt", [("debian-12-nginx.vmdk", "vmdk"), ("debian-12-nginx.vhd", "vpc")])
def test_provisioned_file_reads_back_from_export(built: dict, name: str, fmt: str, tmp_path: Path):
    from tests.helpers.guest import read_guest_file

    html = read_guest_file(built["out"] / name, fmt, "/var/www/baker/index.html", tmp_path)
    assert b"Baked by baker" in html
    conf = read_guest_file(built["out"] / name, fmt, "/etc/nginx/sites-available/default", tmp_path)
    assert b"listen 8080 default_server" in conf
