"""Users and their API keys.

A key is ``pn_<key id>_<secret>``: the 12-hex-digit key id is stored in clear and finds the user in one
indexed lookup; the secret is stored only as a salted scrypt hash (n=2**14, r=8, p=1), so verifying a key costs
exactly one slow hash. The full key is shown once, when it is made.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from pneumo.errors import AuthenticationError, ConflictError, ConfigError, RecordNotFoundError
from pneumo.store import audit
from pneumo.store.db import Database
from pneumo.store.schema import ROLES, User

KEY_PATTERN = re.compile(r"^pn_([0-9a-f]{12})_([A-Za-z0-9_-]{32,64})$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


@dataclass(frozen=True)
class UserInfo:
    name: str
    role: str
    key_id: str
    created_at: datetime
    disabled: bool

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "role": self.role, "key_id": self.key_id,
                "created_at": self.created_at.isoformat(), "disabled": self.disabled}


def _info(user: User) -> UserInfo:
    return UserInfo(user.name, user.role, user.key_id, audit.as_utc(user.created_at), user.disabled_at is not None)


def hash_secret(secret: str, salt: bytes) -> str:
    return hashlib.scrypt(secret.encode(), salt=salt, maxmem=64 * 1024 * 1024, **SCRYPT).hex()


def add_user(db: Database, name: str, role: str, actor: str) -> tuple[UserInfo, str]:
    """Create a user; returns (info, the API key). The key is not stored and cannot be shown again."""
    if not NAME_PATTERN.match(name):
        raise ConfigError("a user name is 1-64 letters, digits or . _ @ - (starting with a letter or digit)")
    if role not in ROLES:
        raise ConfigError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    user = User(name=name, role=role, key_id=key_id, key_salt=salt.hex(), key_hash=hash_secret(secret, salt),
                created_at=audit.utcnow())
    try:
        with db.transaction() as session:
            if session.scalars(select(User).where(User.name == name)).one_or_none() is not None:
                raise ConflictError(f"a user named {name!r} already exists")
            session.add(user)
            audit.record(session, actor, "user_add", None, {"user": name, "role": role})
    except IntegrityError:  # pragma: no cover - a concurrent add of the same name
        raise ConflictError(f"a user named {name!r} already exists") from None
    return _info(user), f"pn_{key_id}_{secret}"


def list_users(db: Database) -> list[UserInfo]:
    with db.transaction() as session:
        return [_info(u) for u in session.scalars(select(User).order_by(User.name)).all()]


def disable_user(db: Database, name: str, actor: str) -> UserInfo:
    """Disable a user (their key stops working at once); idempotent."""
    with db.transaction() as session:
        user = session.scalars(select(User).where(User.name == name)).one_or_none()
        if user is None:
            raise RecordNotFoundError(f"no user named {name!r}")
        if user.disabled_at is None:
            user.disabled_at = audit.utcnow()
            audit.record(session, actor, "user_disable", None, {"user": name})
        return _info(user)


def any_active_user(db: Database) -> bool:
    with db.transaction() as session:
        return session.scalars(select(User.seq).where(User.disabled_at.is_(None)).limit(1)).first() is not None


def looks_like_user_key(key: str) -> bool:
    return KEY_PATTERN.match(key) is not None


def authenticate(db: Database, key: str, verified: dict[str, str] | None = None) -> UserInfo:
    """The active user holding ``key``, or ``AuthenticationError``. ``verified`` is an optional in-memory
    cache {key_id: sha256(key)} of keys already checked by scrypt (the database is still asked every time
    whether the user is enabled)."""
    match = KEY_PATTERN.match(key)
    if match is None:
        raise AuthenticationError("not a pneumo user key")
    key_id, secret = match.groups()
    with db.transaction() as session:
        user = session.scalars(select(User).where(User.key_id == key_id)).one_or_none()
    if user is None or user.disabled_at is not None:
        raise AuthenticationError("unknown or disabled API key")
    fast = hashlib.sha256(key.encode()).hexdigest()
    if verified is not None and hmac.compare_digest(verified.get(key_id, ""), fast):
        return _info(user)
    if not hmac.compare_digest(hash_secret(secret, bytes.fromhex(user.key_salt)), user.key_hash):
        raise AuthenticationError("wrong API key")
    if verified is not None:
        verified[key_id] = fast
    return _info(user)
