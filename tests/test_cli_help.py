"""The command line's help: fast, without PyTorch or JAX, each option with its own text, choices listed,
booleans as flags, one --quiet, progress bars only on a terminal, and collect's early checks."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from marlkd.algos import ALGOS
from marlkd.cli import build_parser, main
from marlkd.cli import envs as envs_command
from marlkd.cli.train import config_from_arguments
from marlkd.config import EvalConfig, TrainConfig, field_docs, plain_text
from marlkd.demo import DemoConfig
from marlkd.names import ABLATIONS, QUALITIES
from marlkd.progress import progress_bar
from marlkd.run_config import RunConfig

SRC = str(Path(__file__).resolve().parents[1] / "src")
HEAVY = ("torch", "jax", "jaxmarl", "highway_env", "h5py", "matplotlib")


def _loaded_after(argv: list[str]) -> tuple[set[str], str]:
    """Top-level modules imported by ``marlkd ARGV`` in a fresh interpreter, and its output."""
    code = (
        "import sys, json\n"
        "from marlkd.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": SRC}, check=True
    )
    return set(json.loads(done.stderr.strip().splitlines()[-1])), done.stdout


@pytest.mark.parametrize("argv", [["--help"], ["envs"], ["dataset", "--help"], ["collect", "--help"]])
def test_light_commands_import_neither_torch_nor_jax(argv: list[str]) -> None:
    loaded, out = _loaded_after(argv)
    assert out.strip()
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_top_level_help_lists_every_command() -> None:
    _, out = _loaded_after(["--help"])
    for command in (
        "demo",
        "envs",
        "dataset",
        "expert",
        "collect",
        "train",
        "eval",
        "finetune",
        "experiment",
    ):
        assert re.search(rf"^\s+{command}\s", out, re.MULTILINE), command


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def _config_classes() -> list[type]:
    return [TrainConfig, EvalConfig, DemoConfig, *(entry.config_cls for entry in ALGOS.values())]


@pytest.mark.parametrize("cls", _config_classes(), ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_option_has_its_own_help_text(cls: type) -> None:
    docs = field_docs(cls)
    names = [f.name for f in dataclasses.fields(cls) if not dataclasses.is_dataclass(f.type)]
    for name in names:
        assert docs.get(name), f"{cls.__qualname__}.{name} has no help text"
        # no entry swallows another field's documentation ("width: ... layers: ...")
        swallowed = [other for other in names if other != name and re.search(rf"\b{other}: ", docs[name])]
        assert not swallowed, f"{cls.__qualname__}.{name}'s help holds {swallowed}'s"
        assert "``" not in docs[name] and ":func:" not in docs[name]


def test_field_docs_reads_shared_entries_and_continuations() -> None:
    @dataclasses.dataclass(frozen=True)
    class Example:
        """Example.

        Attributes:
            a, b: the two ends, in
                ``metres``.
            c: see :func:`marlkd.config.check`.
        """

        a: int = 0
        b: int = 0
        c: int = 0

    assert field_docs(Example) == {
        "a": "the two ends, in metres.",
        "b": "the two ends, in metres.",
        "c": "see check.",
    }
    assert plain_text("``x`` and :class:`~marlkd.config.RunConfig`") == "x and RunConfig"


@pytest.mark.parametrize("method", sorted(ALGOS))
def test_method_help_reads_well(method: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(["train", method], capsys)
    assert "``" not in out
    assert "(options)" not in out and "TrainConfig" not in out and "EvalConfig" not in out
    assert "\ntraining:\n" in out and "\nevaluation (after training" in out
    assert "--precision {auto,fp32,bf16}" in out
    assert "--device {cpu,cuda,auto}" in out
    assert "--eval-gif, --no-eval-gif" in out
    assert "--quiet, --no-progress" in out


def test_enum_like_fields_list_their_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--ablation {" + ",".join(ABLATIONS) + "}" in _help(["train", "ours"], capsys)
    assert "--teacher {concat,factored}" in _help(["train", "ours"], capsys)
    assert "--algo-reward {positive,logit,negative}" in _help(["train", "gail"], capsys)
    assert "--truncation {bootstrap,final,drop}" in _help(["train", "cql"], capsys)
    assert "--quality {" + ",".join(QUALITIES) + "}" in _help(["demo"], capsys)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "ours", "--data", "d.h5", "--out", "r", "--ablation", "no-such"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'no-such'" in capsys.readouterr().err


def test_eval_shows_only_evaluation_options(capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(["eval"], capsys)
    assert "--every" not in out and "--episodes N" in out and "--gif, --no-gif" in out


def _parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def test_booleans_are_flags_and_none_resets_an_optional_field(tmp_path: Path) -> None:
    base = ["train", "ours", "--data", "d.h5", "--out", str(tmp_path / "run")]
    assert config_from_arguments(_parse(base)).eval.gif is False
    assert config_from_arguments(_parse([*base, "--eval-gif"])).eval.gif is True
    saved = tmp_path / "config.json"
    RunConfig(
        method="ours",
        data="d.h5",
        out="r",
        eval=EvalConfig(gif=True),
        algo={"teacher_steps": 7, "ablation": "kl-only"},
    ).save(saved)
    from_file = config_from_arguments(_parse([*base, "--config", str(saved)]))
    assert from_file.eval.gif is True and from_file.algo.teacher_steps == 7
    assert from_file.algo.ablation == "kl-only"
    overridden = config_from_arguments(
        _parse([*base, "--config", str(saved), "--no-eval-gif", "--teacher-steps", "none", "--lr", "3e-4"])
    )
    assert overridden.eval.gif is False and overridden.algo.teacher_steps is None
    assert overridden.train.lr == pytest.approx(3e-4)


def test_an_invalid_value_is_named_by_its_field(tmp_path: Path) -> None:
    argv = ["train", "idt", "--data", "d.h5", "--out", str(tmp_path / "run"), "--batch-size", "0"]
    with pytest.raises(Exception, match="config field train.batch_size: must be >= 1"):
        config_from_arguments(_parse(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["demo"],
        ["collect", "grid-world", "--quality", "good", "--episodes", "1", "--out", "x.h5"],
        ["expert", "train", "grid-world", "--out", "x"],
        ["train", "bc", "--data", "d.h5", "--out", "r"],
        ["eval", "r"],
        ["finetune", "r"],
        ["experiment", "run", "table1"],
    ],
)
@pytest.mark.parametrize("flag", ["--quiet", "--no-progress"])
def test_every_command_with_progress_bars_takes_quiet(argv: list[str], flag: str) -> None:
    args = _parse([*argv, flag])
    assert args.quiet is True
    assert _parse(argv).quiet is False


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_only_on_a_terminal() -> None:
    assert progress_bar(True, total=3, file=io.StringIO()).disable  # a pipe or file: no bar
    shown = progress_bar(True, total=3, file=_Terminal())
    assert not shown.disable
    shown.close()
    assert progress_bar(False, total=3, file=_Terminal()).disable  # --quiet


def test_collect_rejects_an_unknown_environment_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "data" / "x.h5"
    assert main(["collect", "gridworld", "--quality", "good", "--episodes", "2", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "unknown environment 'gridworld'" in captured.err
    assert "training" not in captured.out
    assert not (tmp_path / "data").exists()


def test_collect_says_it_trains_the_expert_first_and_how_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from marlkd import experts

    class Stop(Exception):
        pass

    def ensure_expert(*args, **kwargs):
        raise Stop  # the announcement must come before the training starts

    monkeypatch.setattr(experts, "ensure_expert", ensure_expert)
    monkeypatch.setenv("MARLKD_TRACEBACK", "1")  # main() reports the Stop as an internal error
    argv = ["collect", "grid-world", "--quality", "good", "--episodes", "2", "--out", str(tmp_path / "x.h5")]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "Stop" in captured.err
    out = captured.out
    assert "training grid-world's expert into" in out
    assert "500,000 environment steps of PPO, roughly 53 s on one CPU core" in out


@pytest.mark.slow
def test_prelisted_environments_match_their_modules() -> None:
    from marlkd.envs import describe, env_spec

    for env_id, (package, row) in envs_command.PRELISTED.items():
        if not envs_command.installed(package):
            continue
        spec, entry = env_spec(env_id), describe(env_id)
        mask = " (masked)" if spec.has_action_mask else ""
        assert (row.agents, row.obs_dim, row.actions) == (
            str(spec.n_agents),
            str(spec.obs_dim),
            f"{spec.n_actions}{mask}",
        ), env_id
        assert row.description == entry.description, env_id


def test_report_names_methods_without_importing_them(tmp_path: Path) -> None:
    # a report of a committed results table: the methods' display names come from marlkd.names
    results = Path(__file__).resolve().parents[1] / "results"
    argv = ["experiment", "report", "table1", "--root", str(results), "--out", str(tmp_path)]
    loaded, out = _loaded_after([*argv, "--bootstrap-reps", "20"])
    assert "report.md" in out
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    report = (tmp_path / "report.md").read_text()
    assert "| MA-CQL |" in report and "| MA-ICQ |" in report
