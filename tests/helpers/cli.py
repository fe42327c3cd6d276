"""Running `baker` in-process, for CLI tests that need no child process."""

from __future__ import annotations

import contextlib
import io

from baker import cli


def run_main(*argv: str) -> tuple[int, str, str]:
    """main() in-process; argparse's SystemExit becomes the exit code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    return code, out.getvalue(), err.getvalue()
