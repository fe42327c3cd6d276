"""Where a build's base comes from, checked at load time: URL schemes, local files, a pinned checksum.

A typo in a URL scheme (`htp://`) or a base image path that does not exist would otherwise surface only
when the build reaches fetch-source; a source without a checksum is accepted (as `none`) but warned
about, because an unpinned download makes the image unreproducible. `--strict` turns warnings into
errors.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

from baker.errors import TemplateError
from baker.template.model import CloudImageSource, IsoSource, Template
from baker.template.yamlnodes import Problems, did_you_mean

SCHEMES = ("http", "https", "file")
_SCHEME_HINT = "use http://, https://, file:// or a local path (relative to the template's folder)"
# the keys that can set a source's checksum (field name first, then its aliases)
_CHECKSUM_KEYS = {CloudImageSource: ("checksum", "iso_checksum"), IsoSource: ("iso_checksum", "checksum")}


def check_sources(t: Template, where, problems: Problems) -> list[TemplateError]:
    """Add errors for bad URLs and missing local files to `where`; return the warnings."""
    warnings = Problems(problems.main_file)
    warnings.secrets = problems.secrets
    template_dir = t.path.parent
    for path, src in (("source.cloud_image", t.source.cloud_image), ("source.iso", t.source.iso)):
        if src is None or problems.has_error_under(path):
            continue
        if isinstance(src, CloudImageSource):
            urls = [(f"{path}.url", src.url)]
        else:
            urls = ([(f"{path}.iso_url", src.iso_url)] if src.iso_url else []) + \
                   [(f"{path}.iso_urls[{i}]", u) for i, u in enumerate(src.iso_urls)]
        for upath, url in urls:
            _check_location(url, upath, template_dir, where, what="the base image")
        key, *aliases = _CHECKSUM_KEYS[type(src)]
        cpath = f"{path}.{key}"
        spec = getattr(src, key).strip()
        if not any(f"{path}.{k}" in t.marks for k in (key, *aliases)):
            warnings.add(f"no checksum: {urls[0][1] if urls else 'the source'} is used without verifying it",
                         where(path), cpath,
                         f"pin it ({key}: sha256:<hex>, or file:<url of a SHA256SUMS file>); write "
                         f"{key}: none to accept an unverified base and silence this warning")
        elif spec.lower().startswith("file:") and not problems.has_error_under(cpath):
            _check_location(spec[5:], cpath, template_dir, where, what="the checksum file")
    return warnings.errors


def _check_location(url: str, path: str, template_dir: Path, where, *, what: str) -> None:
    if not url.strip():
        where.error(path, f"{path.rsplit('.', 1)[-1]} is empty", "give a URL or a local path")
        return
    if "://" in url:
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            shown = parts.scheme or url.split("://", 1)[0]
            where.error(path, f"unknown URL scheme '{shown}://'{did_you_mean(scheme, SCHEMES)}", _SCHEME_HINT)
            return
        if scheme in ("http", "https"):
            if not parts.hostname:
                where.error(path, f"'{url}' has no host name", "e.g. https://example.com/image.qcow2")
            return
        if parts.netloc not in ("", "localhost"):
            where.error(path, f"file:// URLs name a local file; '{url}' names host '{parts.netloc}'",
                        "write file:///absolute/path (three slashes)")
            return
        local = Path(urllib.parse.unquote(parts.path))
    else:
        local = Path(os.path.expanduser(url))
        if not local.is_absolute():
            local = template_dir / local
    if not local.exists():
        where.error(path, f"{what} does not exist: {local}",
                    f"relative paths are relative to the template's folder {template_dir}")
    elif local.is_dir():
        where.error(path, f"{what} is a directory, not a file: {local}")
