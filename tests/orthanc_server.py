"""A real Orthanc PACS for tests: Debian's ``/usr/sbin/Orthanc`` run as a plain process with a generated JSON
config (temporary storage, free HTTP and DICOM ports, DICOMweb plugin, local access only), plus a few REST
helpers. Tests skip with a clear reason where Orthanc is not installed (``make install`` installs it as root).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

ORTHANC = os.environ.get("PNEUMO_ORTHANC", "/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
AE_TITLE = "ORTHANC"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_orthanc(dicomweb: bool = False) -> None:
    if not (Path(ORTHANC).is_file() or shutil.which(ORTHANC)):
        pytest.skip(f"Orthanc not installed at {ORTHANC} (Debian package orthanc; `make install` installs it)")
    if dicomweb and not DICOMWEB_PLUGIN.is_file():
        pytest.skip(f"Orthanc DICOMweb plugin missing at {DICOMWEB_PLUGIN} (Debian package orthanc-dicomweb)")


class OrthancServer:
    """One Orthanc process. ``start()`` writes the config and waits until the REST API answers; ``stop()``
    terminates it and waits for the exit; ``start()`` again reuses the same storage and ports (an outage)."""

    def __init__(self, folder: Path, modalities: dict[str, tuple[str, str, int]] | None = None) -> None:
        self.folder = Path(folder)
        self.http_port, self.dicom_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.modalities = dict(modalities or {})
        self.process: subprocess.Popen | None = None
        self.config_path = self.folder / "orthanc.json"

    def write_config(self) -> None:
        config = {
            "Name": "pneumo-test",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": AE_TITLE,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckModalityHost": True,
            "DicomAlwaysAllowStore": False,
            "DicomAlwaysAllowEcho": False,
            "DicomModalities": {name: list(value) for name, value in self.modalities.items()},
            "Plugins": [str(DICOMWEB_PLUGIN)] if DICOMWEB_PLUGIN.is_file() else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "StableAge": 1,
            "ConcurrentJobs": 1,
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(config, indent=1))

    def start(self, timeout_s: float = 20.0) -> "OrthancServer":
        import httpx

        require_orthanc()
        self.write_config()
        log = open(self.folder / "orthanc.log", "ab")
        self.process = subprocess.Popen([ORTHANC, str(self.config_path)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}: see {self.folder / 'orthanc.log'}")
            try:
                if httpx.get(f"{self.url}/system", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout_s} s: see {self.folder / 'orthanc.log'}")

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_s)
        self.process = None

    # ------------------------------------------------------------------------------------------- REST
    def rest(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        response = httpx.request(method, f"{self.url}{path}", timeout=kwargs.pop("timeout", 60.0), **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def rest_bytes(self, path: str) -> bytes:
        import httpx

        response = httpx.get(f"{self.url}{path}", timeout=60.0)
        response.raise_for_status()
        return response.content

    def upload(self, path: Path) -> dict[str, Any]:
        """POST a DICOM file to /instances -> Orthanc's answer (ID, ParentStudy, ...)."""
        return self.rest("POST", "/instances", content=Path(path).read_bytes(),
                         headers={"Content-Type": "application/dicom"})

    def add_modality(self, name: str, ae_title: str, port: int, host: str = "127.0.0.1") -> None:
        """Declare a DICOM peer now (REST) and in the config of later starts (REST ones live in memory)."""
        self.modalities[name] = (ae_title, host, port)
        self.rest("PUT", f"/modalities/{name}", json={"AET": ae_title, "Host": host, "Port": port})

    def study_instances(self, study_id: str) -> list[dict[str, Any]]:
        """Every instance of a study with its main tags (SOPClassUID, SOPInstanceUID, ...)."""
        out = []
        for instance in self.rest("GET", f"/studies/{study_id}/instances"):
            tags = self.rest("GET", f"/instances/{instance['ID']}/simplified-tags")
            out.append({"ID": instance["ID"], **tags})
        return out

    def wait_for_instances(self, study_id: str, count: int, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            instances = self.rest("GET", f"/studies/{study_id}/instances")
            if len(instances) >= count or time.monotonic() > deadline:
                return self.study_instances(study_id)
            time.sleep(0.25)
