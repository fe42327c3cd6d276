"""The extra CD: Packer's cd_files layout rules, cd_content precedence, the volume label."""

from __future__ import annotations

import pycdlib
import pytest

from baker.cdrom import build_cd, collect_cd_files
from baker.errors import BakerError
from baker.iso9660 import read_iso


@pytest.fixture
def tree(tmp_path):
    base = tmp_path / "tpl"
    (base / "ks" / "nested").mkdir(parents=True)
    (base / "ks" / "a.cfg").write_text("A")
    (base / "ks" / "nested" / "b.cfg").write_text("B")
    (base / "scripts").mkdir()
    (base / "scripts" / "one.sh").write_text("1")
    (base / "scripts" / "two.sh").write_text("2")
    (base / "scripts" / "notes.txt").write_text("n")
    (base / "autounattend.xml").write_text("<xml/>")
    (tmp_path / "outside.txt").write_text("outside")
    (base / "link.txt").symlink_to(tmp_path / "outside.txt")
    return base


def test_files_dirs_globs(tree, tmp_path):
    iso = build_cd(tmp_path / "cd.iso", files=["autounattend.xml", "ks", "scripts/*.sh", "link.txt"],
                   base_dir=tree, label="OEMDRV")
    assert read_iso(iso) == {
        "autounattend.xml": b"<xml/>",
        "ks/a.cfg": b"A",
        "ks/nested/b.cfg": b"B",
        "one.sh": b"1",
        "two.sh": b"2",
        "link.txt": b"outside",  # symlinks are followed, like Packer
    }


def test_trailing_slash_puts_directory_contents_at_root(tree):
    assert sorted(collect_cd_files(["ks/"], tree)) == ["a.cfg", "nested/b.cfg"]


def test_recursive_glob_and_absolute_paths(tree):
    got = collect_cd_files(["**/*.cfg", str(tree / "scripts" / "notes.txt")], tree)
    assert sorted(got) == ["a.cfg", "b.cfg", "notes.txt"]


def test_content_wins_over_files(tree, tmp_path):
    iso = build_cd(tmp_path / "cd.iso", files=["ks"], content={"ks/a.cfg": "from content", "/meta-data": ""},
                   base_dir=tree, label="cidata")
    files = read_iso(iso)
    assert files["ks/a.cfg"] == b"from content"
    assert files["ks/nested/b.cfg"] == b"B"
    assert files["meta-data"] == b""


def test_label(tmp_path):
    iso_path = build_cd(tmp_path / "cd.iso", content={"user-data": "#cloud-config\n"}, label="cidata")
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_path))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
    finally:
        iso.close()


@pytest.mark.parametrize(
    ("files", "message"),
    [(["missing.cfg"], "does not exist"), (["*.nope"], "matches no files")],
)
def test_errors(tree, tmp_path, files, message):
    with pytest.raises(BakerError, match=message):
        build_cd(tmp_path / "cd.iso", files=files, base_dir=tree)


def test_two_sources_for_one_cd_path_is_an_error(tree, tmp_path):
    (tree / "other").mkdir()
    (tree / "other" / "one.sh").write_text("other")
    with pytest.raises(BakerError, match=r"both put a file at /one\.sh"):
        collect_cd_files(["scripts/one.sh", "other/one.sh"], tree)


def test_empty_cd_and_bad_label(tmp_path):
    with pytest.raises(BakerError, match="empty"):
        build_cd(tmp_path / "cd.iso")
    with pytest.raises(BakerError, match="cd_label"):
        build_cd(tmp_path / "cd.iso", content={"a": "b"}, label="x" * 33)
    assert not (tmp_path / "cd.iso").exists()
