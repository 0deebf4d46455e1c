"""Causal self-attention on the CPU: PyTorch's fused ``scaled_dot_product_attention`` against the unfused
path marlkd's decision transformer takes there (two matmuls and a softmax), forward + backward and forward
only, at decision-transformer shapes (3K tokens, one head of width 128), bf16.

    python benchmarks/bench_attention.py [--threads 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from _timing import median_time

from marlkd.models.decision_transformer import CausalSelfAttention


def contenders(batch: int, tokens: int) -> list:
    """fused fwd+bwd, unfused fwd+bwd, fused forward, unfused forward, on one set of inputs."""
    q, k, v = (torch.randn(batch, 1, tokens, 128, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))

    def fused():
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()

    def unfused():
        CausalSelfAttention._attention_unfused(q, k, v, None, 0.0).sum().backward()

    def fused_fwd():
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def unfused_fwd():
        with torch.no_grad():
            CausalSelfAttention._attention_unfused(q, k, v, None, 0.0)

    return [fused, unfused, fused_fwd, unfused_fwd]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="alternate the contenders this many times")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads={args.threads}, bf16, one head of width 128; ms, median of {args.rounds} rounds\n")
    print(
        "| batch x tokens | fused fwd+bwd | unfused fwd+bwd | speed-up | fused fwd | unfused fwd | speed-up |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for batch, tokens in [(64, 60), (512, 60), (64, 150)]:
        fns = contenders(batch, tokens)
        times: list[list[float]] = [[] for _ in fns]
        for _ in range(args.rounds):  # interleaved: load changes on a shared machine hit all alike
            for i, fn in enumerate(fns):
                times[i].append(median_time(fn, args.repeats, warmup=2))
        a, b, c, d = (1000 * statistics.median(t) for t in times)
        print(f"| {batch} x {tokens} | {a:.1f} | {b:.1f} | {a / b:.2f}x | {c:.1f} | {d:.1f} | {c / d:.2f}x |")


if __name__ == "__main__":
    main()
