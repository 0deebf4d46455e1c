"""marlkd: offline multi-agent RL by sequence modelling and knowledge distillation.

Python API (the CLI is a thin layer over it)::

    import marlkd
    env = marlkd.make("grid-world")                       # PettingZoo ParallelEnv
    cfg = marlkd.RunConfig(method="ours", data="gw.h5", out="runs/ours")
    results = marlkd.train(cfg)                           # trains, evaluates, returns results.json
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING  # noqa: E402

from marlkd.config import EvalConfig, TrainConfig  # noqa: E402
from marlkd.envs import env_spec, list_envs, make, make_batched, register  # noqa: E402

if TYPE_CHECKING:
    from marlkd.run_config import RunConfig


def __getattr__(name: str):
    # RunConfig checks its method against the algorithm registry, which imports torch: load it on first use
    if name == "RunConfig":
        from marlkd.run_config import RunConfig

        return RunConfig
    raise AttributeError(f"module 'marlkd' has no attribute {name!r}")


def train(
    config: "RunConfig", *, progress: bool = True, lock_timeout: float = 0.0, wandb: bool | None = None
) -> dict:
    """Train one method on one dataset (see :func:`marlkd.training.train`)."""
    from marlkd.training import train as _train

    return _train(config, progress=progress, lock_timeout=lock_timeout, wandb=wandb)


def load_dataset(path):
    """Load and validate an HDF5 dataset (see :func:`marlkd.data.format.load_dataset`)."""
    from marlkd.data.format import load_dataset as _load

    return _load(path)


__all__ = [
    "EvalConfig",
    "RunConfig",
    "TrainConfig",
    "env_spec",
    "list_envs",
    "load_dataset",
    "make",
    "make_batched",
    "register",
    "train",
]
