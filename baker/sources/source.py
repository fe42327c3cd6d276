"""Glue from the template's source blocks to the cache: which URLs, which checksum, where paths start.

The one fetch path: the build's fetch step and API callers both go through `fetch_source`.
"""

from __future__ import annotations

import threading
from pathlib import Path

from baker.checksum import NONE, Checksum, ChecksumFileRef, lookup_sums, parse_checksum
from baker.errors import BakerError
from baker.sources.cache import DownloadCache, Progress, local_path
from baker.template.model import CloudImageSource, IsoSource


def _anchor(url: str, base_dir: Path | None) -> str:
    """Relative local paths are relative to the template's folder, like every other path in it."""
    path = local_path(url)
    if path is None or base_dir is None or path.is_absolute() or url.startswith("file:"):
        return url
    return str(base_dir / path)


def source_urls(src: CloudImageSource | IsoSource, base_dir: Path | None = None) -> list[str]:
    """The URLs to try in order: `url`, or `iso_url` followed by the `iso_urls` mirrors."""
    if isinstance(src, CloudImageSource):
        urls = [src.url]
    else:
        urls = ([src.iso_url] if src.iso_url else []) + [u for u in src.iso_urls if u != src.iso_url]
    if not urls:
        raise BakerError("the source has no URL", hint="set iso_url (or iso_urls)")
    return [_anchor(u, base_dir) for u in urls]


def source_checksum_spec(src: CloudImageSource | IsoSource, base_dir: Path | None = None) -> str:
    spec = src.checksum if isinstance(src, CloudImageSource) else src.iso_checksum
    parsed = parse_checksum(spec)
    if isinstance(parsed, ChecksumFileRef):
        return f"file:{_anchor(parsed.location, base_dir)}"
    return spec


def resolve_checksum(spec: str, url: str, cache: DownloadCache) -> Checksum:
    """A concrete Checksum for `url`; for file: refs the SUMS file is fetched (through the cache) and read.

    The SUMS file is itself unpinned: it is revalidated each time, and an offline run falls back to
    the last copy seen so a cached image still builds without network.
    """
    parsed = parse_checksum(spec)
    if isinstance(parsed, Checksum):
        return parsed
    location = parsed.location
    path = cache.fetch([location], NONE, warn_unpinned=False, stale_ok=True)
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as e:
        raise BakerError(f"cannot read checksum file {path}: {e.strerror}") from e
    return lookup_sums(text, url, source=location)


def fetch_source(
    src: CloudImageSource | IsoSource,
    cache: DownloadCache,
    *,
    base_dir: Path | None = None,
    progress: Progress | None = None,
    timeout: float = 60,
    cancel: threading.Event | None = None,
) -> Path:
    """The verified local file for a cloud image or ISO source (cached, or a local path in place)."""
    urls = source_urls(src, base_dir)
    checksum = resolve_checksum(source_checksum_spec(src, base_dir), urls[0], cache)
    return cache.fetch(urls, checksum, progress=progress, timeout=timeout, cancel=cancel)
