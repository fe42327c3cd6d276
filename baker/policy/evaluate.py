"""Run the guest checks and judge them against the template's `policy:`.

The checks look at what generalize will leave, not at the running build VM: generalize removes the
build user, its key and logs at shutdown, so those count as gone, and anything else that still holds
the build key or a secret is a finding.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from baker.errors import BakerError
from baker.template.model import POLICY_CHECKS, GeneralizeConfig, PolicyConfig

SCRIPT = Path(__file__).with_name("guest-checks.sh")


@dataclass
class Check:
    name: str
    status: str  # pass | fail | warn | info | skip
    detail: str
    items: list[str] = field(default_factory=list)
    ignored: bool = False


@dataclass
class PolicyResult:
    checks: list[Check]
    fail_on: list[str]

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail" and not c.ignored]

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def fails_build(self) -> list[Check]:
        return [c for c in self.failed if "all" in self.fail_on or c.name in self.fail_on]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "evaluated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "fail_on": self.fail_on,
                "checks": [{"name": c.name, "status": c.status, "detail": c.detail, "items": c.items,
                            "ignored": c.ignored} for c in self.checks]}


def parse(text: str, cfg: PolicyConfig) -> PolicyResult:
    checks: dict[str, Check] = {}
    items: dict[str, list[str]] = {}
    for line in text.splitlines():
        f = line.split("\t")
        if f[0] == "CHECK" and len(f) >= 4:
            checks[f[1]] = Check(f[1], f[2], "\t".join(f[3:]), ignored=f[1] in cfg.ignore)
        elif f[0] == "ITEM" and len(f) >= 3:
            items.setdefault(f[1], []).append("\t".join(f[2:]))
    for name, found in items.items():
        if name in checks:
            checks[name].items = found
    for name in POLICY_CHECKS:  # a check that printed nothing did not run: that is a failure
        checks.setdefault(name, Check(name, "fail", "the check did not report (script error?)",
                                      ignored=name in cfg.ignore))
    return PolicyResult([checks[n] for n in POLICY_CHECKS] + [c for n, c in checks.items()
                                                              if n not in POLICY_CHECKS], list(cfg.fail_on))


def command(cfg: PolicyConfig, gen: GeneralizeConfig, username: str, build_key: str) -> str:
    env = {
        "BAKER_POLICY_USER": username,
        "BAKER_POLICY_KEY": build_key.split()[1] if len(build_key.split()) > 1 else build_key,
        "BAKER_POLICY_GEN_USER": "1" if gen.enabled and gen.remove_build_user else "0",
        "BAKER_POLICY_GEN_LOGS": "1" if gen.enabled and gen.logs else "0",
        "BAKER_POLICY_SECURITY": "1" if cfg.security_updates else "0",
        "BAKER_POLICY_MAX_SECURITY": "" if cfg.max_security_updates is None
        else str(cfg.max_security_updates),
        "BAKER_POLICY_PORTS": " ".join(str(p) for p in cfg.allowed_ports or []),
    }
    assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return ('if [ "$(id -u)" = 0 ]; then set --; else set -- sudo -n; fi; '
            f'"$@" env {assigns} /bin/sh -c {shlex.quote(SCRIPT.read_text())} baker-policy')


def evaluate(run: Callable[..., int], cfg: PolicyConfig, gen: GeneralizeConfig, username: str,
             build_key: str, secrets: list[str]) -> PolicyResult:
    """`run`: the communicator's run(command, stdout_cb=..., input=...) -> exit status."""
    lines: list[str] = []
    # one secret per line for grep -F -f; multi-line values are searched line by line
    wanted = sorted({part for s in secrets for part in s.splitlines() if len(part) >= 4})
    rc = run(command(cfg, gen, username, build_key), stdout_cb=lines.append,
             input="".join(f"{s}\n" for s in wanted))
    if rc != 0:
        raise BakerError(f"the policy checks failed to run in the guest (exit {rc})",
                         hint="see the build log; policy.enabled: false skips them")
    return parse("\n".join(lines), cfg)
