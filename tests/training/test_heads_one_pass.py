"""Several classifier heads on one YAMNet pass (tag_audio --head), against each head's own export.

Two heads are trained here (tag -> build_training_set -> train_head, different widths and seeds) on
three sounds tagged with the random-weight YAMNet fixture; scores mean nothing, what is checked is
that the one-pass output of each head equals its end-to-end export's (within 1e-4), with its class
names in the Parquet metadata, its own config id, and a done-set that knows which heads ran.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from schemas import training as ts
from schemas.tables import class_names_from, head_config_id, read_model_metadata
from tests.support.audio_factory import sine, write_audio
from tests.support.pipeline_helpers import (
    FIXTURE_MODEL,
    REPO,
    read_table,
    require_shared,
    run_tag_audio,
    run_tag_audio_subprocess,
)
from transforms.output import current
from transforms.output.reader import find_output

TOLERANCE = 1e-4
CLASSES = {"low": 300.0, "high": 2500.0, "noise": None}


def _signal(freq: float | None, rng: np.random.Generator) -> np.ndarray:
    if freq is None:
        return rng.uniform(-0.3, 0.3, (1, 32000))
    return sine(freq, 2.0, 16000, amplitude=0.4) + rng.normal(0, 0.01, (1, 32000))


def _tag(inputs: list, out, *extra: str) -> int:
    args = [a for path in inputs for a in ("--input", str(path))]
    return run_tag_audio([*args, "--output", str(out), "--batch_size", "16", "--decode_processes", "0",
                          *extra])


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    """Audio, two trained heads and the runs compared: one pass with both, and each export alone."""
    from beam_jobs import build_training_set, train_head

    model = str(require_shared(FIXTURE_MODEL))
    root = tmp_path_factory.mktemp("heads")
    audio = root / "audio"
    rng = np.random.default_rng(5)
    rows = ["path,label,fold"]
    for label, freq in CLASSES.items():
        (audio / label).mkdir(parents=True)
        for i, fold in enumerate((1, 1, 2, 3, 4)):
            path = write_audio(audio / label / f"{label}_{i}.wav", _signal(freq, rng), 16000)
            rows.append(f"audio/{label}/{path.name},{label},{fold}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    tagged = root / "tagged"
    assert _tag([audio], tagged, "--model_path", model) == 0
    assert build_training_set.run(["--frames", str(tagged), "--labels", str(root / "labels.csv"),
                                   "--output", str(root / "ds"), "--train_folds", "1,2", "--eval_folds", "3",
                                   "--test_folds", "4"]) == 0
    exports = {}
    for name, (width, seed) in {"head_a": (16, 1), "head_b": (24, 2)}.items():
        assert train_head.run(["--dataset", str(root / "ds"), "--output", str(root / name), "--hidden_units",
                               str(width), "--seed", str(seed), "--epochs", "3", "--patience", "2",
                               "--batch_size", "16"]) == 0
        exports[name] = root / name / "export"
    one_pass = root / "one_pass"
    assert _tag([audio], one_pass, "--model", "yamnet", "--model_path", model,
                *[a for e in exports.values() for a in ("--head", str(e))]) == 0
    alone = {}
    for name, export in exports.items():
        alone[name] = root / f"alone_{name}"
        assert _tag([audio], alone[name], "--model_path", str(export)) == 0
    return {"root": root, "audio": audio, "model": model, "exports": exports, "one_pass": one_pass,
            "alone": alone, "tagged": tagged}


def test_each_heads_scores_equal_its_own_export(heads):
    for name in heads["exports"]:
        got = read_table(heads["one_pass"] / "heads" / name, "frames").to_pandas()
        expected = read_table(heads["alone"][name], "frames").to_pandas()
        assert len(got) == len(expected) == 15 * 4
        got = got.set_index(["uri", "frame_index"]).sort_index()
        expected = expected.set_index(["uri", "frame_index"]).sort_index()
        assert list(got.index) == list(expected.index)
        np.testing.assert_allclose(np.stack(got.scores), np.stack(expected.scores), atol=TOLERANCE)
        assert "embedding" not in got.columns  # the embeddings are the base run's
    a, b = (np.stack(read_table(heads["one_pass"] / "heads" / n, "frames").to_pandas()
                     .sort_values(["uri", "frame_index"]).scores) for n in heads["exports"])
    assert np.abs(a - b).max() > 10 * TOLERANCE  # two different heads, not one written twice


def test_the_base_run_keeps_yamnet_and_each_head_has_its_classes_and_config_id(heads):
    base = read_table(heads["one_pass"], "frames", ["uri", "scores", "embedding", "config_id"]).to_pandas()
    original = read_table(heads["tagged"], "frames", ["uri", "frame_index", "config_id"]).to_pandas()
    assert set(base.config_id) == set(original.config_id) and len(base.scores.iloc[0]) == 521
    base_config = base.config_id.iloc[0]
    labels = json.loads((heads["root"] / "ds" / ts.DATASET_FILE).read_text())["labels"]
    configs = set()
    for name, export in heads["exports"].items():
        part = glob.glob(f"{heads['one_pass']}/heads/{name}/frames/run=*/*.parquet")[0]
        schema = pq.read_schema(part)
        assert class_names_from(schema) == labels
        from audio_models.loading import load_spec, resolve_source

        fingerprint = load_spec(resolve_source("head", str(export))).fingerprint
        meta = read_model_metadata(schema)
        assert meta["config_id"] == head_config_id(base_config, fingerprint) != base_config
        files = read_table(heads["one_pass"] / "heads" / name, "files").to_pandas()
        assert len(files) == 15 and set(files.status) == {"ok"}
        assert set(files.config_id) == {meta["config_id"]}
        assert all(entry["label"] in labels for row in files.top_labels_mean for entry in row)
        configs.add(meta["config_id"])
        # readers of a head's directory: the current view and the run record
        view = current.current_frames(str(heads["one_pass"] / "heads" / name), ["uri", "frame_index"])
        assert view.num_rows == 60
        (record,) = (heads["one_pass"] / "heads" / name / "runs").glob("*.json")
        assert json.loads(record.read_text())["status"] == "succeeded"
    assert len(configs) == 2


def test_a_rerun_skips_files_every_head_did_and_a_new_head_tags_them(heads, tmp_path):
    out, (a, b) = heads["one_pass"], heads["exports"].values()
    assert _tag([heads["audio"]], out, "--model_path", heads["model"], "--head", str(a),
                "--head", str(b)) == 0
    assert read_table(out, "files", ["run"]).to_pandas().run.nunique() == 1  # nothing redone
    # the same export under a new name is a head no run has scored yet: every file is tagged for it
    assert _tag([heads["audio"]], out, "--model_path", heads["model"], "--head", str(a),
                "--head", f"again={a}", "--no_base_scores") == 0
    again = read_table(out / "heads" / "again", "frames", ["uri", "frame_index", "scores"]).to_pandas()
    first = read_table(out / "heads" / "head_a", "frames",
                       ["uri", "frame_index", "scores", "run"]).to_pandas()
    assert len(again) == 60 and first.run.nunique() == 2
    latest = first[first.run == first.run.max()].set_index(["uri", "frame_index"]).sort_index()
    again = again.set_index(["uri", "frame_index"]).sort_index()
    np.testing.assert_allclose(np.stack(again.scores), np.stack(latest.scores), atol=1e-6)
    parts = sorted(glob.glob(f"{out}/frames/run=*/*.parquet"))
    newest = max(parts, key=lambda p: p.split("run=")[1])
    assert "scores" not in pq.read_schema(newest).names  # --no_base_scores: embeddings only


def test_bad_head_options_fail_in_seconds(heads, capsys):
    a = str(heads["exports"]["head_a"])
    out = heads["root"] / "bad"
    assert _tag([heads["audio"]], out, "--model_path", heads["model"], "--head", a, "--head", a) == 2
    assert "two heads are named 'head_a'" in capsys.readouterr().err
    assert _tag([heads["audio"]], out, "--model_path", heads["model"], "--no_base_scores") == 2
    assert "--no_base_scores without --head" in capsys.readouterr().err
    assert _tag([heads["audio"]], out, "--model_path", heads["model"], "--head", str(heads["model"])) == 2
    assert "not a train_head export" in capsys.readouterr().err


def test_apply_head_scores_stored_embeddings_as_the_one_pass_does(heads, capsys):
    from beam_jobs import apply_head

    out, export = heads["tagged"], heads["exports"]["head_a"]
    assert apply_head.run(["--frames", str(out), "--head", str(export)]) == 0
    assert "60 frames of 15 files scored, 0 files already done" in capsys.readouterr().out
    applied = read_table(out / "heads" / "head_a", "frames").to_pandas().set_index(["uri", "frame_index"])
    one_pass = read_table(heads["one_pass"] / "heads" / "head_a", "frames").to_pandas()
    one_pass = one_pass[one_pass.run == one_pass.run.min()].set_index(["uri", "frame_index"])
    assert sorted(applied.index) == sorted(one_pass.index)
    applied, one_pass = applied.sort_index(), one_pass.sort_index()
    np.testing.assert_allclose(np.stack(applied.scores), np.stack(one_pass.scores), atol=TOLERANCE)
    assert set(applied.config_id) == set(one_pass.config_id)
    files = read_table(out / "heads" / "head_a", "files").to_pandas().set_index("uri").sort_index()
    expected = read_table(heads["one_pass"] / "heads" / "head_a", "files").to_pandas()
    expected = expected[expected.run == expected.run.min()].set_index("uri").sort_index()
    assert list(files.index) == list(expected.index)
    assert (files.num_frames == expected.num_frames).all() and (files.status == expected.status).all()
    assert [r[0]["label"] for r in files.top_labels_mean] == [r[0]["label"] for r in expected.top_labels_mean]
    # published like a run, and a second application finds every file done
    (record,) = (out / "heads" / "head_a" / "runs").glob("*.json")
    assert json.loads(record.read_text())["status"] == "succeeded"
    assert apply_head.run(["--frames", str(out), "--head", str(export)]) == 0
    assert "0 frames of 0 files scored, 15 files already done" in capsys.readouterr().out
    assert apply_head.run(["--frames", str(out), "--head", str(heads["model"])]) == 2
    assert "not a train_head export" in capsys.readouterr().err


def test_head_names_come_from_the_directory_or_name_equals_path():
    from transforms.tagging.heads import head_name, split_name

    assert head_name("/models/birds/export") == "birds" and head_name("gs://b/heads/night/export/") == "night"
    assert head_name("/models/birds_v2") == "birds_v2"
    assert split_name("night=gs://b/h/export") == ("night", "gs://b/h/export")
    assert split_name("/data/a=b/export") == ("a=b", "/data/a=b/export")  # '=' inside a path is a path


def test_heads_and_apply_head_per_channel(heads, tmp_path, capsys):
    from beam_jobs import apply_head

    rng = np.random.default_rng(9)
    audio = tmp_path / "audio"
    audio.mkdir()
    write_audio(audio / "stereo.wav", np.concatenate([_signal(300.0, rng), _signal(None, rng)]), 16000)
    out, export = tmp_path / "out", heads["exports"]["head_b"]
    assert _tag([audio], out, "--model_path", heads["model"], "--channels", "each",
                "--head", str(export)) == 0
    one_pass = read_table(out / "heads" / "head_b", "frames").to_pandas()
    files = read_table(out / "heads" / "head_b", "files").to_pandas()
    assert sorted(files.channel) == [0, 1] and set(one_pass.channel) == {0, 1}
    assert apply_head.run(["--frames", str(out), "--head", f"again={export}"]) == 0
    assert "8 frames of 2 files scored" in capsys.readouterr().out
    applied = read_table(out / "heads" / "again", "frames").to_pandas()
    key = ["channel", "frame_index"]
    one_pass, applied = one_pass.sort_values(key), applied.sort_values(key)
    assert applied[key].values.tolist() == one_pass[key].values.tolist()
    np.testing.assert_allclose(np.stack(applied.scores), np.stack(one_pass.scores), atol=TOLERANCE)
    low, noise = (np.stack(one_pass[one_pass.channel == c].scores) for c in (0, 1))
    assert np.abs(low - noise).max() > 10 * TOLERANCE  # each channel scored from its own audio


# A run with one head changes stored state in this order (AUDIO_TAGGER_KILL_AT counts the changes): the
# write probe, the base record, the head's record, the head's renames, its staging's delete, the head's
# commit, its final record, the base's renames, staging delete, commit and final record.  Each step
# named here is checked to be what the kill stopped, so a change of order fails here, not silently.
HEAD_CRASH_POINTS = {
    4: "renaming 2 file(s) to {out}/heads/head_a/files/",  # the head's parts still staged
    5: "deleting {out}/heads/head_a/_staging/",  # the head's parts in place, never committed
    7: "writing {out}/heads/head_a/runs/",  # the head committed, the base's parts still staged
    10: "creating {out}/_log/",  # the base's parts in place, never committed
}


@pytest.mark.parametrize("step", sorted(HEAD_CRASH_POINTS))
def test_a_run_with_a_head_killed_at_a_step_then_run_again_leaves_each_file_once_in_the_head(heads, tmp_path,
                                                                                             step):
    out = tmp_path / "out"
    args = ["--input", str(heads["audio"]), "--output", str(out), "--model", "yamnet", "--model_path",
            heads["model"], "--head", str(heads["exports"]["head_a"]), "--batch_size", "16",
            "--decode_processes", "0", "--progress_s", "0"]
    killed = run_tag_audio_subprocess(args, env={"AUDIO_TAGGER_KILL_AT": str(step)}, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert f"crash point {step}: killed before {HEAD_CRASH_POINTS[step].format(out=out)}" in killed.stderr
    assert run_tag_audio(args) == 0
    for output in (out, out / "heads" / "head_a"):
        found = find_output(str(output))
        committed = {run.run_id for run in found.runs if run.published}
        # Nothing of the killed run is left where a raw read of the tables would take it.
        assert {run.run_id for run in found.runs if run.files or run.frames} <= committed, output
        assert not list((output / "_staging").rglob("*.parquet"))
        now = current.current_files(str(output), ["uri"])["uri"].to_pylist()
        assert len(now) == len(set(now)) == 15, output
    assert read_table(out, "files", ["uri"]).num_rows == 15  # the base never tags a file twice



@pytest.mark.parametrize(("step", "what"), [(2, "renaming 2 file(s) to {head}/files/"),
                                            (4, "creating {head}/_log/")])
def test_apply_head_killed_at_a_step_then_run_again_leaves_each_file_once(heads, tmp_path, step, what,
                                                                         capsys):
    """Killed with the head's parts staged (2) or in place but never committed (4): the next apply_head
    clears them, and the head's tables hold each file once, raw or through the current view."""
    from beam_jobs import apply_head

    out = tmp_path / "tagged"
    shutil.copytree(heads["tagged"], out, ignore=shutil.ignore_patterns("heads"))  # no head applied yet
    head = out / "heads" / "head_a"
    args = ["--frames", str(out), "--head", str(heads["exports"]["head_a"])]
    killed = subprocess.run([sys.executable, "-m", "beam_jobs.apply_head", *args], cwd=REPO,
                            env={**os.environ, "AUDIO_TAGGER_KILL_AT": str(step)}, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9 and f"crash point {step}: killed before {what.format(head=head)}" in \
        killed.stderr, killed.stderr[-2000:]
    assert apply_head.run(args) == 0
    assert "60 frames of 15 files scored, 0 files already done" in capsys.readouterr().out
    raw = read_table(head, "files", ["uri"])["uri"].to_pylist()
    assert len(raw) == len(set(raw)) == 15
    assert read_table(head, "frames", ["uri"]).num_rows == 60
    assert current.current_files(str(head), ["uri"]).num_rows == 15
    assert not list((head / "_staging").rglob("*.parquet"))
