"""The events table's rules metadata and the training-set feature layout."""

from __future__ import annotations

import pytest

from schemas import training as ts
from schemas.answers import event_rules_from, events_schema


def test_event_rules_travel_in_the_events_schema():
    rules = {"default": {"on": 0.8, "off": 0.5}, "Siren": {"on": 0.6}}
    schema = events_schema({b"audio_tagger.model": b"head"}, rules)
    assert event_rules_from(schema) == rules
    assert schema.metadata[b"audio_tagger.model"] == b"head"
    assert event_rules_from(events_schema()) is None


def test_pooled_layout_names_each_statistic_of_each_column_in_order():
    layout = ts.FeatureLayout((ts.EMBEDDING, ts.LOGMEL_STATS), (1024, ts.LOGMEL_STATS_DIM), "mean_max")
    assert layout.raw_feature_names() == ["embedding_mean", "embedding_max", "logmel_stats_mean",
                                          "logmel_stats_max"]
    assert layout.input_dim == 2 * (1024 + 128)
    assert ts.FeatureLayout.from_document(layout.to_document()) == layout
    with pytest.raises(ValueError, match="one width per column"):
        ts.FeatureLayout((ts.EMBEDDING,), (1, 2))
