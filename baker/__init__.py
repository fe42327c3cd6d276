"""baker: bake golden VM images with QEMU from a YAML template."""

__version__ = "0.1.0"
