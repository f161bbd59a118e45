"""What the optional command-line audio tools on this machine can do, asked of the tools themselves.

A tool being on PATH says little: Debian's ``sox`` writes no MP3 without
libsox-fmt-mp3, an ``ffmpeg`` may be built without libopus.  Each probe runs
the tool once (cached) and reads what it reports:

- ``ffmpeg -hide_banner -encoders``: the encoders (``libopus``, ``libmp3lame``...);
- ``sox -h``: the line ``AUDIO FILE FORMATS:`` (``mp3``, ``ogg``...);
- ``lame --version``, ``opusenc --version``, ``oggenc --version``: that it runs;
- ``succeeds(argv)``: that a whole command runs (e.g. ``bench.decode``'s
  ffmpeg command on a 1-ms generated input: its build has soxr).

``missing(tool, capability)`` gives the reason a test cannot run (None when it
can), ``require`` skips the test with that reason.  Importable without
pytest (the benchmarks use it).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

_PACKAGES = {  # Debian packages that bring a tool or a capability, for the skip reason
    ("sox", "mp3"): "libsox-fmt-mp3",
    ("sox", None): "sox",
    ("ffmpeg", None): "ffmpeg",
    ("lame", None): "lame",
    ("opusenc", None): "opus-tools",
    ("oggenc", None): "vorbis-tools",
}


@functools.cache
def _run(argv: tuple[str, ...]) -> subprocess.CompletedProcess | None:
    """The probe command's result when it exits 0; None when it is not installed or fails."""
    if shutil.which(argv[0]) is None and not Path(argv[0]).is_file():
        return None
    try:
        done = subprocess.run(argv, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done if done.returncode == 0 else None


def _output(argv: tuple[str, ...]) -> str | None:
    """stdout + stderr of a probe command, or None when it is not installed or fails."""
    done = _run(argv)
    return None if done is None else (done.stdout + done.stderr).decode(errors="replace")


def ffmpeg_encoders(exe: str = "ffmpeg") -> frozenset[str]:
    """Names of the encoders ``exe`` has (empty when it does not run)."""
    text = _output((exe, "-hide_banner", "-encoders"))
    lines = (text or "").splitlines()
    if "------" not in (line.strip() for line in lines):
        return frozenset()
    listed = lines[[line.strip() for line in lines].index("------") + 1:]  # after the legend
    # " A....D libopus   libopus Opus (codec opus)": six flag characters, then the name
    return frozenset(line.split()[1] for line in listed if len(line.split()) >= 2)


def sox_formats() -> frozenset[str]:
    """File formats ``sox`` reads and writes, as ``sox -h`` lists them (empty when it does not run)."""
    for line in (_output(("sox", "-h")) or "").splitlines():
        if line.startswith("AUDIO FILE FORMATS:"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def succeeds(argv: list[str], min_output_bytes: int = 0) -> bool:
    """Whether the command exits 0 having written at least ``min_output_bytes`` to stdout (asked once)."""
    done = _run(tuple(argv))
    return done is not None and len(done.stdout) >= min_output_bytes


def runs(tool: str) -> bool:
    """Whether ``tool --version`` runs and exits 0."""
    return _output((tool, "--version")) is not None


def missing(tool: str, capability: str | None = None) -> str | None:
    """Why ``tool`` cannot do ``capability`` here (an ffmpeg encoder, a sox format), or None when it can."""
    package = _PACKAGES.get((tool, capability)) or _PACKAGES.get((tool, None), tool)
    if shutil.which(tool) is None:
        return f"{tool} is not installed (apt-get install {_PACKAGES.get((tool, None), tool)})"
    if tool == "ffmpeg":
        if not ffmpeg_encoders():
            return "ffmpeg does not run (ffmpeg -encoders failed)"
        if capability is not None and capability not in ffmpeg_encoders():
            return f"this ffmpeg has no {capability} encoder (ffmpeg -encoders)"
        return None
    if tool == "sox":
        if not sox_formats():
            return "sox does not run (sox -h failed)"
        if capability is not None and capability not in sox_formats():
            return f"this sox cannot write {capability} (sox -h; apt-get install {package})"
        return None
    if capability is not None:
        raise ValueError(f"no probe for what {tool} can do")
    return None if runs(tool) else f"{tool} does not run ({tool} --version failed)"


def require(tool: str, capability: str | None = None) -> None:
    """Skips the calling test, with the reason, unless ``tool`` can do ``capability``."""
    import pytest

    reason = missing(tool, capability)
    if reason is not None:
        pytest.skip(reason)
