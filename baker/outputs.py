"""What a build will write, known before it runs: the exporters' VM description and the file names.

The export step and `baker deps` both ask here, so a Make rule names exactly the files a build makes.
"""

from __future__ import annotations

from pathlib import Path

from baker.export import VMSpec, plan_outputs
from baker.template.model import Template
from baker.units import parse_size

MANIFEST = "manifest.json"


def vm_spec(t: Template, version: str | None = None) -> VMSpec:
    m = t.machine
    return VMSpec(name=t.name, cpus=m.cpus, memory_mb=m.memory, disk_size=parse_size(m.disk_size),
                  firmware=m.firmware, machine_type=m.machine_type, disk_interface=m.disk_interface,
                  version=version or t.version or "0.0.0", description=t.description)


def planned_files(t: Template, output_dir: Path) -> list[Path]:
    """The artifacts every build of this template writes under the same name, then manifest.json.

    A name that carries the version (a Vagrant box of a timestamped version) is left out: it would
    be a Make target that never exists.
    """
    specs = [(e.type, e.options) for e in t.exports]
    names = plan_outputs(vm_spec(t), specs)
    stable = set(plan_outputs(vm_spec(t, version="0.0.0-other"), specs))
    return [output_dir / n for n in names if n in stable] + [output_dir / MANIFEST]
