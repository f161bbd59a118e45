"""A large input on the local runner, tagged in waves of files: each wave a run of its own, committed as
it ends.

The local runner (FnApiRunner, in this process) runs a pipeline stage by stage and holds each stage's
whole output until the next stage has read it.  What tag_audio keeps per file between stages is small
but not nothing: the file's listing entry, its decoding report and, above all, its score sums waiting
for the per-file combine (521 float64 sums and 521 float32 maxima with YAMNet), about 35 KB of
resident memory per file in all (docs/performance.md, "Memory and the number of files").  So one run
over 40,000 files needs ~1.4 GB more than one over a few.

Here the files to tag are planned once (the listing and the done-set join, as ``--plan_only`` does),
then tagged in waves of at most ``wave_files``.  Each wave is an ordinary run: its own id, the lease,
the done-set join (its planned entries are checked again against the runs committed by then, under
its lease) and one commit.  Memory depends on the wave's size, not the input's.  A run stopped in a
wave leaves the earlier waves committed; the next run skips their files as done.  An input that fits
in one wave is tagged by one ordinary run, exactly as without waves; so is one whose plan fails (the
run's own checks then say why in one line).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import signal
import tempfile
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from transforms.output.layout import FAILED, RunRecord, new_run_id
from transforms.output.lease import DEFAULT_TTL_S, OutputBusyError
from transforms.tagging.listing import FileEntry
from transforms.tagging.pipeline import PlanWork, TagAudioConfig
from transforms.tagging.run import Interrupted, RunStoppedError, _interruptible, execute, with_published_runs

# Runners that run the whole pipeline in (or under) this process, holding PCollections in its memory.
LOCAL_RUNNERS = frozenset({"FnApiRunner", "DirectRunner", "SwitchingDirectRunner", "BundleBasedDirectRunner"})
DEFAULT_WAVE_FILES = 2000  # ~70 MB of per-file state at the measured ~35 KB a file
BUSY_EXIT = 3  # tag_audio's exit status when another run holds the output (a later wave found it so)


@dataclasses.dataclass
class WaveRuns:
    """What a run in waves did: the plan of the whole input, then each wave's final record in order."""

    plan: dict[str, int]
    records: list[RunRecord]

    @property
    def status(self) -> str:
        return FAILED if any(r.status == FAILED for r in self.records) else self.records[-1].status


def runs_locally(options: PipelineOptions) -> bool:
    """Whether these options run the pipeline on a local runner (the default runner is one)."""
    runner = options.view_as(StandardOptions).runner or "FnApiRunner"
    name = runner if isinstance(runner, str) else type(runner).__name__
    return name.rsplit(".", 1)[-1] in LOCAL_RUNNERS


def plan_entries(config: TagAudioConfig, options: PipelineOptions) -> tuple[list[FileEntry], dict[str, int]]:
    """(the entries to tag, sorted by URI, and the plan's counts): the listing and the done-set join
    against the runs committed now, run as a pipeline. Decodes nothing."""
    config = with_published_runs(config)
    scratch = tempfile.mkdtemp(prefix="tag_audio_plan_")
    entries_path, counts_path = os.path.join(scratch, "entries.pickle"), os.path.join(scratch, "plan.pickle")
    try:
        pipeline = beam.Pipeline(options=options)
        entries, counts = pipeline | "Plan" >> PlanWork(config)
        _ = (entries
             | "AllEntries" >> beam.combiners.ToList()
             | "WriteEntries" >> beam.Map(_write_pickle, entries_path))
        _ = counts | "WritePlan" >> beam.Map(_write_pickle, counts_path)
        pipeline.run().wait_until_finish()
        with open(entries_path, "rb") as f:
            planned = pickle.load(f)
        with open(counts_path, "rb") as f:
            counts = pickle.load(f)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return sorted(planned, key=lambda e: e.uri), counts


def _write_pickle(value, path: str) -> None:
    with open(path, "wb") as f:
        pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)


