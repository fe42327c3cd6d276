"""`baker fmt`: templates in the canonical key order and style (see format.py)."""

from baker.fmt.format import FormatError, format_file, format_text

__all__ = ["FormatError", "format_file", "format_text"]
