"""Helpers for tests that run Debian's DICOM validators (dicom3tools ``dciodvfy``, dcmtk ``dsrdump``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def require_tool(name: str, package: str) -> str:
    """Path of ``name`` on PATH, else skip the test naming the Debian package (``make install`` installs it)."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (Debian package {package}; `make install` installs it as root)")
    return path


def dciodvfy_errors(path: Path) -> list[str]:
    """The "Error" lines dciodvfy reports for ``path`` (an empty list = the object validates)."""
    tool = require_tool("dciodvfy", "dicom3tools")
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def dsrdump(path: Path) -> str:
    """dsrdump's rendering of an SR with every value printed in full."""
    tool = require_tool("dsrdump", "dcmtk")
    result = subprocess.run([tool, "+Pl", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout
