"""Builds for Makefiles and nightly runs: skip when nothing changed, Make rules, one build per output."""

from baker.incremental.decide import Decision, decide, restore
from baker.incremental.deps import make_rule, write_deps_file
from baker.incremental.fingerprint import Fingerprint, fingerprint
from baker.incremental.lock import EXIT_LOCKED, OutputLocked, output_lock

__all__ = ["EXIT_LOCKED", "Decision", "Fingerprint", "OutputLocked", "decide", "fingerprint", "make_rule",
           "output_lock", "restore", "write_deps_file"]
