"""`baker images ...`, `promote`, `rollback`, `revoke`, `gc`: the store's commands (cli.py dispatches)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from baker.errors import BakerError
from baker.store.catalog import NotPromotable, Store, Version, default_store_path
from baker.units import human_size


def add_store_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", type=Path, default=None, metavar="DIR",
                   help=f"the image store (default: $BAKER_STORE or {default_store_path()})")


def open_store(args: argparse.Namespace) -> Store:
    return Store(args.store or default_store_path())


def allowed_signers(args: argparse.Namespace, store: Store) -> Path | None:
    """The trust anchors: --allowed-signers, else <store>/allowed_signers if the operator made one."""
    given = getattr(args, "allowed_signers", None)
    if given is not None:
        return Path(given)
    default = store.root / "allowed_signers"
    return default if default.is_file() else None


def version_files(store: Store, v: Version) -> dict[str, Path]:
    return {f.path: store.blob_path(f) for f in v.files}


def register(sub: Any) -> None:
    img = sub.add_parser("images", help="list, show and export stored image versions")
    isub = img.add_subparsers(dest="images_command", required=True, metavar="ACTION")
    ls = isub.add_parser("list", help="stored versions, oldest first")
    ls.add_argument("name", nargs="?")
    ls.add_argument("--json", action="store_true")
    show = isub.add_parser("show", help="one version: files, results, channels, parent and children")
    show.add_argument("name")
    show.add_argument("version", help="a version, or latest")
    show.add_argument("--json", action="store_true")
    ex = isub.add_parser("export", help="copy a version's exact files into a new folder")
    ex.add_argument("name")
    ex.add_argument("rest", nargs="+", metavar="[VERSION] DIR")
    ex.add_argument("--channel")
    st = isub.add_parser("state", help="move a version to active, deprecated or obsolete")
    st.add_argument("name")
    st.add_argument("version")
    st.add_argument("state", choices=["active", "deprecated", "obsolete"])
    st.add_argument("--replacement", help="the version that replaces it")
    xl = isub.add_parser("exclude-from-latest", help="keep a version out of `latest` (canary); --undo")
    xl.add_argument("name")
    xl.add_argument("version")
    xl.add_argument("--undo", action="store_true")
    hist = isub.add_parser("history", help="every channel move, with time and user")
    hist.add_argument("name")
    hist.add_argument("--channel")
    for p in (ls, show, ex, st, xl, hist):
        add_store_arg(p)
    img.set_defaults(func=cmd_images)

    pr = sub.add_parser("promote", help="point a channel at a version (only if verified and policy passed)")
    pr.add_argument("name")
    pr.add_argument("version")
    pr.add_argument("--channel", required=True)
    pr.add_argument("--allowed-signers", type=Path, metavar="FILE",
                    help="trusted keys (default: <store>/allowed_signers)")
    pr.set_defaults(func=cmd_promote)
    rb = sub.add_parser("rollback", help="point a channel back to the version it had before")
    rb.add_argument("name")
    rb.add_argument("--channel", required=True)
    rb.set_defaults(func=cmd_rollback)
    rv = sub.add_parser("revoke", help="mark a version as never to be deployed or promoted again")
    rv.add_argument("name")
    rv.add_argument("version")
    rv.add_argument("--reason", required=True)
    rv.add_argument("--cascade", action="store_true", help="revoke the versions built from it, too")
    rv.set_defaults(func=cmd_revoke)
    gc = sub.add_parser("gc", help="remove old versions and unreferenced blobs")
    gc.add_argument("--keep", type=int, required=True, metavar="N", help="newest versions kept per name")
    gc.add_argument("--dry-run", action="store_true")
    gc.set_defaults(func=cmd_gc)
    for p in (pr, rb, rv, gc):
        add_store_arg(p)


def _flags(v: Version, channels: dict[str, str]) -> str:
    flags = [v.state]
    if v.revoked:
        flags.append("REVOKED")
    if v.stale_reason:
        flags.append("stale")
    flags.append("signed" if v.signed else "unsigned")
    flags.append({True: "policy ok", False: "POLICY FAILED", None: "no policy"}[v.policy_passed])
    if v.scan_passed is False:
        flags.append("SCAN FAILED")
    if v.exclude_from_latest:
        flags.append("excluded from latest")
    flags += [f"@{c}" for c, target in channels.items() if target == v.version]
    return ", ".join(flags)


def _version_dict(store: Store, v: Version) -> dict[str, Any]:
    return {"name": v.name, "version": v.version, "created_at": v.created_at, "created_by": v.created_by,
            "state": v.state, "replacement": v.replacement, "exclude_from_latest": v.exclude_from_latest,
            "revoked": v.revoked, "revoked_at": v.revoked_at, "revoked_reason": v.revoked_reason,
            "signed": v.signed, "policy_passed": v.policy_passed, "scan_passed": v.scan_passed,
            "parent": f"{v.parent_name}@{v.parent_version}" if v.parent_name else None,
            "stale": v.stale_reason,
            "channels": [c for c, t in store.channels(v.name).items() if t == v.version],
            "children": [c.ref for c in store.children(v.name, v.version)],
            "files": [{"path": f.path, "role": f.role, "sha256": f.sha256, "size": f.size} for f in v.files]}


def cmd_images(args: argparse.Namespace) -> int:
    store = open_store(args)
    action = args.images_command
    if action == "list":
        versions = store.versions(args.name)
        if args.json:
            print(json.dumps([_version_dict(store, v) for v in versions], indent=2))
            return 0
        latest = {n: getattr(store.latest(n), "version", None) for n in {v.name for v in versions}}
        for v in versions:
            size = sum(f.size for f in v.files if f.role == "artifact")
            mark = " (latest)" if latest.get(v.name) == v.version else ""
            print(f"{v.name:<24} {v.version:<22} {v.created_at}  {human_size(size):>9}  "
                  f"{_flags(v, store.channels(v.name))}{mark}")
        if not versions:
            print(f"no images in {store.root}")
        return 0
    if action == "show":
        v = store.resolve(args.name, args.version)
        d = _version_dict(store, v)
        if args.json:
            print(json.dumps(d, indent=2))
            return 0
        print(f"{v.ref}  ({_flags(v, store.channels(v.name))})")
        print(f"  created   {v.created_at} by {v.created_by}")
        if v.revoked:
            print(f"  revoked   {v.revoked_at}: {v.revoked_reason}")
        if v.replacement:
            print(f"  replaced by {v.replacement}")
        stale = f"  (stale: {v.stale_reason})" if v.stale_reason else ""
        print(f"  parent    {d['parent'] or '-'}{stale}")
        print(f"  children  {', '.join(d['children']) or '-'}")
        print(f"  channels  {', '.join(d['channels']) or '-'}")
        for f in v.files:
            print(f"  {f.role:<9} {f.path:<34} {human_size(f.size):>10}  sha256:{f.sha256}")
        return 0
    if action == "export":
        return _export(store, args)
    if action == "state":
        v = store.set_state(args.name, args.version, args.state, replacement=args.replacement)
        print(f"{v.ref} is now {v.state}" + (f" (replaced by {v.replacement})" if v.replacement else ""))
        return 0
    if action == "exclude-from-latest":
        v = store.set_exclude_from_latest(args.name, args.version, not args.undo)
        print(f"{v.ref} {'is excluded from' if v.exclude_from_latest else 'counts for'} latest")
        return 0
    for m in store.history(args.name, args.channel):
        was = f" (was {m.previous})" if m.previous else ""
        print(f"{m.at}  {m.channel:<10} {m.action:<9} -> {m.version}{was}  by {m.user}")
    return 0


def _export(store: Store, args: argparse.Namespace) -> int:
    if args.channel:
        if len(args.rest) != 1:
            raise BakerError("usage: baker images export NAME --channel C DIR")
        v, dest = store.resolve(args.name, channel=args.channel), Path(args.rest[0])
    else:
        if len(args.rest) != 2:
            raise BakerError("usage: baker images export NAME VERSION DIR (or --channel C DIR)")
        v, dest = store.resolve(args.name, args.rest[0]), Path(args.rest[1])
    store.export_version(v, dest)
    print(f"exported {v.ref} ({len(v.files)} files) to {dest}")
    return 0


def promotion_problems(store: Store, v: Version, trust: Path | None) -> list[str]:
    from baker.provenance.verify import verify_files

    problems: list[str] = []
    if v.revoked:
        problems.append(f"revoked: {v.revoked_reason}")
    if v.state == "obsolete":
        problems.append("obsolete")
    if not v.signed:
        problems.append("not signed (baker sign NAME VERSION --key K)")
    elif trust is None:
        problems.append(f"no trusted keys: create {store.root / 'allowed_signers'} "
                        "(or pass --allowed-signers)")
    if v.policy_passed is not True:
        problems.append("the policy failed" if v.policy_passed is False else "no policy result")
    if v.scan_passed is False:
        problems.append("the scan failed")
    if v.signed and trust is not None:
        problems += [p for p in verify_files(version_files(store, v), trust).problems
                     if not p.startswith(("policy.json", "scan.json"))]
    return problems


def cmd_promote(args: argparse.Namespace) -> int:
    store = open_store(args)
    v = store.get(args.name, args.version)
    problems = promotion_problems(store, v, allowed_signers(args, store))
    if problems:
        raise NotPromotable(f"refusing to promote {v.ref} to {args.channel}: " + "; ".join(problems))
    previous = store.set_channel(v.name, args.channel, v.version)
    print(f"{args.channel}: {v.ref}" + (f" (was {previous})" if previous else ""))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    store = open_store(args)
    current = store.channels(args.name).get(args.channel)
    target = store.rollback_target(args.name, args.channel)
    store.set_channel(args.name, args.channel, target, action="rollback", note=f"from {current}")
    print(f"{args.channel}: {args.name}@{target} (rolled back from {current})")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    store = open_store(args)
    for v in store.revoke(args.name, args.version, args.reason, cascade=args.cascade):
        print(f"revoked {v.ref}: {v.revoked_reason}")
        for c, target in store.channels(v.name).items():
            if target == v.version:
                print(f"  WARNING: channel {c} still points at {v.ref}: move it with "
                      f"baker promote {v.name} VERSION --channel {c} (or baker rollback)")
        for child in store.children(v.name, v.version):
            if not child.revoked:
                print(f"  stale child: {child.ref} (rebuild it, or revoke with --cascade)")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    store = open_store(args)
    r = store.gc(args.keep, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for ref in r.removed_versions:
        print(f"{verb} {ref}")
    for ref, why in sorted(r.kept.items()):
        print(f"kept {ref} ({why})")
    if not args.dry_run:
        print(f"versions removed: {len(r.removed_versions)}, blobs removed: {r.removed_blobs}, "
              f"{human_size(r.freed_bytes)} freed")
    return 0
