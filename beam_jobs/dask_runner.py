"""Beam's DaskRunner (2.77) with the three translation fixes these pipelines need.

Beam's own runner builds one ``dask.bag`` per transform; four of its
translations give wrong results for the pipelines here (docs/cluster.md has the
details and the issue text for Beam):

1. A ParDo with tagged outputs (``with_outputs``) puts *every* output into
   *every* output PCollection, so a ``WorkUnit`` meant for the units reached
   the per-file GroupByKey ("Input to GroupByKey must be ... KV[A, B]").
2. What a DoFn emits from ``finish_bundle`` is dropped: the bundle's outputs
   are collected before ``finish_bundle`` runs.  The decoder and the batched
   model flush their last batch there.
3. Side inputs are computed by a nested ``compute()`` inside the consuming
   task, outside the job's graph: the upstream steps run again (decoding and
   inference twice), a worker thread blocks while it waits, and only the
   last transform of the pipeline is computed, so a branch ending elsewhere
   is silently skipped.
4. Read (``ReadFromText`` of a manifest) has no translation: it becomes a
   no-op without input, and the steps after it have nothing to read.

This runner keeps Beam's translations for Create, GroupByKey, Flatten and the
rest, and replaces only the ParDo translation and the graph walk: a ParDo's
bag holds ``(tag, value)`` pairs that each output filters; ``finish_bundle``
runs before the bundle's outputs are returned; a side input is one more node
of the same graph (a reduction to a list); every transform nobody consumes is
computed.  Two costs of Beam's translation go too: a DoFn is set up once per
worker thread and reused (Beam's set it up and tore it down for every
partition), torn down on every worker when the job ends; and an empty
partition is no bundle.  Dask still schedules
everything.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import threading
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.internal import pickler
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler
from apache_beam.runners.dask import dask_runner as beam_dask
from apache_beam.runners.dask.overrides import _Read, dask_overrides
from apache_beam.runners.dask.transform_evaluator import TRANSLATIONS, Flatten, NoOp, get_windowed_value
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms.sideinputs import SideInputMap

from storage.recent import RecentlyUsed, at_most

_log = logging.getLogger(__name__)
_NOTHING = object()


class _Collect(Receiver):
    """Receives one output tag's windowed values into a bundle's shared list as (tag, value)."""

    def __init__(self, tag: str | None, values: list):
        self._tag, self._values = tag, values

    def receive(self, windowed_value) -> None:
        self._values.append((self._tag, windowed_value.value))


class _Receivers(dict):
    """Tag -> receiver, made on first use (the main output's tag is None)."""

    def __init__(self):
        super().__init__()
        self.values: list[tuple[str | None, Any]] = []

    def __missing__(self, tag):
        self[tag] = receiver = _Collect(tag, self.values)
        return receiver


@dataclasses.dataclass
class _WindowedValues:
    """A side input's computed elements, as SideInputMap iterates them."""

    values: list
    window_fn: Any

    def __iter__(self):
        for value in self.values:
            yield get_windowed_value(value, self.window_fn)


# (worker thread, payload digest) -> the DoFn set up for it, process-wide so that the end of a job can tear
# its DoFns down from whichever thread asks (their decoder processes would otherwise outlive the job).
DOFNS_KEPT = 256  # a bound if jobs end without their teardown (a driver that died): oldest first
_kept = RecentlyUsed(at_most(DOFNS_KEPT))


def _digest(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()


def _set_up_dofn(payload: bytes) -> tuple[DoFnSignature, tuple]:
    """The DoFn of ``payload``, set up once per worker thread and reused by its later bundles, as Beam's
    runners reuse DoFn instances (a DoFn's setup loads models and starts decoder processes)."""
    key = (threading.get_ident(), _digest(payload))
    if (known := _kept.get(key)) is not None:
        return known
    do_fn, *rest = pickler.loads(payload)
    signature = DoFnSignature(do_fn)
    signature.setup_lifecycle_method.method_value()
    entry = (signature, tuple(rest))
    for old, _ in _kept.put(key, entry):
        _tear_down(old)
    return entry


def _tear_down(signature: DoFnSignature) -> None:
    signature.teardown_lifecycle_method.method_value()


def _drop_dofn(payload: bytes) -> None:
    """After a failed bundle, as Beam does: the instance may be in any state."""
    key = (threading.get_ident(), _digest(payload))
    for signature, _ in _kept.pop_where(lambda kept: kept == key):
        _tear_down(signature)


def tear_down_job(digests: set[bytes]) -> int:
    """Tears down this worker's DoFns of one job (by payload digest); run on every worker at its end."""
    entries = _kept.pop_where(lambda key: key[1] in digests)
    for signature, _ in entries:
        _tear_down(signature)
    return len(entries)


def _run_bundle(items, payload: bytes, *side_values) -> list[tuple[str | None, Any]]:
    """One Dask partition as one bundle: start, process each, finish. An empty partition is no bundle."""
    items = iter(items)
    first = next(items, _NOTHING)
    if first is _NOTHING:
        return []
    signature, (label, window_fn, args, kwargs, side_specs) = _set_up_dofn(payload)
    receivers = _Receivers()
    handler = _OutputHandler(
        window_fn=window_fn, main_receivers=receivers[None], tagged_receivers=receivers,
        per_element_output_counter=None, output_batch_converter=None,
        process_yields_batches=False, process_batch_yields_elements=False)
    side_inputs = [SideInputMap(view_class, view_options, _WindowedValues(values, mapping_fn))
                   for (view_class, view_options, mapping_fn), values in zip(side_specs, side_values)]
    invoker = DoFnInvoker.create_invoker(
        signature, handler, context=DoFnContext(label, state=None), side_inputs=side_inputs,
        input_args=args, input_kwargs=kwargs, user_state_context=None,
        bundle_finalizer_param=beam.DoFn.BundleFinalizerParam())
    try:
        invoker.invoke_start_bundle()
        invoker.invoke_process(first)
        for item in items:
            invoker.invoke_process(item)
        invoker.invoke_finish_bundle()  # before the outputs are taken: what it emits belongs to them
    except BaseException:
        _drop_dofn(payload)
        raise
    return receivers.values


def _concat(parts: list[list]) -> list:
    return [value for part in parts for value in part]


def _has_tag(pair: tuple, tag: str | None) -> bool:
    return pair[0] == tag


def _value(pair: tuple) -> Any:
    return pair[1]


READ_BUNDLE_BYTES = 16 << 20


def _read_bundle(bundle) -> list:
    tracker = bundle.source.get_range_tracker(bundle.start_position, bundle.stop_position)
    return list(bundle.source.read(tracker))


def _read(source):
    """A bounded source split into bundles of about READ_BUNDLE_BYTES, one partition each, read on the
    workers (Beam's runner has no translation for Read, so a manifest read with ReadFromText gave nothing)."""
    import dask.bag as db

    bundles = list(source.split(desired_bundle_size=READ_BUNDLE_BYTES))
    return db.from_sequence(bundles, npartitions=max(1, len(bundles))).map(_read_bundle).flatten()


def _translated_as_par_do(node: AppliedPTransform) -> bool:
    """Beam's table matches the exact class: its GroupByKey's _GroupAlsoByWindow (a ParDo subclass) is a
    no-op there, since its GroupByKey already strips the windows."""
    return TRANSLATIONS.get(node.transform.__class__) is TRANSLATIONS[beam.ParDo]


class _BagVisitor(PipelineVisitor):
    """Translates each leaf transform to a dask bag; remembers which transforms have consumers."""

    def __init__(self, bag_kwargs: dict):
        self._bag_kwargs = bag_kwargs
        self.bags: dict[AppliedPTransform, Any] = {}
        self._consumed: set[AppliedPTransform] = set()
        self.payload_digests: set[bytes] = set()

    def bag_of(self, pcoll: pvalue.PValue):
        """The bag of one PCollection: a ParDo's bag filtered to the PCollection's tag."""
        if isinstance(pcoll, pvalue.PBegin):
            return None
        producer = pcoll.producer
        self._consumed.add(producer)
        bag = self.bags.get(producer)
        if bag is not None and _translated_as_par_do(producer):
            bag = bag.filter(functools.partial(_has_tag, tag=pcoll.tag)).map(_value)
        return bag

    def visit_transform(self, node: AppliedPTransform) -> None:
        inputs = [self.bag_of(p) for p in node.inputs]
        inputs = [b for b in inputs if b is not None] or [None]
        if _translated_as_par_do(node):
            self.bags[node] = self._par_do(node, inputs[0])
            return
        if isinstance(node.transform, _Read):
            self.bags[node] = _read(node.transform.source)
            return
        op = TRANSLATIONS.get(node.transform.__class__, NoOp)(node, bag_kwargs=self._bag_kwargs)
        single = len(inputs) == 1 and op.__class__ is not Flatten
        self.bags[node] = op.apply(input_bag=inputs[0] if single else inputs, side_inputs=None)

    def _par_do(self, node: AppliedPTransform, input_bag):
        transform = node.transform
        args, kwargs = transform.raw_side_inputs
        main_input = next(iter(node.main_inputs.values()))
        window_fn = main_input.windowing.windowfn if hasattr(main_input, "windowing") else None
        side_specs, side_items = [], []
        for side in node.side_inputs:
            side_specs.append((type(side), side._view_options(), side._window_mapping_fn))
            # A Delayed, not the Item: map_partitions inlines an Item's whole upstream into each consumer.
            elements = self.bag_of(side.pvalue).reduction(list, _concat)
            side_items.append(elements.to_delayed(optimize_graph=False))
        payload = pickler.dumps((transform.fn, transform.label, window_fn, list(args), kwargs, side_specs))
        self.payload_digests.add(_digest(payload))
        return input_bag.map(get_windowed_value, window_fn).map_partitions(_run_bundle, payload, *side_items)

    def unconsumed(self) -> list:
        """The bags no transform reads: computing them computes the whole pipeline."""
        return [bag for node, bag in self.bags.items() if node not in self._consumed and bag is not None]


class DaskRunner(beam_dask.DaskRunner):
    """``--runner dask``: Beam's DaskRunner with tagged outputs, finish_bundle, side inputs and Read fixed."""

    def run_pipeline(self, pipeline, options):
        import dask
        import dask.distributed as ddist

        dask_options = options.view_as(beam_dask.DaskOptions).get_all_options(
            drop_default=True, current_only=True)
        bag_kwargs = beam_dask.DaskOptions._extract_bag_kwargs(dask_options)
        client = ddist.Client(**dask_options)
        pipeline.replace_all(dask_overrides())
        visitor = _BagVisitor(bag_kwargs)
        pipeline.visit(visitor)
        # Only a count of each end comes back to the driver, not the elements.
        ends = [bag.count() for bag in visitor.unconsumed()]
        futures = client.compute(list(dask.optimize(*ends)))
        return _ClosingResult(client, futures, visitor.payload_digests)


class _ClosingResult(beam_dask.DaskRunnerResult):
    """At the job's end, tears its DoFns down on every worker, then closes the driver's connection to the
    scheduler (Beam's leaves it open, and it keeps reconnecting after the cluster is gone)."""

    def __init__(self, client, futures, payload_digests: set[bytes]):
        super().__init__(client, futures)
        self._payload_digests = payload_digests

    def wait_until_finish(self, duration=None) -> str:
        try:
            return super().wait_until_finish(duration)
        finally:
            if self.state in (PipelineState.DONE, PipelineState.FAILED):
                try:
                    self.client.run(tear_down_job, self._payload_digests)
                except Exception as e:  # noqa: BLE001 - the job's outcome stands; idle DoFns are evicted later
                    _log.warning("could not tear down the job's DoFns on the workers: %s", e)
                self.client.close()
