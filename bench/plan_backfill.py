"""Backfill planning at archive scale: a manifest of N URIs against a done-set of N files rows.

    python -m bench.plan_backfill [--sizes 100000,1000000] [--done_fraction 0.9] [--model_path DIR] \
        [--runners local,dask]

For each size it creates N real (empty) files and a manifest naming them, plus a
published run whose files table says ``ok`` for ``done_fraction`` of them and
holds as many rows again for URIs outside the manifest (so the done-set has N
rows), then times ``tag_audio --plan_only`` in a subprocess and reads its peak
RSS.  With ``dask`` among the runners it also starts a dask.distributed
cluster on 127.0.0.1 (a scheduler and two single-thread worker processes) and
plans on it with ``--runner dask``: the RSS is then the driver's alone, the
work being in the workers.  Prints a table last, with each Dask row's ratio to
the local row of the same size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO.parent / "shared" / "fixtures" / "yamnet-hub-random"


def _config_id(model_path: str) -> str:
    from audio_models.loading import load_spec, resolve_source
    from schemas.tables import config_id

    return config_id(load_spec(resolve_source("yamnet", model_path)))


def make_archive(root: Path, n: int, done_fraction: float, config: str) -> tuple[Path, Path]:
    """N empty files + manifest; an output dir with one published run holding N files rows."""
    audio = root / "archive"
    audio.mkdir(parents=True)
    uris = []
    for i in range(n):
        directory = audio / f"{i // 10000:03d}"
        if i % 10000 == 0:
            directory.mkdir()
        path = directory / f"clip{i:07d}.wav"
        path.touch()
        uris.append(str(path))
    manifest = root / "manifest.txt"
    manifest.write_text("\n".join(uris) + "\n")

    done = int(n * done_fraction)
    stats = [os.stat(u) for u in uris[:done]]
    ghosts = [f"{audio}/gone/clip{i:07d}.wav" for i in range(n - done)]  # rows for files no longer listed
    rows = pa.table({
        "uri": uris[:done] + ghosts,
        "status": ["ok"] * n,
        "size_bytes": pa.array([s.st_size for s in stats] + [0] * len(ghosts), pa.int64()),
        "last_modified": pa.array([s.st_mtime for s in stats] + [0.0] * len(ghosts), pa.float64()),
        "config_id": [config] * n,
    })
    out = root / "out"
    run_dir = out / "files" / "run=20260101T000000Z-000000"
    run_dir.mkdir(parents=True)
    pq.write_table(rows, run_dir / "part-00000-of-00001.parquet", compression="zstd")
    (out / "runs").mkdir()
    (out / "runs" / "20260101T000000Z-000000.json").write_text(
        json.dumps({"run_id": "20260101T000000Z-000000", "status": "succeeded"}))
    return manifest, out


def time_plan(manifest: Path, out: Path, model_path: str, runner_args: tuple[str, ...] = ()
              ) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB of the job's own process, the plan line)."""
    wall, peak_mb, lines = plan_in_child(("--input_manifest", str(manifest)), out, model_path, runner_args)
    return wall, peak_mb, lines[0]


TAG_AUDIO_PLAN = ("-m", "beam_jobs.tag_audio", "--plan_only")


