"""A build's fingerprint: one digest over everything that decides what the image contains, kept
as named parts so a rebuild can say in one line which inputs changed.

Not inputs, on purpose: where the base image is fetched from (its digest is the input), the
version string (demo templates stamp it with timestamp()), comments and formatting of the template
file and of the fragments it includes (their meaning counts: a fragment is listed by its data), and
the QEMU version. Secret values count by an HMAC under a
host-local key, so the manifest never holds a guessable digest of a password.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

import baker
from baker.inputs import Input, local_files
from baker.paths import cache_root
from baker.template.include import fragment_meaning
from baker.template.model import Template

# keys of `template_to_dict` that are not the image's inputs (see the module docstring)
_NOT_INPUTS = frozenset({"version", "path", "values", "sensitive_values", "sha256", "var_files", "post",
                         "checkpoints", "checkpoint_ttl",
                         # where values came from; what they mean is in the other parts
                         "include", "included_files", "locals", "sensitive_locals"})
# where the base comes from and how it is spelled is not an input: its digest ("base image") is
_BASE_LOCATION = {"cloud_image": ("url", "checksum"), "iso": ("iso_url", "iso_urls", "iso_checksum")}


def _settled(obj: Any) -> Any:
    """Drop unset values (None, False, "", empty lists and maps) at every level, so a baker that
    adds an optional key does not make every existing image look changed."""
    if isinstance(obj, dict):
        kept = {k: _settled(v) for k, v in obj.items()}
        return {k: v for k, v in kept.items() if v not in (None, False, "", [], {})}
    if isinstance(obj, list):
        return [_settled(v) for v in obj]
    return obj


def _without_base_location(source: Any) -> Any:
    if not isinstance(source, dict):
        return source
    out = dict(source)
    for kind, keys in _BASE_LOCATION.items():
        if isinstance(out.get(kind), dict):
            out[kind] = {k: v for k, v in out[kind].items() if k not in keys}
    return out


@dataclass(frozen=True)
class Fingerprint:
    digest: str
    parts: dict[str, str] = field(default_factory=dict)  # label -> digest ("" when unknowable)
    unknown: str = ""  # why the inputs cannot be pinned (a remote base without checksum), or ""

    def to_dict(self) -> dict[str, Any]:
        return {"fingerprint": self.digest, "parts": dict(self.parts), **({"unknown": self.unknown}
                                                                         if self.unknown else {})}

    @classmethod
    def from_dict(cls, data: Any) -> Fingerprint | None:
        if not isinstance(data, dict) or not isinstance(data.get("fingerprint"), str):
            return None
        parts = data.get("parts") if isinstance(data.get("parts"), dict) else {}
        return cls(data["fingerprint"], {str(k): str(v) for k, v in parts.items()},
                   str(data.get("unknown", "")))


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _secret_key() -> bytes:
    path = cache_root() / "fingerprint.key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another build made it first
            return path.read_bytes()
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key


def _label(inp: Input) -> str:
    """file:///work/x/provisioners/a.sh -> provisioners/a.sh when near the current directory."""
    path = str(inp.path or inp.uri)
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("../../") else rel


def base_identity(t: Template) -> tuple[str, str]:
    """(digest, why-unknown) of the base the build will fetch — without downloading the image.

    A pinned checksum is the identity; a checksum file is read now (so a new upstream image shows
    up); a local file without a checksum is hashed (memoised); a remote one without is unknowable.
    """
    from baker.checksum import Checksum, ChecksumFileRef, parse_checksum
    from baker.sources.cache import DownloadCache, local_path
    from baker.sources.source import resolve_checksum, source_checksum_spec, source_urls

    src = t.source.cloud_image or t.source.iso
    if src is None:
        return "", "the template has no source"
    base_dir = t.path.parent
    url = source_urls(src, base_dir)[0]
    spec = source_checksum_spec(src, base_dir)
    parsed = parse_checksum(spec)
    if isinstance(parsed, Checksum) and parsed.pinned:
        return f"{parsed.algo}:{parsed.hexdigest}", ""
    if isinstance(parsed, ChecksumFileRef):
        c = resolve_checksum(spec, url, DownloadCache())
        return f"{c.algo}:{c.hexdigest}", ""
    path = local_path(url)
    if path is not None:
        from baker.digests import cached_digest

        return f"sha256:{cached_digest(path)}", ""
    return "", f"the base {url} has no checksum, so a change upstream cannot be seen"


def rendered_template(t: Template) -> dict[str, Any]:
    """The template's meaning as the fingerprint hashes it (unset keys and the base's location
    dropped); checkpoint keys hash slices of this same dict, so the two never disagree."""
    from baker.template.loader import template_to_dict

    rendered = _settled(template_to_dict(t))
    rendered["source"] = _without_base_location(rendered.get("source"))
    return rendered


def part_digest(obj: Any) -> str:
    """The digest of one fingerprint part (canonical JSON, sha256)."""
    return _digest(obj)


def fingerprint(t: Template) -> Fingerprint:
    """The fingerprint of a loaded template as it would build now; never downloads an image."""
    parts: dict[str, str] = {}
    rendered = rendered_template(t)
    for key in sorted(rendered):
        if key not in _NOT_INPUTS:
            parts[f"template {key}"] = _digest(rendered[key])
    key = _secret_key() if t.sensitive_values else b""
    for name, value in sorted(t.values.items()):
        if name in t.sensitive_values:
            parts[f"variable {name}"] = "hmac:" + hmac.new(key, json.dumps(value, default=str).encode(),
                                                           "sha256").hexdigest()
        else:
            parts[f"variable {name}"] = _digest(value)
    unknown = ""
    try:
        for inp in local_files(t)[1:]:  # not the template's bytes: its rendering (above) is the input
            if inp.kind == "include" and inp.path is not None:  # a fragment by its data, like the template
                parts[f"include {_label(inp)}"] = _digest(fragment_meaning(inp.path))
            else:
                parts[f"{inp.kind} {_label(inp)}"] = inp.sha256
    except OSError as e:
        unknown = f"an input cannot be read: {e.filename or e}: {e.strerror or e}"
    try:
        base, why = base_identity(t)
    except Exception as e:  # the build's fetch step reports it properly
        base, why = "", f"cannot read the base's checksum: {e}"
    parts["base image"] = base
    parts["baker version"] = baker.__version__
    unknown = unknown or why
    digest = _digest(sorted(parts.items()))
    # an unknowable input never matches anything recorded, so the build always runs
    return Fingerprint(f"unknown:{digest}" if unknown else digest, parts, unknown)


def changed_parts(old: Fingerprint, new: Fingerprint) -> list[str]:
    """Labels whose digest differs, plus those only one side has."""
    labels = sorted(set(old.parts) | set(new.parts))
    return [k for k in labels if old.parts.get(k) != new.parts.get(k)]


def describe_changes(old: Fingerprint, new: Fingerprint, limit: int = 6) -> str:
    changes = []
    for k in changed_parts(old, new):
        if k not in new.parts:
            changes.append(f"{k} (removed)")
        elif k not in old.parts:
            changes.append(f"{k} (new)")
        else:
            changes.append(k)
    shown = ", ".join(changes[:limit]) + (f" and {len(changes) - limit} more" if len(changes) > limit else "")
    return shown or "nothing recorded differs (the fingerprint scheme changed)"


