"""``marlkd envs``: list every registered and built-in environment with its sizes."""

from __future__ import annotations

import argparse
import importlib.util
from dataclasses import dataclass
from importlib import metadata

from marlkd.envs import describe, env_spec, list_envs
from marlkd.envs.registry import _REGISTRY
from marlkd.errors import MarlkdError


@dataclass(frozen=True)
class EnvRow:
    """One line of the listing; ``unavailable`` says why the sizes are missing (empty when present)."""

    env_id: str
    agents: str
    obs_dim: str
    actions: str
    description: str
    unavailable: str = ""


_HIGHWAY = (
    "highway-env {} with several controlled vehicles: per-agent rewards, discrete meta-actions, "
    "kinematics observations"
)
_SMAX = "SMAX {} (jaxmarl, heuristic enemies): SMAC micromanagement, action masks"
# The built-in environments whose modules import heavy packages (highway-env, JAX), listed at their default
# sizes without importing those: (package that must be installed, row). tests/test_cli_envs.py checks
# every row against the environment's own spec and description.
PRELISTED: dict[str, tuple[str, EnvRow]] = {
    "highway": ("highway_env", EnvRow("highway", "3", "25", "5", _HIGHWAY.format("highway-fast-v0"))),
    "highway-slow": ("highway_env", EnvRow("highway-slow", "3", "25", "5", _HIGHWAY.format("highway-v0"))),
    "smax-2s3z": ("jaxmarl", EnvRow("smax-2s3z", "5", "127", "10 (masked)", _SMAX.format("2s3z"))),
    "smax-3s5z": ("jaxmarl", EnvRow("smax-3s5z", "8", "205", "13 (masked)", _SMAX.format("3s5z"))),
    "smax-8m-vs-9m": (
        "jaxmarl",
        EnvRow("smax-8m-vs-9m", "8", "218", "14 (masked)", _SMAX.format("8m_vs_9m")),
    ),
    "smax-3s5z-vs-3s6z": (
        "jaxmarl",
        EnvRow("smax-3s5z-vs-3s6z", "8", "218", "14 (masked)", _SMAX.format("3s5z_vs_3s6z")),
    ),
}


def installed(package: str) -> bool:
    """Whether ``package`` can be imported (looked up, not imported)."""
    return importlib.util.find_spec(package) is not None


def _declared_extras() -> set[str]:
    try:
        return set(metadata.metadata("marlkd").get_all("Provides-Extra") or [])
    except metadata.PackageNotFoundError:
        return set()


def _missing_requirement(env_id: str, error: ImportError, extras: set[str]) -> str:
    """What ``env_id`` lacks: the optional extra named like its family, else the missing module."""
    family = env_id.split("-", 1)[0]
    if family in extras:
        return f"needs extra {family} (pip install 'marlkd[{family}]')"
    missing = getattr(error, "name", None) or str(error)
    return f"unavailable: module {missing} is not installed"


def env_rows() -> list[EnvRow]:
    """One row per environment id; environments whose optional dependencies are missing say which."""
    extras = _declared_extras()
    rows = []
    for env_id in list_envs():
        if env_id in PRELISTED and env_id not in _REGISTRY:  # not loaded yet: list it without loading it
            package, row = PRELISTED[env_id]
            if installed(package):
                rows.append(row)
            else:
                error = ModuleNotFoundError(f"No module named {package!r}", name=package)
                rows.append(EnvRow(env_id, "-", "-", "-", "", _missing_requirement(env_id, error, extras)))
            continue
        try:
            entry = describe(env_id)
            spec = env_spec(env_id)
        except (ImportError, MarlkdError) as error:
            # the optional environments' modules raise MarlkdError from the ImportError of their package
            missing = error if isinstance(error, ImportError) else error.__cause__
            if isinstance(missing, ImportError):
                reason = _missing_requirement(env_id, missing, extras)
            else:  # a user's environment that cannot be made: listed with why, the others still shown
                reason = f"unavailable: {error}"
            rows.append(EnvRow(env_id, "-", "-", "-", "", reason))
            continue
        mask = " (masked)" if spec.has_action_mask else ""
        rows.append(
            EnvRow(
                env_id, str(spec.n_agents), str(spec.obs_dim), f"{spec.n_actions}{mask}", entry.description
            )
        )
    return rows


def format_rows(rows: list[EnvRow]) -> str:
    """The rows as an aligned plain-text table."""
    header = EnvRow("id", "agents", "obs", "actions", "description")
    table = [header, *rows]
    widths = [
        max(len(getattr(row, name)) for row in table) for name in ("env_id", "agents", "obs_dim", "actions")
    ]
    lines = []
    for row in table:
        cells = [row.env_id, row.agents, row.obs_dim, row.actions]
        text = "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        lines.append(f"{text}  {row.unavailable or row.description}".rstrip())
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the environment table; exit code 0."""
    print(format_rows(env_rows()))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``marlkd envs`` to the command line."""
    parser = subparsers.add_parser(
        "envs",
        help="list the environments with their agents, observation size and actions",
        description="List every registered and built-in environment id with its default sizes. An "
        "environment whose optional dependencies are not installed is listed with what it needs.",
    )
    parser.set_defaults(func=run)
