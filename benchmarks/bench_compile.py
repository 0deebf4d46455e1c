"""``torch.compile`` on the sweep's decision transformer: CPU seconds per training step, eager against
compiled, in fp32 and under bf16 autocast, and what compilation costs.

The model is ``table1``'s IDT on Grid-World (K = 10, width 64, 2 layers, B = 64, dropout 0.1, the two
agents as two members), trained on a random-policy Grid-World dataset, one thread. Each variant is a learner
built as a run builds it; compiled variants compile the model in place (``nn.Module.compile``, static
shapes) as one graph (:func:`see_through`; ``--dropout torch`` also hands dropout to inductor) and time the
first update (compilation included, in this process: ``compile_threads = 1``, its C++ compiler's CPU
time counted) separately. The steps are timed in interleaved rounds (each round
times one update of every variant in turn) and the medians are printed, with the speed-up over eager in
the same precision and the net speed-up over a run of ``--run-updates`` updates (compilation included).

    python benchmarks/bench_compile.py                              # eager and default compile, fp32 and bf16
    python benchmarks/bench_compile.py --modes default max-autotune-no-cudagraphs --rounds 20
    python benchmarks/bench_compile.py --dropout torch
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from marlkd.experiments import expand, load_spec
from marlkd.run_config import RunConfig
from marlkd.threads import apply_threads


def see_through(torch_dropout: bool) -> None:
    """What compiled variants need so the model compiles as one graph: the attention mask built whatever
    the data (the model looks at the mask's values to skip it when nothing is padded, which splits the
    graph; on the CPU the full causal mask is what it builds anyway). ``torch_dropout``: under compilation,
    ``F.dropout`` (whose random numbers inductor generates in its fused kernels) instead of marlkd's
    dropout. Eager variants run marlkd's code unchanged."""
    import torch.nn.functional as F

    from marlkd.models import decision_transformer, layers

    eager_mask = decision_transformer.DecisionTransformer._attention_mask

    def attention_mask(mask):
        if not torch.compiler.is_compiling():
            return eager_mask(mask)
        M, B, K = mask.shape
        L = 3 * K
        key_valid = mask.repeat_interleave(3, dim=-1)
        causal = torch.ones(L, L, dtype=torch.bool, device=mask.device).tril()
        eye = torch.eye(L, dtype=torch.bool, device=mask.device)
        return (causal & (key_valid[:, :, None, :] | eye)).reshape(M * B, 1, L, L)

    decision_transformer.DecisionTransformer._attention_mask = staticmethod(attention_mask)
    if torch_dropout:
        eager_dropout = layers.dropout

        def dropout(x, p, training=True):
            if torch.compiler.is_compiling() and training and p > 0.0:
                return F.dropout(x, p, True)
            return eager_dropout(x, p, training)

        layers.dropout = decision_transformer.dropout = dropout


def cpu_with_children() -> float:
    """CPU seconds of this process and of its finished children (the C++ compiler inductor runs)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def idt_config(data: Path, out: Path, precision: str, compile_mode: str | None) -> RunConfig:
    (run,) = [
        r for r in expand(load_spec("table1")) if r.env == "grid-world" and r.method == "idt" and r.seed == 0
    ]
    config = dict(run.config)
    config["train"] = {**config["train"], "precision": precision, "device": "cpu"}
    config["data"], config["out"] = str(data), str(out)
    return RunConfig.from_dict(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["default"],
        help="torch.compile modes to time next to eager (default, max-autotune-no-cudagraphs, ...)",
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--run-updates", type=int, default=1000, help="updates of the run the net gain is for"
    )
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--dropout",
        choices=("marlkd", "torch"),
        default="marlkd",
        help="dropout in compiled variants: marlkd's (15-bit draws) or F.dropout (inductor's random numbers)",
    )
    args = parser.parse_args()
    apply_threads(args.threads)
    import torch._inductor.config

    torch._inductor.config.compile_threads = 1  # compile in this process: its CPU time is counted
    see_through(args.dropout == "torch")
    from marlkd.data import collect_random_dataset
    from marlkd.training import build_algorithm, load_training_dataset

    work = Path(tempfile.mkdtemp(prefix="bench_compile_"))
    try:
        data = collect_random_dataset("grid-world", args.episodes, work / "gw.h5", seed=0)
        variants: dict[tuple[str, str], object] = {}
        compile_s: dict[tuple[str, str], float] = {}
        for precision in args.precisions:
            for mode in ["eager", *args.modes]:
                config = idt_config(data, work / f"{precision}-{mode}", precision, None)
                dataset = load_training_dataset(config)
                learner = build_algorithm(config, work / f"{precision}-{mode}", dataset)[0]
                if mode != "eager":
                    learner.model.compile(mode=None if mode == "default" else mode, dynamic=False)
                t0 = cpu_with_children()
                w0 = time.perf_counter()
                learner.update(0)  # compiles (forward and backward) when compiled
                first = cpu_with_children() - t0
                print(
                    f"{precision:5s} {mode:28s} first update {first:7.2f} CPU s "
                    f"({time.perf_counter() - w0:.2f} s wall)",
                    flush=True,
                )
                compile_s[precision, mode] = first
                variants[precision, mode] = learner.update
        for step in range(1, 4):  # warm-up
            for update in variants.values():
                update(step)
        times: dict[tuple[str, str], list[float]] = {key: [] for key in variants}
        for step in range(args.rounds):
            for key, update in variants.items():
                t0 = time.process_time()
                update(4 + step)
                times[key].append(time.process_time() - t0)
        print(f"\nCPU ms per update, median of {args.rounds} interleaved rounds (torch {torch.__version__})")
        for precision in args.precisions:
            eager = statistics.median(times[precision, "eager"])
            for mode in ["eager", *args.modes]:
                step = statistics.median(times[precision, mode])
                line = f"{precision:5s} {mode:28s} {step * 1e3:7.1f} ms  {eager / step:5.2f}x per step"
                if mode != "eager":
                    extra = compile_s[precision, mode] - step
                    net = args.run_updates * eager / (args.run_updates * step + extra)
                    line += f"  compile {extra:6.1f} CPU s  net over {args.run_updates} updates {net:5.2f}x"
                print(line)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
