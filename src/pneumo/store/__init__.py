"""The result database (SQLAlchemy 2 + Alembic; SQLite by default, PostgreSQL by URL): analyses with their
provenance, reviews, users and the append-only audit trail; decoded images and heatmaps content-addressed
on disk. ``open_database(url, data_dir)`` opens it and applies the migrations."""

from pneumo.store.db import Database, data_dir, database_url, open_database

__all__ = ["Database", "data_dir", "database_url", "open_database"]
