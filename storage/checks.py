"""Before any work: can this machine reach what it was asked to?"""

from __future__ import annotations

import os

from storage.paths import join
from storage.writes import delete, write_bytes

# --- before any work: can this machine reach what it was asked to? -----------------------------------

def _on_google_cloud() -> bool:
    """A Google Cloud VM (Dataflow workers, GCE, GKE), told by its DMI name: no network probe."""
    try:
        with open("/sys/class/dmi/id/product_name") as f:
            return "Google" in f.read()
    except OSError:
        return False


def credentials_problem() -> str | None:
    """Why gs:// paths cannot be reached from here (one sentence with the fix), or None.

    Checked before any work: without credentials Beam's own lookup retries
    for minutes before it gives up.
    """
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return None  # a GCS-protocol endpoint that needs no Google credentials
    named = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if named:
        if not os.path.isfile(named):
            return (f"GOOGLE_APPLICATION_CREDENTIALS names {named}, which does not exist: point it at a "
                    "service-account key file or unset it and run `gcloud auth application-default login`")
        return None
    config = os.environ.get("CLOUDSDK_CONFIG") or os.path.join(os.path.expanduser("~"), ".config", "gcloud")
    if os.path.isfile(os.path.join(config, "application_default_credentials.json")) or _on_google_cloud():
        return None
    return ("no Google Cloud credentials on this machine: run `gcloud auth application-default login`, "
            "or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file")


def probe_writable(directory: str) -> None:
    """Writes and removes a small object in ``directory``; raises what the filesystem raised."""
    probe = join(directory, f"_write_probe-{os.getpid()}-{os.urandom(4).hex()}")
    write_bytes(probe, b"probe")
    delete([probe])

