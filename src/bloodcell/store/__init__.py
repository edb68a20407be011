"""The lab's sample store: samples, photos, cells, decisions, users and the audit trail (SQLite or PostgreSQL)."""

from bloodcell.store.database import Store, open_store

__all__ = ["Store", "open_store"]
