"""The import contract of docs/architecture.md ("Layering"): lower layers never import higher ones.

Every import statement counts, including deferred ones inside functions and relative ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "marlkd"

# module (file or package directory, relative to src/marlkd) -> the marlkd modules it may import
ALLOWED = {
    "errors.py": (),
    "names.py": (),
    "config.py": ("marlkd.errors",),
    "models": ("marlkd.models", "marlkd.config", "marlkd.errors"),
}
# module -> marlkd modules it must not import (anything else of the package is allowed)
FORBIDDEN = {
    "data": ("marlkd.models", "marlkd.algos", "marlkd.run_config", "marlkd.training", "marlkd.experiments"),
    "envs": ("marlkd.models", "marlkd.algos", "marlkd.run_config", "marlkd.training", "marlkd.experiments"),
    # online PPO sits below the methods built on it (GAIL, AIRL), the experts and finetuning
    "ppo": (
        "marlkd.algos",
        "marlkd.data",
        "marlkd.run_config",
        "marlkd.training",
        "marlkd.experts",
        "marlkd.finetune",
        "marlkd.experiments",
    ),
    # the experiments' statistics are a pure module
    "experiments/stats.py": ("marlkd",),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, the module named ``module``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            # ``from marlkd import algos`` imports marlkd.algos
            if name == "marlkd":
                found += [(node.lineno, f"marlkd.{alias.name}") for alias in node.names]
            found.append((node.lineno, name))
    return found


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(source: str, module: str, allowed=None, forbidden=(), is_package: bool = False) -> list[str]:
    """Imports of package modules in ``source`` outside ``allowed`` (None: all) or inside ``forbidden``."""
    bad = []
    for line, name in imported_modules(source, module, is_package):
        if not within(name, ("marlkd",)) or name == "marlkd":
            continue
        if (allowed is not None and not within(name, allowed)) or within(name, forbidden):
            bad.append(f"{module}:{line} imports {name}")
    return bad


def files(where: str) -> list[Path]:
    target = PACKAGE / where
    return [target] if target.is_file() else sorted(target.rglob("*.py"))


CASES = [(where, allowed, ()) for where, allowed in ALLOWED.items()]
CASES += [(where, None, forbidden) for where, forbidden in FORBIDDEN.items()]


@pytest.mark.parametrize(("where", "allowed", "forbidden"), CASES, ids=[c[0] for c in CASES])
def test_layer_imports_only_what_it_may(where: str, allowed, forbidden) -> None:
    paths = files(where)
    assert paths, f"no module under src/marlkd/{where}"
    bad = []
    for path in paths:
        source = path.read_text()
        bad += violations(source, module_name(path), allowed, forbidden, path.name == "__init__.py")
    assert not bad, "layering broken (see docs/architecture.md):\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "source",
    [
        "from marlkd.data.windows import Window\n",
        "import marlkd.algos\n",
        "from marlkd import algos\n",
        "def f():\n    from marlkd.algos import ALGOS\n",
        "from ..algos import ALGOS\n",
        "from ..data import windows\n",
    ],
)
def test_the_checker_flags_a_forbidden_import(source: str) -> None:
    assert violations(source, "marlkd.models.layouts", ALLOWED["models"])


def test_the_checker_passes_allowed_imports() -> None:
    source = "import torch\nfrom marlkd.config import check\nfrom .layers import MLP\nimport marlkd.models\n"
    assert violations(source, "marlkd.models.layouts", ALLOWED["models"]) == []
    assert violations("from marlkd.algos import ALGOS\n", "marlkd.config", ALLOWED["config.py"])
    assert violations("from marlkd.algos import x\n", "marlkd.data.windows", None, FORBIDDEN["data"])
