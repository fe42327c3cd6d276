"""file provisioner against a local sshd: files, trees (trailing-slash rule), content, download."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from baker.provision import ProvisionContext, ProvisionError, run_provisioner
from baker.provision.file import _NEED_ROOT
from baker.template.model import FileProvisioner
from tests.helpers.sshd import LocalSSHD, local_sshd, needs_sshd


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSSHD]:
    with local_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def ctx(sshd: LocalSSHD, tmp_path: Path) -> Iterator[ProvisionContext]:
    comm = sshd.communicator()
    comm.wait(20)
    for d in ("template", "work", "remote"):
        (tmp_path / d).mkdir()
    yield ProvisionContext(comm=comm, log=logging.getLogger("test.file"), template_dir=tmp_path / "template",
                           work_dir=tmp_path / "work", reconnect_timeout=30, cancel=threading.Event(),
                           index=1)
    comm.close()


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def src(ctx: ProvisionContext) -> Path:
    s = ctx.template_dir / "site"
    (s / "css").mkdir(parents=True)
    (s / "index.html").write_text("<h1>hi</h1>")
    (s / "css" / "a.css").write_text("a{}")
    return s


@needs_sshd
def test_upload_file_to_path_and_into_dir(ctx: ProvisionContext, src: Path) -> None:
    remote = ctx.work_dir.parent / "remote"
    run_provisioner(FileProvisioner(source="site/index.html", destination=f"{remote}/deep/new/i.html"), ctx)
    assert (remote / "deep" / "new" / "i.html").read_text() == "<h1>hi</h1>"
    run_provisioner(FileProvisioner(source=str(src / "index.html"), destination=f"{remote}/"), ctx)
    assert (remote / "index.html").exists()
    (remote / "existing").mkdir()
    run_provisioner(FileProvisioner(source="site/index.html", destination=f"{remote}/existing"), ctx)
    assert (remote / "existing" / "index.html").exists()


@needs_sshd
def test_directory_trailing_slash_rule(ctx: ProvisionContext, src: Path) -> None:
    remote = ctx.work_dir.parent / "remote"
    run_provisioner(FileProvisioner(source="site", destination=f"{remote}/a"), ctx)
    assert tree(remote / "a") == ["site", "site/css", "site/css/a.css", "site/index.html"]
    run_provisioner(FileProvisioner(source="site/", destination=f"{remote}/b"), ctx)
    assert tree(remote / "b") == ["css", "css/a.css", "index.html"]


@needs_sshd
def test_content_with_mode_and_owner(ctx: ProvisionContext) -> None:
    dest = ctx.work_dir.parent / "remote" / "etc" / "app.conf"
    run_provisioner(FileProvisioner(content="key = value\n", destination=str(dest), mode="0600",
                                    owner="root:root"), ctx)
    assert dest.read_text() == "key = value\n"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert dest.stat().st_uid == 0


@needs_sshd
def test_staging_is_cleaned_up(ctx: ProvisionContext) -> None:
    run_provisioner(FileProvisioner(content="x", destination=str(ctx.work_dir.parent / "remote" / "x")), ctx)
    assert not list(Path("/root").glob(".baker-upload-*"))


@needs_sshd
def test_download_file_and_dirs(ctx: ProvisionContext) -> None:
    remote = ctx.work_dir.parent / "remote"
    (remote / "logs" / "sub").mkdir(parents=True)
    (remote / "logs" / "a.log").write_text("a")
    (remote / "logs" / "sub" / "b.log").write_text("b")
    run_provisioner(FileProvisioner(source=str(remote / "logs" / "a.log"), destination="out/a.log",
                                    direction="download"), ctx)
    assert (ctx.template_dir / "out" / "a.log").read_text() == "a"
    run_provisioner(FileProvisioner(source=str(remote / "logs"), destination="d1", direction="download"), ctx)
    assert tree(ctx.template_dir / "d1") == ["logs", "logs/a.log", "logs/sub", "logs/sub/b.log"]
    run_provisioner(FileProvisioner(source=f"{remote}/logs/", destination="d2", direction="download"), ctx)
    assert tree(ctx.template_dir / "d2") == ["a.log", "sub", "sub/b.log"]


@needs_sshd
def test_errors_name_the_provisioner(ctx: ProvisionContext) -> None:
    with pytest.raises(ProvisionError, match=r"provisioner\[1\] file .*does not exist"):
        run_provisioner(FileProvisioner(source="missing.txt", destination="/tmp/x"), ctx)
    with pytest.raises(ProvisionError, match="destination is required"):
        run_provisioner(FileProvisioner(content="x"), ctx)
    with pytest.raises(ProvisionError):
        run_provisioner(FileProvisioner(source="/no/such/remote", destination="x", direction="download"), ctx)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to nobody")
@pytest.mark.parametrize(("path", "needs_root"), [
    ("/etc/baker-test-never-created", True),
    ("/etc/passwd", True),
    ("/nonexistent-dir/sub/file", True),
    ("WRITABLE/new/deeper/file", False),
    ("WRITABLE", False),
])
def test_need_root_decision(path: str, needs_root: bool) -> None:
    """Run the remote shell helper as an unprivileged user: root only where the user cannot write."""
    base = Path(tempfile.mkdtemp(dir="/tmp"))  # pytest's tmp dirs are 0700: nobody could not look inside
    try:
        os.chmod(base, 0o755)
        writable = base / "w"
        writable.mkdir()
        os.chown(writable, 65534, 65534)
        target = path.replace("WRITABLE", str(writable))
        script = _NEED_ROOT + f'need_root "{target}" && echo root || echo user'
        out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c",
                              script], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == ("root" if needs_root else "user")
    finally:
        shutil.rmtree(base)
