"""``marlkd dataset``: inspect and validate dataset files."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from marlkd.data.format import OfflineDataset


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dataset", help="inspect and validate offline datasets")
    commands = parser.add_subparsers(dest="dataset_command", metavar="SUBCOMMAND", required=True)

    info = commands.add_parser(
        "info",
        help="a dataset's metadata, how it was made and its returns (text histogram; PNG with --plot)",
        description="Print a dataset's metadata, how its behaviour policy was made and its return "
        "statistics with a text histogram; --plot also draws each agent's episode returns as a PNG, with "
        "the expert's and the random policy's returns where the dataset records them.",
    )
    info.add_argument("file", help="dataset file (.h5)")
    info.add_argument(
        "--json", action="store_true", help="print one JSON object (everything, the calibration search too)"
    )
    info.add_argument(
        "--plot",
        nargs="?",
        const="",
        default=None,
        metavar="PNG",
        help="write the per-agent return histogram to PNG (default name: <dataset name>-returns.png in the "
        "current directory)",
    )
    info.set_defaults(func=_info)

    validate = commands.add_parser("validate", help="check dataset files completely (exit 2 if any is bad)")
    validate.add_argument("files", nargs="+", metavar="FILE", help="dataset files (.h5)")
    validate.add_argument(
        "--skip-env",
        action="store_true",
        help="check the files alone, not that their environment is registered and its sizes match",
    )
    validate.set_defaults(func=_validate)

    from marlkd.cli.interop import register_dataset_commands

    register_dataset_commands(commands)  # import / export in other projects' formats


def reference_returns(behavior_policy: dict[str, Any]) -> dict[str, float]:
    """The expert's and the random policy's mean per-agent episode return where the dataset's
    ``behavior_policy`` records them (datasets made by :func:`marlkd.experts.make_dataset`)."""
    expert = behavior_policy.get("expert")
    if not isinstance(expert, dict):
        return {}
    found = {}
    for key, label in (("expert_return", "expert"), ("random_return", "random")):
        value = expert.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            found[label] = float(value)
    return found


def describe_behaviour(behavior_policy: dict[str, Any]) -> str:
    """One line on how the data was made (instead of the whole recipe with its calibration search)."""
    mechanism = behavior_policy.get("mechanism")
    expert = behavior_policy.get("expert") if isinstance(behavior_policy.get("expert"), dict) else {}
    acting = ""
    if "deterministic" in expert:
        acting = "greedy" if expert["deterministic"] else "sampled"
    if expert.get("ppo_total_steps"):
        acting += f"{', ' if acting else ''}{expert['ppo_total_steps']:,} PPO steps"
    expert_text = f"the PPO expert ({acting})" if acting else "the PPO expert"
    if mechanism == "uniform_random":
        return "uniformly random available actions"
    if mechanism == "expert":
        return expert_text
    if mechanism == "epsilon_mix":
        epsilon = behavior_policy.get("epsilon", float("nan"))
        text = f"{expert_text}, each action replaced by a uniformly random one with probability {epsilon:.3f}"
        calibration = behavior_policy.get("calibration", {})
        target = behavior_policy.get("target_normalized_score")
        if calibration and target is not None:
            steps = len(calibration.get("search", []))
            text += (
                f" (searched for normalized score {target:g}: {steps} bisection steps of "
                f"{calibration.get('episodes', '?')} episodes; --json lists them)"
            )
        return text
    description = behavior_policy.get("description") or behavior_policy.get("name")
    return str(description) if description else json.dumps(behavior_policy, sort_keys=True)[:200]


_BLOCKS = " ▁▂▃▄▅▆▇█"


def text_histogram(values: np.ndarray, bins: int = 12) -> str:
    """``low ▁▃█▅▂ high``: the distribution of ``values`` in ``bins`` equal-width bins, one block each."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return "n/a"
    low, high = float(finite.min()), float(finite.max())
    if high == low:
        return f"{low:.4g} (all equal)"
    counts, _ = np.histogram(finite, bins=bins, range=(low, high))
    levels = np.ceil(counts / counts.max() * (len(_BLOCKS) - 1)).astype(int)
    return f"{low:.4g} {''.join(_BLOCKS[level] for level in levels)} {high:.4g}"


