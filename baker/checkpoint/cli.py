"""`baker cache list` and `baker cache prune` for the checkpoint cache (the CLI calls these)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

from baker.checkpoint.cache import CheckpointCache, Entry
from baker.units import human_duration, human_size


def describe(e: Entry, now: float) -> str:
    flags = [*(["in use"] if e.in_use else []), *([f"backs {e.children}"] if e.children else [])]
    tail = f"  ({', '.join(flags)})" if flags else ""
    if e.layer is None:
        what = "base image copy" if e.path.name.startswith("base-") else "a running build's disk"
        return f"{e.path.name[:40]:<40}  {human_size(e.size):>10}  {what}{tail}"
    la = e.layer
    return (f"{la.template[:24]:<24} after {la.step[:40]:<40}  {human_size(e.size):>10}  "
            f"saved {human_duration(now - la.created)} ago{tail}")


def print_list(*, as_json: bool = False, cache: CheckpointCache | None = None) -> None:
    cache = cache or CheckpointCache()
    entries = cache.entries()
    if as_json:
        print(json.dumps([{"path": str(e.path), "size": e.size, "last_used": e.last_used,
                           "in_use": e.in_use, "backs": e.children,
                           "layer": asdict(e.layer) if e.layer else None} for e in entries], indent=2))
        return
    now = time.time()
    for e in sorted(entries, key=lambda e: (e.layer is None, e.layer.template if e.layer else "",
                                            e.layer.index if e.layer else 0)):
        print(describe(e, now))
    layers = sum(1 for e in entries if e.layer is not None)
    print(f"{layers} checkpoints, {human_size(sum(e.size for e in entries))} in {cache.root}")


def prune(*, older_than: float | None, max_bytes: int | None, everything: bool,
          cache: CheckpointCache | None = None) -> list[str]:
    cache = cache or CheckpointCache()
    return [str(p) for p in cache.prune(older_than=older_than, max_bytes=max_bytes, everything=everything)]
