"""Shared fixtures: where the real data lives (../shared/data beside the repo, or $PNEUMO_SHARED_DATA)."""

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

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PNEUMO_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _at_most_two_torch_threads():
    """Tests share a 2-core machine: never let one test oversubscribe it (restored afterwards)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(min(previous, 2))
    yield
    torch.set_num_threads(previous)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set PNEUMO_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def rsna_mini() -> Path:
    """Kaggle-layout folder with 210 real RSNA patients."""
    return _require(SHARED_DATA / "rsna-mini")


@pytest.fixture(scope="session")
def nih_weak() -> Path:
    return _require(SHARED_DATA / "nih-weak")


@pytest.fixture(scope="session")
def dicom_samples() -> Path:
    return _require(SHARED_DATA / "dicom-samples")


@pytest.fixture(autouse=True, scope="session")
def _private_data_dir(tmp_path_factory: pytest.TempPathFactory):
    """Servers and commands started by tests keep their database and images in a temporary folder, never in
    the user's ~/.local/share/pneumo (a test that needs its own sets PNEUMO_DATA_DIR or passes data_dir)."""
    from pneumo.store.db import DATA_DIR_ENV, DATABASE_ENV

    previous = {name: os.environ.pop(name, None) for name in (DATA_DIR_ENV, DATABASE_ENV)}
    os.environ[DATA_DIR_ENV] = str(tmp_path_factory.mktemp("pneumo-data"))
    yield
    for name, value in previous.items():
        os.environ.pop(name, None)
        if value is not None:
            os.environ[name] = value


# ----------------------------------------------------------------------------- PostgreSQL

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




@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A new, empty database on the session's PostgreSQL server."""
    return new_postgres_database(postgres_server)
