"""Secret masking: sensitive variable values never reach logs, events, manifests or error messages."""

from __future__ import annotations

import logging
import threading
from typing import Any

MASK = "<sensitive>"


class Masker:
    """Replaces every registered secret in text. One process-wide instance: `MASKER`."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, value: Any) -> None:
        text = str(value) if value is not None else ""
        # very short values would mask innocent text everywhere; they are still kept out of manifests
        if len(text) >= 3:
            with self._lock:
                self._secrets.add(text)

    def clear(self) -> None:
        with self._lock:
            self._secrets.clear()

    def mask(self, text: str) -> str:
        if not self._secrets or not text:
            return text
        for s in sorted(self._secrets, key=len, reverse=True):
            if s in text:
                text = text.replace(s, MASK)
        return text

    def mask_obj(self, obj: Any) -> Any:
        """Deep copy of JSON-like data with secrets masked in every string."""
        if isinstance(obj, str):
            return self.mask(obj)
        if isinstance(obj, dict):
            return {k: self.mask_obj(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.mask_obj(v) for v in obj]
        return obj


MASKER = Masker()


class MaskingFilter(logging.Filter):
    """Attach to handlers so every formatted record is masked, whatever logger produced it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if MASKER._secrets:
            record.msg = MASKER.mask(record.getMessage())
            record.args = None
        return True
