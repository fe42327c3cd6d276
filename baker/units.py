"""Sizes and durations as users write them in templates (`8G`, `512M`, `10m`, `1h30m`, `90s`)."""

from __future__ import annotations

import re

_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtb]?)(?:i?b)?\s*$", re.IGNORECASE)
_DUR_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_size(value: str | int) -> int:
    """Bytes from `8G`, `512M`, `10GiB`, `1.5G` or a plain byte count. Raises ValueError with the reason."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 8G or 512M, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("size must not be negative")
        return value
    m = _SIZE_RE.match(str(value))
    if not m:
        raise ValueError(f"'{value}' is not a size; write it like 8G, 512M or 10GiB")
    number, unit = m.groups()
    return int(float(number) * _SIZE_UNITS[unit.lower()])


def parse_duration(value: str | int | float) -> float:
    """Seconds from `10m`, `1h30m`, `90s`, `500ms`, or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 10m or 90s, got a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("duration must not be negative")
        return float(value)
    text = str(value).strip().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for m in _DUR_RE.finditer(text):
        if m.start() != pos:
            break
        number, unit = float(m.group(1)), m.group(2)
        total += number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"'{value}' is not a duration; write it like 90s, 10m or 1h30m")
    return total


def human_size(n: int | float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def human_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m{s:02d}s"
