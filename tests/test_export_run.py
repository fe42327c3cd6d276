"""run_exports: parallel runs, SHA256SUMS, all-or-nothing failures, option checking, the Options contract."""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import types
import typing
from pathlib import Path
from typing import Literal

import pytest

from baker.errors import BakerError
from baker.export import EXPORTERS, ExportError, run_exports
from baker.export.osmap import os_ids
from baker.fsutil import file_digest
from tests.helpers.exports import all_exports, context, master, scratch, sh, vm_spec

ALL_TYPES = {"qcow2", "raw", "gce", "vmdk", "ova", "ovf", "vhd", "vhdx", "vagrant", "libvirt"}


def staging_leftovers(out: Path) -> list[str]:
    return [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_registry_has_every_target():
    assert set(EXPORTERS) == ALL_TYPES
    for name, cls in EXPORTERS.items():
        assert cls.type_name == name and dataclasses.is_dataclass(cls.Options)


def test_all_exports_checksums_and_master_untouched():
    run = all_exports()
    files = [f for r in run.results.values() for f in r.files]
    assert len(run.results) == 11
    for f in files:
        assert f.path.is_file() and f.size == f.path.stat().st_size  # incl. the shared vagrant catalog
        assert f.sha256 == file_digest(f.path)
    sums = (run.out / "SHA256SUMS").read_text().splitlines()
    listed = {line.split("  ", 1)[1] for line in sums}
    assert listed == {f.path.name for f in files}
    assert sh("sha256sum", "--strict", "-c", "SHA256SUMS", cwd=run.out).returncode == 0
    assert staging_leftovers(run.out) == []
    assert file_digest(master().path) == master().sha256


def test_invalid_option_fails_before_any_work():
    out = scratch("badopt")
    specs = [("qcow2", EXPORTERS["qcow2"].Options()), ("vmdk", EXPORTERS["vmdk"].Options(subformat="bogus"))]
    with pytest.raises(ExportError, match=r"export vmdk: option 'subformat' must be one of"):
        run_exports(context(out), specs)
    assert list(out.iterdir()) == []
    bad = [
        [("vmdk", EXPORTERS["vmdk"].Options(hwversion="13"))],  # type: ignore[arg-type]
        [("qcow2", EXPORTERS["vmdk"].Options())],
        [("nope", None)],
        [("qcow2", None), ("libvirt", EXPORTERS["libvirt"].Options(disk_filename="testvm.qcow2"))],
        [("raw", EXPORTERS["raw"].Options(filename="../escape.raw"))],
        [("raw", EXPORTERS["raw"].Options(filename="SHA256SUMS"))],
    ]
    for specs in bad:
        with pytest.raises(ExportError):
            run_exports(context(out), specs)
    assert list(out.iterdir()) == []


def test_failed_export_is_rolled_back_and_others_complete():
    """A directory where the OVF's disk should go makes the ovf commit fail after its first renames:
    the previous .ovf/.mf come back, qcow2 still completes and is listed in SHA256SUMS."""
    out = scratch("rollback")
    (out / "testvm.ovf").write_text("old ovf\n")
    (out / "testvm.mf").write_text("old mf\n")
    (out / "testvm-disk1.vmdk").mkdir()
    with pytest.raises(ExportError) as e:
        run_exports(context(out), [("ovf", None), ("qcow2", None)], jobs=2)
    assert list(e.value.failures) == ["ovf"] and "ovf" in str(e.value)
    assert (out / "testvm.ovf").read_text() == "old ovf\n" and (out / "testvm.mf").read_text() == "old mf\n"
    assert staging_leftovers(out) == []
    assert (out / "testvm.qcow2").is_file()
    assert (out / "SHA256SUMS").read_text().split() == [file_digest(out / "testvm.qcow2"), "testvm.qcow2"]


def test_command_failure_names_types_and_stderr_tail():
    out = scratch("badmaster")
    bogus = scratch("bogus") / "master.qcow2"
    bogus.write_bytes(b"QFI\xfb" + b"\xff" * 4096)
    with pytest.raises(ExportError) as e:
        run_exports(context(out, src=bogus), [("qcow2", None), ("vhd", None)])
    assert set(e.value.failures) == {"qcow2", "vhd"}
    assert isinstance(e.value, BakerError)
    assert "qemu-img" in str(e.value) and "  | " in str(e.value)  # CommandError's stderr tail
    assert [p.name for p in out.iterdir()] == ["SHA256SUMS"] and (out / "SHA256SUMS").read_text() == ""


@contextlib.contextmanager
def tiny_tmpfs(path: Path):
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.parametrize(("type_name", "options", "previous"), [
    ("vhd", {"azure": True}, "testvm.vhd"),
    ("ova", {}, "testvm.ova"),
    ("vagrant", {}, "testvm-1.2.0-libvirt.box"),
])
def test_disk_full_leaves_nothing_and_keeps_previous_artifact(type_name, options, previous):
    out = scratch("full")
    with tiny_tmpfs(out):
        (out / previous).write_text("previous build\n")
        with pytest.raises(ExportError, match=type_name):
            run_exports(context(out), [(type_name, EXPORTERS[type_name].Options(**options))])
        assert (out / previous).read_text() == "previous build\n"
        assert staging_leftovers(out) == []
        assert sorted(p.name for p in out.iterdir()) == sorted([previous, "SHA256SUMS"])


# --- the Options contract the template loader relies on ---------------------------------------------

def _allowed(tp) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in (str, int, bool, float, type(None)) or origin is Literal:
        return True
    if origin in (typing.Union, types.UnionType):
        return all(_allowed(a) for a in args)
    if origin is list:
        return args == (str,)
    if origin is dict:
        return args == (str, str)
    return False


@pytest.mark.parametrize("type_name", sorted(ALL_TYPES))
def test_options_contract(type_name):
    cls = EXPORTERS[type_name].Options
    hints = typing.get_type_hints(cls)
    opts = cls()  # every field has a default
    names = set()
    for f in dataclasses.fields(cls):
        names.add(f.name)
        assert _allowed(hints[f.name]), f"{type_name}.{f.name}: {hints[f.name]}"
        assert f.metadata.get("help"), f"{type_name}.{f.name} has no help"
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    assert "filename" in names
    EXPORTERS[type_name]().check(vm_spec(), opts)  # defaults are valid


def test_os_ids():
    d = os_ids("debian12_64")
    assert (d.cim, d.virtualbox, d.libosinfo) == (96, "Debian_64", "http://debian.org/debian/12")
    assert d.vmware == "debian11_64Guest"  # newest Debian id older ESXi releases know
    assert os_ids("ubuntu_64").cim == 94 and os_ids("rhel9_64").vmware == "rhel9_64Guest"
    assert os_ids("debian12").cim == 95 and os_ids("debian12").virtualbox == "Debian"
    weird = os_ids("templeos")
    assert (weird.cim, weird.virtualbox) == (101, "Linux26_64")


def test_default_output_names_of_every_exporter():
    vm = vm_spec(name="n")
    assert {t: cls().outputs(vm, cls.Options()) for t, cls in EXPORTERS.items()} == {
        "gce": ["n.tar.gz"], "libvirt": ["n-libvirt.qcow2", "n.xml"], "ova": ["n.ova"],
        "ovf": ["n.ovf", "n.mf", "n-disk1.vmdk"], "qcow2": ["n.qcow2"], "raw": ["n.raw"],
        "vagrant": [f"n-{vm.version}-libvirt.box", "n.box.json"], "vhd": ["n.vhd"],
        "vhdx": ["n.vhdx", "n.hyperv.json", "create-vm.ps1"], "vmdk": ["n.vmdk"],
    }
    opts = EXPORTERS["qcow2"].Options(filename="custom.qcow2")
    assert EXPORTERS["qcow2"]().outputs(vm, opts) == ["custom.qcow2"]


def test_the_export_step_reports_bytes_written_while_exports_run(tmp_path: Path):
    import logging
    import threading
    import time

    from baker.events import event_problems
    from baker.steps.export import report_progress

    seen: list[dict] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if (p := getattr(record, "progress", None)) is not None:
                seen.append(p)

    log = logging.getLogger("test-export-progress")
    log.addHandler(Catch())
    log.setLevel(logging.INFO)
    stop = threading.Event()
    t = threading.Thread(target=report_progress, args=(tmp_path, log, stop), kwargs={"every": 0.05})
    t.start()
    part = tmp_path / ".baker-export-qcow2.part"
    part.mkdir()
    for _ in range(3):
        with open(part / "disk.qcow2", "ab") as f:
            f.write(b"x" * (1 << 20))
        time.sleep(0.2)
    stop.set()
    t.join()
    assert seen and all(p["what"] == "export" and p["total"] is None for p in seen)
    done = [p["done"] for p in seen]
    assert done == sorted(done) and done[-1] >= 3 << 20
    event = {"ts": "2026-12-06T00:00:00Z", "event": "progress", "build": "t", **seen[-1]}
    assert event_problems(event) == []  # the documented --json schema


def test_costly_exports_start_first_and_results_keep_the_templates_order(monkeypatch):
    """With one slot the start order is the priority order: gce and a compressed qcow2 (full passes of
    their own) before the exports that derive from what they make."""
    started: list[str] = []
    real = EXPORTERS["qcow2"].export

    def export(self, ctx, options=None):
        started.append(self.type_name)
        return real(EXPORTERS["qcow2"](), ctx, EXPORTERS["qcow2"].Options(filename=f"{self.type_name}.qcow2"))

    for name in ("vmdk", "gce", "qcow2", "raw"):
        monkeypatch.setattr(EXPORTERS[name], "export", export)
    out = scratch("order")
    specs = [("vmdk", None), ("raw", None), ("gce", None),
             ("qcow2", EXPORTERS["qcow2"].Options(compress=True))]
    results = run_exports(context(out), specs, jobs=1)
    assert started == ["gce", "qcow2", "vmdk", "raw"]
    assert [r.files[0].path.name for r in results] == ["vmdk.qcow2", "raw.qcow2", "gce.qcow2", "qcow2.qcow2"]
