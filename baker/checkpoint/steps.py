"""The build's checkpoint steps: pick the deepest valid checkpoint and boot from it, save a
checkpoint after each provisioner, and let the provisioners already in the checkpoint be skipped.

Checkpoints only ever back the build disk: generalize, the policy and the exports run on the boot
that follows, and every export is flattened (qemu-img convert writes no backing file).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from baker.checkpoint.cache import CheckpointCache, Layer, Pins, Resume, max_bytes_from_env
from baker.checkpoint.keys import Chain
from baker.state import BuildState
from baker.units import human_duration, human_size, parse_duration


@dataclass
class CheckpointRun:
    """What one build knows about checkpoints; on BuildState as `checkpoint`."""

    cache: CheckpointCache
    chain: Chain
    resume: Resume | None
    pins: Pins
    work: Path  # the active layer QEMU writes (in the cache folder)
    base: str  # the base copy's name in the cache folder: the first layer's backing
    saved: list[Layer] = field(default_factory=list)
    overlays: int = 0

    @property
    def depth(self) -> int:
        return self.resume.depth if self.resume else 0

    def skips(self, index: int) -> bool:
        return index <= self.depth

    def record(self) -> dict[str, Any]:
        """For the manifest and the provenance: which layers the image was built from, by digest."""
        def one(la: Layer) -> dict[str, Any]:
            return {"index": la.index, "step": la.step, "key": la.key, "layer": la.id, "sha256": la.sha256,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(la.created))}
        return {"resumed_after": self.depth, "chain": self.chain.keys,
                "resumed_from": [one(la) for la in self.resume.layers] if self.resume else [],
                "saved": [one(la) for la in self.saved]}


def _base_format(path: Path) -> str:
    from baker.sources.disk import probe_image

    return probe_image(path).format


class PrepareCheckpoints:
    """Find where to resume and put the build disk on the checkpoint cache's chain."""

    name = "checkpoints"

    def __init__(self, step_names: list[str]) -> None:
        self.step_names = step_names

    def run(self, s: BuildState) -> None:
        from baker.checkpoint.keys import chain

        t = s.template
        assert s.base_image is not None and s.base_sha256 is not None and s.fingerprint is not None
        cache = CheckpointCache()
        keys = chain(t, s.fingerprint, s.base_sha256, self.step_names)
        pins = Pins()
        run = None
        try:
            with cache.locked():
                base = cache.ensure_base(s.base_image, s.base_sha256, _base_format(s.base_image))
                pins.add(cache.root / base)
            resume = None
            if s.options.ignore_checkpoints:
                s.log.info("--no-checkpoints: building from the base image; fresh checkpoints are saved")
            else:
                resume = cache.find(keys.keys, deepest=keys.resumable, pins=pins,
                                    ttl=parse_duration(t.checkpoint_ttl))
            if resume is not None:
                top = resume.top
                work = cache.start_layer(top.file, "qcow2", pins)
                self._same_instance(s, cache, resume)
                oldest = min(la.created for la in resume.layers)
                s.log.info("resuming from checkpoint after provisioner %d (%s), saved %s ago%s",
                           top.index, top.step, human_duration(time.time() - top.created),
                           f" (its chain began {human_duration(time.time() - oldest)} ago)"
                           if oldest < top.created - 60 else "")
            else:
                from baker.units import parse_size

                work = cache.start_layer(base, base.rsplit(".", 1)[1], pins, parse_size(t.machine.disk_size))
                s.log.info("no usable checkpoint: provisioning from the base image")
            run = CheckpointRun(cache, keys, resume, pins, work, base)
        except BaseException:
            pins.release()
            raise
        s.checkpoint = run
        s.disk = run.work

    def _same_instance(self, s: BuildState, cache: CheckpointCache, resume: Resume) -> None:
        """Boot as the chain's first boot did (instance-id, keys): the guest sees a reboot."""
        from baker.checkpoint.session import install, load, session_path

        assert s.work_dir is not None
        session = load(session_path(cache.root, resume.layers[0].id))
        if session is None:
            s.log.info("the checkpoint has no saved session: the guest boots as a new cloud-init instance")
            return
        s.keys = install(session, s.work_dir)
        s.instance_id = session.instance_id

    def cleanup(self, s: BuildState) -> None:
        run = s.checkpoint
        if run is None:
            return
        run.work.unlink(missing_ok=True)
        run.pins.release()
        try:  # keep the cache within its size; another build's files are locked and stay
            run.cache.prune(max_bytes=max_bytes_from_env())
        except OSError as e:
            s.log.warning("could not prune the checkpoint cache: %s", e)


class WaitAfterResume:
    """The skipped provisioners usually waited for cloud-init (on a resumed boot it only does its
    per-boot work, or all of it when the checkpoint kept no session), so wait here."""

    name = "checkpoint-resume"

    def run(self, s: BuildState) -> None:
        if s.checkpoint is None or s.checkpoint.resume is None or s.comm is None:
            return
        s.comm.run("if command -v cloud-init >/dev/null; then cloud-init status --wait >/dev/null || true; "
                   "fi", timeout=parse_duration(s.template.communicator.ssh_timeout))

    def cleanup(self, s: BuildState) -> None:
        pass


class SaveCheckpoint:
    def __init__(self, index: int, step_name: str) -> None:
        self.index = index
        self.step_name = step_name
        self.name = f"checkpoint[{index}]"
        self.layer_id: str | None = None

    def run(self, s: BuildState) -> None:
        from baker.checkpoint.snapshot import add_overlay, frozen

        run = s.checkpoint
        if run is None or run.skips(self.index) or self.index > run.chain.resumable:
            return
        assert s.machine is not None and s.comm is not None
        started = time.monotonic()
        key = run.chain.keys[self.index]
        parent = run.saved[-1].file if run.saved else (run.resume.top.file if run.resume else None)
        layer_id = self.layer_id = run.cache.new_id(key)
        current = run.work
        holder: dict[str, Path] = {}

        def switch() -> None:
            sealed = run.cache.seal(current, layer_id)
            holder["sealed"] = sealed
            nxt = run.cache.start_layer(sealed.name, "qcow2", run.pins)
            holder["next"] = nxt
            run.overlays += 1
            add_overlay(s.machine, nxt, f"ckpt{run.overlays}")

        try:
            frozen(s.comm, switch)
        except BaseException:
            if "next" in holder and holder["next"].exists():  # QEMU may write it already: keep as work
                run.work = s.disk = holder["next"]
            elif "sealed" in holder:
                run.work = s.disk = holder["sealed"]
            raise
        run.work = s.disk = holder["next"]
        layer = run.cache.publish(Layer(id=layer_id, key=key, parent=parent or run.base,
                                        template=s.template.name, index=self.index, step=self.step_name,
                                        created=time.time(), sha256="", size=0))
        if parent is None and s.keys is not None and s.instance_id:  # the first layer of a new chain
            from baker.checkpoint.session import save, session_path

            save(session_path(run.cache.root, layer.id), s.keys, s.instance_id)
        run.saved.append(layer)
        s.log.info("checkpoint after provisioner %d saved (%s) in %.1fs", self.index, human_size(layer.size),
                   time.monotonic() - started)

    def cleanup(self, s: BuildState) -> None:
        run = s.checkpoint
        if run is not None and self.layer_id is not None:
            # a layer sealed but not published (the build failed mid-checkpoint) is no checkpoint
            p = run.cache.root / f"{self.layer_id}.qcow2"
            if not p.with_suffix(".json").exists():
                p.unlink(missing_ok=True)

