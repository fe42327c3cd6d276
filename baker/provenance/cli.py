"""`baker sign` and `baker verify` (cli.py dispatches)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from baker.errors import BakerError
from baker.provenance import STATEMENT_FILE, SUMS_FILE


class VerifyFailed(BakerError):
    exit_code = 1


def register(sub: Any) -> None:
    from baker.store.cli import add_store_arg

    s = sub.add_parser("sign", help="sign a stored version's provenance and SHA256SUMS with an ed25519 key")
    s.add_argument("name")
    s.add_argument("version")
    s.add_argument("--key", type=Path, required=True, help="an OpenSSH ed25519 private key")
    add_store_arg(s)
    s.set_defaults(func=cmd_sign)
    v = sub.add_parser("verify", help="check every digest, the signatures and the policy of an image",
                       description="baker verify NAME VERSION (a stored version) or baker verify PATH "
                                   "(an exported or published folder, or one file in it)")
    v.add_argument("target", nargs="+", metavar="NAME VERSION | PATH")
    v.add_argument("--allowed-signers", type=Path, metavar="FILE",
                   help="trusted keys, ssh allowed_signers format (default: <store>/allowed_signers)")
    add_store_arg(v)
    v.set_defaults(func=cmd_verify)


def cmd_sign(args: argparse.Namespace) -> int:
    from baker.provenance.sign import sign_image
    from baker.store.cli import open_store

    store = open_store(args)
    v = store.get(args.name, args.version)
    statement, sums = v.file(STATEMENT_FILE), v.file(SUMS_FILE)
    if statement is None or sums is None:
        raise BakerError(f"{v.ref} has no {STATEMENT_FILE} or {SUMS_FILE} to sign")
    with tempfile.TemporaryDirectory(prefix="baker-sign-") as tmp:
        out = sign_image(store.blob_path(statement), store.blob_path(sums), args.key, Path(tmp))
        store.attach(v.name, v.version, [(p, p.name) for p in out])
    print(f"signed {v.ref} with {args.key}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from baker.provenance.verify import folder_files, verify_files
    from baker.store.cli import allowed_signers, open_store, version_files

    store = open_store(args)
    trust = allowed_signers(args, store)
    only = None
    if len(args.target) == 2:
        v = store.resolve(args.target[0], args.target[1])
        what, files = v.ref, version_files(store, v)
    elif len(args.target) == 1:
        path = Path(args.target[0])
        if not path.exists():
            raise BakerError(f"{path}: no such file or folder",
                             hint="baker verify NAME VERSION for a stored version")
        folder = path if path.is_dir() else path.parent
        only = None if path.is_dir() else path.name
        what, files = str(path), folder_files(folder)
    else:
        raise BakerError("usage: baker verify NAME VERSION | PATH")
    report = verify_files(files, trust, only=only)
    for p in report.problems:
        print(f"FAIL {p}")
    if not report.ok:
        raise VerifyFailed(f"{what}: verification failed ({len(report.problems)} problems)")
    policy = {True: "policy passed", None: "no policy result"}[report.policy_passed]
    print(f"{what}: OK: {len(report.checked)} files match the provenance, signed by {report.signer}, "
          f"{policy}" + (", scan passed" if report.scan_passed else ""))
    return 0
