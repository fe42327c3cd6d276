"""End to end: the image lifecycle on real builds of the base image.

Four builds share one store (module fixture, about 2-3 minutes each under TCG, one qcow2 each):
  1.0.0  signed on build (`sign:` in the template), policy passes
  1.1.0  installs `tree`, runs an external scan; unsigned until `baker sign`
  1.2.0  leaves password SSH login on and a secret in /etc: recorded, but not promotable
  lifecycle-child 0.1, built on 1.0.0's qcow2: records 1.0.0 as its parent (ancestry)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT

pytestmark = pytest.mark.e2e

NAME = "lifecycle-demo"
CHILD = "lifecycle-child"
SECRET = "lc-s3cr3t-Vault-9931"
TEMPLATE = f"""
name: {NAME}
version: "{{{{ var.version }}}}"
variables:
  version: {{default: "0.0.1"}}
  extra_packages: {{default: ""}}
  password_login: {{default: "no"}}
  keep_secret: {{default: "no"}}
  api_token: {{sensitive: true, default: ""}}
source:
  cloud_image: {{url: "{{{{ env.BAKER_BASE_IMAGE }}}}"}}
machine: {{memory: 1024, disk_size: 4G}}
provisioners:
  - {{type: shell, script: {ROOT}/provisioners/wait-cloud-init.sh}}
  - type: shell
    name: harden sshd, maybe install extras
    environment:
      DEBIAN_FRONTEND: noninteractive
      PASSWORD_LOGIN: "{{{{ var.password_login }}}}"
      EXTRA: "{{{{ var.extra_packages }}}}"
      KEEP: "{{{{ var.keep_secret }}}}"
      API_TOKEN: "{{{{ var.api_token }}}}"
    inline:
      - printf 'PasswordAuthentication %s\\nKbdInteractiveAuthentication no\\n' "$PASSWORD_LOGIN"
        > /etc/ssh/sshd_config.d/10-policy.conf
      - if [ -n "$EXTRA" ]; then apt-get update -q && apt-get install -y -q --no-install-recommends $EXTRA; fi
      - if [ "$KEEP" = yes ]; then echo "token=$API_TOKEN" > /etc/app.conf; fi
exports:
  - {{type: qcow2}}
