"""Shared pytest fixtures."""

import pytest

from tests.support.corpus import SmallCorpus, build_small_corpus
from tests.support.gcs_emulator import gcs  # noqa: F401  (fixture: a GCS emulator for the session)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> SmallCorpus:
    """tests/support/corpus.py: a model and a few audio files, built once, read by many tests."""
    return build_small_corpus(tmp_path_factory.mktemp("small_corpus"))
