"""A DICOM network peer named ``AET@HOST:PORT`` (the form of ``--destination``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pneumo.errors import ConfigError

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # default character repertoire, no backslash


def check_ae_title(title: str) -> str:
    """``title`` stripped, if a valid AE title (1-16 printable ASCII characters, no backslash); else ConfigError."""
    text = (title or "").strip()
    if not _AE_TITLE.match(text):
        raise ConfigError(f"AE title {title!r} is invalid: use 1-16 printable ASCII characters without backslash")
    return text


@dataclass(frozen=True)
class Peer:
    """Application entity title, host name or address, TCP port."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "Peer":
        """``"ORTHANC@127.0.0.1:4242"`` -> Peer; ConfigError naming the expected form otherwise."""
        match = re.fullmatch(r"\s*([^@]+)@([^:@\s]+):(\d{1,5})\s*", text or "")
        if not match:
            raise ConfigError(f"destination {text!r} must look like AET@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242")
        port = int(match.group(3))
        if not 1 <= port <= 65535:
            raise ConfigError(f"destination port {port} is outside 1..65535")
        return cls(check_ae_title(match.group(1)), match.group(2), port)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"
