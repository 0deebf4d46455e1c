"""Which distillation variant transfers: IDT against ours's variants on one dataset, over seeds.

Every seed trains one teacher (shared by its ours variants through ``teacher_cache``) and, one after the
other, IDT and each variant with the same model and budget. Per run it records the per-agent return, the
last ``distill/*`` diagnostics and the collapse warning, and the students' KL to the teacher at every
dataset step (eval mode), both with the teacher conditioned on each step's own return-to-go
(``kl_own``) and with teacher and students conditioned on the evaluation's target return along the
dataset's trajectories (``kl_eval``). Writes ``<out>/variants.json`` and a Markdown table
``<out>/variants.md`` (mean ± std over seeds).

    python scripts/distill_variants.py all --data runs/data/grid-world-normal-200.h5 --out runs/variants \
        --seeds 0 1 2 --steps 800 --teacher-steps 800

``run`` trains single runs (``idt`` is a variant there) and ``report`` tabulates the finished ones, so
the runs can be spread over processes by hand.
"""

from __future__ import annotations

import argparse
import json
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

VARIANTS = ("full", "kl-only", "raw-teacher", "frozen-mapping", "ema-mapping", "spread", "eval-target")
# the sweeps' budget model (docs/experiments.md); head_hidden = width lets M be an EMA of N
MODEL = {"context": 10, "width": 64, "layers": 2, "head_hidden": 64}


def _config(data: str, out: str, method: str, variant: str, seed: int, steps: int, teacher_steps: int):
    import marlkd
    from marlkd.algos.idt import Config as IDTConfig
    from marlkd.algos.ours import Config as OursConfig

    if method == "idt":
        algo = IDTConfig(**MODEL)
    else:
        algo = OursConfig(
            **MODEL, ablation=variant, teacher_steps=teacher_steps, teacher_cache=f"{out}/teachers"
        )
    return marlkd.RunConfig(
        method=method,
        data=data,
        out=f"{out}/{variant}/s{seed}",
        algo=algo,
        train=marlkd.TrainConfig(
            steps=steps, seed=seed, lr=3e-4, warmup_steps=100, threads=1, log_every=50, checkpoint_every=400
        ),
        eval=marlkd.EvalConfig(episodes=32),
    )


@__import__("torch").no_grad()
def _kl_to_teacher(run_dir: Path, own, high, high_returns) -> dict[str, float]:
    """Mean KL(teacher || students) over every valid dataset step, in eval mode."""
    import copy

    from marlkd.algos.ours import kl_loss
    from marlkd.training import load_run

    _, algo, _ = load_run(run_dir)
    learner = getattr(algo, "students", algo)
    learner.model.eval()
    sampler = learner.sampler
    e, t = sampler.all_positions()
    out = {}
    for name, (cache, returns) in {"kl_own": (own, None), "kl_eval": (high, high_returns)}.items():
        s = sampler
        if returns is not None:
            s = copy.copy(sampler)
            s.rtg = returns
        total = 0.0
        for start in range(0, e.numel(), 2048):
            ee, tt = e[start : start + 2048], t[start : start + 2048]
            logits, _ = learner.forward(s.gather(ee, tt))
            total += float(kl_loss(cache[1][ee, tt], logits[:, -1]).mean(-1).sum())
        out[name] = total / e.numel()
    return out


def train_run(data: str, out: str, variant: str, seed: int, steps: int, teacher_steps: int) -> dict:
    """Train (or resume, or read the finished results of) one run: ``idt`` or an ours variant."""
    import torch

    torch.set_num_threads(1)
    import marlkd

    method = "idt" if variant == "idt" else "ours"
    return marlkd.train(_config(data, out, method, variant, seed, steps, teacher_steps), progress=False)


def one_seed(data: str, out: str, seed: int, steps: int, teacher_steps: int, variants: list[str]) -> None:
    """IDT, then every variant, one after the other (the first ours variant trains the seed's teacher)."""
    for variant in ["idt", *variants]:
        train_run(data, out, variant, seed, steps, teacher_steps)


def seed_rows(out: str, seed: int, variants: list[str]) -> list[dict]:
    """The finished runs of one seed, with the students' KL to the seed's teacher."""
    import torch

    torch.set_num_threads(1)
    from marlkd.algos.teacher import eval_target_returns, teacher_outputs
    from marlkd.training import load_run

    rows = []
    for variant in ["idt", *variants]:
        run = Path(out) / variant / f"s{seed}"
        if (run / "results.json").exists():
            result = json.loads((run / "results.json").read_text())
            rows.append({"variant": variant, "seed": seed, "run": str(run), "result": result})
    ours_runs = [r for r in rows if r["variant"] != "idt"]
    if not ours_runs:
        return rows
    # the seed's teacher, conditioned on own returns and on the evaluation target
    _, ours, dataset = load_run(ours_runs[0]["run"])
    students = ours.students
    high_returns = eval_target_returns(dataset, students.target_return, students.return_scale)
    own = teacher_outputs(ours.teacher, students.sampler)
    high = teacher_outputs(ours.teacher, students.sampler, high_returns)
    for row in rows:
        row.update(_kl_to_teacher(Path(row["run"]), own, high, high_returns))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "command",
        choices=("all", "run", "report"),
        help="all: every seed (one process each), then the report; run: the given seeds and variants "
        "('idt' is one) in this process; report: the table of the finished runs",
    )
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", default="runs/variants")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--teacher-steps", type=int, default=800)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = parser.parse_args()
    if args.command == "run":
        for seed in args.seeds:
            for variant in args.variants:
                train_run(args.data, args.out, variant, seed, args.steps, args.teacher_steps)
        return
    if args.command == "all":
        jobs = [(args.data, args.out, s, args.steps, args.teacher_steps, args.variants) for s in args.seeds]
        with ProcessPoolExecutor(len(jobs)) as pool:
            list(pool.map(one_seed, *zip(*jobs, strict=True)))
    rows = [row for seed in args.seeds for row in seed_rows(args.out, seed, args.variants)]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "variants.json").write_text(json.dumps(rows, indent=1, default=str))
    keys = [
        ("return_mean", "return"),
        ("teacher/return_mean", "teacher"),
        ("kl_own", "KL own-R"),
        ("kl_eval", "KL eval-R"),
        ("distill/angle_corr", "angle corr"),
        ("distill/mapped_cosine_student", "cos N"),
        ("distill/angle_mapped_student_std", "std N (deg)"),
        ("distill/grad_norm_rel", "|grad rel|"),
    ]
    lines = [
        f"Data: `{args.data}`; seeds {args.seeds}; {args.teacher_steps} teacher + {args.steps} student "
        f"updates; model {MODEL}. Mean ± std over seeds; collapse: runs that warned.",
        "",
        "| variant | " + " | ".join(k[1] for k in keys) + " | collapse |",
        "| --- |" + " ---: |" * len(keys) + " ---: |",
    ]
    for variant in ["idt"] + args.variants:
        sel = [r for r in rows if r["variant"] == variant]
        cells = []
        for key, _ in keys:
            values = [r.get(key, r["result"].get(key)) for r in sel]
            values = [v for v in values if isinstance(v, int | float)]
            cells.append(
                f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}" if values else "-"
            )
        collapsed = sum(1 for r in sel if r["result"].get("distill/collapse"))
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {collapsed}/{len(sel)} |")
    text = "\n".join(lines) + "\n"
    (Path(args.out) / "variants.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
