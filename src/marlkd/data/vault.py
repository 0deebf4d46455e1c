"""OG-MARL datasets: read and write flashbax Vaults with tensorstore (no JAX needed; extra ``vault``).

A Vault is a directory ``<vault>/<uid>/`` (OG-MARL: ``vaults/og_marl/smac_v1/3m.vlt/Good``) holding
``metadata.json`` and one OCDBT key-value store in which every leaf of the recorded experience is a zarr
array. Layout, as flashbax 0.1.x (Vault version 1.2) writes it:

- ``metadata.json``: ``{"version": 1.2, "structure_shape": {...}, "structure_dtype": {...}, ...}``; the two
  trees mirror the experience (nested dicts), each leaf the string of the buffer's shape
  (``"(1, 1000, 3, 30)"``: batch, time, then per-step axes) and its dtype name; any other key is the
  recorder's own metadata.
- one zarr array per leaf, named by its path with a dot after each key (``observations.``,
  ``infos.legals.``), shape ``(1, 10**13, ...)`` (the time axis is grown by writing), gzip level 5;
- ``vault_index``: an int32 array of shape ``(1,)``, the number of valid steps along the time axis.

OG-MARL's leaves: ``observations (N, O)``, ``actions (N,)``, ``rewards (N,)``, ``terminals (N,)``,
``truncations (N,)``, ``infos.legals (N, A)`` (available actions) and ``infos.state (S,)``, episodes one
after another along time.
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from marlkd.data.flat import check_split, flatten_episodes, streams_to_arrays
from marlkd.errors import DatasetError

VAULT_VERSION = 1.2
TIME_AXIS_MAX_LENGTH = 10**13  # flashbax's upper bound of the time axis
COMPRESSION = {"id": "gzip", "level": 5}
METADATA_FILE = "metadata.json"
INDEX_NAME = "vault_index"
SOURCE = "og-marl-vault"

# Vault leaf (its path of keys) -> marlkd field.
LEAVES: dict[tuple[str, ...], str] = {
    ("observations",): "obs",
    ("actions",): "actions",
    ("rewards",): "rewards",
    ("terminals",): "terminals",
    ("truncations",): "truncations",
    ("infos", "legals"): "avail_actions",
    ("infos", "state"): "state",
}
_REQUIRED = ("observations", "actions", "rewards", "terminals", "truncations")
# dtypes of a Vault exported from a dataset that did not come from one (OG-MARL's own choices).
_DEFAULT_DTYPES = {
    "obs": "float32",
    "actions": "int32",
    "rewards": "float32",
    "terminals": "float32",
    "truncations": "float32",
    "avail_actions": "float32",
    "state": "float32",
}


class VaultError(DatasetError):
    """A Vault directory is missing, incomplete or not what marlkd can import; names the path and field."""


def _tensorstore():
    try:
        import tensorstore
    except ImportError as exc:
        raise DatasetError(
            "reading and writing OG-MARL Vaults needs tensorstore: pip install 'marlkd[vault]'"
        ) from exc
    return tensorstore


def leaf_name(path: tuple[str, ...]) -> str:
    """The array name flashbax gives a leaf: each key followed by a dot (``infos.legals.``)."""
    return "".join(f"{key}." for key in path)


def _leaves(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(tree, Mapping):
        out: dict[tuple[str, ...], Any] = {}
        for key, value in tree.items():
            out.update(_leaves(value, (*prefix, str(key))))
        return out
    return {prefix: tree}


def _spec(base: Path, name: str) -> dict[str, Any]:
    return {
        "driver": "zarr",
        "kvstore": {"driver": "ocdbt", "base": f"file://{base}", "path": name},
    }


def list_uids(vault_dir: str | os.PathLike[str]) -> list[str]:
    """The datasets (uids) of a Vault directory: its subdirectories holding a metadata.json."""
    root = Path(vault_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / METADATA_FILE).is_file())


def _read_metadata(base: Path) -> dict[str, Any]:
    path = base / METADATA_FILE
    if not path.is_file():
        raise VaultError(f"{path}: file not found (not a Vault)")
    try:
        metadata = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise VaultError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(metadata, dict):
        raise VaultError(f"{path}: must be a JSON object")
    version = metadata.get("version")
    if not isinstance(version, int | float) or isinstance(version, bool):
        raise VaultError(f"{path}: field 'version': missing or not a number")
    if int(version) != int(VAULT_VERSION):
        raise VaultError(
            f"{path}: field 'version': Vault version {version}; this reader reads version "
            f"{int(VAULT_VERSION)}.x (flashbax 0.1)"
        )
    for key in ("structure_shape", "structure_dtype"):
        if not isinstance(metadata.get(key), dict):
            raise VaultError(f"{path}: field {key!r}: missing or not an object")
    return metadata


def read_vault(vault_dir: str | os.PathLike[str], uid: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The valid steps of every known leaf of ``<vault_dir>/<uid>`` and the Vault's metadata.json.

    Returns ``({field: (L, ...) array in the Vault's dtype}, metadata)``: fields named as in marlkd
    (``obs``, ``actions``, ``rewards``, ``terminals``, ``truncations``, ``avail_actions``, ``state``),
    the batch axis (always 1 in OG-MARL) removed. Leaves marlkd does not know are listed in
    ``metadata["_ignored_leaves"]``. Raises :class:`VaultError` naming the path and the field.
    """
    ts = _tensorstore()
    root = Path(vault_dir).resolve()
    base = root / uid
    if not root.is_dir():
        raise VaultError(f"{root}: Vault directory not found")
    if not base.is_dir():
        found = ", ".join(list_uids(root)) or "none"
        raise VaultError(f"{base}: no dataset {uid!r} in this Vault (uids found: {found})")
    metadata = _read_metadata(base)
    shapes = _leaves(metadata["structure_shape"])
    dtypes = _leaves(metadata["structure_dtype"])
    where = f"{base / METADATA_FILE}"
    for key in _REQUIRED:
        if (key,) not in shapes:
            raise VaultError(f"{where}: field {key!r}: missing from structure_shape (required)")
    try:
        index_store = ts.open(_spec(base, INDEX_NAME), open=True).result()
        length = int(np.asarray(index_store.read().result()).reshape(-1)[0])
    except Exception as exc:  # tensorstore raises ValueError / its own errors
        raise VaultError(f"{base}: field {INDEX_NAME!r}: cannot be read ({exc})") from exc
    if length < 1:
        raise VaultError(f"{base}: field {INDEX_NAME!r}: the Vault holds no steps ({length})")

    flat: dict[str, np.ndarray] = {}
    for path, shape_text in shapes.items():
        name = leaf_name(path)
        if path not in LEAVES:
            continue
        try:
            declared = tuple(ast.literal_eval(shape_text))
        except (ValueError, SyntaxError, TypeError) as exc:
            raise VaultError(f"{where}: field {name!r}: shape {shape_text!r} is not a tuple") from exc
        if len(declared) < 2 or declared[0] != 1:
            raise VaultError(
                f"{where}: field {name!r}: shape {declared}: expected (1, time, ...) (one recording stream)"
            )
        try:
            store = ts.open(_spec(base, name), open=True).result()
        except Exception as exc:
            raise VaultError(f"{base}: field {name!r}: cannot open its array ({exc})") from exc
        if tuple(store.shape[2:]) != declared[2:] or store.shape[0] != 1:
            raise VaultError(
                f"{base}: field {name!r}: stored shape {tuple(store.shape)} does not match the metadata's "
                f"{declared}"
            )
        if store.shape[1] < length:
            raise VaultError(
                f"{base}: field {name!r}: {store.shape[1]} steps stored, vault_index says {length}"
            )
        dtype = np.dtype(store.dtype.numpy_dtype)
        if dtypes.get(path) != dtype.name:
            raise VaultError(
                f"{base}: field {name!r}: stored dtype {dtype.name}, the metadata says {dtypes.get(path)!r}"
            )
        try:
            flat[LEAVES[path]] = np.asarray(store[0, :length].read().result())
        except Exception as exc:
            raise VaultError(f"{base}: field {name!r}: cannot be read, Vault corrupt ({exc})") from exc
    metadata = dict(metadata)
    metadata["_ignored_leaves"] = sorted(leaf_name(path) for path in shapes if path not in LEAVES)
    return flat, metadata


