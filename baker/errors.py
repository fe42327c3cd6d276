"""Error types. Every error a user can cause carries enough context to fix it without a traceback."""

from __future__ import annotations

from dataclasses import dataclass, field


class BakerError(Exception):
    """Root of baker's errors; `hint` tells the user what to do next."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


@dataclass(frozen=True)
class Mark:
    """A position in a source file, 1-based like editors show it."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class TemplateError(BakerError):
    """A template problem, pinned to file:line:col and a key path such as `provisioners[2].inline`."""

    exit_code = 2

    def __init__(self, message: str, *, mark: Mark | None = None, path: str = "", hint: str | None = None):
        super().__init__(message, hint=hint)
        self.mark = mark
        self.path = path

    def __str__(self) -> str:
        where = f"{self.mark}: " if self.mark else ""
        key = f"{self.path}: " if self.path else ""
        text = f"{where}{key}{self.message}"
        return text if not self.hint else f"{text}\n  hint: {self.hint}"


@dataclass
class TemplateErrors(BakerError):
    """Several template problems found in one pass, so a user fixes them all in one edit."""

    errors: list[TemplateError] = field(default_factory=list)
    exit_code = 2

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class CommandError(BakerError):
    """A host command failed; carries the tail of its output so the user sees why."""

    def __init__(self, argv: list[str], returncode: int, stdout: str = "", stderr: str = "", *, hint=None):
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        tail = "\n".join((stderr or stdout).strip().splitlines()[-15:])
        msg = f"command failed with exit code {returncode}: {' '.join(argv)}"
        if tail:
            msg += "\n" + "\n".join("  | " + line for line in tail.splitlines())
        super().__init__(msg, hint=hint)


class ChecksumError(BakerError):
    """A downloaded or local file does not match the checksum the template pins."""


class StepError(BakerError):
    """A pipeline step failed; names the step and carries log tails for the report."""

    def __init__(self, step: str, cause: BaseException | str, *, tails: dict[str, str] | None = None,
                 hint: str | None = None):
        self.step = step
        self.cause = cause
        self.tails = tails or {}
        text = cause.message if isinstance(cause, BakerError) else str(cause)
        super().__init__(f"step '{step}' failed: {text}", hint=hint or getattr(cause, "hint", None))


class Interrupted(BakerError):
    """The build was stopped by SIGINT/SIGTERM; exit code follows the shell's 128+signal convention."""

    def __init__(self, signum: int, step: str | None = None):
        import signal as _signal

        self.signum = signum
        self.step = step
        self.exit_code = 128 + signum
        during = f" during step '{step}'" if step else ""
        super().__init__(f"interrupted by {_signal.Signals(signum).name}{during}")


# Exit codes of the `baker` command (documented in README.md and docs/events.md).
EXIT_OK = 0
EXIT_FAILED = 1  # the build (or an import) failed
EXIT_USAGE = 2  # invalid template, unknown option or bad option value
EXIT_LOCKED = 75  # another build of the same output holds its lock (EX_TEMPFAIL: try again later)
EXIT_TIMEOUT = 124  # --timeout ran out (as timeout(1)); an external SIGTERM stays 143


class TimedOut(Interrupted):
    """`--timeout` ran out: stopped and cleaned up like SIGTERM, but its own exit code."""

    def __init__(self, seconds: float, step: str | None = None):
        import signal as _signal

        super().__init__(_signal.SIGTERM, step)  # the signal the timer delivers
        self.exit_code = EXIT_TIMEOUT
        during = f" during step '{step}'" if step else ""
        self.message = f"timed out after {seconds:g}s (--timeout){during}; stopped and cleaned up"
        self.args = (self.message,)
