"""IDT: n independent decision transformers; agent i sees only its own (R^i, o^i, a^i).

The n models train as one ensemble (stacked weights, one batched forward), which is the same as n
separate models with the same weights (``tests/test_models.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from marlkd.algos import AlgoEntry, register
from marlkd.algos._dt import DTLearner, DTModelConfig
from marlkd.models.layouts import Layout
from marlkd.names import METHOD_NAMES


@dataclass(frozen=True)
class Config(DTModelConfig):
    """IDT uses the decision-transformer defaults."""


def build(ctx) -> DTLearner:
    return DTLearner(ctx, Layout.INDEPENDENT, ctx.config)


register(
    AlgoEntry(
        "idt",
        Config,
        build,
        "independent decision transformers, one per agent",
        display_name=METHOD_NAMES["idt"],
    )
)
