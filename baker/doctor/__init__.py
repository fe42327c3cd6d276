"""`baker doctor`: what baker will use on this host and why, before a build finds out the hard way."""

from baker.doctor.checks import Check, run_checks

__all__ = ["Check", "run_checks"]
