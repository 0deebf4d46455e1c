"""The model's building blocks: marlkd's CPU dropout and the attention path that uses it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from marlkd.models import decision_transformer
from marlkd.models.decision_transformer import CausalSelfAttention, DecisionTransformer, DTConfig
from marlkd.models.layers import Dropout, dropout


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_zeroes_at_rate_p_and_scales_the_rest(dtype):
    torch.manual_seed(0)
    x = torch.full((200_000,), 2.0, dtype=dtype)
    y = dropout(x, 0.25)
    zeroed = (y == 0).float().mean().item()
    assert abs(zeroed - 0.25) < 0.005  # 200k draws: std of the rate is 0.001
    kept = y[y != 0].float()
    assert torch.allclose(kept, torch.full_like(kept, 2.0 / 0.75), rtol=1e-2)
    assert y.dtype == dtype and y.shape == x.shape
    assert abs(y.float().mean().item() - 2.0) < 0.02  # inverted dropout keeps the mean


def test_dropout_draws_are_uniform_in_every_slot_of_a_random_word():
    """Each 63-bit random integer gives four elements their draws: every slot drops at rate p (the top one
    has 15 random bits like the others), and p is rounded to a multiple of 2^-15."""
    torch.manual_seed(0)
    y = dropout(torch.ones(400_000), 0.1)
    rates = (y == 0).float().view(-1, 4).mean(0)
    assert torch.all((rates - 0.1).abs() < 0.004), rates  # 100k draws per slot: std 0.001
    assert torch.allclose(y[y != 0], torch.tensor(32768 / (32768 - 3277)))


def test_dropout_is_identity_in_eval_and_at_p_zero():
    x = torch.randn(4, 5)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    module = Dropout(0.5).eval()
    assert module(x) is x
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Dropout(1.0)


def test_dropout_gradient_is_the_scaled_mask():
    torch.manual_seed(1)
    x = torch.randn(1000, requires_grad=True)
    y = dropout(x, 0.5)
    y.sum().backward()
    expected = (y != 0).float() * 2.0
    assert torch.equal(x.grad, expected)


def test_dropout_draws_from_torch_generator():
    x = torch.randn(64)
    torch.manual_seed(3)
    a = dropout(x, 0.3)
    torch.manual_seed(3)
    b = dropout(x, 0.3)
    assert torch.equal(a, b)


@pytest.mark.parametrize("padded", [False, True])
def test_attention_unfused_equals_sdpa_when_nothing_is_dropped(monkeypatch, padded):
    """The unfused training path is scaled dot-product attention, causal, with left padding hidden."""
    torch.manual_seed(0)
    MB, H, L, Dh = 6, 2, 9, 4
    q, k, v = (torch.randn(MB, H, L, Dh) for _ in range(3))
    mask = None
    if padded:
        valid = torch.ones(1, MB, 3, dtype=torch.bool)
        valid[0, :3, 0] = False  # three sequences with their first step padded
        mask = DecisionTransformer._attention_mask(valid)
    monkeypatch.setattr(decision_transformer, "dropout", lambda x, p, training=True: x)
    ours = CausalSelfAttention._attention_unfused(q, k, v, mask, 0.1)
    if mask is None:
        reference = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(ours, reference, atol=1e-5)


def test_dt_training_mode_is_stochastic_and_eval_mode_deterministic():
    cfg = DTConfig(
        return_dim=1,
        obs_dim=5,
        action_dim=3,
        n_actions=3,
        context=4,
        max_timestep=10,
        width=16,
        layers=1,
        heads=2,
        dropout=0.2,
    )
    model = DecisionTransformer(cfg)
    inputs = (
        torch.randn(1, 2, 4, 1),
        torch.randn(1, 2, 4, 5),
        torch.randn(1, 2, 4, 3),
        torch.arange(4).expand(1, 2, 4),
        torch.ones(1, 2, 4, dtype=torch.bool),
    )
    model.train()
    a, _ = model(*inputs)
    b, _ = model(*inputs)
    assert not torch.allclose(a, b)
    model.eval()
    c, _ = model(*inputs)
    d, _ = model(*inputs)
    assert torch.equal(c, d)


def test_make_optimizer_is_fused_on_the_cpu_and_steps_like_plain_adamw():
    from types import SimpleNamespace

    from marlkd.optim import make_optimizer

    train = SimpleNamespace(lr=1e-2, weight_decay=0.1, warmup_steps=1)
    torch.manual_seed(0)
    a = torch.nn.Linear(4, 3)
    b = torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    fused, _ = make_optimizer(a.parameters(), train)
    plain = torch.optim.AdamW(b.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    assert fused.defaults["fused"] is True
    x = torch.randn(8, 4)
    for _ in range(3):
        for model, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_make_optimizer_keeps_parameters_given_as_generators_in_groups():
    from types import SimpleNamespace

    from marlkd.optim import make_optimizer

    train = SimpleNamespace(lr=1e-2, weight_decay=0.1, warmup_steps=1)
    model = torch.nn.Linear(4, 3)
    optimizer, _ = make_optimizer([{"params": (p for p in model.parameters()), "weight_decay": 0.0}], train)
    assert [p for group in optimizer.param_groups for p in group["params"]] == list(model.parameters())
    assert optimizer.defaults["fused"] is True


def test_bf16_autocast_only_where_it_pays_off() -> None:
    from marlkd.optim import cpu_supports_bf16

    amd = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu avx512f avx512_bf16\n"
    intel_amx = "vendor_id\t: GenuineIntel\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n"
    intel_no_amx = "vendor_id\t: GenuineIntel\nflags\t\t: fpu avx512f avx512_bf16\n"
    old_amd = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2\n"
    assert cpu_supports_bf16(amd) and cpu_supports_bf16(intel_amx)
    assert not cpu_supports_bf16(intel_no_amx) and not cpu_supports_bf16(old_amd)
