"""A shell-local post step: the shell-local provisioner's runner, with the published build in its env."""

from __future__ import annotations

from baker.post.context import PostContext
from baker.provision import ProvisionContext, ProvisionError, run_provisioner
from baker.template.model import ShellLocalProvisioner


class HookFailed(Exception):
    """A hook failed; `message` without the provisioner prefix, `tail` its last output lines."""

    def __init__(self, message: str, tail: list[str]) -> None:
        super().__init__(message)
        self.message = message
        self.tail = tail


def run_shell_hook(p: ShellLocalProvisioner, ctx: PostContext, index: int) -> None:
    pctx = ProvisionContext(comm=None, log=ctx.log, template_dir=ctx.template_dir, work_dir=ctx.work_dir,
                            build_env=ctx.environment(), cancel=ctx.cancel)
    try:
        run_provisioner(p, pctx, index=index)
    except ProvisionError as e:
        first = e.message.split("\n", 1)[0].removeprefix(f"{e.what}: ")
        raise HookFailed(first, e.tail) from e
