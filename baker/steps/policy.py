"""The built-in policy in the guest before shutdown, and the external scanner on the host after export."""

from __future__ import annotations

import json
from typing import Any

from baker.errors import BakerError
from baker.fsutil import atomic_write
from baker.state import BuildState


class EvaluatePolicy:
    name = "policy"

    def run(self, s: BuildState) -> None:
        from baker.policy import POLICY_FILE
        from baker.policy.evaluate import evaluate

        assert s.staging_dir is not None
        t = s.template
        secrets = [str(v) for n in t.sensitive_values for v in _leaves(t.values.get(n))
                   if v not in (None, "")]
        result = evaluate(lambda cmd, **kw: s.comm.run(cmd, timeout=900, **kw), t.policy, t.generalize,
                          t.communicator.ssh_username, getattr(s.keys, "client_public", "") or "", secrets)
        atomic_write(s.staging_dir / POLICY_FILE, json.dumps(result.to_dict(), indent=2) + "\n")
        for c in result.checks:
            level = s.log.warning if c.status in ("fail", "warn") else s.log.info
            level("policy %s: %s: %s%s", c.name, c.status, c.detail, " (ignored)" if c.ignored else "")
            for item in c.items[:20]:
                level("  %s", item)
        if result.fails_build:
            why = "; ".join(f"{c.name}: {c.detail}" for c in result.fails_build)
            raise BakerError(f"policy failed: {why}",
                             hint="fix the image, or drop the check from policy.fail_on (the version is "
                                  "then recorded as not promotable)")
        if not result.passed:
            s.log.warning("policy failed (%s): the version will not be promotable",
                          ", ".join(c.name for c in result.failed))

    def cleanup(self, s: BuildState) -> None:
        pass


class RunScan:
    name = "scan"

    def run(self, s: BuildState) -> None:
        from baker.policy.scan import SCAN_FILE, run_scan
        from baker.sbom import SBOM_FILE

        assert s.staging_dir is not None and s.template.scan is not None
        sbom = s.staging_dir / SBOM_FILE
        image = next((f.path for r in s.exports for f in r.files if f.kind == "disk"), None)
        result = run_scan(s.template.scan, sbom=sbom if sbom.exists() else None, image=image,
                          output_dir=s.staging_dir)
        atomic_write(s.staging_dir / SCAN_FILE, json.dumps(result.to_dict(), indent=2) + "\n")
        s.log.info("scan exited with %d in %.1fs", result.exit_code, result.seconds)
        if not result.passed:
            if s.template.scan.fail_build:
                raise BakerError(f"the scanner exited with {result.exit_code}",
                                 hint="see scan.json / the build log; scan.fail_build: false only records it")
            s.log.warning("scan failed: the version will not be promotable")

    def cleanup(self, s: BuildState) -> None:
        pass


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    if isinstance(value, list | tuple):
        return [x for v in value for x in _leaves(v)]
    return [value]
