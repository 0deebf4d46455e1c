"""Expanding a sweep specification into its runs: the grid product, each run's config and stable id,
teacher sharing, run selection, and the check of a spec against this installation's registries."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from marlkd.errors import ConfigError, MarlkdError
from marlkd.experiments.schema import (
    ABLATION_METHOD,
    DatasetKey,
    MethodOverrides,
    RunSpec,
    Settings,
    SweepSpec,
    canonical_json,
)
from marlkd.names import SCRATCH


def _merged(*tables: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for table in tables:
        merged.update(table)
    return merged


def _env_settings(spec: SweepSpec, env: str, quick: bool) -> tuple[Settings, dict[str, Any]]:
    entry = dict(spec.per_env.get(env, {}))
    env_kwargs = entry.pop("env_kwargs", {})
    entry.pop("expert", None)
    values = _merged(asdict(spec.settings), entry, spec.quick.settings if quick else {})
    return Settings(**values), env_kwargs


def expert_budget(spec: SweepSpec, env: str, quick: bool = False) -> dict[str, Any]:
    """The expert budget of ``env``'s datasets: ``[expert]``, then ``[per_env.<env>.expert]``, then (quick)
    ``[quick.expert]`` and ``[quick.per_env.<env>.expert]``, key by key, later winning (empty: defaults)."""
    layers = [spec.expert, spec.per_env.get(env, {}).get("expert", {})]
    if quick:
        layers += [spec.quick.expert, spec.quick.per_env.get(env, {}).get("expert", {})]
    return _merged(*layers)


def _run_prefix(
    env: str, method: str, ablation: str, quality: str, num_trajectories: int, precision: str, seed: int
) -> str:
    """``env/method[-ablation]/quality[/n<trajectories>][/<precision>]/s<seed>``: optional parts only when
    set (so the ids of specs that do not sweep them stay as they were)."""
    label = f"{method}-{ablation}" if ablation else method
    parts = [env, label, quality]
    if num_trajectories:
        parts.append(f"n{num_trajectories}")
    if precision:
        parts.append(precision)
    parts.append(f"s{seed}")
    return "/".join(parts)


def run_id_for(prefix: str, identity: Mapping[str, Any]) -> str:
    """``<prefix>-<8 hex digits>``: the digits are a SHA-256 of the identity's canonical JSON."""
    digest = hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:8]
    return f"{prefix}-{digest}"


def expand(spec: SweepSpec, quick: bool = False) -> list[RunSpec]:
    """All runs of the sweep (or of its quick variant), in grid order: env, quality, dataset size,
    method, ablation, precision, trajectories, steps, evaluation episodes, seed.

    A run's id hashes what the spec states about it (environment, method, seed, dataset, config values),
    not the code's defaults: a finished run keeps its id when a default changes, and the same run in two
    sweeps gets the same id. The sweep's name and its run function are not part of it.
    """
    seeds = spec.quick.seeds if quick and spec.quick.seeds is not None else spec.seeds
    runs: list[RunSpec] = []
    for env in spec.envs:
        settings, env_kwargs = _env_settings(spec, env, quick)
        where = f"spec {spec.source}: environment {env}{' (quick)' if quick else ''}"
        for quality, dataset_episodes in itertools.product(settings.quality, settings.dataset_episodes):
            for nt in settings.num_trajectories:
                if nt > dataset_episodes:
                    raise ConfigError(
                        f"{where}: num_trajectories {nt} exceeds dataset_episodes {dataset_episodes}"
                    )
            dataset = DatasetKey(
                env,
                quality,
                dataset_episodes,
                spec.dataset_seed,
                dict(env_kwargs),
                expert_budget(spec, env, quick),
            )
            for method in spec.methods:
                runs += _method_runs(spec, quick, method, dataset, settings, seeds)
    ids = [run.run_id for run in runs]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"spec {spec.source}: the grid has repeated runs (equal ids); check per_env values")
    return runs


