"""The device a run trains on, and whether one update's activations fit in its memory."""

from __future__ import annotations

import os

import torch

from marlkd.errors import ConfigError
from marlkd.run_config import RunConfig


def resolve_device(name: str) -> torch.device:
    """The torch device of ``train.device`` (``auto``: CUDA when there is one)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config field train.device: cuda requested but no CUDA device is available")
    return torch.device(name)


def check_memory(config: RunConfig, dataset) -> None:
    """Refuse batch and context sizes whose activations cannot fit in this machine's memory."""
    need = estimate_memory(config, dataset)
    device = resolve_device(config.train.device)
    have = _device_memory(device)
    if have and need > 0.8 * have:
        fields = "train.batch_size" + (" / algo.context" if hasattr(config.algo, "context") else "")
        raise ConfigError(
            f"config field {fields}: batch size {config.train.batch_size}"
            + (f" with context {config.algo.context}" if hasattr(config.algo, "context") else "")
            + f" needs about {_bytes(need)} for one update, more than this machine's {_bytes(have)} of "
            f"{device.type} memory; lower them"
        )


def estimate_memory(config: RunConfig, dataset) -> int:
    """A rough lower bound (bytes) on one update's activations: attention scores and hidden states of
    every layer for sequence models, hidden layers for the others (fp32)."""
    batch, agents = config.train.batch_size, dataset.n_agents
    algo = config.algo
    width = int(getattr(algo, "width", getattr(algo, "hidden", 256)) or 256)
    layers = int(getattr(algo, "layers", 2) or 2)
    context = getattr(algo, "context", None)
    if context is None:  # per-transition MLPs
        return 4 * batch * agents * (dataset.obs_dim + 4 * width * layers)
    heads = int(getattr(algo, "heads", 1) or 1)
    tokens = 3 * int(context)  # return-to-go, observation, action per step
    # per agent sequence (students) or one sequence of all agents (centralized): the larger of the two
    per_sequence = max(agents * tokens * tokens, (agents * tokens) ** 2) * heads + agents * tokens * width * 8
    return 4 * 2 * batch * layers * per_sequence


def _device_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"
