"""Database fixtures: every store test runs on SQLite and on a real PostgreSQL 15 server (started here with
initdb/pg_ctl in a temporary folder on a free loopback port; skipped with the reason where it is absent)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BIN = Path(os.environ.get("PNEUMO_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """``postgresql+psycopg://pneumo@127.0.0.1:PORT`` of a throw-away server (no database name)."""
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN} (make install adds Debian's postgresql-15)")
    prefix: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="pneumo-pg-"))
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as 'nobody'
        if shutil.which("runuser") is None:
            pytest.skip("running as root and runuser is missing: cannot start PostgreSQL as another user")
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        os.chmod(root, 0o755)
        prefix = ["runuser", "-u", "nobody", "--"]
    data = root / "data"
    port = _free_port()
    try:
        subprocess.run(prefix + [str(PG_BIN / "initdb"), "-D", str(data), "-U", "pneumo", "--auth=trust",
                                 "-E", "UTF8", "--no-sync", "--no-instructions"],
                       check=True, capture_output=True, timeout=120)
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40"
        subprocess.run(prefix + [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w",
                                 "-t", "60", "-o", options, "start"], check=True, capture_output=True, timeout=90)
    except subprocess.CalledProcessError as error:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {error.stderr.decode(errors='replace')[-800:]}")
    try:
        yield f"postgresql+psycopg://pneumo@127.0.0.1:{port}"
    finally:
        subprocess.run(prefix + [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def new_postgres_database(server: str) -> str:
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{server}/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pneumo.db'}"
    return new_postgres_database(request.getfixturevalue("postgres_server"))


@pytest.fixture
def db(database_url: str, tmp_path: Path):
    from pneumo.store import open_database

    database = open_database(database_url, tmp_path / "data")
    yield database
    database.close()
