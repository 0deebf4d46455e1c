"""Typed configuration: frozen dataclasses, validated once, shared by the Python API and the CLI.

:class:`TrainConfig` and :class:`EvalConfig` are what every run shares; ``marlkd.run_config.RunConfig``
nests them with the algorithm's own config dataclass. :func:`add_dataclass_arguments` turns any of these
into argparse options, so the CLI cannot drift from the API. This module depends on nothing else in the
package but :mod:`marlkd.errors`, so every layer may use :func:`check`.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from marlkd.errors import ConfigError

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
Device = Literal["cpu", "cuda", "auto"]
DEVICES: tuple[str, ...] = typing.get_args(Device)


def check(condition: bool, where: str, message: str) -> None:
    """Raise :class:`ConfigError` naming the field ``where`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"config field {where}: {message}")


def check_at_least_one(config: Any, section: str, names: tuple[str, ...]) -> None:
    """:func:`check` that each field of ``config`` in ``names`` is >= 1 (a size or a count)."""
    for name in names:
        value = getattr(config, name)
        check(value >= 1, f"{section}.{name}", f"must be >= 1, got {value}")


def check_dropouts(section: str, dropout: float, attn_dropout: float | None) -> None:
    """:func:`check` a transformer's dropout probabilities: ``dropout`` in [0, 1), ``attn_dropout`` None
    (the same as ``dropout``) or in [0, 1)."""
    check(0.0 <= dropout < 1.0, f"{section}.dropout", f"must be in [0, 1), got {dropout}")
    check(
        attn_dropout is None or 0.0 <= attn_dropout < 1.0,
        f"{section}.attn_dropout",
        f"must be in [0, 1), got {attn_dropout}",
    )


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
    precision: Precision = "auto"
    seed: int = 0
    device: Device = "cpu"
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
        check(self.device in DEVICES, "train.device", f"must be one of {DEVICES}")
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


def _scalar_type(hint: Any) -> tuple[Any, bool]:
    """(base type, optional) of a field annotation such as ``float | None``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


def choices_of(hint: Any) -> tuple[Any, ...] | None:
    """The allowed values of a ``Literal[...]`` annotation (optional or not); None for other types."""
    base, _ = _scalar_type(hint)
    return typing.get_args(base) if typing.get_origin(base) is typing.Literal else None


_DOC_ENTRY = re.compile(r"^(?P<names>[A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*:(?:\s+(?P<text>.*))?$")
_REST_ROLE = re.compile(r":[a-z]+:`~?(?:[\w.]+\.)?([^`]+)`")


def plain_text(text: str) -> str:
    """Docstring markup made readable on a terminal: reST ``literals`` and :role:`targets` lose their
    marks."""
    return _REST_ROLE.sub(r"\1", text).replace("``", "")


def field_docs(cls: type) -> dict[str, str]:
    """Each field's description from the ``Attributes:`` sections of ``cls``'s docstrings (and its bases').

    An entry is ``name: text`` (or ``a, b: text`` for fields documented together) indented one level
    below ``Attributes:``; deeper-indented lines continue it. Markup is removed (:func:`plain_text`).
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        lines = inspect.cleandoc(klass.__doc__ or "").splitlines() if klass.__doc__ else []
        inside, indent, current = False, None, []
        for line in lines:
            stripped = line.strip()
            if stripped == "Attributes:":
                inside, indent, current = True, None, []
                continue
            if not inside:
                continue
            if not stripped:
                current = []
                continue
            depth = len(line) - len(line.lstrip())
            if depth == 0:  # the section ended
                inside = False
                continue
            if indent is None:
                indent = depth
            match = _DOC_ENTRY.match(stripped) if depth == indent else None
            if match:
                current = [name.strip() for name in match.group("names").split(",")]
                for name in current:
                    docs[name] = match.group("text") or ""
            elif current and depth > indent:
                for name in current:
                    docs[name] = (docs[name] + " " + stripped).strip()
    return {name: plain_text(text) for name, text in docs.items()}


def summary_line(cls: type) -> str:
    """The first clause of ``cls``'s docstring (up to its first full stop or semicolon), markup and
    references to other classes removed: a group title."""
    paragraph = " ".join((inspect.getdoc(cls) or "").strip().split("\n\n")[0].split())
    first = re.split(r"(?<=[^.])\.(?:\s|$)|;\s", paragraph)[0]
    first = re.sub(r"\s*\(``\w+``\)", "", first)  # "(``MLPConfig``)"
    first = plain_text(first).strip().rstrip(".:")
    return first + ")" * (first.count("(") - first.count(")"))  # a clause cut inside parentheses


class _NoneValue:
    """The value of an option given as ``none``: sets an optional field to None (a CLI ``None`` means
    'not given')."""

    def __repr__(self) -> str:
        return "none"


NONE = _NoneValue()


def _optional(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return NONE if text.lower() in ("none", "null") else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names the type in its errors
    return parse


class _FlagAction(argparse.Action):
    """``--name`` sets True, ``--no-name`` sets False; neither leaves None ('not given')."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        negated = [f"--no-{s[2:]}" for s in option_strings if s.startswith("--")]
        super().__init__([*option_strings, *negated], dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, not (option_string or "").startswith("--no-"))

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


def _default_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value)
    return str(value)


def add_dataclass_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    prefix: str = "",
    title: str | None = None,
    exclude: Iterable[str] = (),
) -> argparse._ArgumentGroup:
    """Add one ``--prefix-name`` option per field of ``cls`` to a group titled ``title``.

    Types come from the annotations: ``Literal[...]`` lists its choices, ``bool`` becomes a pair of flags
    (``--name`` / ``--no-name``), a tuple takes several values, an optional field also accepts ``none``.
    The help is the field's own ``Attributes:`` entry. Defaults stay None (= 'not given'), so that
    :func:`dataclass_from_arguments` can layer the given options over a base config.
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    group = parser.add_argument_group(title or summary_line(cls) or cls.__name__)
    skip = set(exclude)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint) or f.name in skip:
            continue
        base, optional = _scalar_type(hint)
        option = "--" + (f"{prefix}-" if prefix else "") + f.name.replace("_", "-")
        dest = (f"{prefix}_" if prefix else "") + f.name
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = docs.get(f.name, "")
        shown = _default_text(default)
        if shown:
            help_text = f"{help_text.rstrip('.')} (default: {shown})".strip()
        help_text = help_text.replace("%", "%%")
        choices = choices_of(hint)
        if base is bool:
            group.add_argument(option, dest=dest, action=_FlagAction, default=None, help=help_text)
            continue
        kwargs: dict[str, Any] = {"dest": dest, "default": None, "help": help_text}
        if choices is not None:
            convert = type(choices[0])
            names = [str(c) for c in choices] + (["none"] if optional else [])
            kwargs["metavar"] = "{" + ",".join(names) + "}"
            kwargs["choices"] = [convert(c) for c in choices] + ([NONE] if optional else [])
            kwargs["type"] = _optional(convert) if optional else convert
        elif typing.get_origin(base) is tuple:
            kwargs["type"] = typing.get_args(base)[0]
            kwargs["nargs"] = "+"
        else:
            convert = base if base in (int, float, str) else str
            kwargs["type"] = _optional(convert) if optional else convert
            kwargs["metavar"] = {int: "N", float: "X", str: "TEXT"}.get(convert, "VALUE")
            if optional:
                kwargs["metavar"] += "|none"
        group.add_argument(option, **kwargs)
    return group


def dataclass_from_arguments(cls: type, args: argparse.Namespace, prefix: str = "", base: Any = None) -> Any:
    """Build ``cls`` from parsed options: the given ones override ``base`` (or the defaults)."""
    values = to_dict(base) if base is not None else {}
    for f in dataclasses.fields(cls):
        key = (f"{prefix}_" if prefix else "") + f.name
        value = getattr(args, key.replace("-", "_"), None)
        if value is NONE:
            values[f.name] = None
        elif value is not None:
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return from_dict(cls, values, where=prefix)
