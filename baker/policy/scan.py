"""The pluggable external scanner (`scan:`): a user's command (grype, trivy, ...) run on the host on
the SBOM and the exported image; its exit status and output are recorded in scan.json."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baker.errors import BakerError
from baker.proc import run
from baker.secrets import MASKER
from baker.template.model import ScanConfig
from baker.units import parse_duration

SCAN_FILE = "scan.json"
_MAX_REPORT = 1 << 20


@dataclass
class ScanResult:
    command: list[str]
    exit_code: int
    seconds: float
    stdout: str
    stderr: str

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    def to_dict(self) -> dict[str, Any]:
        return MASKER.mask_obj({"passed": self.passed, "command": self.command, "exit_code": self.exit_code,
                                "seconds": round(self.seconds, 2), "report": self.stdout[-_MAX_REPORT:],
                                "stderr": self.stderr[-_MAX_REPORT:]})


def run_scan(cfg: ScanConfig, *, sbom: Path | None, image: Path | None, output_dir: Path) -> ScanResult:
    env = {"BAKER_SBOM": str(sbom or ""), "BAKER_IMAGE": str(image or ""),
           "BAKER_OUTPUT_DIR": str(output_dir)}
    start = time.monotonic()
    try:
        proc = run(cfg.command, check=False, env=env, cwd=output_dir, timeout=parse_duration(cfg.timeout),
                   hint="scan.command is run on the host; is the scanner installed?")
    except BakerError as e:
        raise BakerError(f"the scanner could not run: {e.message}", hint=e.hint) from e
    return ScanResult(list(cfg.command), proc.returncode, time.monotonic() - start, proc.stdout or "",
                      proc.stderr or "")
