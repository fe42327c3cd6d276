"""Layered images without a VM: references, template checks, the parent's digest as the child's base,
stored parents, children discovery, Make rules. Real layered builds: tests/test_e2e_layers.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from baker.errors import BakerError, TemplateError, TemplateErrors
from baker.incremental import fingerprint, make_rule
from baker.layers import children_of, parse_ref, resolve_parent, with_parent_source
from baker.template import load_template
from tests.helpers.faults import write_template


def golden(tmp: Path, name: str = "golden") -> Path:
    (tmp / "base.qcow2").write_bytes(b"QFI\xfb")
    return write_template(tmp / f"{name}.yaml", f"name: {name}\nsource:\n  cloud_image: {{url: base.qcow2, "
                                                 "checksum: none}\nexports: [{type: qcow2}]\n")


def child(tmp: Path, image: str, name: str = "app") -> Path:
    return write_template(tmp / f"{name}.yaml", f"name: {name}\nsource:\n  image: '{image}'\n"
                                                "provisioners:\n  - {type: shell, inline: [true]}\n")


def built(out: Path, name: str, sha: str, version: str = "1.0") -> None:
    """What the parent's good build left in its output dir (written here, not built)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.qcow2").write_bytes(b"disk")
    (out / "manifest.json").write_text(json.dumps({
        "name": name, "version": version,
        "artifacts": [{"export": "qcow2", "file": f"{name}.qcow2", "kind": "disk", "size": 4,
                       "sha256": sha}]}))


def load(p: Path):
    return load_template(p, environ={})


def test_references_are_template_paths_or_store_names(tmp_path: Path):
    assert parse_ref("golden.yaml", tmp_path).template == tmp_path / "golden.yaml"
    assert parse_ref("../g/golden.yml", tmp_path / "x").template == tmp_path / "g" / "golden.yml"
    r = parse_ref("debian-12-golden@prod", tmp_path)
    assert (r.template, r.name, r.selector) == (None, "debian-12-golden", "prod")
    assert parse_ref("golden", tmp_path).selector is None
    with pytest.raises(BakerError, match="names no image"):
        parse_ref("@prod", tmp_path)


@pytest.mark.parametrize("source, says", [
    ("  image: missing.yaml\n", "the parent template missing.yaml does not exist"),
    ("  image: app.yaml\n", "cannot build on itself"),
    ("  image: golden.yaml\n  cloud_image: {url: base.qcow2, checksum: none}\n", "are both set"),
    ("  image: ''\n", "source.image is empty"),
])
def test_bad_image_sources_name_the_key(tmp_path: Path, source: str, says: str):
    golden(tmp_path)
    t = write_template(tmp_path / "app.yaml", f"name: app\nsource:\n{source}")
    with pytest.raises((TemplateError, TemplateErrors)) as e:
        load(t)
    assert says in str(e.value) and "app.yaml:3:" in str(e.value)


def test_the_child_builds_on_the_parents_recorded_qcow2_and_its_digest_is_the_childs_base(tmp_path: Path):
    golden(tmp_path)
    app = load(child(tmp_path, "golden.yaml"))
    out = tmp_path / "images" / "app"
    with pytest.raises(BakerError, match="has not been built"):
        resolve_parent(app, out, None)
    built(tmp_path / "images" / "golden", "golden", "a" * 64)
    parent = resolve_parent(app, out, None)
    assert parent is not None and parent.artifact == tmp_path / "images" / "golden" / "golden.qcow2"
    resolved = with_parent_source(app, parent)
    ci = resolved.source.cloud_image
    assert ci is not None and ci.checksum == "sha256:" + "a" * 64 and ci.format == "qcow2"
    first = fingerprint(resolved)
    built(tmp_path / "images" / "golden", "golden", "b" * 64, version="1.1")  # the parent was rebuilt
    second = fingerprint(with_parent_source(app, resolve_parent(app, out, None)))
    assert [k for k in second.parts if second.parts[k] != first.parts[k]] == ["base image"]


def test_a_parent_without_a_qcow2_export_is_refused(tmp_path: Path):
    golden(tmp_path)
    app = load(child(tmp_path, "golden.yaml"))
    out = tmp_path / "images" / "golden"
    out.mkdir(parents=True)
    (out / "manifest.json").write_text(json.dumps({"artifacts": [{"export": "vmdk", "file": "g.vmdk"}]}))
    with pytest.raises(BakerError, match="no qcow2 export"):
        resolve_parent(app, tmp_path / "images" / "app", None)


def test_a_stored_parent_is_its_immutable_blob(tmp_path: Path):
    from baker.store import Store

    store = tmp_path / "store"
    disk = tmp_path / "g.qcow2"
    disk.write_bytes(b"golden disk")
    import hashlib

    sha = hashlib.sha256(b"golden disk").hexdigest()
    s = Store(store)
    try:
        for version in ("1.0", "2.0"):
            s.record("golden", version, [(disk, "golden.qcow2", "artifact")],
                     {"name": "golden", "version": version,
                      "artifacts": [{"export": "qcow2", "file": "golden.qcow2", "sha256": sha}]})
        s.set_channel("golden", "prod", "1.0")
    finally:
        s.close()
    for ref, version in (("golden", "2.0"), ("golden@prod", "1.0"), ("golden@2.0", "2.0")):
        app = load(child(tmp_path, ref))
        p = resolve_parent(app, tmp_path / "images" / "app", store)
        assert p is not None and (p.version, p.sha256) == (version, sha)
        assert p.artifact.read_bytes() == b"golden disk" and str(p.artifact).startswith(str(store))
    with pytest.raises(BakerError, match="no store"):
        resolve_parent(load(child(tmp_path, "golden")), tmp_path / "x", tmp_path / "nowhere")
    with pytest.raises(BakerError, match=r"golden@9\.9"):
        resolve_parent(load(child(tmp_path, "golden@9.9")), tmp_path / "x", store)


def test_children_are_found_beside_the_parent_parents_first(tmp_path: Path):
    g = load(golden(tmp_path))
    child(tmp_path, "golden.yaml", name="app")
    child(tmp_path, "app.yaml", name="app-plus")
    child(tmp_path, "golden@prod", name="from-store")  # a stored parent is not this template
    (tmp_path / "broken.yaml").write_text("name: [")
    assert [c.name for c in children_of(g, environ={})] == ["app", "app-plus"]


def test_a_childs_make_rule_depends_on_the_parents_manifest(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    golden(tmp_path)
    rule = make_rule(load(child(tmp_path, "golden.yaml")), tmp_path / "images" / "app")
    rest = rule.partition(": ")[2]
    assert "images/golden/manifest.json" in rest.split("\n\n")[0]
    assert "\nimages/golden/manifest.json:\n" not in rule  # built by its own rule, not an empty one


def test_the_shipped_layer_templates_validate_and_chain(base_image: Path):
    from tests.helpers.paths import ROOT

    env = {"BAKER_BASE_IMAGE": str(base_image), "BAKER_BASE_CHECKSUM": "none"}
    g = load_template(ROOT / "templates" / "debian-12-golden.yaml", environ=env)
    names = sorted(c.name for c in children_of(g, environ=env))
    assert names == ["debian-12-app-nginx", "debian-12-app-redis"]