def vault_name(vault_dir: str | os.PathLike[str]) -> str:
    """A Vault's name as OG-MARL gives it: the last three path parts without ``.vlt``
    (``vaults/og_marl/smac_v1/3m.vlt`` -> ``og_marl/smac_v1/3m``)."""
    path = Path(vault_dir).resolve()
    parts = path.relative_to(path.anchor).parts
    tail = [*parts[-3:-1], parts[-1].removesuffix(".vlt")]
    return "/".join(tail)


def import_vault(
    vault_dir: str | os.PathLike[str],
    uid: str,
    out: str | os.PathLike[str],
    *,
    env_id: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    quality: str | None = None,
    n_actions: int | None = None,
) -> Path:
    """Convert the dataset ``uid`` of the Vault ``vault_dir`` into a marlkd dataset file ``out``.

    Episodes end at the steps where every agent is terminal or truncated (steps after the last such step
    form a last episode); they are padded to the longest, with ``mask``. ``infos.legals`` becomes
    ``avail_actions`` and ``infos.state`` ``state``. The dataset's ``behavior_policy`` records the source
    (Vault name, uid, Vault version, its metadata.json), and :func:`export_vault` writes the same Vault
    back from it.

    Args:
        env_id: the environment recorded in the dataset; default: the one a marlkd export recorded, else
            the Vault's name (``og_marl/smac_v1/3m``). Data whose environment marlkd cannot run trains
            with evaluation off.
        env_kwargs: that environment's arguments.
        quality: default: the uid in lower case (``good``, ``medium``, ``poor``, ``replay``).
        n_actions: A when the Vault has no ``infos.legals`` (default: the largest action + 1).
    """
    root = Path(vault_dir).resolve()
    flat, metadata = read_vault(root, uid)
    where = str(root / uid)
    origin = metadata.get("marlkd") if isinstance(metadata.get("marlkd"), dict) else {}
    horizon = origin.get("max_steps") if isinstance(origin.get("max_steps"), int) else None
    arrays, actions = streams_to_arrays(flat, where, n_actions=n_actions, horizon=horizon)
    ignored = metadata.pop("_ignored_leaves")
    if origin.get("behavior_policy") is not None and not ignored:
        # a Vault marlkd exported: its dataset comes back as it was
        behavior = origin["behavior_policy"]
    else:
        behavior = {
            "source": SOURCE,
            "vault": vault_name(root),
            "uid": uid,
            "vault_version": metadata["version"],
            "vault_path": str(root),
            "vault_metadata": metadata,
            "ignored_leaves": ignored,
        }
    info = {
        "env_id": env_id or origin.get("env_id") or vault_name(root),
        "env_kwargs": dict(env_kwargs if env_kwargs is not None else origin.get("env_kwargs", {})),
        "n_actions": actions,
        "quality": quality or origin.get("quality") or uid.lower(),
        "behavior_policy": behavior,
        "seed": origin.get("seed"),
    }
    from marlkd.data.format import write_dataset

    try:
        return write_dataset(out, arrays, info)
    except DatasetError as exc:  # name the Vault, where the bad value comes from
        raise VaultError(f"{where} (imported into {out}): {str(exc).removeprefix(f'{Path(out)}: ')}") from exc