def split_waves(entries: list[FileEntry], wave_files: int) -> list[tuple[FileEntry, ...]]:
    """``entries`` cut into consecutive waves of nearly equal size, none above ``wave_files``."""
    count = -(-len(entries) // wave_files)
    return [tuple(entries[len(entries) * i // count:len(entries) * (i + 1) // count]) for i in range(count)]


def wave_record(record: RunRecord, wave: int, waves: int) -> RunRecord:
    """The record of a wave's run: the first wave is ``record``'s run, each later one a run id of its
    own; its place among the waves is in its parameters."""
    placed = dataclasses.replace(record, parameters={**record.parameters, "wave": f"{wave} of {waves}"})
    return placed if wave == 1 else dataclasses.replace(placed, run_id=new_run_id(), started_at=time.time())


def format_waves(result: WaveRuns) -> str:
    """One line per wave's run, then the totals (a run in one wave prints its usual summary instead)."""
    lines = []
    totals: dict[str, float] = {}
    for record in result.records:
        counts = record.counts or {}
        for key in ("files", "ok", "partial", "failed", "frames", "audio_seconds"):
            totals[key] = totals.get(key, 0) + counts.get(key, 0)
        reason = f": {record.reason}" if record.reason else ""
        wave = record.parameters.get("wave", "?")
        lines.append(f"  wave {wave:>9s}  run {record.run_id}: {record.status}, "
                     f"{counts.get('files', 0)} files ({counts.get('ok', 0)} ok, "
                     f"{counts.get('partial', 0)} partial, {counts.get('failed', 0)} failed){reason}")
    wall = sum(r.wall_s or 0.0 for r in result.records)
    audio = totals.get("audio_seconds", 0.0)
    lines.append(f"tag_audio in {len(result.records)} waves (runs): {result.status}; "
                 f"{int(totals.get('files', 0))} files: {int(totals.get('ok', 0))} ok, "
                 f"{int(totals.get('partial', 0))} partial, {int(totals.get('failed', 0))} failed; "
                 f"{audio / 3600:.3f} h audio, {int(totals.get('frames', 0))} frames; {wall:.1f} s in the "
                 f"waves' runs, {audio / wall if wall else 0.0:.1f}x realtime")
    return "\n".join(lines)


def execute_in_waves(config: TagAudioConfig, record: RunRecord, options: PipelineOptions, wave_files: int,
                     progress_s: float = 0.0, lease_ttl_s: float = DEFAULT_TTL_S) -> WaveRuns:
    """Plans the input, then tags it in waves of at most ``wave_files`` files, one run each (``record``
    is the first's; one wave: exactly ``execute``).  Stops after a wave whose run failed.

    Raises what ``execute`` raises; in a later wave, a RunStoppedError (also for an output another run
    took meanwhile, exit status 3) that says which waves were committed.
    """
    try:
        with _interruptible():
            entries, plan = plan_entries(config, options)
    except Interrupted as e:
        name = signal.Signals(e.signum).name
        raise RunStoppedError(f"interrupted ({name}) while planning: nothing was written", 128 + e.signum
                              ) from None
    except Exception:  # noqa: BLE001 - e.g. a damaged part: the run's own checks, under the lease, say it
        entries, plan = [], {}
    if len(entries) <= wave_files:
        return WaveRuns(plan, [execute(config, record, options, progress_s, lease_ttl_s)])
    waves = split_waves(entries, wave_files)
    del entries
    records: list[RunRecord] = []
    for number, wave in enumerate(waves, start=1):
        this = wave_record(record, number, len(waves))
        try:
            final = execute(dataclasses.replace(config, entries=wave), this, options, progress_s, lease_ttl_s)
        except (RunStoppedError, OutputBusyError) as e:
            if not records:
                raise
            # Said whatever stopped it: the waves before this one are committed and stay.
            done = sum(len(w) for w in waves[:number - 1])
            code = e.exit_code if isinstance(e, RunStoppedError) else BUSY_EXIT
            raise RunStoppedError(f"{e} (waves 1-{number - 1} of {len(waves)}, {done} files, were "
                                  "committed before it)", code) from None
        records.append(final)
        if final.status == FAILED:
            break
    return WaveRuns(plan, records)
