"""Checksum specs as templates write them (Packer's `iso_checksum` words) and SUMS-file lookup.

The one grammar: the template loader checks specs with it and the fetcher parses them with it, so
every algorithm a download can be verified with is accepted at load. Parsing is strict: a typo in a
pinned digest must fail at load time, not after a 2 GB download. Pure text: fetching SUMS files is
`baker.sources.source.resolve_checksum`'s job.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from baker.errors import ChecksumError

# hex length → algorithm, for bare digests (Packer infers the type the same way)
ALGOS: dict[str, int] = {"md5": 32, "sha1": 40, "sha224": 56, "sha256": 64, "sha384": 96, "sha512": 128}
_BY_LENGTH = {n: a for a, n in ALGOS.items()}
_HEX = re.compile(r"^[0-9a-fA-F]+$")
# GNU coreutils: "<hex>  name" (text) or "<hex> *name" (binary); a leading "\" marks an escaped name
_GNU_LINE = re.compile(r"^\\?([0-9a-fA-F]{32,128})\s[ *]?(.+)$")
# BSD / `sha256sum --tag` / Fedora CHECKSUM: "SHA256 (name) = hex"
_BSD_LINE = re.compile(r"^([A-Za-z0-9-]+)\s*\((.+)\)\s*=\s*([0-9a-fA-F]{32,128})$")


class ChecksumSpecError(ChecksumError, ValueError):
    """A checksum string that cannot be parsed; also a ValueError so the template loader can pin it.

    `problem` is the short reason the loader prints after "invalid checksum: " at the key's position.
    """

    def __init__(self, message: str, *, problem: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.problem = problem or message


@dataclass(frozen=True)
class Checksum:
    """A parsed digest; algo=None and hexdigest=None means `none` (unpinned, not reproducible)."""

    algo: str | None
    hexdigest: str | None

    @property
    def pinned(self) -> bool:
        return self.algo is not None

    def __str__(self) -> str:
        return f"{self.algo}:{self.hexdigest}" if self.pinned else "none"


NONE = Checksum(None, None)


@dataclass(frozen=True)
class ChecksumFileRef:
    """`file:<url-or-path>`: the digest lives in a SHA256SUMS-style file, looked up by the URL's basename."""

    location: str

    def __str__(self) -> str:
        return f"file:{self.location}"


def mismatch(where: str, expected: Checksum, actual: str) -> ChecksumError:
    """The error for bytes that do not match: expected vs actual, and where they came from."""
    return ChecksumError(
        f"checksum mismatch for {where}:\n  expected {expected}\n  actual   {expected.algo}:{actual}")


def _digest(algo: str, hexdigest: str, spec: str) -> Checksum:
    if not _HEX.match(hexdigest):
        raise ChecksumSpecError(f"checksum '{spec}': '{hexdigest}' is not a hex digest",
                                problem=f"{algo} digest must be hex digits")
    want = ALGOS[algo]
    if len(hexdigest) != want:
        problem = f"{algo} needs {want} hex digits, got {len(hexdigest)}"
        raise ChecksumSpecError(f"checksum '{spec}': {problem}", problem=problem)
    return Checksum(algo, hexdigest.lower())


def parse_checksum(spec: str) -> Checksum | ChecksumFileRef:
    """Parse `none`, `<algo>:<hex>`, a bare hex digest (algo from its length) or `file:<url-or-path>`."""
    if not isinstance(spec, str):
        raise ChecksumSpecError(f"checksum must be a string, got {type(spec).__name__}")
    text = spec.strip()
    if not text:
        raise ChecksumSpecError("checksum is empty", problem="empty checksum",
                                hint="write 'none' to skip verification (not reproducible)")
    if text.lower() == "none":
        return NONE
    prefix, sep, rest = text.partition(":")
    if sep:
        key = prefix.strip().lower()
        if key == "file":
            location = rest.strip()
            if not location:
                raise ChecksumSpecError(f"checksum '{spec}': file: needs a URL or path to a SUMS file",
                                        problem="file: needs a URL or path after it")
            return ChecksumFileRef(location)
        if key in ALGOS:
            return _digest(key, rest.strip(), spec)
        raise ChecksumSpecError(
            f"checksum '{spec}': unknown algorithm '{prefix}'", problem=f"unknown checksum type '{prefix}'",
            hint=f"use one of {', '.join(ALGOS)}, file:<url>, or none",
        )
    if _HEX.match(text):
        algo = _BY_LENGTH.get(len(text))
        if algo is None:
            raise ChecksumSpecError(
                f"checksum '{spec}': a bare digest of {len(text)} hex digits matches no algorithm",
                problem="not a recognised checksum", hint="prefix it with the algorithm, e.g. sha256:<hex>",
            )
        return _digest(algo, text, spec)
    raise ChecksumSpecError(
        f"checksum '{spec}' is not 'none', '<algo>:<hex>', a hex digest or 'file:<url>'",
        problem="not a recognised checksum",
    )


def parse_sums(text: str) -> dict[str, tuple[str | None, str]]:
    """Name → (algo or None if only inferable from length, hex) from GNU or BSD style SUMS text.

    Blank lines, comments and PGP clear-sign armour are skipped, so signed CHECKSUM files parse too.
    """
    entries: dict[str, tuple[str | None, str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "-----", "Hash:")):
            continue
        if m := _BSD_LINE.match(line):
            algo = m.group(1).lower().replace("-", "")
            entries[m.group(2).strip()] = (algo if algo in ALGOS else None, m.group(3).lower())
        elif m := _GNU_LINE.match(line):
            name = m.group(2).strip()
            if raw.lstrip().startswith("\\"):
                name = name.replace("\\n", "\n").replace("\\\\", "\\")
            entries[name] = (None, m.group(1).lower())
    return entries


def _basename(name: str) -> str:
    return name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def url_basename(url: str) -> str:
    """The file name a SUMS file would list for `url` (query and fragment dropped, %-escapes decoded)."""
    path = urllib.parse.urlsplit(url).path if "://" in url else url
    return _basename(urllib.parse.unquote(path))


def _sums_algo_hint(location: str) -> str | None:
    """SHA512SUMS → sha512, so a 128-digit entry is not mistaken for something else."""
    name = url_basename(location).lower()
    for algo in sorted(ALGOS, key=len, reverse=True):
        if algo in name:
            return algo
    return None


def lookup_sums(text: str, url: str, *, source: str = "SUMS file") -> Checksum:
    """The Checksum for url's basename in SUMS text; the error lists what the file does name."""
    entries = parse_sums(text)
    want = url_basename(url)
    found = [v for k, v in entries.items() if _basename(k.removeprefix("./")) == want]
    if not found:
        names = sorted(entries) or ["(no checksum lines)"]
        shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
        raise ChecksumError(f"{source} has no entry for '{want}'; it lists: {shown}",
                            hint="check the image URL, or that the SUMS file belongs to the same release")
    algo, hexdigest = found[0]
    algo = algo or _sums_algo_hint(source)
    if algo is None or ALGOS.get(algo) != len(hexdigest):
        algo = _BY_LENGTH.get(len(hexdigest))
    if algo is None:
        raise ChecksumError(f"{source}: the entry for '{want}' is a {len(hexdigest)}-digit digest "
                            "of no known type")
    return Checksum(algo, hexdigest)

