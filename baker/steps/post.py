"""`post:` steps, after publish: one step per entry, so a failure names it (`post[2] checksum`)."""

from __future__ import annotations

from baker.errors import StepError
from baker.provision.base import summary
from baker.state import BuildState


class PostStep:
    def __init__(self, index: int, spec) -> None:
        self.index = index
        self.spec = spec
        default = ", ".join(spec.types) if spec.type == "checksum" else summary(spec, first_line=True)
        label = getattr(spec, "name", None) or default
        self.name = f"post[{index}] {spec.type}" + (f" ({label})" if label else "")

    def run(self, s: BuildState) -> None:
        from baker.post import PostContext, run_shell_hook, write_digest_files
        from baker.post.shell import HookFailed

        assert s.work_dir is not None
        out = s.options.output_dir
        ctx = PostContext(
            name=s.template.name, version=s.template.version, output_dir=out,
            manifest=out / "manifest.json", artifacts=[(r.type, out / f.path.name) for r in s.exports
                                                       for f in r.files],
            template_dir=s.template.path.parent, work_dir=s.work_dir, log=s.log, cancel=s.cancel)
        hint = f"the image is published in {out}; only this post step failed"
        try:
            if self.spec.type == "checksum":
                write_digest_files(self.spec.types, ctx)
            else:
                run_shell_hook(self.spec, ctx, self.index)
        except HookFailed as e:
            # raised as a StepError so the report shows the hook's output, not the (stopped) VM's console
            raise StepError(self.name, e.message, tails={"hook output (last lines)": "\n".join(e.tail)},
                            hint=hint) from e
        except OSError as e:
            what = f"{e.strerror or e}: {e.filename}" if e.filename else str(e.strerror or e)
            raise StepError(self.name, what, hint=hint) from e

    def cleanup(self, s: BuildState) -> None:
        pass  # never unpublish: the image in the output dir is complete
