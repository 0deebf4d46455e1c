"""``marlkd dataset``: inspect and validate dataset files."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from marlkd.data.format import OfflineDataset


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dataset", help="inspect and validate offline datasets")
    commands = parser.add_subparsers(dest="dataset_command", metavar="SUBCOMMAND", required=True)

    info = commands.add_parser("info", help="print a dataset's metadata and return statistics")
    info.add_argument("file", help="dataset file (.h5)")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of text")
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


def summarize(dataset: OfflineDataset) -> dict[str, Any]:
    """The metadata plus what is computed from the arrays: steps, optional fields, per-agent mean returns."""
    lengths = dataset.episode_lengths()
    summary = dataset.metadata.to_dict()
    summary.update(
        path=None if dataset.path is None else str(dataset.path),
        max_steps=dataset.max_steps,
        total_steps=int(lengths.sum()),
        mean_length=float(lengths.mean()),
        min_length=int(lengths.min()),
        max_length=int(lengths.max()),
        optional_fields=[name for name in ("state", "avail_actions") if getattr(dataset, name) is not None],
        agent_mean_returns=[float(value) for value in dataset.episode_returns().mean(axis=0)],
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
        ("behavior policy", json.dumps(summary["behavior_policy"], sort_keys=True)),
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
        ("agent returns", f"{agents}  (mean over episodes)"),
        ("normalized score", _number(summary["normalized_score"])),
        ("checksum", f"sha256:{summary['checksum']}"),
        ("written by", f"marlkd {summary['marlkd_version']} (format version {summary['format_version']})"),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join([str(summary["path"])] + [f"  {label:<{width}}  {value}" for label, value in rows])


def _info(args: argparse.Namespace) -> int:
    from marlkd.data.format import load_dataset

    summary = summarize(load_dataset(args.file))
    if args.json:
        # NaN (an unknown normalized score) is not JSON; write null for it.
        clean = {key: None if isinstance(v, float) and math.isnan(v) else v for key, v in summary.items()}
        print(json.dumps(clean, indent=2))
    else:
        print(_format(summary))
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
