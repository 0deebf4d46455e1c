"""The two teachers against the number of agents n: parameters, training-step time and peak memory.

The concatenation teacher (the paper's: one token per timestep over all agents' R, o, a; n MLP heads) and
the factored teacher (one token per timestep and agent; time x agent attention; weights shared across
agents), on synthetic batches at Equal Space's sizes for each n (its observation grows with n:
O = 4 + 2(n-1)) and at the SMAX maps' real sizes. Defaults are the training defaults: B = 64, K = 20,
width 128, 3 layers, 1 head, MLP head width 128, dropout 0.1, AdamW.

    python benchmarks/bench_teacher_scaling.py [--device cpu|cuda] [--threads 1] [--precision auto]
        [--agents 2 4 8 16 32] [--repeats 3] [--no-smax]

Every (teacher, size) runs in a fresh process. Peak memory is what the training steps add to what the
model and the batch hold (activations, gradients and AdamW's state): on the CPU the process's peak
resident memory (Linux's ``VmHWM``, reset before the first step) less its resident memory then, on CUDA
``torch.cuda.max_memory_allocated`` less the memory allocated then. Step time
is the median of ``--repeats`` steps (forward, backward, AdamW) after two warm-up steps: on the CPU the
process's CPU time (with one thread, its compute time even on a machine shared with other work), on CUDA
wall time between synchronizations. ``--sizes grid-world`` takes Grid-World's sizes instead of Equal
Space's (its observation does not grow with n). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from _timing import median_time

from marlkd.algos._dt import build_model
from marlkd.algos.teacher_models import TeacherModelConfig, factored_config
from marlkd.data.windows import Window
from marlkd.errors import MarlkdError
from marlkd.models.factored_teacher import FactoredTeacher
from marlkd.models.layouts import Layout, per_agent_logits, to_inputs
from marlkd.optim import autocast, resolve_precision

SMAX_MAPS = ("smax-2s3z", "smax-3s5z", "smax-8m-vs-9m", "smax-3s5z-vs-3s6z")
TEACHERS = ("concat", "factored")


def build(teacher: str, n: int, obs_dim: int, n_actions: int, max_steps: int) -> torch.nn.Module:
    """A teacher network as ``marlkd train teacher --teacher <teacher>`` builds it for these sizes."""
    cfg = TeacherModelConfig(teacher=teacher)
    if teacher == "factored":
        return FactoredTeacher(factored_config(cfg, obs_dim, n_actions, max_steps + 1))
    dataset = SimpleNamespace(n_agents=n, obs_dim=obs_dim, n_actions=n_actions, max_steps=max_steps)
    return build_model(Layout.CENTRALIZED, dataset, cfg, mlp_heads=True)


def synthetic_window(batch: int, context: int, n: int, obs_dim: int, n_actions: int, device) -> Window:
    g = torch.Generator().manual_seed(0)
    actions = torch.randint(n_actions, (batch, context, n), generator=g)
    return Window(
        returns=torch.rand(batch, context, n, generator=g).to(device),
        obs=torch.randn(batch, context, n, obs_dim, generator=g).to(device),
        actions=actions.to(device),
        timesteps=torch.arange(context).expand(batch, context).clone().to(device),
        mask=torch.ones(batch, context, dtype=torch.bool, device=device),
        action_mask=None,
        episode=torch.zeros(batch, dtype=torch.int64, device=device),
        step=torch.zeros(batch, context, dtype=torch.int64, device=device),
    )


def _status_bytes(field: str) -> int:
    """A memory field of ``/proc/self/status`` (Linux), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise SystemExit(f"no {field} in /proc/self/status: peak CPU memory needs Linux")


