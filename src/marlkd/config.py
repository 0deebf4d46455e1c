"""Typed configuration: frozen dataclasses, validated once, shared by the Python API and the CLI.

:class:`TrainConfig` and :class:`EvalConfig` are what every run shares; ``marlkd.run_config.RunConfig``
nests them with the algorithm's own config dataclass. :func:`add_dataclass_arguments` turns any of these
into argparse options, so the CLI cannot drift from the API. This module depends on nothing else in the
package but :mod:`marlkd.errors`, so every layer may use :func:`check`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from marlkd.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")


def check(condition: bool, where: str, message: str) -> None:
    """Raise :class:`ConfigError` naming the field ``where`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"config field {where}: {message}")


@dataclass(frozen=True)
class TrainConfig:
    """What every training run shares.

    Attributes:
        steps: gradient updates (``ours``: student updates; its teacher takes ``teacher_steps`` more).
        batch_size: sequences (or transitions) per update.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay (applied to matrices only).
        warmup_steps: linear learning-rate warm-up, in updates.
        grad_clip: global gradient-norm clip; 0 disables.
        precision: ``auto`` (bf16 autocast where the device supports it), ``fp32`` or ``bf16``.
        seed: seeds PyTorch, NumPy and batch sampling.
        device: ``cpu``, ``cuda`` or ``auto``.
        log_every: updates between metric rows in metrics.csv / TensorBoard.
        checkpoint_every: updates between checkpoints (a final one is always written).
        num_trajectories: use only the first this-many episodes of the dataset (0: all).
        threads: CPU threads (0: automatic: ``MARLKD_THREADS``, else ``OMP_NUM_THREADS``, else 1; see
            ``marlkd.threads``).
    """

    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    grad_clip: float = 0.25
    precision: str = "auto"
    seed: int = 0
    device: str = "cpu"
    log_every: int = 50
    checkpoint_every: int = 500
    num_trajectories: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        check(self.steps >= 0, "train.steps", f"must be >= 0, got {self.steps}")
        check(self.batch_size >= 1, "train.batch_size", f"must be >= 1, got {self.batch_size}")
        check(math.isfinite(self.lr) and self.lr > 0, "train.lr", f"must be finite and > 0, got {self.lr}")
        check(
            math.isfinite(self.weight_decay) and self.weight_decay >= 0,
            "train.weight_decay",
            f"must be finite and >= 0, got {self.weight_decay}",
        )
        check(self.warmup_steps >= 0, "train.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        check(
            math.isfinite(self.grad_clip) and self.grad_clip >= 0,
            "train.grad_clip",
            f"must be finite and >= 0, got {self.grad_clip}",
        )
        check(self.precision in PRECISIONS, "train.precision", f"must be one of {PRECISIONS}")
        check(self.device in ("cpu", "cuda", "auto"), "train.device", "must be cpu, cuda or auto")
        check(self.log_every >= 1, "train.log_every", "must be >= 1")
        check(self.checkpoint_every >= 1, "train.checkpoint_every", "must be >= 1")
        check(self.num_trajectories >= 0, "train.num_trajectories", "must be >= 0")
        check(self.threads >= 0, "train.threads", "must be >= 0")


@dataclass(frozen=True)
class EvalConfig:
    """Decentralized evaluation after training.

    Attributes:
        episodes: evaluation episodes (run as one batch of environment copies).
        target_return: per-agent return-to-go the sequence models are conditioned on; ``None`` takes the
            dataset's best per-agent episode return.
        target_scale: multiplies the default target (ignored when ``target_return`` is set).
        seed: seed of the evaluation environments (episodes are the same for every method).
        gif: also save a GIF of the first evaluation episode.
        every: also evaluate every this many updates during training (0: only at the end); logged as
            ``eval/return_mean`` in metrics.csv with the update count and training wall time.
    """

    episodes: int = 32
    target_return: float | None = None
    target_scale: float = 1.0
    seed: int = 12345
    gif: bool = False
    every: int = 0

    def __post_init__(self) -> None:
        check(self.episodes >= 0, "eval.episodes", f"must be >= 0, got {self.episodes}")
        check(self.every >= 0, "eval.every", f"must be >= 0, got {self.every}")
        check(math.isfinite(self.target_scale) and self.target_scale > 0, "eval.target_scale", "must be > 0")
        check(
            self.target_return is None or math.isfinite(self.target_return),
            "eval.target_return",
            f"must be finite, got {self.target_return}",
        )


def to_dict(obj: Any) -> Any:
    """Nested dataclasses to plain JSON-able dicts."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a dict, rejecting unknown keys (named with their path)."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"config field {where or cls.__name__}: expected a mapping, got {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown config field(s) {', '.join(prefix + u for u in unknown)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints.get(name)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value, where=f"{where}.{name}" if where else name)
        elif isinstance(value, list) and _origin_is_tuple(hint):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _origin_is_tuple(hint: Any) -> bool:
    return typing.get_origin(hint) is tuple


def _scalar_type(hint: Any) -> tuple[type, bool]:
    """(base type, optional) of a field annotation such as ``float | None``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")


def field_docs(cls: type) -> dict[str, str]:
    """Field descriptions from the ``Attributes:`` sections of ``cls``'s docstrings (and its bases')."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        current = None
        for line in (klass.__doc__ or "").splitlines():
            stripped = line.strip()
            head, sep, rest = stripped.partition(":")
            if sep and head.isidentifier() and line.startswith(" " * 8) and not line.startswith(" " * 12):
                current = head
                docs[current] = rest.strip()
            elif current and stripped and line.startswith(" " * 12):
                docs[current] += " " + stripped
            elif not stripped or not line.startswith(" " * 8):
                current = None
    return docs


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """Add one ``--prefix-name`` option per field of ``cls`` (defaults left as None = 'not given')."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    group = parser.add_argument_group(f"{cls.__name__} ({prefix or 'options'})")
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            continue
        base, _ = _scalar_type(hint)
        option = "--" + (f"{prefix}-" if prefix else "") + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"{docs.get(f.name, '')} (default: {default})".replace("%", "%%").strip()
        if base is bool:
            group.add_argument(option, type=_parse_bool, default=None, metavar="BOOL", help=help_text)
        elif typing.get_origin(base) is tuple:
            elem = typing.get_args(base)[0]
            group.add_argument(option, type=elem, nargs="+", default=None, help=help_text)
        elif base in (int, float, str):
            group.add_argument(option, type=base, default=None, help=help_text)
        else:
            group.add_argument(option, type=str, default=None, help=help_text)


def dataclass_from_arguments(cls: type, args: argparse.Namespace, prefix: str = "", base: Any = None) -> Any:
    """Build ``cls`` from parsed options: the given ones override ``base`` (or the defaults)."""
    values = to_dict(base) if base is not None else {}
    for f in dataclasses.fields(cls):
        key = (f"{prefix}_" if prefix else "") + f.name
        value = getattr(args, key.replace("-", "_"), None)
        if value is not None:
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return from_dict(cls, values, where=prefix)
