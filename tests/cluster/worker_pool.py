"""Dataflow's worker harness offline: SDK workers from a venv that holds only the built wheel.

The venv is made the fast way, and that is part of what the test relies on:
``python -m venv`` without system site packages, then

* the wheel (``pip wheel --no-deps`` of a copy of the sources: the package
  dirs and setup.py, so building leaves nothing in the checkout) installed with
  ``--no-deps``, and
* one ``.pth`` line naming the test interpreter's site-packages, so the
  dependencies come from there without downloading them again.

A path line in a ``.pth`` file adds that directory to ``sys.path`` but does
not run the ``.pth`` files inside it, so the editable install of the checkout
found there (``__editable__*.pth``) stays inert: the only copy of this
package a worker can import is the wheel's (``importable_from`` checks it).
Workers start in a directory outside the checkout, without PYTHONPATH.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from tests.cluster.processes import free_port, start, stop, wait_for_port

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("beam_jobs", "transforms", "schemas", "storage", "audio_models")


@dataclasses.dataclass
class WorkerPool:
    port: int
    process: subprocess.Popen
    venv: Path

    def runner_args(self) -> list[str]:
        return ["--runner", "PortableRunner", "--job_endpoint", "embed", "--environment_type", "EXTERNAL",
                "--environment_config", f"localhost:{self.port}"]


def build_wheel(directory: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of the package sources; returns the wheel."""
    source = directory / "source"
    for name in PACKAGES:
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, source / name)
    wheels = directory / "wheels"
    # With setuptools here, build with it (offline); without (Python >= 3.12 venvs), pip fetches it the
    # way `pip install -e .` did.
    offline = importlib.util.find_spec("setuptools") and importlib.util.find_spec("wheel")
    isolation = ["--no-build-isolation"] if offline else []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", *isolation,
                    "--wheel-dir", str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    return next(wheels.glob("*.whl"))


def package_data_missing_from(wheel: Path) -> list[str]:
    """Files under the packages that are not Python source and not in the wheel (class maps, model specs,
    default thresholds ...): a worker installed from the wheel would not find them."""
    tracked = subprocess.run(["git", "ls-files", *PACKAGES], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    data = {path for path in tracked if not path.endswith(".py")}
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    return sorted(data - names)


def make_worker_venv(directory: Path, wheel: Path) -> Path:
    venv = directory / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", where], capture_output=True, text=True,
                               check=True).stdout.strip())
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--target", str(site), str(wheel)], check=True, capture_output=True, timeout=300)
    return venv


def worker_env(venv: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"  # workers are started as `python`
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def importable_from(venv: Path, module: str, cwd: Path) -> str:
    """Where the worker venv's python finds ``module`` (the wheel's copy, or the checkout's if it leaks)."""
    return subprocess.run([str(venv / "bin" / "python"), "-c", f"import {module}; print({module}.__file__)"],
                          env=worker_env(venv), cwd=cwd, capture_output=True, text=True, check=True,
                          timeout=120).stdout.strip()


def start_worker_pool(venv: Path, cwd: Path) -> WorkerPool:
    port = free_port()
    log = cwd / "worker_pool.log"
    process = start([str(venv / "bin" / "python"), "-m", "apache_beam.runners.worker.worker_pool_main",
                     f"--service_port={port}"], log, worker_env(venv), cwd)
    try:
        wait_for_port(port, process, log)
    except Exception:
        stop(process)
        raise
    return WorkerPool(port, process, venv)