def reset_peak(device: torch.device) -> int:
    """Start measuring a peak; returns the memory in use now."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    return _status_bytes("VmRSS")


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return _status_bytes("VmHWM")


def measure(args: argparse.Namespace) -> dict:
    """One (teacher, sizes) case in this process: parameters, median step time, step peak memory."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = resolve_precision(args.precision, device)
    n, obs_dim, n_actions = args.case
    layout = Layout.FACTORED if args.teacher == "factored" else Layout.CENTRALIZED
    model = build(args.teacher, n, obs_dim, n_actions, args.max_steps).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
    window = synthetic_window(args.batch, args.context, n, obs_dim, n_actions, device)
    inputs = to_inputs(window, layout, n_actions)

    def step() -> None:
        with autocast(device, dtype):
            logits, _ = model(inputs.returns, inputs.obs, inputs.actions, inputs.timesteps, inputs.mask)
        logits = per_agent_logits(logits.float(), layout, n)
        loss = F.cross_entropy(logits.flatten(0, 2), window.actions.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    before = reset_peak(device)
    step()  # allocates gradients and AdamW's state
    if device.type == "cuda":
        torch.cuda.synchronize(device)

    def timed() -> None:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cpu":
        seconds = median_time(timed, args.repeats, warmup=1, clock=time.process_time)
    else:
        seconds = median_time(timed, args.repeats, warmup=1)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "step_ms": 1000 * seconds,
        "peak_mb": (peak_bytes(device) - before) / 2**20,
        "precision": str(dtype).replace("torch.", "") if dtype else "fp32",
    }


def cases(sizes: str, agents: list[int], smax: bool) -> list[tuple[str, int, int, int, int]]:
    """(label, n, obs_dim, n_actions, max_steps) of every size to run."""
    from marlkd.envs import env_spec

    out = []
    for n in agents:
        kwargs = {"n_agents": n} if sizes == "equal-space" else {"n_agents": n, "grid_size": 2 * n + 8}
        spec = env_spec(sizes, **kwargs)  # Grid-World: a grid large enough for n agents and their objects
        out.append((sizes, n, spec.obs_dim, spec.n_actions, spec.max_steps))
    if smax:
        try:
            for env_id in SMAX_MAPS:
                spec = env_spec(env_id)
                out.append((env_id, spec.n_agents, spec.obs_dim, spec.n_actions, spec.max_steps))
        except MarlkdError as exc:  # SMAX's extra is not installed
            print(f"SMAX sizes skipped: {exc}", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    parser.add_argument("--agents", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--context", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", choices=("equal-space", "grid-world"), default="equal-space")
    parser.add_argument("--no-smax", action="store_true", help="skip the SMAX maps' sizes")
    # one case in a child process (internal)
    parser.add_argument("--teacher", choices=TEACHERS, help=argparse.SUPPRESS)
    parser.add_argument("--case", type=int, nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--max-steps", type=int, default=100, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.teacher is not None:
        print(json.dumps(measure(args)))
        return

    common = ["--device", args.device, "--threads", str(args.threads), "--precision", args.precision]
    common += ["--batch", str(args.batch), "--context", str(args.context), "--repeats", str(args.repeats)]
    clock = "CPU time" if args.device == "cpu" else "wall time"
    print(
        f"device={args.device} threads={args.threads} precision={args.precision} "
        f"({resolve_precision(args.precision, torch.device(args.device)) or 'fp32'}) B={args.batch} "
        f"K={args.context} width=128 layers=3; step = forward + backward + AdamW, {clock}, "
        f"median of {args.repeats}\n"
    )
    print("| sizes | n | O | A | concat params | factored params | concat ms/step | factored ms/step | "
          "factored / concat time | concat peak MiB | factored peak MiB |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, n, obs_dim, n_actions, max_steps in cases(args.sizes, args.agents, not args.no_smax):
        row = {}
        for teacher in TEACHERS:
            command = [sys.executable, str(Path(__file__).resolve()), *common, "--teacher", teacher]
            command += ["--case", str(n), str(obs_dim), str(n_actions), "--max-steps", str(max_steps)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{teacher} at {label} n={n} failed:\n{done.stderr}")
            row[teacher] = json.loads(done.stdout.strip().splitlines()[-1])
        c, f = row["concat"], row["factored"]
        print(
            f"| {label} | {n} | {obs_dim} | {n_actions} | {c['params']:,} | {f['params']:,} | "
            f"{c['step_ms']:.0f} | {f['step_ms']:.0f} | {f['step_ms'] / c['step_ms']:.2f}x | "
            f"{c['peak_mb']:.0f} | {f['peak_mb']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
