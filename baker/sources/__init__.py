"""Base images and ISOs: verified downloads into a content-addressed cache, then build disks."""

from __future__ import annotations

from baker.checksum import Checksum, ChecksumFileRef, parse_checksum
from baker.sources.cache import CacheEntry, DownloadCache, DownloadCancelled, DownloadError
from baker.sources.disk import ImageInfo, create_empty_disk, prepare_build_disk, probe_image
from baker.sources.source import fetch_source, resolve_checksum, source_urls

__all__ = [
    "CacheEntry",
    "Checksum",
    "ChecksumFileRef",
    "DownloadCache",
    "DownloadCancelled",
    "DownloadError",
    "ImageInfo",
    "create_empty_disk",
    "fetch_source",
    "parse_checksum",
    "prepare_build_disk",
    "probe_image",
    "resolve_checksum",
    "source_urls",
]
