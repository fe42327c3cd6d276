"""Helpers the tests share: real sshd, QEMU boots, export inputs, fault-injection builds.

Imported one way only: `from tests.helpers.<module> import ...`. Fixtures live in tests/conftest.py.
"""
