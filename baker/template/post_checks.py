"""Rules for `post:` steps (run after publishing): what a shell-local or checksum step must say."""

from __future__ import annotations

from baker.template.model import ChecksumPost, ShellLocalProvisioner, Template


def check_post(t: Template, where) -> None:
    for i, p in enumerate(t.post):
        path = f"post[{i}]"
        if where.problems.has_error_under(path):
            continue
        if isinstance(p, ShellLocalProvisioner):
            given = [k for k in ("inline", "script", "scripts") if getattr(p, k)]
            if len(given) != 1:
                where.error(path if not given else f"{path}.{given[1]}",
                            "a shell-local post step needs exactly one of inline, script or scripts"
                            + (f" (found {' and '.join(given)})" if given else ""))
            if p.max_retries < 0:
                where.error(f"{path}.max_retries", "max_retries must not be negative")
        elif isinstance(p, ChecksumPost):
            if not p.types:
                where.error(f"{path}.types", "list at least one digest type", "e.g. types: [sha512, md5]")
            elif len(set(p.types)) != len(p.types):
                where.error(f"{path}.types", "a digest type is listed twice")
