"""``RunConfig``: one training run, a method's config nested with the shared train and eval settings.

It sits above the algorithm registry (its ``algo`` field is checked against the method's registered
config class), so building one imports the methods; :mod:`marlkd.config` stays free of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marlkd.algos import ALGOS
from marlkd.config import EvalConfig, TrainConfig, check, from_dict, to_dict
from marlkd.errors import ConfigError


@dataclass(frozen=True)
class RunConfig:
    """One training run: a method on a dataset, written to ``out``.

    ``data_checksum`` pins the run to its dataset: the SHA-256 of the dataset's arrays (``dataset info``
    prints it). Training fills it in (with ``data`` made absolute) in the run's config.json, and a resumed
    or evaluated run refuses a dataset whose checksum differs. None: take the dataset's.
    """

    method: str
    data: str
    out: str
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    algo: Any = None  # the method's own frozen config dataclass; None: its defaults
    data_checksum: str | None = None

    def __post_init__(self) -> None:
        check(bool(str(self.out).strip()), "out", "must name a run directory, got an empty path")
        check(bool(str(self.data).strip()), "data", "must name a dataset file, got an empty path")
        check(self.method in ALGOS, "method", f"unknown method {self.method!r}; known: {sorted(ALGOS)}")
        cls = ALGOS[self.method].config_cls
        if self.algo is None:
            object.__setattr__(self, "algo", cls())
        elif isinstance(self.algo, dict):
            object.__setattr__(self, "algo", from_dict(cls, self.algo, where="algo"))
        check(isinstance(self.algo, cls), "algo", f"must be a {cls.__name__} for method {self.method!r}")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        return from_dict(cls, data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc})") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_dict(data)
