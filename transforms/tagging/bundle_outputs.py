"""Outputs emitted from ``finish_bundle``, which Beam needs wrapped with a window and timestamp."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from apache_beam import pvalue
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue


def in_global_window(value) -> WindowedValue:
    return WindowedValue(value, GlobalWindow().max_timestamp(), [GlobalWindow()])


def finish_bundle_outputs(outputs: Iterable) -> Iterator:
    """``outputs`` as ``process`` would yield them (values and TaggedOutputs), ready for finish_bundle."""
    for out in outputs:
        if isinstance(out, pvalue.TaggedOutput):
            yield pvalue.TaggedOutput(out.tag, in_global_window(out.value))
        else:
            yield in_global_window(out)
