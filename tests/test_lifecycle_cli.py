"""The lifecycle commands on a store of synthetic image folders (no VM): exit codes and messages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from baker.cli import main
from baker.store.record import record_dir
from tests.helpers.lifecycle import image_dir, make_key


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    store = tmp_path / "store"
    monkeypatch.setenv("BAKER_STORE", str(store))
    key, signers = make_key(tmp_path)
    store.mkdir()
    shutil.copyfile(signers, store / "allowed_signers")
    for version, ok, disk in (("1", True, b"one"), ("2", True, b"two"), ("3", False, b"three")):
        folder = image_dir(tmp_path / f"v{version}", version=version, policy_passed=ok, disk=disk,
                           packages={"bash": "5.2", "tree": "2.1"} if version == "2" else None)
        record_dir(store, "img", version, folder, json.loads((folder / "manifest.json").read_text()))
    return {"key": key, "store": store, "tmp": tmp_path}


def test_promote_needs_signature_and_policy(env: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["promote", "img", "1", "--channel", "prod"]) == 3
    assert "refusing to promote img@1 to prod: not signed" in capsys.readouterr().err
    assert main(["sign", "img", "3", "--key", str(env["key"])]) == 0
    assert main(["promote", "img", "3", "--channel", "prod"]) == 3
    assert "the policy failed" in capsys.readouterr().err
    assert main(["sign", "img", "1", "--key", str(env["key"])]) == 0
    (env["store"] / "allowed_signers").unlink()
    assert main(["promote", "img", "1", "--channel", "prod"]) == 3
    assert "no trusted keys" in capsys.readouterr().err
    assert main(["promote", "img", "1", "--channel", "prod",
                 "--allowed-signers", str(env["tmp"] / "key.allowed_signers")]) == 0
    assert capsys.readouterr().out.strip() == "prod: img@1"


def test_promote_rollback_revoke_and_show(env: dict, capsys: pytest.CaptureFixture[str]) -> None:
    for v in ("1", "2"):
        assert main(["sign", "img", v, "--key", str(env["key"])]) == 0
        assert main(["promote", "img", v, "--channel", "prod"]) == 0
    assert main(["rollback", "img", "--channel", "prod"]) == 0
    assert main(["rollback", "img", "--channel", "prod"]) == 1  # nothing earlier: a store error
    assert "no earlier, non-revoked version" in capsys.readouterr().err
    assert main(["revoke", "img", "1", "--reason", "bad"]) == 0
    assert "channel prod still points at img@1" in capsys.readouterr().out
    assert main(["images", "show", "img", "1"]) == 0
    shown = capsys.readouterr().out
    assert "REVOKED" in shown and "@prod" in shown and "revoked   " in shown
    assert main(["images", "list", "img"]) == 0
    assert "(latest)" in capsys.readouterr().out
    assert main(["sbom", "diff", "img", "1", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "+ tree 2.1 (amd64)"
    assert main(["images", "export", "img", "1", str(env["tmp"] / "x")]) == 1
    assert "is revoked" in capsys.readouterr().err


def test_verify_a_stored_version_and_bad_usage(env: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sign", "img", "2", "--key", str(env["key"])]) == 0
    assert main(["verify", "img", "2"]) == 0
    assert "img@2: OK" in capsys.readouterr().out
    assert main(["verify", "img", "1"]) == 1
    assert "FAIL provenance.dsse.json: missing: the image is not signed" in capsys.readouterr().out
    assert main(["verify", str(env["tmp"] / "nowhere")]) == 1
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["images", "show", "img", "9"]) == 1
    assert "no version '9' of 'img'" in capsys.readouterr().err
    assert main(["images", "export", "img", str(env["tmp"] / "x")]) == 1
    assert "usage: baker images export NAME VERSION DIR" in capsys.readouterr().err
    assert main(["images", "state", "img", "2", "deprecated", "--replacement", "1"]) == 0
    assert main(["images", "show", "img", "latest", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["version"] == "3"
    assert main(["gc", "--keep", "1", "--dry-run"]) == 0
    assert "would remove img@1" in capsys.readouterr().out
