"""The versioned image store: a SQLite catalog and content-addressed blobs (see catalog.py)."""

from baker.store.catalog import NotPromotable, Store, StoreError, Version, default_store_path

__all__ = ["NotPromotable", "Store", "StoreError", "Version", "default_store_path"]
