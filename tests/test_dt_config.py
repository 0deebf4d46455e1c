"""A method's decision-transformer settings (``DTModelConfig``) reach the network's ``DTConfig`` whole."""

from __future__ import annotations

import dataclasses
import typing
from types import SimpleNamespace

import pytest

from marlkd.algos._dt import ARCHITECTURE_FIELDS, DTModelConfig, build_model
from marlkd.models.decision_transformer import DTConfig
from marlkd.models.layouts import Layout


def test_every_setting_is_a_network_field_or_the_learners() -> None:
    ours = {f.name for f in dataclasses.fields(DTModelConfig)}
    network = {f.name for f in dataclasses.fields(DTConfig)}
    assert ours - network == {"return_scale"}  # the learner's, not the network's
    assert set(ARCHITECTURE_FIELDS) == ours - {"return_scale", "head_hidden"}
    ours_hints, network_hints = typing.get_type_hints(DTModelConfig), typing.get_type_hints(DTConfig)
    assert all(ours_hints[name] == network_hints[name] for name in ARCHITECTURE_FIELDS)


@pytest.mark.parametrize(("layout", "mlp_heads"), [(Layout.INDEPENDENT, False), (Layout.CENTRALIZED, True)])
def test_build_model_copies_the_settings(layout: Layout, mlp_heads: bool) -> None:
    dataset = SimpleNamespace(n_agents=3, obs_dim=5, n_actions=4, max_steps=9)
    cfg = DTModelConfig(context=3, width=8, layers=2, heads=2, dropout=0.05, head_hidden=6, attn_dropout=0.0)
    model = build_model(layout, dataset, cfg, mlp_heads=mlp_heads).cfg
    assert {name: getattr(model, name) for name in ARCHITECTURE_FIELDS} == {
        name: getattr(cfg, name) for name in ARCHITECTURE_FIELDS
    }
    assert model.head_hidden == (6 if mlp_heads else 0)
    assert (model.max_timestep, model.n_actions) == (10, 4)
    assert model.members == (3 if layout == Layout.INDEPENDENT else 1)
