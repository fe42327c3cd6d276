"""Provenance and signatures: an in-toto Statement v1 with a SLSA provenance v1 predicate in a DSSE
envelope signed with ed25519, and an OpenSSH signature over SHA256SUMS for stock-tool verification."""

STATEMENT_FILE = "provenance.intoto.json"
ENVELOPE_FILE = "provenance.dsse.json"
SUMS_FILE = "SHA256SUMS"
SUMS_SIG_FILE = "SHA256SUMS.sig"
NAMESPACE = "baker-image"
SIGNATURE_FILES = (ENVELOPE_FILE, SUMS_SIG_FILE)
