"""Shared pytest fixtures, and how the suite splits over pytest-xdist workers."""

from pathlib import Path

import pytest

from tests.support.corpus import SmallCorpus, build_small_corpus
from tests.support.gcs_emulator import gcs  # noqa: F401  (fixture: a GCS emulator for the session)

TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    """Under ``-n N --dist loadgroup`` (``make test``), a module's tests run on one worker, so its
    module-scoped fixtures (a tagged corpus, a run killed mid-way) are built once; the cluster tests
    share one worker and so one Dask cluster."""
    for item in items:
        parts = Path(item.path).resolve().relative_to(TESTS).parts
        group = "cluster" if parts[0] == "cluster" else "/".join(parts)
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> SmallCorpus:
    """tests/support/corpus.py: a model and a few audio files, built once, read by many tests."""
    return build_small_corpus(tmp_path_factory.mktemp("small_corpus"))
