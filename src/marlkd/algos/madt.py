"""MADT: one decision transformer with weights shared by all agents; the one-hot agent id is appended
to each agent's observation. Execution is decentralized: agent i's action depends only on its own
history and id."""

from __future__ import annotations

from dataclasses import dataclass

from marlkd.algos import AlgoEntry, register
from marlkd.algos._dt import DTLearner, DTModelConfig
from marlkd.models.layouts import Layout
from marlkd.names import METHOD_NAMES


@dataclass(frozen=True)
class Config(DTModelConfig):
    """MADT uses the decision-transformer defaults."""


def build(ctx) -> DTLearner:
    return DTLearner(ctx, Layout.SHARED, ctx.config)


register(
    AlgoEntry(
        "madt",
        Config,
        build,
        "multi-agent decision transformer: shared weights + agent ids",
        display_name=METHOD_NAMES["madt"],
    )
)
