"""Checkpoints: the disk after each provisioner, kept as read-only qcow2 layers in a cache, so a
rebuild whose first provisioners are unchanged boots from the deepest one and runs only the rest."""

from baker.checkpoint.cache import CheckpointCache, Layer
from baker.checkpoint.keys import Chain, chain

__all__ = ["Chain", "CheckpointCache", "Layer", "chain"]
