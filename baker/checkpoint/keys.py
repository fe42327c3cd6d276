"""The checkpoint key chain: key 0 is the machine before any provisioner, key k the disk after
provisioner k. Each key hashes the previous one with step k's rendered definition and input files.

The parts come from the build fingerprint (baker.incremental) and baker.inputs, so a checkpoint is
valid exactly when the fingerprint would say that these inputs did not change.
"""

from __future__ import annotations

from dataclasses import dataclass

from baker.incremental.fingerprint import Fingerprint, part_digest, rendered_template
from baker.inputs import media_files, provisioner_inputs
from baker.template.model import FileProvisioner, ShellLocalProvisioner, Template

CHAIN_VERSION = "baker-checkpoint-1"
# fingerprint parts that decide the disk before the first provisioner (the template's other keys,
# exports, policy, post, ..., act later and never reach a checkpoint)
_ROOT_TEMPLATE_KEYS = ("template name", "template source", "template machine", "template communicator")


@dataclass(frozen=True)
class Chain:
    keys: list[str]  # keys[k]: the disk after provisioner k (keys[0]: before the first)
    names: list[str]  # names[k-1]: provisioner k's step name, for messages
    resumable: int  # the deepest k a build may resume after (host-side steps cannot be skipped)


def root_key(t: Template, fp: Fingerprint, base_sha256: str) -> str:
    """The booted machine before provisioners: base bytes, source/machine/communicator, media (the
    CD, the HTTP folder), sensitive variables (by HMAC: masked in the rendered template), baker."""
    parts = {k: v for k, v in fp.parts.items()
             if k in _ROOT_TEMPLATE_KEYS or k == "baker version"
             or (k.startswith("variable ") and v.startswith("hmac:"))}
    media = [inp.sha256 for inp in media_files(t)]
    return part_digest([CHAIN_VERSION, f"sha256:{base_sha256}", sorted(parts.items()), media])


def step_key(previous: str, definition: object, inputs: list[str]) -> str:
    return part_digest([previous, definition, inputs])


def host_side(p: object) -> bool:
    """A step whose effects live on the host: resuming past it would lose them, so it always runs."""
    return isinstance(p, ShellLocalProvisioner) or (isinstance(p, FileProvisioner)
                                                    and p.direction == "download")


def chain(t: Template, fp: Fingerprint, base_sha256: str, names: list[str]) -> Chain:
    rendered = rendered_template(t).get("provisioners", [])
    keys = [root_key(t, fp, base_sha256)]
    resumable = len(t.provisioners)
    for i, p in enumerate(t.provisioners):
        keys.append(step_key(keys[-1], rendered[i], [inp.sha256 for inp in provisioner_inputs(p)]))
        if host_side(p) and resumable == len(t.provisioners):
            resumable = i
    return Chain(keys, names, resumable)
