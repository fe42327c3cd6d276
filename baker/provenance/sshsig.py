"""OpenSSH signatures over SHA256SUMS with the stock `ssh-keygen -Y`, so operators can verify an
exported image with nothing but OpenSSH and an allowed_signers file."""

from __future__ import annotations

from pathlib import Path

from baker.errors import BakerError, CommandError
from baker.proc import run
from baker.provenance import NAMESPACE

HINT = "ssh-keygen (OpenSSH 8.1 or newer) is needed: apt-get install openssh-client"


def sign_file(path: Path, key: Path) -> Path:
    """Writes path + ".sig" (an SSHSIG armored signature) and returns it."""
    sig = Path(f"{path}.sig")
    sig.unlink(missing_ok=True)  # ssh-keygen refuses to overwrite
    run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", NAMESPACE, str(path)], hint=HINT)
    return sig


def verify_file(path: Path, sig: Path, allowed_signers: Path) -> str:
    """The principal that signed `path`; BakerError naming the file if the signature does not verify."""
    try:
        found = run(["ssh-keygen", "-Y", "find-principals", "-s", str(sig), "-f", str(allowed_signers)],
                    hint=HINT)
    except CommandError as e:
        raise BakerError(f"{path.name}: the OpenSSH signature {sig.name} is not from a key in "
                         f"{allowed_signers}") from e
    principal = found.stdout.split()[0]
    try:
        run(["ssh-keygen", "-Y", "verify", "-f", str(allowed_signers), "-I", principal, "-n", NAMESPACE,
             "-s", str(sig)], input=path.read_bytes(), hint=HINT)
    except CommandError as e:
        raise BakerError(f"{path.name}: OpenSSH signature {sig.name} does not verify: "
                         f"{(e.stderr or '').strip() or e}") from e
    return principal
