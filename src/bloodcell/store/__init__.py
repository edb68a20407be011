"""The lab's sample store: samples, photos, cells, decisions, users and the audit trail (SQLite or PostgreSQL).

``bloodcell.store.database.open_store`` opens one; the package itself imports nothing heavy, so commands can
show their help without SQLAlchemy."""
