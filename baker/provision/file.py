"""The `file` provisioner: upload files, trees or literal content (anywhere, via sudo), or download them.

Uploads are staged in the build user's home and then copied into place by a small shell script, as
root when the destination is not writable by the build user. A root copy leaves root-owned files,
never files owned by the build user's uid (which generalize deletes, leaving orphans).
"""

from __future__ import annotations

import posixpath
import shlex

from baker.communicator.ssh import SSHCommunicator, SSHError
from baker.provision.base import ProvisionContext, ProvisionError, describe, resolve_local, token
from baker.template.model import FileProvisioner

# shared by both directions: $S is "" when we can write the target ourselves, else "sudo -n"
_NEED_ROOT = r"""
need_root() {
  [ "$(id -u)" = 0 ] && return 1
  if [ -e "$1" ]; then [ -w "$1" ] && return 1; return 0; fi
  d=$(dirname "$1")
  while [ ! -e "$d" ]; do d=$(dirname "$d"); done
  [ -w "$d" ] && return 1
  return 0
}
"""


def place_script(staged: str, dest: str, *, is_dir: bool, into: bool, mode: str | None,
                 owner: str | None) -> str:
    """Shell that moves `staged` (relative to $HOME) to `dest`, as root if needed, then mode/owner.

    is_dir: copy the tree's contents into dest (dest is the directory). into: dest is a directory
    the file goes into (keeping its name) - set when dest ends with "/"; also decided remotely if
    dest already is a directory.
    """
    q = shlex.quote
    lines = ["set -e", _NEED_ROOT, f'src="$HOME"/{q(staged)}', f"dest={q(dest)}"]
    if is_dir:
        lines.append('target="${dest%/}"; [ -n "$target" ] || target=/')
    else:
        into_flag = "1" if into else "0"
        lines += [
            f'if [ {into_flag} = 1 ] || [ -d "$dest" ]; then target="${{dest%/}}/$(basename "$src")"; '
            'else target="$dest"; fi',
        ]
    lines += [
        'S=""; if need_root "$target"; then S="sudo -n"; fi',
        '$S mkdir -p "$(dirname "$target")"',
    ]
    if is_dir:
        lines += ['$S mkdir -p "$target"', '$S cp -R "$src/." "$target/"']
    else:
        lines.append('$S cp -f "$src" "$target"')
    if mode:
        lines.append(f'$S chmod {q(mode)} "$target"')
    if owner:
        rec = "-R " if is_dir else ""
        lines.append(f'if [ "$(id -u)" = 0 ]; then chown {rec}{q(owner)} "$target"; '
                     f'else sudo -n chown {rec}{q(owner)} "$target"; fi')
    lines.append('echo "placed $target${S:+ (as root)}"')
    return "\n".join(lines) + "\n"


def run_file(p: FileProvisioner, ctx: ProvisionContext) -> None:
    what = describe(p, ctx.index)
    comm = ctx.comm
    if comm is None:
        raise ProvisionError(what, "needs an SSH communicator (communicator.type is none)")
    if not p.destination:
        raise ProvisionError(what, "destination is required")
    if p.direction == "download":
        _download(p, ctx, comm, what)
    else:
        _upload(p, ctx, comm, what)


def _upload(p: FileProvisioner, ctx: ProvisionContext, comm: SSHCommunicator, what: str) -> None:
    staging = f".baker-upload-{token()}"
    dest = p.destination
    try:
        _sh(comm, f"umask 077; mkdir -p \"$HOME\"/{shlex.quote(staging)}", ctx, what)
        if p.content is not None:
            staged = f"{staging}/{posixpath.basename(dest.rstrip('/')) or 'content'}"
            comm.upload_bytes(p.content, staged, 0o644)
            is_dir = False
            ctx.log.info("%s: writing content to %s", what, dest)
        elif p.source:
            local = resolve_local(ctx, p.source)
            if not local.exists():
                raise ProvisionError(what, f"source {local} does not exist")
            is_dir = local.is_dir()
            # Packer's rule: "dir/" uploads the contents into dest, "dir" becomes dest/dir
            if is_dir and not p.source.endswith("/"):
                dest = posixpath.join(dest, local.name)
            staged = f"{staging}/{local.name}"
            ctx.log.info("%s: uploading %s -> %s", what, local, dest)
            comm.upload(local, staged)
        else:
            raise ProvisionError(what, "give source or content")
        _sh(comm, place_script(staged, dest, is_dir=is_dir, into=dest.endswith("/"), mode=p.mode,
                               owner=p.owner), ctx, what)
    except ProvisionError:
        raise
    except SSHError as e:
        raise ProvisionError(what, str(e), tail=comm.last_output_tail) from e
    finally:
        if comm.connected:
            try:
                comm.run(f"rm -rf \"$HOME\"/{shlex.quote(staging)}", timeout=60,
                         stdout_cb=ctx.log.debug, stderr_cb=ctx.log.debug)
            except SSHError as e:
                ctx.log.debug("could not remove staging dir: %s", e)


def _download(p: FileProvisioner, ctx: ProvisionContext, comm: SSHCommunicator, what: str) -> None:
    if not p.source:
        raise ProvisionError(what, "download needs a source (the remote path)")
    src = p.source
    local = resolve_local(ctx, p.destination)
    is_dir = _remote_is_dir(comm, src, ctx)
    if is_dir and not src.endswith("/"):
        local = local / posixpath.basename(src.rstrip("/"))
    elif not is_dir and (p.destination.endswith("/") or local.is_dir()):
        local = local / posixpath.basename(src)
    ctx.log.info("%s: downloading %s -> %s", what, src, local)
    try:
        comm.download(src.rstrip("/") or "/", local)
        return
    except SSHError as e:
        if not comm.connected:
            raise ProvisionError(what, str(e)) from e
        ctx.log.info("%s: direct download failed (%s); retrying through sudo", what, e)
    staging = f".baker-download-{token()}"
    q = shlex.quote
    name = posixpath.basename(src.rstrip("/")) or "root"
    try:
        _sh(comm, f'set -e; d="$HOME"/{q(staging)}; mkdir -p "$d"; '
                  f'sudo -n cp -R {q(src.rstrip("/") or "/")} "$d"/{q(name)}; '
                  'sudo -n chown -R "$(id -u):$(id -g)" "$d"', ctx, what)
        comm.download(f"{staging}/{name}", local)
    except SSHError as e:
        if isinstance(e, ProvisionError):
            raise
        raise ProvisionError(what, str(e)) from e
    finally:
        if comm.connected:
            try:
                comm.run(f'rm -rf "$HOME"/{q(staging)}', timeout=60, stdout_cb=ctx.log.debug,
                         stderr_cb=ctx.log.debug)
            except SSHError as e:
                ctx.log.debug("could not remove staging dir: %s", e)


def _remote_is_dir(comm: SSHCommunicator, path: str, ctx: ProvisionContext) -> bool:
    q = shlex.quote(path)
    rc = comm.run(f"test -d {q} || sudo -n test -d {q}", timeout=60, stdout_cb=ctx.log.debug,
                  stderr_cb=ctx.log.debug)
    return rc == 0


def _sh(comm: SSHCommunicator, script: str, ctx: ProvisionContext, what: str) -> None:
    rc = comm.run(f"sh -c {shlex.quote(script)}", timeout=3600, stdout_cb=ctx.log.info,
                  stderr_cb=ctx.log.warning)
    if rc != 0:
        raise ProvisionError(what, f"placing the file failed with exit code {rc}", tail=comm.last_output_tail,
                             hint="does the build user have passwordless sudo, and is the path valid?")

