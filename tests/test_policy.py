"""The policy's judgement of the guest's findings, the scan runner, and the template's lifecycle keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from baker.errors import BakerError, TemplateError, TemplateErrors
from baker.policy.evaluate import SCRIPT, command, evaluate, parse
from baker.policy.scan import run_scan
from baker.proc import run
from baker.template import load_template
from baker.template.model import GeneralizeConfig, PolicyConfig, ScanConfig

ALL_PASS = "".join(f"CHECK\t{n}\tpass\tok\n" for n in
                   ("password_ssh_login", "empty_passwords", "build_user", "leftover_secrets",
                    "security_updates", "listening_services"))


def test_all_pass() -> None:
    r = parse(ALL_PASS, PolicyConfig())
    assert r.passed and not r.fails_build and r.to_dict()["passed"] is True


def test_a_failure_makes_it_unpromotable_and_fail_on_fails_the_build() -> None:
    text = ALL_PASS.replace("empty_passwords\tpass\tok", "empty_passwords\tfail\t1 account") + \
        "ITEM\tempty_passwords\tguest\n"
    r = parse(text, PolicyConfig())
    assert not r.passed and not r.fails_build
    assert r.failed[0].items == ["guest"]
    assert [c.name for c in parse(text, PolicyConfig(fail_on=["empty_passwords"])).fails_build] == \
        ["empty_passwords"]
    assert parse(text, PolicyConfig(fail_on=["all"])).fails_build
    assert parse(text, PolicyConfig(fail_on=["build_user"])).fails_build == []
    ignored = parse(text, PolicyConfig(ignore=["empty_passwords"]))
    assert ignored.passed and ignored.checks[1].ignored


def test_a_check_that_did_not_report_fails() -> None:
    r = parse("CHECK\tpassword_ssh_login\tpass\tok\n", PolicyConfig())
    assert not r.passed
    assert r.checks[1].detail == "the check did not report (script error?)"


def test_command_passes_config_and_never_the_secrets() -> None:
    cmd = command(PolicyConfig(max_security_updates=2, allowed_ports=[22, 80]), GeneralizeConfig(), "baker",
                  "ssh-ed25519 AAAAkey baker@build")
    assert "BAKER_POLICY_KEY=AAAAkey" in cmd and "BAKER_POLICY_PORTS='22 80'" in cmd
    assert "BAKER_POLICY_MAX_SECURITY=2" in cmd and "BAKER_POLICY_GEN_USER=1" in cmd
    seen: dict = {}

    def fake_run(cmd: str, stdout_cb, input: str) -> int:
        seen.update(cmd=cmd, input=input)
        for line in ALL_PASS.splitlines():
            stdout_cb(line)
        return 0

    secrets = ["s3cret-value", "ab", "x\nline2"]
    r = evaluate(fake_run, PolicyConfig(), GeneralizeConfig(), "baker", "", secrets)
    assert r.passed
    assert "s3cret-value" not in seen["cmd"] and seen["input"] == "line2\ns3cret-value\n"
    with pytest.raises(BakerError, match="exit 2"):
        evaluate(lambda *a, **k: 2, PolicyConfig(), GeneralizeConfig(), "baker", "", [])


def test_guest_script_is_valid_posix_sh() -> None:
    run(["sh", "-n", str(SCRIPT)])


def test_scan_records_exit_status_and_output(tmp_path: Path) -> None:
    sbom = tmp_path / "sbom.json"
    sbom.write_text("{}")
    ok = run_scan(ScanConfig(command=["sh", "-c", 'echo "scanned $BAKER_SBOM"']), sbom=sbom, image=None,
                  output_dir=tmp_path)
    assert ok.passed and ok.stdout.strip() == f"scanned {sbom}"
    bad = run_scan(ScanConfig(command=["sh", "-c", "echo CVE-1 >&2; exit 4"]), sbom=sbom, image=None,
                   output_dir=tmp_path)
    assert not bad.passed and bad.to_dict()["exit_code"] == 4 and "CVE-1" in bad.stderr
    with pytest.raises(BakerError, match="the scanner could not run: no-such-scanner: command not found"):
        run_scan(ScanConfig(command=["no-such-scanner"]), sbom=sbom, image=None, output_dir=tmp_path)
    with pytest.raises(BakerError, match="the scanner could not run"):
        run_scan(ScanConfig(command=["sleep", "5"], timeout="100ms"), sbom=sbom, image=None,
                 output_dir=tmp_path)


BASE = "name: t\nsource:\n  cloud_image:\n    url: https://example.org/base.qcow2\n"


def errors(tmp_path: Path, text: str) -> str:
    p = tmp_path / "t.yaml"
    p.write_text(BASE + text)
    with pytest.raises((TemplateError, TemplateErrors)) as exc:
        load_template(p, environ={})
    return str(exc.value)


@pytest.mark.usefixtures("fake_exporters")  # a stand-in qcow2-only registry
def test_template_lifecycle_sections(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text("x")
    p = tmp_path / "ok.yaml"
    p.write_text(BASE + "policy: {fail_on: [all], ignore: [security_updates], allowed_ports: [22]}\n"
                 "scan: {command: [grype, sbom], fail_build: true}\nsign: {key: k}\n")
    t = load_template(p, environ={})
    assert t.policy.fail_on == ["all"] and t.scan.command == ["grype", "sbom"] and t.sign.key == str(key)
    assert load_template(tmp_path / "ok.yaml", environ={}).policy.enabled
    text = errors(tmp_path, "policy: {fail_on: [empty_pasword], ignore: [all], allowed_ports: [0, 70000],\n"
                            "  max_security_updates: -1}\nscan: {}\nsign: {key: missing-key}\n")
    assert "policy.fail_on[0]: unknown policy check 'empty_pasword' (did you mean 'empty_passwords'?)" in text
    assert "policy.ignore[0]: unknown policy check 'all'" in text
    assert "policy.allowed_ports[0]: port must be 1-65535, got 0" in text
    assert "policy.allowed_ports[1]: port must be 1-65535, got 70000" in text
    assert "policy.max_security_updates: max_security_updates must not be negative" in text
    assert "scan: scan needs a command (an argv list)" in text
    assert "sign.key: file not found: 'missing-key'" in text
    assert "sign: sign needs a key" in errors(tmp_path, "sign: {}\n")
    assert "policy.fail_on: expected a value, got a mapping" in \
        errors(tmp_path, "policy: {fail_on: {a: 1}}\n")
    assert "unknown key 'keys'" in errors(tmp_path, "sign: {keys: x}\n")
    assert "scan.timeout: invalid duration" in errors(tmp_path, "scan: {command: [x], timeout: soon}\n")
