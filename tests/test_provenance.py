"""DSSE/PAE, ed25519 keys in OpenSSH format, the SLSA statement and verification of image folders."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from baker.errors import BakerError
from baker.inputs import collect, tree_digest
from baker.provenance import ENVELOPE_FILE, STATEMENT_FILE, SUMS_SIG_FILE, dsse
from baker.provenance.keys import KeyError_, load_signing_key, read_allowed_signers
from baker.provenance.sign import sign_image
from baker.provenance.statement import PREDICATE_TYPE, STATEMENT_TYPE
from baker.provenance.verify import folder_files, verify_files
from tests.helpers.lifecycle import image_dir, make_key


def test_pae_matches_the_dsse_spec_example() -> None:
    # the worked example of the DSSE protocol document
    assert dsse.pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    assert dsse.pae("", b"") == b"DSSEv1 0  0 "
    assert dsse.pae("t", "é".encode()) == b"DSSEv1 1 t 2 \xc3\xa9"  # lengths in bytes, not characters


def test_envelope_round_trip_and_tampering(tmp_path: Path) -> None:
    key_path, signers = make_key(tmp_path)
    key = load_signing_key(key_path)
    env = dsse.sign(b'{"a": 1}', key)
    assert env["payloadType"] == "application/vnd.in-toto+json"
    assert env["signatures"][0]["keyid"] == key.public.keyid
    fp = subprocess.run(["ssh-keygen", "-l", "-f", f"{key_path}.pub"], capture_output=True, text=True).stdout
    assert key.public.keyid in fp  # our keyid is OpenSSH's fingerprint
    trusted = read_allowed_signers(signers)
    payload, who = dsse.verify(env, trusted)
    assert payload == b'{"a": 1}' and who.principal == "release@example"
    forged = dict(env, payload=base64.b64encode(b'{"a": 2}').decode())
    with pytest.raises(dsse.EnvelopeError, match="no valid signature"):
        dsse.verify(forged, trusted)
    retyped = dict(env, payloadType="text/plain")  # PAE binds the type too
    with pytest.raises(dsse.EnvelopeError):
        dsse.verify(retyped, trusted)
    _, other_signers = make_key(tmp_path, "other")
    with pytest.raises(dsse.EnvelopeError, match="trusted: SHA256:"):
        dsse.verify(env, read_allowed_signers(other_signers))
    for bad in ({}, {"payload": "!!", "payloadType": "x", "signatures": []}, []):
        with pytest.raises(dsse.EnvelopeError):
            dsse.verify(bad, trusted)


def test_bad_keys_and_trust_files(tmp_path: Path) -> None:
    with pytest.raises(KeyError_, match="cannot read signing key"):
        load_signing_key(tmp_path / "missing")
    junk = tmp_path / "junk"
    junk.write_text("not a key")
    with pytest.raises(KeyError_, match="not an OpenSSH private key"):
        load_signing_key(junk)
    rsa = tmp_path / "rsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(rsa)], check=True)
    with pytest.raises(KeyError_, match="is not ed25519"):
        load_signing_key(rsa)
    locked = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "pw", "-f", str(locked)], check=True)
    with pytest.raises(KeyError_, match="is encrypted"):
        load_signing_key(locked)
    _, signers = make_key(tmp_path)
    line = signers.read_text()
    restricted = tmp_path / "restricted"
    restricted.write_text("# comment\n\n" + line.replace('namespaces="baker-image"', 'namespaces="git"'))
    assert read_allowed_signers(restricted) == []  # trusted for git commits, not for images
    broken = tmp_path / "broken"
    broken.write_text("someone nokeyhere\n")
    with pytest.raises(KeyError_, match="broken:1: expected"):
        read_allowed_signers(broken)


def test_signed_folder_verifies_and_any_flipped_byte_is_named(tmp_path: Path) -> None:
    key, signers = make_key(tmp_path)
    folder = image_dir(tmp_path / "img")
    sign_image(folder / STATEMENT_FILE, folder / "SHA256SUMS", key, folder)
    assert (folder / ENVELOPE_FILE).is_file() and (folder / SUMS_SIG_FILE).is_file()
    report = verify_files(folder_files(folder), signers)
    assert report.ok, report.problems
    assert report.signer.startswith("release@example SHA256:")
    # the stock OpenSSH command accepts the SHA256SUMS signature
    with open(folder / "SHA256SUMS", "rb") as f:
        subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", "release@example",
                        "-n", "baker-image", "-s", str(folder / SUMS_SIG_FILE)], stdin=f, check=True,
                       capture_output=True)
    for name in ("img.qcow2", "manifest.json", "sbom.cdx.json", "policy.json", "SHA256SUMS"):
        path = folder / name
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        original = path.read_bytes()
        path.write_bytes(bytes(data))
        problems = verify_files(folder_files(folder), signers).problems
        assert any(p.startswith(f"{name}: sha256 mismatch") for p in problems), (name, problems)
        path.write_bytes(original)
    statement = json.loads((folder / STATEMENT_FILE).read_text())
    statement["subject"][0]["digest"]["sha256"] = "0" * 64
    (folder / STATEMENT_FILE).write_text(json.dumps(statement))
    assert any("differs from the signed statement" in p
               for p in verify_files(folder_files(folder), signers).problems)


def test_unsigned_untrusted_and_policy_failures_are_reported(tmp_path: Path) -> None:
    folder = image_dir(tmp_path / "img", policy_passed=False)
    _, signers = make_key(tmp_path)
    problems = verify_files(folder_files(folder), signers).problems
    assert any(p.startswith("provenance.dsse.json: missing: the image is not signed") for p in problems)
    assert any(p.startswith("policy.json: the policy failed (password_ssh_login)") for p in problems)
    key, _ = make_key(tmp_path, "k2")
    sign_image(folder / STATEMENT_FILE, folder / "SHA256SUMS", key, folder)
    assert any("no valid signature from a trusted key" in p
               for p in verify_files(folder_files(folder), signers).problems)
    assert any("no trusted keys" in p for p in verify_files(folder_files(folder), None).problems)
    (folder / "img.qcow2").unlink()
    problems = verify_files(folder_files(folder), None).problems
    assert "img.qcow2: missing (listed in the provenance)" in problems


def test_statement_is_slsa_v1_with_inputs_by_digest(tmp_path: Path) -> None:
    from baker.template import load_template

    (tmp_path / "setup.sh").write_text("echo hi\n")
    (tmp_path / "base.qcow2").write_bytes(b"QFI\xfb")
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("<h1>hi</h1>")
    t = tmp_path / "t.yaml"
    t.write_text("name: t\nversion: '2'\nvariables:\n  token: {sensitive: true, default: hunter2-secret}\n"
                 "source: {cloud_image: {url: base.qcow2, checksum: none}}\nprovisioners:\n"
                 "  - {type: shell, script: setup.sh}\n"
                 "  - {type: file, source: www/, destination: /var/www}\n")
    template = load_template(t, environ={})
    inputs = collect(template, base_url="/base.qcow2", base_sha256="ab" * 32, qemu_version="QEMU 7.2")
    assert inputs.variables == {"token": "<sensitive>"}
    assert [d.kind for d in inputs.dependencies()] == ["template", "base_image", "script", "directory"]
    assert inputs.files[1].sha256 == tree_digest(tmp_path / "www")
    folder = image_dir(tmp_path / "img")
    body = json.loads((folder / STATEMENT_FILE).read_text())
    assert body["_type"] == STATEMENT_TYPE and body["predicateType"] == PREDICATE_TYPE
    assert {"buildDefinition", "runDetails"} <= set(body["predicate"])
    assert body["predicate"]["runDetails"]["metadata"]["startedOn"] == "2026-01-01T00:00:00Z"
    assert "hunter2-secret" not in json.dumps(inputs.to_dict())


def test_sign_refuses_missing_ssh_keygen_output(tmp_path: Path) -> None:
    folder = image_dir(tmp_path / "img")
    with pytest.raises(BakerError, match="cannot read signing key"):
        sign_image(folder / STATEMENT_FILE, folder / "SHA256SUMS", tmp_path / "nokey", folder)
