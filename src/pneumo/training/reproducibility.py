"""Seeding, deterministic-algorithm mode (inside ``fit`` only) and RNG state capture for exact resumes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

_CUBLAS_KEY = "CUBLAS_WORKSPACE_CONFIG"


def derive_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed mixed from ``seed`` and ``parts`` (e.g. epoch, rank): distinct streams, no global state."""
    value = (int(seed) & 0xFFFFFFFFFFFFFFFF) ^ 0x9E3779B97F4A7C15
    for part in parts:
        value ^= (int(part) + 0x9E3779B97F4A7C15 + (value << 6) + (value >> 2)) & 0xFFFFFFFFFFFFFFFF
        value = (value * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return value & 0x7FFFFFFFFFFFFFFF


def generator(seed: int, *parts: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``derive_seed(seed, *parts)``."""
    gen = torch.Generator()
    gen.manual_seed(derive_seed(seed, *parts))
    return gen


@contextlib.contextmanager
def deterministic_mode(enabled: bool = True) -> Iterator[None]:
    """``torch.use_deterministic_algorithms(True, warn_only=True)`` and deterministic cuDNN for the block;
    the previous settings (and ``CUBLAS_WORKSPACE_CONFIG``) are restored on exit."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        os.environ.get(_CUBLAS_KEY),
    )
    if enabled:
        os.environ.setdefault(_CUBLAS_KEY, ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]
        torch.backends.cudnn.deterministic = saved[3]
        if saved[4] is None:
            os.environ.pop(_CUBLAS_KEY, None)
        else:
            os.environ[_CUBLAS_KEY] = saved[4]


def capture_rng_state() -> dict[str, Any]:
    """The global torch CPU (and CUDA, if initialised) RNG states, e.g. for dropout during training."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