def _method_runs(
    spec: SweepSpec,
    quick: bool,
    method: str,
    dataset: DatasetKey,
    settings: Settings,
    seeds: Sequence[int],
) -> list[RunSpec]:
    """The runs of one method on one dataset: ablation x precision x trajectories x steps x evaluation
    episodes x seed."""
    env, env_kwargs, quality = dataset.env, dataset.env_kwargs, dataset.quality
    pretrain = method if method != SCRATCH else None
    sweeps_ablation = pretrain == ABLATION_METHOD and settings.ablation
    ablations = settings.ablation if sweeps_ablation else ("",)
    precisions = settings.precision if pretrain is not None and settings.precision else ("",)
    combos = itertools.product(
        ablations, precisions, settings.num_trajectories, settings.steps, settings.eval_episodes, seeds
    )
    runs = []
    for ablation, precision, nt, steps, eval_episodes, seed in combos:
        config = _run_config(
            spec,
            quick,
            method,
            pretrain,
            ablation,
            precision,
            nt,
            steps,
            eval_episodes,
            seed,
            env,
            env_kwargs,
        )
        identity = {
            "kind": spec.kind,
            "env": env,
            "method": method,
            "seed": seed,
            "dataset": dataset.to_dict(),
            "config": config,
        }
        prefix = _run_prefix(env, method, ablation, quality, nt, precision, seed)
        runs.append(
            RunSpec(
                sweep=spec.sweep_name(quick),
                run_id=run_id_for(prefix, identity),
                kind=spec.kind,
                env=env,
                method=method,
                seed=seed,
                quality=quality,
                num_trajectories=nt,
                ablation=ablation,
                steps=steps,
                eval_episodes=eval_episodes,
                dataset_episodes=dataset.episodes,
                dataset=dataset,
                config=config,
                run_fn=spec.run_fn,
                precision=precision,
            )
        )
    return runs


def _run_config(
    spec: SweepSpec,
    quick: bool,
    method: str,
    pretrain: str | None,
    ablation: str,
    precision: str,
    nt: int,
    steps: int,
    eval_episodes: int,
    seed: int,
    env: str,
    env_kwargs: dict[str, Any],
) -> dict[str, Any]:
    """The run function's config (see :class:`RunSpec`)."""
    offline: dict[str, Any] | None = None
    if pretrain is not None:
        own = spec.overrides.get(pretrain, MethodOverrides())
        own_quick = spec.quick.overrides.get(pretrain, MethodOverrides()) if quick else MethodOverrides()
        train = _merged(
            spec.train,
            own.train,
            spec.quick.train if quick else {},
            own_quick.train,
            {"steps": steps, "seed": seed, "num_trajectories": nt},
            {"precision": precision} if precision else {},
        )
        evaluation = _merged(
            spec.eval, own.eval, spec.quick.eval if quick else {}, own_quick.eval, {"episodes": eval_episodes}
        )
        algo = _merged(own.algo, own_quick.algo, {"ablation": ablation} if ablation else {})
        offline = {"method": pretrain, "train": train, "eval": evaluation, "algo": algo}
    if spec.kind == "offline":
        assert offline is not None  # scratch is refused for offline sweeps
        return offline
    overrides = spec.overrides.get(method, MethodOverrides())
    finetune = _merged(spec.finetune, spec.quick.finetune if quick else {})
    evaluation = _merged(
        spec.eval, overrides.eval, spec.quick.eval if quick else {}, {"episodes": eval_episodes}
    )
    return {
        "init": method,
        "pretrain": offline,
        "finetune": finetune,
        "env": env,
        "env_kwargs": dict(env_kwargs),
        "seed": seed,
        "eval": evaluation,
    }


def offline_config(run: RunSpec) -> dict[str, Any] | None:
    """The ``RunConfig`` dict (without ``data``/``out``) of the run's offline training: the run's config in
    an offline sweep, its ``pretrain`` in a finetuning sweep (None for ``scratch``)."""
    return run.config if run.kind == "offline" else run.config.get("pretrain")


