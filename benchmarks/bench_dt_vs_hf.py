"""Our decision transformer's training step against Hugging Face's ``DecisionTransformerModel``.

Same shapes for both (B = 64, K = 20, width 128, 3 layers, 1 head, dropout 0.1, Grid-World sizes: obs 78,
5 actions, one-hot actions), same optimizer (AdamW), same loss (cross-entropy on the o_t-token action
predictions). HF's model is timed in fp32 (its default) and under bf16 autocast; ours in fp32 and bf16.

    pip install transformers   # only for this benchmark
    python benchmarks/bench_dt_vs_hf.py [--threads 2] [--repeats 7] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from _timing import action_loss_update, cpu_autocast, median_time

from marlkd.models.decision_transformer import DecisionTransformer, DTConfig

B, K, OBS, ACT, WIDTH, LAYERS = 64, 20, 78, 5, 128, 3


def data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    actions = torch.randint(0, ACT, (B, K), generator=g)
    return {
        "returns": torch.randn(B, K, 1, generator=g),
        "obs": torch.randn(B, K, OBS, generator=g),
        "actions": actions,
        "onehot": F.one_hot(actions, ACT).float(),
        "timesteps": torch.arange(K).expand(B, K).contiguous(),
        "mask": torch.ones(B, K, dtype=torch.long),
    }


def ours_step(dtype, attn_dropout=None):
    model = DecisionTransformer(
        DTConfig(
            return_dim=1,
            obs_dim=OBS,
            action_dim=ACT,
            n_actions=ACT,
            context=K,
            max_timestep=1000,
            width=WIDTH,
            layers=LAYERS,
            heads=1,
            dropout=0.1,
            attn_dropout=attn_dropout,
        )
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    d = data()

    def step():
        with cpu_autocast(dtype):
            logits, _ = model(
                d["returns"][None],
                d["obs"][None],
                d["onehot"][None],
                d["timesteps"][None],
                d["mask"][None].bool(),
            )
        action_loss_update(logits, d["actions"], opt)

    return step


def with_torch_dropout(step):
    """The step with PyTorch's own dropout in place of marlkd's CPU dropout."""
    from marlkd.models import decision_transformer, layers

    fast = layers.dropout

    def torch_dropout(x, p, training=True):
        return F.dropout(x, p, training)

    def wrapped():
        layers.dropout = decision_transformer.dropout = torch_dropout
        try:
            step()
        finally:
            layers.dropout = decision_transformer.dropout = fast

    return wrapped


def hf_step(dtype):
    from transformers import DecisionTransformerConfig, DecisionTransformerModel

    cfg = DecisionTransformerConfig(
        state_dim=OBS,
        act_dim=ACT,
        hidden_size=WIDTH,
        n_layer=LAYERS,
        n_head=1,
        max_ep_len=1000,
        n_positions=3 * K,
        resid_pdrop=0.1,
        embd_pdrop=0.1,
        attn_pdrop=0.1,
        action_tanh=False,
    )
    model = DecisionTransformerModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    d = data()

    def step():
        with cpu_autocast(dtype):
            out = model(
                states=d["obs"],
                actions=d["onehot"],
                returns_to_go=d["returns"],
                timesteps=d["timesteps"],
                attention_mask=d["mask"],
                return_dict=True,
            )
        action_loss_update(out.action_preds, d["actions"], opt)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3, help="alternate the contenders this many times")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time, or this process's CPU time (on a machine shared with other work)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    contenders = {
        "HF DecisionTransformerModel, fp32": hf_step(None),
        "HF DecisionTransformerModel, bf16 autocast": hf_step(torch.bfloat16),
        "marlkd DecisionTransformer, fp32": ours_step(None),
        "marlkd DecisionTransformer, bf16 autocast": ours_step(torch.bfloat16),
        "marlkd DecisionTransformer, bf16 autocast, PyTorch's dropout": with_torch_dropout(
            ours_step(torch.bfloat16)
        ),
        "marlkd DecisionTransformer, bf16 autocast, no attention-probability dropout": ours_step(
            torch.bfloat16, attn_dropout=0.0
        ),
    }
    results: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):  # interleaved, so load changes on a shared machine hit all alike
        for name, step in contenders.items():
            clock = time.process_time if args.clock == "cpu" else time.perf_counter
            results[name].append(median_time(step, args.repeats, warmup=3, clock=clock))
    base = statistics.median(results["HF DecisionTransformerModel, fp32"])
    print(
        f"threads={args.threads}, B={B}, K={K}, width={WIDTH}, layers={LAYERS}; {args.clock} time, "
        f"median of {args.rounds} rounds\n"
    )
    print("| model | ms / training step | speed-up over HF fp32 |")
    print("| --- | ---: | ---: |")
    for name, times in results.items():
        t = statistics.median(times)
        print(f"| {name} | {1000 * t:.1f} | {base / t:.2f}x |")


if __name__ == "__main__":
    main()