def _vault_source(behavior: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Vault metadata a dataset imported from a Vault carries (None for other datasets)."""
    if behavior.get("source") != SOURCE or not isinstance(behavior.get("vault_metadata"), dict):
        return None
    return dict(behavior["vault_metadata"])


def export_vault(
    dataset: str | os.PathLike[str],
    vault_dir: str | os.PathLike[str],
    uid: str | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write the marlkd dataset file ``dataset`` as the Vault ``<vault_dir>/<uid>``; returns that path.

    Episodes are written one after another along the time axis. A dataset imported from a Vault is
    written with that Vault's dtypes, shapes and metadata.json, so the Vault comes back bit for bit; any
    other dataset with OG-MARL's dtypes (float32, actions int32) and its marlkd metadata under the key
    ``marlkd`` of metadata.json (imported again, it gives the same dataset). ``uid`` defaults to the
    imported Vault's uid, else the dataset's quality. The Vault is written under a temporary name and
    renamed when complete; an existing uid is replaced only with ``overwrite``.
    """
    from marlkd.data.format import load_dataset

    ts = _tensorstore()
    data = load_dataset(dataset)
    where = str(data.path)
    arrays = data.arrays()
    check_split(arrays, where)
    behavior = data.metadata.behavior_policy
    source = _vault_source(behavior)
    uid = uid or (behavior.get("uid") if source is not None else None) or data.metadata.quality
    if not uid or "/" in uid or uid.startswith("."):
        raise VaultError(f"{vault_dir}: uid {uid!r} is not a valid directory name")
    flat = flatten_episodes(arrays, arrays["mask"])
    length = int(arrays["mask"].sum())
    if source is not None:
        fields, shapes, dtypes, metadata = _source_layout(source, flat, where)
    else:
        fields, shapes, dtypes, metadata = _own_layout(data, flat, length)

    root = Path(vault_dir).resolve()
    target = root / uid
    if target.exists() and not overwrite:
        raise VaultError(f"{target}: exists already (choose another uid, or overwrite)")
    root.mkdir(parents=True, exist_ok=True)
    temporary = root / f".{uid}.{secrets.token_hex(6)}.tmp"
    try:
        temporary.mkdir()
        for field, path in fields.items():
            shape = ast.literal_eval(shapes[path])
            values = flat[field].reshape(length, *shape[2:])
            stored = _to_vault_dtype(values, np.dtype(dtypes[path]), leaf_name(path), where)
            spec = _spec(temporary, leaf_name(path))
            spec["metadata"] = {"compressor": COMPRESSION}
            store = ts.open(
                spec, create=True, shape=(1, TIME_AXIS_MAX_LENGTH, *shape[2:]), dtype=stored.dtype.name
            ).result()
            store[0, :length].write(stored).result()
        index = ts.open(_spec(temporary, INDEX_NAME), create=True, shape=(1,), dtype="int32").result()
        index.write(np.array([length], dtype=np.int32)).result()
        (temporary / METADATA_FILE).write_text(json.dumps(metadata))
        if target.exists():
            shutil.rmtree(target)
        os.replace(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return target


# (field -> leaf path, leaf path -> shape text, leaf path -> dtype name, metadata.json)
_Layout = tuple[
    dict[str, tuple[str, ...]], dict[tuple[str, ...], str], dict[tuple[str, ...], str], dict[str, Any]
]


def _source_layout(source: dict[str, Any], flat: Mapping[str, np.ndarray], where: str) -> _Layout:
    """The layout of the Vault a dataset was imported from: its leaves (those marlkd reads), dtypes,
    shapes and metadata.json, so that it is written back bit for bit."""
    shapes, dtypes = _leaves(source["structure_shape"]), _leaves(source["structure_dtype"])
    if any(path not in LEAVES for path in shapes):  # leaves the import left out cannot be written back
        shapes = {p: v for p, v in shapes.items() if p in LEAVES}
        dtypes = {p: v for p, v in dtypes.items() if p in LEAVES}
        source = {**source, "structure_shape": _tree(shapes), "structure_dtype": _tree(dtypes)}
    missing = sorted(leaf_name(p) for p in shapes if p in LEAVES and LEAVES[p] not in flat)
    if missing:
        raise VaultError(f"{where}: the source Vault has field(s) {', '.join(missing)} the dataset lacks")
    fields = {LEAVES[p]: p for p in shapes if p in LEAVES}
    return fields, shapes, dtypes, source


def _own_layout(data: Any, flat: Mapping[str, np.ndarray], length: int) -> _Layout:
    """The layout of a dataset made by marlkd: OG-MARL's dtypes, and its metadata under ``marlkd``."""
    fields = {field: path for path, field in LEAVES.items() if field in flat}
    shapes, dtypes = {}, {}
    for field, path in fields.items():
        shapes[path] = str((1, length, *flat[field].shape[1:]))
        dtypes[path] = _DEFAULT_DTYPES[field]
    meta = data.metadata
    metadata = {
        "version": VAULT_VERSION,
        "structure_shape": _tree(shapes),
        "structure_dtype": _tree(dtypes),
        "marlkd": {
            "env_id": meta.env_id,
            "env_kwargs": meta.env_kwargs,
            "quality": meta.quality,
            "seed": meta.seed,
            "max_steps": data.max_steps,
            "behavior_policy": data.metadata.behavior_policy,
            "source_checksum": meta.checksum,
        },
    }
    return fields, shapes, dtypes, metadata


def _tree(leaves: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in leaves.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def _to_vault_dtype(values: np.ndarray, dtype: np.dtype, name: str, where: str) -> np.ndarray:
    """``values`` in the Vault's dtype; refuses a conversion that would change a value."""
    converted = values.astype(dtype)
    if values.dtype == np.bool_ or np.array_equal(converted.astype(values.dtype), values, equal_nan=True):
        return converted
    raise VaultError(f"{where}: field {name!r}: values do not fit the Vault's dtype {dtype.name}")
