"""Database fixtures: every store test runs on SQLite and on the real PostgreSQL 15 server of
``postgres_server`` (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pneumo.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def db(database_url: str, tmp_path: Path):
    from pneumo.store import open_database

    database = open_database(database_url, tmp_path / "data")
    yield database
    database.close()
