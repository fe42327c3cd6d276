"""QEMU: accelerator choice, command line, process supervision and QMP control."""