def plan_in_child(input_args: Sequence[str], out: Path, model_path: str, runner_args: Sequence[str] = (),
                  command: Sequence[str] = TAG_AUDIO_PLAN) -> tuple[float, float, list[str]]:
    """Runs ``python COMMAND INPUT_ARGS --output OUT --model_path M RUNNER_ARGS`` (by default
    ``tag_audio --plan_only``) in a process of its own: (wall seconds, that process's peak RSS in MB,
    its stdout lines from the one starting with ``plan:`` on)."""
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        start = time.perf_counter()
        job = subprocess.Popen(
            [sys.executable, *command, *input_args, "--output", str(out), "--model_path", model_path,
             *runner_args],
            cwd=REPO, stdout=stdout, stderr=stderr, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        _, status, usage = os.wait4(job.pid, 0)  # this child's own rusage, not every child's maximum
        wall = time.perf_counter() - start
        job.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        if job.returncode != 0:
            raise SystemExit(stderr.read()[-3000:])
        lines = stdout.read().splitlines()
        plan = next(i for i, line in enumerate(lines) if line.startswith("plan:"))
    return wall, usage.ru_maxrss / 1024, lines[plan:]


def start_dask(directory: Path) -> tuple[str, list[subprocess.Popen]]:
    """A scheduler and a two-worker process group on 127.0.0.1; returns (address, processes)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    address = f"tcp://127.0.0.1:{port}"
    log = open(directory / "dask.log", "wb")  # noqa: SIM115 - kept open while the cluster runs
    python = [sys.executable, "-m"]
    scheduler = subprocess.Popen([*python, "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
                                  str(port), "--dashboard-address", ":0"], env=env, cwd=directory,
                                 stdout=log, stderr=log, start_new_session=True)
    time.sleep(3)
    workers = subprocess.Popen([*python, "distributed.cli.dask_worker", address, "--nworkers", "2",
                                "--nthreads", "1", "--dashboard-address", ":0"], env=env, cwd=directory,
                               stdout=log, stderr=log, start_new_session=True)
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=120)
    return address, [workers, scheduler]


def stop_dask(processes: list[subprocess.Popen]) -> None:
    import signal

    for process in processes:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="Comma-separated manifest sizes.")
    parser.add_argument("--done_fraction", type=float, default=0.9)
    parser.add_argument("--model_path", default=str(DEFAULT_MODEL))
    parser.add_argument("--workdir", default=None, help="Where to build the archives (default: a temp dir).")
    parser.add_argument("--runners", default="local", help="Comma-separated: local (FnApiRunner), dask.")
    args = parser.parse_args(argv)
    runners = [r.strip() for r in args.runners.split(",") if r.strip()]
    if not Path(args.model_path).exists():
        raise SystemExit(f"no model at {args.model_path}: pass --model_path (any YAMNet SavedModel)")
    config = _config_id(args.model_path)

    results = []
    cluster_dir = Path(tempfile.mkdtemp(prefix="plan_dask_", dir=args.workdir))
    address, cluster = start_dask(cluster_dir) if "dask" in runners else (None, [])
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            root = Path(tempfile.mkdtemp(prefix=f"plan{n}_", dir=args.workdir))
            try:
                t0 = time.perf_counter()
                manifest, out = make_archive(root, n, args.done_fraction, config)
                print(f"built {n} files + done-set in {time.perf_counter() - t0:.0f} s", flush=True)
                for runner in runners:
                    extra = ("--runner", "dask", "--dask_client_address", address) if runner == "dask" else ()
                    wall, peak_mb, plan = time_plan(manifest, out, args.model_path, extra)
                    print(f"{runner}: {plan} ({wall:.1f} s, peak {peak_mb:.0f} MB)", flush=True)
                    results.append((n, runner, wall, peak_mb))
            finally:
                shutil.rmtree(root, ignore_errors=True)
    finally:
        stop_dask(cluster)
        shutil.rmtree(cluster_dir, ignore_errors=True)

    local = {n: (wall, peak) for n, runner, wall, peak in results if runner == "local"}
    print(f"\n{'URIs':>10} {'runner':>7} {'plan wall s':>12} {'URIs/s':>9} {'driver peak MB':>15} "
          f"{'wall / local':>13} {'peak / local':>13}")
    for n, runner, wall, peak in results:
        base = local.get(n)
        ratios = (f"{wall / base[0]:>13.2f} {peak / base[1]:>13.2f}" if base and runner != "local"
                  else f"{'':>13} {'':>13}")
        print(f"{n:>10} {runner:>7} {wall:>12.1f} {n / wall:>9.0f} {peak:>15.0f} {ratios}")
    print("(local: FnApiRunner, the whole plan in the driver's process; dask: the driver's process only, "
          "listing and the done-set join run in the Dask workers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
