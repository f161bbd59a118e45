"""The command line every job shares (beam_jobs/cli.py): unknown options, Beam's options, the entry."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

from beam_jobs import cli
from tests.support.pipeline_helpers import REPO, run_tag_audio, run_tag_audio_subprocess

EXAMPLE_AUDIO = REPO / "examples" / "audio"
NOT_JOBS = {"__init__", "cli", "event_arguments", "training_arguments", "runners", "dask_runner"}
JOBS = sorted(p.stem for p in (REPO / "beam_jobs").glob("*.py") if p.stem not in NOT_JOBS)


def test_a_misspelled_option_is_refused_in_one_line_naming_the_option_meant(tmp_path):
    """The process as a user starts it: before, Beam logged 'Discarding unparseable args' and the run
    tagged every class with exit status 0."""
    out = tmp_path / "out"
    result = run_tag_audio_subprocess(["--input", str(EXAMPLE_AUDIO), "--output", str(out), "--topk", "3"],
                                      timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == ["tag_audio: unknown option --topk: did you mean --top_k?"]
    assert not out.exists()


@pytest.mark.parametrize("ttl", ["0", "-5", "nan"])
def test_a_lease_ttl_that_is_not_positive_is_refused_before_any_work(ttl, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_tag_audio(["--input", str(EXAMPLE_AUDIO), "--output", str(out), "--lease_ttl_s", ttl]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("tag_audio: --lease_ttl_s must be more than 0 seconds")
    assert not out.exists()


@pytest.mark.parametrize(("job", "args", "expected"), [
    ("events", ["--frames", "f", "--output", "o", "--thresold", "t.csv"], "did you mean --thresholds?"),
    ("search", ["--frames", "f", "--output", "o", "--query", "q.wav", "--topk", "3"],
     "did you mean --top_k?"),
    ("build_training_set", ["--frames", "f", "--output", "o", "--lables=l.csv"], "did you mean --labels?"),
    ("compare_features", ["--frames", "f", "--labels", "l", "--output", "o", "--feature", "logmel"],
     "did you mean --features?"),
    ("inspect", ["out", "--form", "json"], "did you mean --format?"),  # abbreviations are refused too
    ("tag_audio", ["--input", "i", "--output", "o", "--runer", "DataflowRunner"], "did you mean --runner?"),
    ("events", ["--frames", "f", "--output", "o", "--direct_num_workers", "two"], "invalid int value"),
    ("plot", ["--frames", "f", "--uri", "u", "--output", "o.png", "stray"], "unexpected argument 'stray'"),
    ("build_training_set", ["--frames", "f", "--labels", "l.csv", "--output", "o", "--eval_block_s", "0"],
     "--eval_block_s must be > 0"),
    ("build_training_set", ["--frames", "f", "--labels", "l.csv", "--output", "o", "--eval_percent", "150"],
     "leave room for training"),
    ("build_training_set", ["--frames", "f", "--output", "o"],
     "--frames OUT_DIR, --labels LABELS.csv and --output DS_DIR are required"),
    ("events", ["--frames", "f"], "--frames OUT_DIR and --output EVENTS_DIR are required (or --events DIR"),
    ("search", ["--frames", "f", "--output", "o"],
     "--query FILE (one or more) and --output DIR are required"),
])
def test_every_job_refuses_what_neither_it_nor_beam_knows_in_one_line(job, args, expected, tmp_path, capsys,
                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths in the arguments: nothing may appear here
    module = importlib.import_module(f"beam_jobs.{job}")
    assert module.run(args) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"{job}: ") and expected in errors[0], errors
    assert list(tmp_path.iterdir()) == []


def test_beam_options_pass_through_and_the_job_keeps_its_own():
    parser = cli.job_parser("x", None, beam=True)
    parser.add_argument("--labels")  # also a Beam option (Dataflow job labels): the job's wins
    beam = ["--runner", "FnApiRunner", "--direct_num_workers=2", "--experiments", "a", "--experiments", "b"]
    opts, rest = cli.parse(parser, ["--labels", "l.csv", *beam], beam=True)
    assert opts.labels == "l.csv" and rest == beam
    options = cli.pipeline_options(rest)
    assert options.view_as(DirectOptions).direct_num_workers == 2
    with pytest.raises(cli.UsageError, match="did you mean --labels"):
        cli.parse(parser, ["--lables", "l.csv"], beam=True)


def test_fnapirunner_is_the_default_and_a_named_runner_is_kept():
    assert cli.pipeline_options([]).view_as(StandardOptions).runner == "FnApiRunner"
    named = cli.pipeline_options(["--runner", "DirectRunner"])
    assert named.view_as(StandardOptions).runner == "DirectRunner"
    assert not cli.names_a_runner(["--direct_num_workers", "2"]) and cli.names_a_runner(["--runner=X"])


def test_runner_short_names_would_be_expanded_where_every_job_builds_its_options(monkeypatch):
    monkeypatch.setattr(cli, "expand_runner_aliases",
                        lambda args: ["PrismRunner" if a == "prism" else a for a in args])
    assert cli.pipeline_options(["--runner", "prism"]).view_as(StandardOptions).runner == "PrismRunner"
    assert cli.names_a_runner(["--runner", "prism"])


@pytest.mark.parametrize("job", JOBS)
def test_every_job_has_one_entry_shape_and_prints_its_help(job, capsys):
    path = REPO / "beam_jobs" / f"{job}.py"
    tree = ast.parse(path.read_text())
    last = ast.unparse(tree.body[-1])
    assert last.startswith("main = cli.main_for(run, __name__"), f"{job} ends with {last!r}"
    module = importlib.import_module(f"beam_jobs.{job}")
    assert list(inspect.signature(module.main).parameters) == ["argv"], f"{job}: main(argv=None) -> int"
    assert module.main(["--help"]) == 0
    assert f"python -m beam_jobs.{job}" in capsys.readouterr().out


def test_a_job_run_as_a_module_exits_with_its_status():
    wrong = subprocess.run([sys.executable, "-m", "beam_jobs.inspect", "--top_lables", "3", "out"], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2, wrong.stderr
    assert wrong.stderr.strip() == "inspect: unknown option --top_lables: did you mean --top_labels?"
    shown = subprocess.run([sys.executable, "-m", "beam_jobs.inspect", "--help"], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "python -m beam_jobs.inspect" in shown.stdout


def test_no_command_line_parsing_outside_beam_jobs():
    product = [p for package in ("schemas", "storage", "audio_models", "transforms")
               for p in sorted((REPO / package).rglob("*.py"))]
    parsing = [str(p.relative_to(REPO)) for p in product if "argparse" in _imported(p)]
    assert not parsing, parsing


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names
