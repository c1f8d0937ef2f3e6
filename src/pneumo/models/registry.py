"""Registry of model families: name -> (model class, config dataclass).

A family registers itself with ``@register_family("name", ConfigClass)`` on its ``PneumoModel`` subclass; the
class is then built with ``create_model(name, config)``. Names are unique: a second registration of a name
raises ``DuplicateNameError``. Importing ``pneumo.models`` registers the built-in families.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pneumo.config import apply_values
from pneumo.errors import ConfigError, DuplicateNameError
from pneumo.models.base import PneumoModel

M = TypeVar("M", bound=type[PneumoModel])

_FAMILIES: dict[str, tuple[type[PneumoModel], type]] = {}


def register_family(name: str, config_cls: type) -> Callable[[M], M]:
    """Class decorator registering a ``PneumoModel`` subclass under ``name`` with its config dataclass.

    The class must accept ``__init__(self, config)`` with an instance of ``config_cls``. Sets ``cls.family``.
    """
    if not name or not isinstance(name, str):
        raise ConfigError(f"a model family needs a non-empty string name, got {name!r}")
    if not dataclasses.is_dataclass(config_cls):
        raise ConfigError(f"config class of family {name!r} must be a dataclass, got {config_cls!r}")

    def decorate(cls: M) -> M:
        if name in _FAMILIES:
            raise DuplicateNameError(
                f"model family {name!r} is already registered (by {_FAMILIES[name][0].__qualname__}); "
                "choose another name"
            )
        if not (isinstance(cls, type) and issubclass(cls, PneumoModel)):
            raise ConfigError(f"family {name!r} must be a PneumoModel subclass, got {cls!r}")
        cls.family = name
        _FAMILIES[name] = (cls, config_cls)
        return cls

    return decorate


def unregister_family(name: str) -> None:
    """Remove ``name`` from the registry (for tests and plug-ins); unknown names are ignored."""
    _FAMILIES.pop(name, None)


def list_models() -> list[str]:
    """Registered family names, sorted."""
    return sorted(_FAMILIES)


def _lookup(name: str) -> tuple[type[PneumoModel], type]:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise ConfigError(
            f"unknown model family {name!r}; registered families: {', '.join(list_models()) or '(none)'}"
        ) from None


def config_class(name: str) -> type:
    """The config dataclass of family ``name`` (``ConfigError`` if unknown)."""
    return _lookup(name)[1]


def model_class(name: str) -> type[PneumoModel]:
    """The ``PneumoModel`` subclass of family ``name`` (``ConfigError`` if unknown)."""
    return _lookup(name)[0]


def resolve_model_config(name: str, config: Any = None) -> Any:
    """``None`` -> defaults; a mapping -> defaults with those values (dotted keys allowed); an instance of the
    family's config class -> itself. Anything else raises ``ConfigError``."""
    cls = config_class(name)
    if config is None:
        return cls()
    if isinstance(config, cls):
        return config
    if isinstance(config, Mapping):
        return apply_values(cls(), dict(config))
    raise ConfigError(f"config for family {name!r} must be {cls.__name__}, a mapping or None, got {type(config).__name__}")


def create_model(name: str, config: Any = None) -> PneumoModel:
    """Build a fresh (randomly initialised, or ImageNet-initialised where the config asks) model of ``name``."""
    cls, _ = _lookup(name)
    return cls(resolve_model_config(name, config))