def with_teacher_cache(run: RunSpec, directory: str | Path) -> RunSpec:
    """The run with ``algo.teacher_cache = directory`` if its offline training is ``ours`` (else unchanged).

    The run id stays: where a teacher is cached does not change what the run computes.
    """
    offline = offline_config(run)
    if offline is None or offline["method"] != ABLATION_METHOD:
        return run
    trained = {**offline, "algo": {**offline["algo"], "teacher_cache": str(directory)}}
    config = trained if run.kind == "offline" else {**run.config, "pretrain": trained}
    return replace(run, config=config)


def teacher_group(run: RunSpec) -> str:
    """Which teacher a run trains: ``ours`` runs with equal keys (same dataset, same config apart from the
    ablation, which changes the distillation, not the teacher) train the same one. Other runs get their
    own key (their id)."""
    offline = offline_config(run)
    if offline is None or offline["method"] != ABLATION_METHOD:
        return run.run_id
    algo = {k: v for k, v in offline["algo"].items() if k not in ("ablation", "teacher_cache")}
    return canonical_json({"dataset": run.dataset.to_dict(), "config": {**offline, "algo": algo}})


def select_runs(
    runs: Iterable[RunSpec],
    envs: Sequence[str] = (),
    methods: Sequence[str] = (),
    max_seeds: int | None = None,
) -> list[RunSpec]:
    """The runs whose environment is in ``envs`` and method in ``methods`` (empty: no filter), and, with
    ``max_seeds``, whose seed is among the first ``max_seeds`` distinct seeds of the grid."""
    runs = list(runs)
    seeds = set(list(dict.fromkeys(run.seed for run in runs))[:max_seeds]) if max_seeds else None
    return [
        run
        for run in runs
        if (not envs or run.env in envs)
        and (not methods or run.method in methods)
        and (seeds is None or run.seed in seeds)
    ]


def check_against_registry(spec: SweepSpec, runs: Sequence[RunSpec] | None = None) -> None:
    """Check the spec against what this installation has: environments, methods and config fields.

    Builds each distinct ``RunConfig`` once (with placeholder paths), so a bad override fails before any
    run starts, with the config field named. Imports torch (through the algorithm registry).
    """
    from marlkd.algos import ALGOS
    from marlkd.envs import list_envs
    from marlkd.envs.registry import describe
    from marlkd.run_config import RunConfig

    known_envs = set(list_envs())
    for env in spec.envs:
        if env not in known_envs:
            raise ConfigError(
                f"spec {spec.source}: grid.envs: unknown environment {env!r}; known: "
                f"{', '.join(sorted(known_envs))}"
            )
    for method in spec.methods:
        if method not in ALGOS and not (spec.kind == "finetune" and method == SCRATCH):
            raise ConfigError(
                f"spec {spec.source}: grid.methods: unknown method {method!r}; registered: "
                f"{', '.join(sorted(ALGOS))}"
            )
    runs = list(runs if runs is not None else expand(spec))
    missing: dict[str, str] = {}
    for env in dict.fromkeys(run.env for run in runs):
        try:
            describe(env)  # imports the environment's module: fails if its optional extra is missing
        except MarlkdError as exc:
            missing[env] = str(exc)
    if missing:
        kept = [env for env in dict.fromkeys(run.env for run in runs) if env not in missing]
        hint = f"; or leave them out: --only-env {' '.join(kept)}" if kept else ""
        reasons = "; ".join(dict.fromkeys(missing.values()))
        raise ConfigError(
            f"spec {spec.source}: cannot make environment(s) {', '.join(missing)}: {reasons}{hint}"
        )
    seen: set[str] = set()
    for run in runs:
        offline = offline_config(run)
        if offline is None:
            continue
        key = canonical_json(
            {k: v for k, v in offline.items() if k != "train"}
            | {"train": {k: v for k, v in offline["train"].items() if k != "seed"}}
        )
        if key in seen:
            continue
        seen.add(key)
        try:
            RunConfig.from_dict({**offline, "data": "<dataset>", "out": "<run>"})
        except ConfigError as exc:
            raise ConfigError(f"spec {spec.source}: method {offline['method']}: {exc}") from exc
