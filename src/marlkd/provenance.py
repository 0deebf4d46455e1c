"""Where a result came from: the marlkd and torch versions and the code's git revision."""

from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def code_revision() -> str:
    """The git revision (``HEAD``) of the checkout marlkd runs from; ``unknown`` outside a git checkout."""
    source = Path(__file__).resolve().parent
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return revision or "unknown"


def provenance() -> dict[str, str]:
    """marlkd and torch versions and the code's git revision, read anew at each call: a long sweep's
    driver outlives commits, and each run records its worker's."""
    return {
        "marlkd_version": _version("marlkd"),
        "torch_version": _version("torch"),
        "code_revision": code_revision(),
    }
