"""``marlkd dataset import`` / ``marlkd dataset export``: datasets in other projects' formats.

Formats: ``og-marl`` (flashbax Vaults, as OG-MARL publishes its datasets; needs the ``vault`` extra) and,
for import, ``d4rl`` (a flat HDF5 file of steps, D4RL's keys).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from marlkd.errors import MarlkdError


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('must be a JSON object, e.g. \'{"map": "3m"}\'')
    return value


def _key_mapping(text: str) -> tuple[str, str]:
    field, sep, key = text.partition("=")
    if not sep or not field or not key:
        raise argparse.ArgumentTypeError(
            f"expected FIELD=KEY (e.g. avail_actions=infos/legals), got {text!r}"
        )
    return field, key


def _common_import_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="FILE", help="the marlkd dataset file to write (.h5)")
    parser.add_argument(
        "--env-id",
        metavar="ID",
        help="environment recorded in the dataset (an id marlkd runs enables evaluation; any other name "
        "trains with evaluation off)",
    )
    parser.add_argument(
        "--env-kwargs", type=_json_object, metavar="JSON", help="that environment's arguments, a JSON object"
    )
    parser.add_argument(
        "--quality", metavar="LABEL", help="data tier recorded in the dataset (Vaults: the uid in lower case)"
    )
    parser.add_argument(
        "--n-actions",
        type=int,
        metavar="A",
        help="number of actions when the data has no action masks (default: the largest action + 1)",
    )


def register_dataset_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``import`` and ``export`` to ``marlkd dataset``'s subcommands."""
    importer = commands.add_parser(
        "import",
        help="convert an OG-MARL Vault or a D4RL-style HDF5 file into a marlkd dataset",
        description="Convert a dataset from another project's format into a marlkd dataset file.",
    )
    formats = importer.add_subparsers(dest="import_format", metavar="FORMAT", required=True)
    vault = formats.add_parser(
        "og-marl",
        help="a flashbax Vault (OG-MARL's datasets); needs pip install 'marlkd[vault]'",
        description="Import the dataset UID of a flashbax Vault directory (e.g. "
        "vaults/og_marl/smac_v1/3m.vlt --uid Good). Episodes are split where every agent is terminal or "
        "truncated; infos.legals become avail_actions, infos.state the state.",
    )
    vault.add_argument(
        "vault_dir", metavar="VAULT_DIR", help="the Vault directory (holds one folder per uid)"
    )
    vault.add_argument("--uid", required=True, help="which dataset of the Vault: Good, Medium, Poor, ...")
    _common_import_options(vault)
    vault.set_defaults(func=_import_vault)

    d4rl = formats.add_parser(
        "d4rl",
        help="a flat D4RL-style HDF5 file (observations, actions, rewards, terminals, timeouts)",
        description="Import a flat HDF5 file of steps. Episodes are split where every agent is terminal or "
        "timed out. Keys default to D4RL's: observations, actions, rewards, terminals, timeouts, "
        "infos/state, infos/action_mask; change them with --key FIELD=KEY.",
    )
    d4rl.add_argument("file", metavar="FILE", help="the HDF5 file")
    d4rl.add_argument(
        "--key",
        action="append",
        type=_key_mapping,
        default=[],
        metavar="FIELD=KEY",
        help="read marlkd field FIELD (obs, actions, rewards, terminals, truncations, state, avail_actions) "
        "from KEY of the file; repeatable",
    )
    _common_import_options(d4rl)
    d4rl.set_defaults(func=_import_d4rl)

    exporter = commands.add_parser(
        "export",
        help="write a marlkd dataset as an OG-MARL Vault",
        description="Write a marlkd dataset file in another project's format.",
    )
    targets = exporter.add_subparsers(dest="export_format", metavar="FORMAT", required=True)
    out = targets.add_parser(
        "og-marl",
        help="a flashbax Vault, readable by OG-MARL and flashbax; needs pip install 'marlkd[vault]'",
        description="Write FILE as the Vault VAULT_DIR/UID. A dataset imported from a Vault is written back "
        "with that Vault's dtypes and metadata, unchanged.",
    )
    out.add_argument("file", metavar="FILE", help="the marlkd dataset file (.h5)")
    out.add_argument("--out", required=True, metavar="VAULT_DIR", help="the Vault directory")
    out.add_argument(
        "--uid", help="the dataset's folder in the Vault (default: its source uid, else its quality)"
    )
    out.add_argument("--overwrite", action="store_true", help="replace an existing uid folder")
    out.set_defaults(func=_export_vault)


def _report(path: Any) -> None:
    from marlkd.data.format import load_dataset

    dataset = load_dataset(path)
    meta = dataset.metadata
    print(
        f"{path}: {dataset.n_episodes} episodes, {int(dataset.episode_lengths().sum())} steps, "
        f"{meta.n_agents} agents, obs {meta.obs_dim}, {meta.n_actions} actions, state {meta.state_dim}; "
        f"environment {meta.env_id!r}, quality {meta.quality!r}, mean return {meta.mean_return:.4g}"
    )
    from marlkd.evaluate import can_evaluate

    if not can_evaluate(meta.env_id):
        print(
            f"note: marlkd cannot run environment {meta.env_id!r}: training on this dataset runs with "
            "evaluation off (register the environment or an evaluator to evaluate; see README)"
        )


def _import_vault(args: argparse.Namespace) -> int:
    from marlkd.data.vault import import_vault

    path = import_vault(
        args.vault_dir,
        args.uid,
        args.out,
        env_id=args.env_id,
        env_kwargs=args.env_kwargs,
        quality=args.quality,
        n_actions=args.n_actions,
    )
    _report(path)
    return 0


def _import_d4rl(args: argparse.Namespace) -> int:
    from marlkd.data.flat import import_d4rl

    if not args.env_id:
        raise MarlkdError("dataset import d4rl: --env-id is required (the file does not say)")
    path = import_d4rl(
        args.file,
        args.out,
        env_id=args.env_id,
        env_kwargs=args.env_kwargs,
        keys=dict(args.key),
        quality=args.quality or "unknown",
        n_actions=args.n_actions,
    )
    _report(path)
    return 0


def _export_vault(args: argparse.Namespace) -> int:
    from marlkd.data.vault import export_vault

    target = export_vault(args.file, args.out, args.uid, overwrite=args.overwrite)
    print(f"wrote Vault {target}")
    return 0
