"""Files to and from the guest over SFTP: single files, directory trees, modes kept."""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
from pathlib import Path

import paramiko

from baker.communicator.connection import SSHConnection
from baker.communicator.errors import SSHDisconnected, SSHError, describe_error


class SSHFiles(SSHConnection):
    """upload / upload_bytes / download over the connection's (reopened as needed) SFTP session."""

    def _sftp_client(self) -> paramiko.SFTPClient:
        t = self._require()
        if self._sftp is None or self._sftp.get_channel() is None or self._sftp.get_channel().closed:
            try:
                self._sftp = paramiko.SFTPClient.from_transport(t)
            except (paramiko.SSHException, EOFError, OSError) as e:
                raise SSHDisconnected(f"could not open SFTP: {describe_error(e)}") from e
            if self._sftp is None:
                raise SSHError("the guest's sshd offers no SFTP subsystem")
        return self._sftp

    def _sftp_error(self, what: str, e: BaseException) -> SSHError:
        if not self.connected:
            return SSHDisconnected(f"{what}: connection dropped ({describe_error(e)})")
        return SSHError(f"{what}: {describe_error(e)}")

    @staticmethod
    def _remote_isdir(sftp: paramiko.SFTPClient, path: str) -> bool:
        try:
            return stat.S_ISDIR(sftp.stat(path).st_mode or 0)
        except OSError:
            return False

    def _mkdir_p(self, sftp: paramiko.SFTPClient, path: str) -> None:
        parts = []
        p = path.rstrip("/")
        while p and p not in (".", "/") and not self._remote_isdir(sftp, p):
            parts.append(p)
            p = posixpath.dirname(p)
        for d in reversed(parts):
            sftp.mkdir(d)

    def upload(self, local: str | os.PathLike[str], remote: str) -> str:
        """Copy a file or directory tree to the guest; returns the remote path written.

        A file goes to `remote`, or into it when `remote` ends with "/" or is a directory.
        A directory becomes `remote` (its contents land in `remote`, created as needed).
        Modes are preserved.
        """
        local = Path(local)
        sftp = self._sftp_client()
        what = f"upload {local} -> {remote}"
        try:
            if local.is_dir():
                self._mkdir_p(sftp, remote)
                for root, dirs, files in os.walk(local):
                    rel = os.path.relpath(root, local)
                    rdir = remote.rstrip("/") if rel == "." else posixpath.join(remote, *Path(rel).parts)
                    for d in dirs:
                        rd = posixpath.join(rdir, d)
                        if not self._remote_isdir(sftp, rd):
                            sftp.mkdir(rd)
                        sftp.chmod(rd, stat.S_IMODE(os.stat(os.path.join(root, d)).st_mode))
                    for f in files:
                        src = os.path.join(root, f)
                        rf = posixpath.join(rdir, f)
                        sftp.put(src, rf)
                        sftp.chmod(rf, stat.S_IMODE(os.stat(src).st_mode))
                return remote
            if not local.exists():
                raise SSHError(f"{what}: local file does not exist")
            target = remote
            if remote.endswith("/") or self._remote_isdir(sftp, remote):
                target = posixpath.join(remote, local.name)
            sftp.put(str(local), target)
            sftp.chmod(target, stat.S_IMODE(local.stat().st_mode))
            return target
        except SSHError:
            raise
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise self._sftp_error(what, e) from e

    def upload_bytes(self, data: bytes | str, remote: str, mode: int = 0o644) -> None:
        """Write `data` to a remote file with `mode` (written first, then chmod)."""
        sftp = self._sftp_client()
        raw = data.encode() if isinstance(data, str) else data
        try:
            with sftp.open(remote, "wb") as f:
                f.write(raw)
            sftp.chmod(remote, mode)
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise self._sftp_error(f"write {remote}", e) from e

    def download(self, remote: str, local: str | os.PathLike[str]) -> Path:
        """Copy a remote file or directory tree to `local`; returns the local path written.

        A file goes to `local`, or into it when `local` is an existing directory or ends with "/".
        A directory becomes `local`.
        """
        sftp = self._sftp_client()
        local_s = os.fspath(local)
        dest = Path(local_s)
        what = f"download {remote} -> {local_s}"
        try:
            st = sftp.stat(remote)
            if stat.S_ISDIR(st.st_mode or 0):
                self._get_tree(sftp, remote, dest)
                return dest
            if local_s.endswith("/") or dest.is_dir():
                dest = dest / posixpath.basename(remote.rstrip("/"))
            dest.parent.mkdir(parents=True, exist_ok=True)
            sftp.get(remote, str(dest))
            os.chmod(dest, stat.S_IMODE(st.st_mode or 0o644))
            return dest
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise self._sftp_error(what, e) from e

    def _get_tree(self, sftp: paramiko.SFTPClient, remote: str, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for entry in sftp.listdir_attr(remote):
            r = posixpath.join(remote, entry.filename)
            mode = entry.st_mode or 0
            if stat.S_ISDIR(mode):
                self._get_tree(sftp, r, dest / entry.filename)
            elif stat.S_ISREG(mode):
                sftp.get(r, str(dest / entry.filename))
                os.chmod(dest / entry.filename, stat.S_IMODE(mode))
            elif stat.S_ISLNK(mode):
                with contextlib.suppress(OSError):
                    os.symlink(sftp.readlink(r) or "", dest / entry.filename)