def plot_return_histogram(dataset: OfflineDataset, path: str | Path) -> Path:
    """Draw each agent's episode returns as a histogram (one panel, one outline per agent) with the team's
    mean per-agent return and, where recorded, the expert's and the random policy's; write a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    returns = dataset.episode_returns()  # (E, N)
    meta = dataset.metadata
    references = reference_returns(meta.behavior_policy)
    edges = np.histogram_bin_edges(
        returns[np.isfinite(returns)], bins=min(40, max(5, returns.shape[0] // 10))
    )
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for agent in range(returns.shape[1]):
        ax.hist(returns[:, agent], bins=edges, histtype="step", linewidth=1.5, label=f"agent {agent}")
    ax.axvline(meta.mean_return, color="black", linewidth=1.2, label=f"data mean {meta.mean_return:.3g}")
    styles = {"expert": ("tab:green", "--"), "random": ("tab:red", ":")}
    for label, value in references.items():
        colour, style = styles[label]
        ax.axvline(value, color=colour, linestyle=style, linewidth=1.2, label=f"{label} {value:.3g}")
    ax.set_xlabel("episode return (per agent)")
    ax.set_ylabel("episodes")
    ax.set_title(f"{meta.env_id}, {meta.quality}: {meta.n_episodes} episodes")
    ax.legend(fontsize="small")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def summarize(dataset: OfflineDataset) -> dict[str, Any]:
    """The metadata plus what is computed from the arrays: steps, optional fields, per-agent mean returns."""
    lengths = dataset.episode_lengths()
    returns = dataset.episode_returns()
    summary = dataset.metadata.to_dict()
    summary.update(
        path=None if dataset.path is None else str(dataset.path),
        max_steps=dataset.max_steps,
        total_steps=int(lengths.sum()),
        mean_length=float(lengths.mean()),
        min_length=int(lengths.min()),
        max_length=int(lengths.max()),
        optional_fields=[name for name in ("state", "avail_actions") if getattr(dataset, name) is not None],
        agent_mean_returns=[float(value) for value in returns.mean(axis=0)],
        agent_best_returns=[float(value) for value in returns.max(axis=0)],
        reference_returns=reference_returns(dataset.metadata.behavior_policy),
        return_histogram=text_histogram(returns.mean(axis=1)),
    )
    return summary


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4g}"


def _format(summary: dict[str, Any]) -> str:
    seed = "unknown" if summary["seed"] is None else summary["seed"]
    agents = "  ".join(f"agent_{i} {_number(v)}" for i, v in enumerate(summary["agent_mean_returns"]))
    rows = [
        ("environment", f"{summary['env_id']} {json.dumps(summary['env_kwargs'], sort_keys=True)}"),
        ("quality", summary["quality"]),
        ("behaviour", describe_behaviour(summary["behavior_policy"])),
        ("seed", seed),
        ("episodes", summary["n_episodes"]),
        (
            "steps",
            f"{summary['total_steps']} (length mean {summary['mean_length']:.4g}, min "
            f"{summary['min_length']}, max {summary['max_length']}; padded to {summary['max_steps']})",
        ),
        ("agents", summary["n_agents"]),
        ("obs_dim", summary["obs_dim"]),
        ("n_actions", summary["n_actions"]),
        ("state_dim", summary["state_dim"]),
        ("optional fields", ", ".join(summary["optional_fields"]) or "none"),
        (
            "return",
            f"mean {_number(summary['mean_return'])}  min {_number(summary['min_return'])}  "
            f"max {_number(summary['max_return'])}  (per-agent episode return, mean over agents)",
        ),
        ("histogram", f"{summary['return_histogram']}  (episodes by per-agent return)"),
        ("agent returns", f"{agents}  (mean over episodes)"),
        (
            "references",
            ", ".join(f"{k} {v:.4g}" for k, v in summary["reference_returns"].items()) or "not recorded",
        ),
        ("normalized score", _number(summary["normalized_score"])),
        ("checksum", f"sha256:{summary['checksum']}"),
        ("written by", f"marlkd {summary['marlkd_version']} (format version {summary['format_version']})"),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join([str(summary["path"])] + [f"  {label:<{width}}  {value}" for label, value in rows])


def _info(args: argparse.Namespace) -> int:
    from marlkd.data.format import load_dataset

    dataset = load_dataset(args.file)
    summary = summarize(dataset)
    if args.plot is not None:
        png = Path(args.plot or f"{Path(args.file).stem}-returns.png")
        summary["histogram_png"] = str(plot_return_histogram(dataset, png))
    if args.json:
        # NaN (an unknown normalized score) is not JSON; write null for it.
        clean = {key: None if isinstance(v, float) and math.isnan(v) else v for key, v in summary.items()}
        print(json.dumps(clean, indent=2))
    else:
        print(_format(summary))
        if "histogram_png" in summary:
            print(f"  return histogram written to {summary['histogram_png']}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from marlkd.data.format import check_environment, load_dataset
    from marlkd.errors import DatasetError

    failed = 0
    for file in args.files:
        try:
            dataset = load_dataset(file)
            if not args.skip_env:
                check_environment(dataset.metadata, file)
        except DatasetError as exc:
            print(f"marlkd: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(
            f"{file}: ok ({dataset.n_episodes} episodes, {dataset.metadata.env_id}, "
            f"quality {dataset.metadata.quality})"
        )
    return 2 if failed else 0
