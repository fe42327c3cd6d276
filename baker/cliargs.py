"""Command-line parsing that never guesses: no prefix matching, Packer's spellings answered, typed values.

argparse on its own reads `-output=x` as `-o utput=x` (short option with an attached value) and
`--out` as `--output-dir`. Packer users type single-dash long flags by habit, so every token that looks
like one is checked before argparse sees it: a flag baker has is read as usual, a Packer flag baker does
not have is refused with what baker does instead, anything else gets a did-you-mean. Values are parsed
by argparse types, so a bad `--timeout` is a usage error (exit 2), never a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import re
from collections.abc import Sequence
from typing import Any

from baker.units import parse_duration, parse_size

# a single-dash word such as -only or -var-file (Packer's flag style), optionally with =value
_SINGLE_DASH_WORD = re.compile(r"-[A-Za-z][A-Za-z0-9-]+")
_NEGATIVE_NUMBER = re.compile(r"-\d+$|-\d*\.\d+$")
_DAYS = re.compile(r"\s*(\d+(?:\.\d+)?)\s*d\s*")
MAX_SECONDS = 366 * 86400  # beyond this a timer is a typo (and threading's wait overflows)

# Packer flags baker does not have, and what a Packer user should do instead
PACKER_FLAGS: dict[str, str] = {
    "-debug": "use --on-error=abort to keep the VM up after a failure, or --verbose for debug output",
    "-machine-readable": "use --json (one JSON event per line, see docs/events.md)",
    "-color": "use --plain for timestamped lines without a status line",
    "-timestamp-ui": "use --plain (every line is timestamped)",
    "-parallel-builds": "use -j N (builds at once; default: as many as CPUs), and --export-jobs N for "
                        "exports in parallel within a build",
    "-warn-on-undeclared-var": "baker always refuses a -var that the template does not declare",
    "-syntax-only": "baker validate always checks everything (types, files, URLs) without building",
}


class Parser(argparse.ArgumentParser):
    """ArgumentParser without prefix matching that checks every option-looking token first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.option_names: set[str] = set()
        self.valued_options: set[str] = set()
        self.has_subcommands = False
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.option_names.update(action.option_strings)
        if action.nargs != 0:
            self.valued_options.update(action.option_strings)
        return action

    def add_subparsers(self, **kwargs: Any) -> Any:
        self.has_subcommands = True
        return super().add_subparsers(**kwargs)

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        import sys

        argv = list(sys.argv[1:] if args is None else args)
        problem = self.option_problem(argv)
        if problem:
            self.error(problem)
        return super().parse_known_args(argv, namespace)

    def option_problem(self, argv: list[str]) -> str | None:
        """Why one of argv's option tokens cannot be read unambiguously, or None.

        A parser with subcommands only looks at the tokens before the subcommand; the subcommand's
        own parser checks the rest when argparse hands them over.
        """
        for token in argv:
            if token == "--":
                return None
            if not token.startswith("-") or token == "-" or " " in token or _NEGATIVE_NUMBER.match(token):
                if self.has_subcommands:
                    return None
                continue
            problem = self._token_problem(token)
            if problem:
                return problem
        return None

    def _token_problem(self, token: str) -> str | None:
        name = token.split("=", 1)[0]
        if name in self.option_names:
            return None
        if token.startswith("--"):
            return f"unknown option {name}{self._suggest(name)}"
        if not _SINGLE_DASH_WORD.fullmatch(name):
            return None  # e.g. -o/tmp/out: a short option with its value attached, unambiguous
        if name in PACKER_FLAGS:
            return f"Packer's {name} is not a baker option: {PACKER_FLAGS[name]}"
        if "-" + name in self.option_names:
            return f"unknown option {name} (did you mean -{name}?)"
        short = name[:2]
        if short in self.valued_options:
            return (f"{token} would be read as {short} '{token[2:]}'; if that is what you meant, write "
                    f"'{short} {token[2:]}' with a space")
        return f"unknown option {name}{self._suggest(name)}"

    def _suggest(self, name: str) -> str:
        word = "--" + name.lstrip("-")
        words = sorted(n for n in self.option_names if n.startswith("--"))
        prefixed = [w for w in words if w.startswith(word)]
        close = prefixed if len(prefixed) == 1 else difflib.get_close_matches(word, words, n=1, cutoff=0.6)
        return f" (did you mean {close[0]}?)" if close else ""


def duration(text: str) -> float:
    """A positive duration (`2h`, `90m`, `30s`) for --timeout."""
    try:
        seconds = parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be longer than zero")
    if seconds > MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"'{text}' is more than a year; write it like 2h or 30m")
    return seconds


def age(text: str) -> float:
    """How long ago, in seconds: a duration, or whole days as `30d`."""
    m = _DAYS.fullmatch(text)
    if m:
        return float(m.group(1)) * 86400
    try:
        return parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a duration; write it like 30d, 12h or 90m") from None


def size(text: str) -> int:
    """A byte count from `10G`, `512M`, `20GiB` or plain bytes."""
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def count(minimum: int) -> Any:
    """An argparse type for a whole number of at least `minimum`."""

    def parse(text: str) -> int:
        try:
            n = int(text.strip(), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {n}")
        return n

    parse.__name__ = "number"  # argparse names the type in its error message
    return parse


def names(text: str) -> list[str]:
    """`--only a,b`: the names, without empty ones."""
    out = [w.strip() for w in text.split(",") if w.strip()]
    if not out:
        raise argparse.ArgumentTypeError(f"expected NAME[,NAME...], got '{text}'")
    return out


def assignment(text: str) -> tuple[str, str]:
    """`-var NAME=VALUE`."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got '{text}'")
    k, v = text.split("=", 1)
    if not k.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got '{text}' (the name is empty)")
    return k.strip(), v
