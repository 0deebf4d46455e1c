"""``marlkd envs``: list every registered and built-in environment with its sizes."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from importlib import metadata

from marlkd.envs import describe, env_spec, list_envs
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
