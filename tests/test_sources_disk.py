"""probe_image / prepare_build_disk / create_empty_disk with the real qemu-img."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from baker.errors import BakerError
from baker.fsutil import file_digest
from baker.sources.disk import create_empty_disk, prepare_build_disk, probe_image

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
MiB = 1024 * 1024


def qemu_img(*args: str | Path) -> str:
    return subprocess.run(["qemu-img", *map(str, args)], check=True, capture_output=True, text=True).stdout


def info(path: Path) -> dict:
    return json.loads(qemu_img("info", "--output=json", "-U", path))


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A 64 MiB qcow2 with 4 MiB of real data, like a small cloud image."""
    path = tmp_path / "base.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", path, "64M")
    subprocess.run(["qemu-io", "-c", "write -P 0xab 0 4M", str(path)], check=True, capture_output=True)
    return path


def test_probe_qcow2_and_raw(tmp_path: Path, base: Path) -> None:
    got = probe_image(base)
    assert (got.format, got.virtual_size, got.backing_file) == ("qcow2", 64 * MiB, None)
    assert got.actual_size and got.actual_size > 4 * MiB
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\0" * MiB)
    assert probe_image(raw, "raw").format == "raw"


def test_probe_truncated_qcow2_names_file_and_check_output(tmp_path: Path, base: Path) -> None:
    bad = tmp_path / "truncated.qcow2"
    bad.write_bytes(base.read_bytes()[: 400_000])
    with pytest.raises(BakerError) as err:
        probe_image(bad)
    msg = str(err.value)
    assert str(bad) in msg and "qemu-img check" in msg and "ERROR" in msg
    header_only = tmp_path / "header.qcow2"
    header_only.write_bytes(base.read_bytes()[:100])
    with pytest.raises(BakerError, match="header too short"):
        probe_image(header_only)


def test_probe_rejects_wrong_files(tmp_path: Path, base: Path) -> None:
    with pytest.raises(BakerError, match="no such file"):
        probe_image(tmp_path / "missing.qcow2")
    page = tmp_path / "img.qcow2"
    page.write_text("<!DOCTYPE html><html><body>Please log in</body></html>")
    with pytest.raises(BakerError, match="HTML"):
        probe_image(page)
    packed = tmp_path / "img.qcow2.gz"
    packed.write_bytes(gzip.compress(b"\0" * 4096))
    with pytest.raises(BakerError, match="gzip-compressed"):
        probe_image(packed)
    with pytest.raises(BakerError, match="says format raw, but the file is qcow2"):
        probe_image(base, "raw")


def test_overlay_resized_base_untouched(tmp_path: Path, base: Path) -> None:
    before = file_digest(base)
    dest = prepare_build_disk(base, tmp_path / "out" / "disk.qcow2", mode="overlay", size=128 * MiB)
    got = info(dest)
    assert got["format"] == "qcow2" and got["virtual-size"] == 128 * MiB
    assert got["full-backing-filename"] == str(base.absolute())
    assert got["backing-filename-format"] == "qcow2"
    qemu_img("check", dest)
    assert file_digest(base) == before
    assert [p.name for p in dest.parent.iterdir()] == ["disk.qcow2"]  # no temp left beside it


def test_overlay_same_size_and_raw_base(tmp_path: Path) -> None:
    raw = tmp_path / "base.raw"
    raw.write_bytes(b"\x55" * (8 * MiB))
    dest = prepare_build_disk(raw, tmp_path / "disk.qcow2", mode="overlay", size=8 * MiB, fmt="raw")
    got = info(dest)
    assert got["virtual-size"] == 8 * MiB and got["backing-filename-format"] == "raw"


def test_copy_mode_is_standalone(tmp_path: Path, base: Path) -> None:
    dest = prepare_build_disk(base, tmp_path / "disk.qcow2", mode="copy", size=96 * MiB, fmt="qcow2")
    got = info(dest)
    assert got["virtual-size"] == 96 * MiB and "backing-filename" not in got
    base.unlink()  # a copy needs nothing from the base
    qemu_img("check", dest)
    out = subprocess.run(["qemu-io", "-c", "read -P 0xab 0 4M", str(dest)], capture_output=True, text=True)
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout


def test_shrink_refused_with_both_sizes(tmp_path: Path, base: Path) -> None:
    dest = tmp_path / "disk.qcow2"
    with pytest.raises(BakerError) as err:
        prepare_build_disk(base, dest, mode="overlay", size=32 * MiB)
    msg = str(err.value)
    assert "32.0 MiB" in msg and "64.0 MiB" in msg and "never shrunk" in msg
    assert not dest.exists() and list(tmp_path.iterdir()) == [base]


def test_failed_qemu_img_leaves_nothing(tmp_path: Path, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import baker.sources.disk as disk

    real_run = disk.run

    def failing(argv: list, **kw: Any) -> Any:
        if argv[1] == "convert":
            argv = [*argv[:-2], tmp_path / "nonexistent-input", argv[-1]]
        return real_run(argv, **kw)

    monkeypatch.setattr(disk, "run", failing)
    with pytest.raises(BakerError, match="cannot prepare build disk"):
        prepare_build_disk(base, tmp_path / "disk.qcow2", mode="copy", size=64 * MiB)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.qcow2"]


def test_create_empty_disk(tmp_path: Path) -> None:
    dest = create_empty_disk(tmp_path / "sub" / "disk.qcow2", 2 * 1024 * MiB)
    got = info(dest)
    assert got["format"] == "qcow2" and got["virtual-size"] == 2 * 1024 * MiB
    assert dest.stat().st_size < MiB
    with pytest.raises(BakerError, match="positive"):
        create_empty_disk(tmp_path / "zero.qcow2", 0)