"""


def baker(*args: str | Path, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "baker", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        pytest.fail(f"baker {' '.join(map(str, args))} exited {proc.returncode}:\n"
                    f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def lc(base_image: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("lifecycle")
    store = work / "store"
    key = work / "signing-key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "release@example", "-f", str(key)],
                   check=True)
    store.mkdir()
    (store / "allowed_signers").write_text(
        f'release@example namespaces="baker-image" {(work / "signing-key.pub").read_text().split()[0]} '
        f'{(work / "signing-key.pub").read_text().split()[1]}\n')
    plain = work / "t.yaml"
    plain.write_text(TEMPLATE)
    signed = work / "t-signed.yaml"
    signed.write_text(TEMPLATE + f"sign: {{key: {key}}}\n")
    scanned = work / "t-scan.yaml"
    scanned.write_text(TEMPLATE + "scan: {command: [sh, -c, 'grep -c pkg:deb/ \"$BAKER_SBOM\"']}\n")
    builds = [("1.0.0", signed, []),
              ("1.1.0", scanned, ["-var", "extra_packages=tree"]),
              ("1.2.0", plain, ["-var", "password_login=yes", "-var", "keep_secret=yes"])]
    env = {**os.environ, "BAKER_BASE_IMAGE": str(base_image)}
    timings: dict[str, dict[str, float]] = {}
    for version, template, extra in builds:
        proc = subprocess.run(
            [sys.executable, "-m", "baker", "build", str(template), "-var", f"version={version}",
             "-var", f"api_token={SECRET}", *extra, "--store", str(store), "--output-dir",
             str(work / f"out-{version}"), "--json"],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800, check=False)
        events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0:
            failed = [e for e in events if e["event"] == "build_failed"]
            pytest.fail(f"build {version} failed ({proc.returncode}): {failed or proc.stderr[-3000:]}")
        timings[version] = {e["step"]: e["seconds"] for e in events if e["event"] == "step_done"}
    # a child built on the stored 1.0.0: its base image's digest is an artifact in the store
    child = work / "child.yaml"
    child.write_text(f"name: {CHILD}\nversion: '0.1'\n"
                     f"source: {{cloud_image: {{url: {work}/out-1.0.0/{NAME}.qcow2}}}}\n"
                     f"machine: {{memory: 1024}}\nprovisioners:\n"
                     f"  - {{type: shell, script: {ROOT}/provisioners/wait-cloud-init.sh}}\n"
                     "policy: {security_updates: false}\nexports: [{type: qcow2}]\n")
    proc = subprocess.run([sys.executable, "-m", "baker", "build", str(child), "--store", str(store),
                           "--output-dir", str(work / "out-child")], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=1800, check=False)
    if proc.returncode != 0:
        pytest.fail(f"child build failed ({proc.returncode}): {proc.stderr[-3000:]}")
    (work / "timings.json").write_text(json.dumps(timings, indent=2))
    return {"work": work, "store": store, "key": key, "timings": timings}


def versions(lc: dict) -> dict[str, dict]:
    out = json.loads(baker("images", "list", NAME, "--json", "--store", lc["store"]).stdout)
    return {v["version"]: v for v in out}


def test_builds_are_recorded_as_versions(lc: dict) -> None:
    vs = versions(lc)
    assert list(vs) == ["1.0.0", "1.1.0", "1.2.0"]
    assert vs["1.0.0"]["signed"] and not vs["1.1.0"]["signed"]
    assert vs["1.0.0"]["policy_passed"] is True and vs["1.1.0"]["policy_passed"] is True
    assert vs["1.1.0"]["scan_passed"] is True
    assert vs["1.2.0"]["policy_passed"] is False
    files = {f["path"]: f for f in vs["1.0.0"]["files"]}
    assert files[f"{NAME}.qcow2"]["role"] == "artifact"
    assert {"manifest.json", "SHA256SUMS", "sbom.cdx.json", "policy.json", "provenance.intoto.json",
            "provenance.dsse.json", "SHA256SUMS.sig", "build.log"} <= set(files)
    digest = files[f"{NAME}.qcow2"]["sha256"]
    blob = lc["store"] / "blobs" / "sha256" / digest[:2] / digest
    assert blob.stat().st_mode & 0o777 == 0o444  # read-only, content-addressed
    again = baker("images", "show", NAME, "latest", "--json", "--store", lc["store"])
    assert json.loads(again.stdout)["version"] == "1.2.0"


def test_policy_findings_of_the_bad_version(lc: dict) -> None:
    policy = json.loads((lc["work"] / "out-1.2.0" / "policy.json").read_text())
    status = {c["name"]: c for c in policy["checks"]}
    assert status["password_ssh_login"]["status"] == "fail"
    assert status["leftover_secrets"]["status"] == "fail"
    assert "/etc/app.conf" in status["leftover_secrets"]["items"]
    assert status["build_user"]["status"] == "pass" and status["empty_passwords"]["status"] == "pass"
    assert SECRET not in json.dumps(policy)
    good_policy = json.loads((lc["work"] / "out-1.0.0" / "policy.json").read_text())
    good = {c["name"]: c for c in good_policy["checks"]}
    assert all(c["status"] != "fail" for c in good.values()), good
    assert any("sshd" in item for item in good["listening_services"]["items"])


def test_sbom_is_cyclonedx_with_syft_style_purls(lc: dict) -> None:
    sbom = json.loads((lc["work"] / "out-1.0.0" / "sbom.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] == "1.6"
    purls = {c["name"]: c["purl"] for c in sbom["components"]}
    assert purls["openssh-server"].startswith("pkg:deb/debian/openssh-server@1:")
    assert "?arch=amd64" in purls["openssh-server"] and purls["openssh-server"].endswith("&distro=debian-12")


def test_sbom_diff_shows_the_extra_package(lc: dict) -> None:
    d = json.loads(baker("sbom", "diff", NAME, "1.0.0", "1.1.0", "--json", "--store", lc["store"]).stdout)
    assert "tree" in {p["name"] for p in d["added"]}
    text = baker("sbom", "diff", NAME, "1.0.0", "1.1.0", "--store", lc["store"]).stdout
    assert any(line.startswith("+ tree ") for line in text.splitlines())


def test_export_verifies_with_stock_tools_and_tampering_is_caught(lc: dict) -> None:
    dest = lc["work"] / "export-1.0.0"
    baker("images", "export", NAME, "1.0.0", dest, "--store", lc["store"])
    subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=dest, check=True, capture_output=True)
    with open(dest / "SHA256SUMS", "rb") as sums:
        ok = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(lc["store"] / "allowed_signers"),
                             "-I", "release@example", "-n", "baker-image",
                             "-s", str(dest / "SHA256SUMS.sig")],
                            stdin=sums, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "Good" in ok.stdout + ok.stderr
    trust = ["--allowed-signers", lc["store"] / "allowed_signers"]
    baker("verify", dest, *trust)
    baker("verify", NAME, "1.0.0", "--store", lc["store"])
    for victim in (f"{NAME}.qcow2", "sbom.cdx.json"):
        path = dest / victim
        original = path.read_bytes()[path.stat().st_size // 2: path.stat().st_size // 2 + 1]
        with open(path, "r+b") as f:
            f.seek(path.stat().st_size // 2)
            f.write(bytes([original[0] ^ 0x01]))
        bad = baker("verify", dest, *trust, check=False)
        assert bad.returncode == 1
        assert f"FAIL {victim}: sha256 mismatch" in bad.stdout
        with open(path, "r+b") as f:
            f.seek(path.stat().st_size // 2)
            f.write(original)
    baker("verify", dest / f"{NAME}.qcow2", *trust)


def test_promote_rollback_revoke_gc(lc: dict) -> None:
    store = ["--store", lc["store"]]
    unsigned = baker("promote", NAME, "1.1.0", "--channel", "prod", *store, check=False)
    assert unsigned.returncode == 3 and "not signed" in unsigned.stderr
    baker("sign", NAME, "1.2.0", "--key", lc["key"], *store)
    failing = baker("promote", NAME, "1.2.0", "--channel", "prod", *store, check=False)
    assert failing.returncode == 3 and "the policy failed" in failing.stderr
    first = baker("promote", NAME, "1.0.0", "--channel", "prod", *store)
    assert first.stdout.strip() == f"prod: {NAME}@1.0.0"
    baker("sign", NAME, "1.1.0", "--key", lc["key"], *store)
    second = baker("promote", NAME, "1.1.0", "--channel", "prod", *store)
    assert second.stdout.strip() == f"prod: {NAME}@1.1.0 (was 1.0.0)"
    back = baker("rollback", NAME, "--channel", "prod", *store)
    assert back.stdout.strip() == f"prod: {NAME}@1.0.0 (rolled back from 1.1.0)"
    history = baker("images", "history", NAME, *store).stdout.splitlines()
    assert [line.split()[2] for line in history] == ["promote", "promote", "rollback"]
    assert all(" by " in line for line in history)
    child = json.loads(baker("images", "show", CHILD, "0.1", "--json", *store).stdout)
    assert child["parent"] == f"{NAME}@1.0.0" and child["stale"] is None
    parent = json.loads(baker("images", "show", NAME, "1.0.0", "--json", *store).stdout)
    assert parent["children"] == [f"{CHILD}@0.1"]
    revoked = baker("revoke", NAME, "1.0.0", "--reason", "CVE in the kernel", *store)
    assert "channel prod still points at" in revoked.stdout
    assert f"stale child: {CHILD}@0.1" in revoked.stdout
    child = json.loads(baker("images", "show", CHILD, "0.1", "--json", *store).stdout)
    assert child["stale"] == f"parent {NAME}@1.0.0 revoked" and not child["revoked"]
    again = baker("promote", NAME, "1.0.0", "--channel", "staging", *store, check=False)
    assert again.returncode == 3 and "revoked" in again.stderr
    baker("promote", NAME, "1.1.0", "--channel", "prod", *store)
    baker("promote", NAME, "1.1.0", "--channel", "canary", *store)
    before = versions(lc)
    gc = baker("gc", "--keep", "1", *store).stdout
    after = versions(lc)
    assert set(after) == {"1.1.0", "1.2.0"}, gc  # 1.1.0: prod and last good; 1.2.0: newest
    gone = {f["sha256"] for f in before["1.0.0"]["files"]} - {f["sha256"] for v in after.values()
                                                               for f in v["files"]}
    assert gone and not any((lc["store"] / "blobs" / "sha256" / s[:2] / s).exists() for s in gone)
    baker("verify", NAME, "1.1.0", *store)
    exported = lc["work"] / "export-prod"
    baker("images", "export", NAME, "--channel", "prod", exported, *store)
    assert (exported / f"{NAME}.qcow2").is_file()


def test_lifecycle_steps_are_timed(lc: dict) -> None:
    for version, steps in lc["timings"].items():
        extra = sum(steps.get(s, 0) for s in ("sbom", "policy", "provenance", "store"))
        print(f"{version}: lifecycle steps {extra:.1f}s of {sum(steps.values()):.1f}s: "
              + ", ".join(f"{s}={steps.get(s, 0):.1f}"
                          for s in ("sbom", "policy", "scan", "provenance", "store")))
        assert {"sbom", "policy", "provenance", "store"} <= set(steps)
