"""Student training throughput: the batched ensemble (stacked weights, one forward) against a Python loop
over n separate students with the same weights, for n = 2, 4, 8, at B = 64, K = 20, width 128, 3 layers.

    python benchmarks/bench_students.py [--threads 2] [--precision bf16|fp32] [--repeats 5] [--clock wall|cpu]
        [--malloc retain|glibc]

Prints a Markdown table: median seconds per training step (forward, backward, AdamW) of the ensemble, of
the loop, and of one student alone, and the ratios the speed targets speak of; with ``--clock cpu`` also
the page faults per step. ``--malloc retain`` (the default, what every entry point does:
``marlkd.memory.retain_freed_memory``) keeps freed memory for reuse; ``--malloc glibc`` leaves glibc's own
policy, under which the ensemble's larger buffers come back as fresh pages every step.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from _timing import action_loss_update, cpu_autocast, median_time

from marlkd.memory import retain_freed_memory
from marlkd.models.decision_transformer import DecisionTransformer, DTConfig


def make_inputs(members: int, batch: int, context: int, obs_dim: int, actions: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    returns = torch.randn(members, batch, context, 1, generator=g)
    obs = torch.randn(members, batch, context, obs_dim, generator=g)
    act = torch.randint(0, actions, (members, batch, context), generator=g)
    onehot = F.one_hot(act, actions).float()
    timesteps = torch.arange(context).expand(members, batch, context)
    mask = torch.ones(members, batch, context, dtype=torch.bool)
    return returns, obs, onehot, timesteps, mask, act


def step_fn(models, inputs, dtype):
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-4) for m in models]
    members = len(models)

    def step():
        for i, (model, opt) in enumerate(zip(models, optimizers, strict=True)):
            sl = slice(None) if members == 1 else slice(i, i + 1)
            r, o, a, t, m, act = (x[sl] for x in inputs)
            with cpu_autocast(dtype):
                logits, _ = model(r, o, a, t, m)
            action_loss_update(logits, act, opt)

    return step


def page_faults() -> int:
    """Minor page faults of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="alternate the contenders this many times")
    parser.add_argument("--agents", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="cpu: CPU time")
    parser.add_argument("--malloc", choices=("retain", "glibc"), default="retain")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    retained = args.malloc == "retain" and retain_freed_memory()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    dtype = torch.bfloat16 if args.precision == "bf16" else None
    B, K, O, A = 64, 20, 78, 5
    print(
        f"threads={args.threads} precision={args.precision} B={B} K={K} width=128 layers=3; "
        f"{args.clock} time; freed memory {'retained' if retained else 'as glibc decides'}\n"
    )
    print(
        "| n | ensemble (s/step) | loop over n (s/step) | one student (s/step) | loop / ensemble | "
        "ensemble / one student | page faults per step: ensemble, loop |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in args.agents:
        cfg = DTConfig(return_dim=1, obs_dim=O, action_dim=A, n_actions=A, context=K, members=n)
        ensemble = DecisionTransformer(cfg)
        singles = []
        for i in range(n):
            single = DecisionTransformer(DTConfig(**{**cfg.__dict__, "members": 1}))
            single.load_state_dict({k: v[i : i + 1].clone() for k, v in ensemble.state_dict().items()})
            singles.append(single)
        inputs = make_inputs(n, B, K, O, A)
        steps = {
            "ensemble": step_fn([ensemble], inputs, dtype),
            "loop": step_fn(singles, inputs, dtype),
            "one": step_fn([singles[0]], tuple(x[:1] for x in inputs), dtype),
        }
        times: dict[str, list[float]] = {name: [] for name in steps}
        faults: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(args.rounds):  # interleaved, so load changes on a shared machine hit all alike
            for name, step in steps.items():
                step()  # warm-up, so that the faults counted are those of steady steps
                before = page_faults()
                times[name].append(median_time(step, args.repeats, warmup=1, clock=clock))
                faults[name].append((page_faults() - before) / (args.repeats + 1))
        t_ens, t_loop, one = (statistics.median(times[k]) for k in ("ensemble", "loop", "one"))
        f_ens, f_loop = (statistics.median(faults[k]) for k in ("ensemble", "loop"))
        print(
            f"| {n} | {t_ens:.3f} | {t_loop:.3f} | {one:.3f} | {t_loop / t_ens:.2f} | {t_ens / one:.2f} | "
            f"{f_ens:,.0f}, {f_loop:,.0f} |"
        )


if __name__ == "__main__":
    main()
