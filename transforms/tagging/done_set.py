"""Skip what earlier runs already did: the done-set join, inside the pipeline.

A file is *done* when a published run has an ``ok`` row for the same URI,
size, modification time and ``config_id`` (model fingerprint + framing).  The
earlier files rows are read by workers and joined by URI with the listing
(a CoGroupByKey), so the driver never holds millions of URIs.
"""

from __future__ import annotations

import dataclasses
import math

import apache_beam as beam
from apache_beam import pvalue

from schemas.tables import STATUS_OK, error_kind
from transforms.output.layout import FILES, OutputLayout, run_id_of
from transforms.tagging.listing import FileEntry

NEW = "new"
CHANGED = "changed"
DONE = "done"
FAILED_BEFORE = "failed_before"
TRANSIENT_BEFORE = "transient_before"  # failed only because storage kept failing: always retried
CATEGORIES = (NEW, CHANGED, DONE, FAILED_BEFORE, TRANSIENT_BEFORE)
TRANSIENT = "transient"  # the error kind of such a files row

PLAN = "plan"  # tag of the (category) side output


@dataclasses.dataclass(frozen=True)
class PriorResult:
    run_id: str
    commit: int  # its run's place in the commit log: the highest is the latest
    status: str
    size_bytes: int | None
    last_modified: float | None
    error: str = ""


def _same_time(a: float | None, b: float | None) -> bool:
    # Listed times pass through float seconds; allow for rounding, not for a real change.
    return a is None and b is None or (a is not None and b is not None and math.isclose(a, b, abs_tol=1e-3))


def classify(entry: FileEntry, prior: PriorResult | None) -> str:
    if prior is None:
        return NEW
    if entry.size_bytes != prior.size_bytes or not _same_time(entry.last_modified, prior.last_modified):
        return CHANGED
    if prior.status == STATUS_OK:
        return DONE
    return TRANSIENT_BEFORE if error_kind(prior.error) == TRANSIENT else FAILED_BEFORE


class SelectWork(beam.DoFn):
    """(uri, {'entries': [...], 'prior': [...]}) -> entries to tag; every decision counted under PLAN."""

    def __init__(self, retry_failed: bool):
        self._retry_failed = retry_failed

    def process(self, element):
        _uri, grouped = element
        entries = list(grouped["entries"])
        if entries:  # else known from an earlier run but not among this run's inputs
            yield from self._decide(entries[0], list(grouped["prior"]))

    def _decide(self, entry: FileEntry, priors: list[PriorResult]):
        prior = max(priors, key=lambda p: p.commit) if priors else None
        category = classify(entry, prior)
        beam.metrics.Metrics.counter("plan", category).inc()
        yield pvalue.TaggedOutput(PLAN, category)
        if category in (NEW, CHANGED, TRANSIENT_BEFORE) or (category == FAILED_BEFORE and self._retry_failed):
            yield entry


def _prior_from_row(filename_and_row: tuple[str, dict], out_dir: str, config: str, commits: dict[str, int],
                    only_uris: frozenset[str] | None = None):
    filename, row = filename_and_row
    if only_uris is not None and row["uri"] not in only_uris:
        return
    run_id = run_id_of(out_dir, filename)
    if row["config_id"] == config and run_id in commits:
        yield row["uri"], PriorResult(run_id, commits[run_id], row["status"], row["size_bytes"],
                                      row["last_modified"], row.get("error") or "")


@beam.ptransform_fn
def PriorResults(pbegin, out_dir: str, commits: dict[str, int], config: str,  # noqa: N802
                 only_uris: frozenset[str] | None = None):
    """(uri, PriorResult) for every files row of the committed runs ``commits`` ({run id: commit}) with
    this config, read on workers; with ``only_uris`` (a wave's files), only rows of those: what the
    join holds then depends on the wave, not on how many files earlier runs did."""
    layout = OutputLayout(out_dir)
    patterns = [layout.table_parts(FILES, run_id) for run_id in commits]
    return (pbegin
            | "PriorRunPatterns" >> beam.Create(patterns)
            | "ReadPriorFiles" >> beam.io.ReadAllFromParquet(
                columns=["uri", "status", "error", "size_bytes", "last_modified", "config_id"],
                with_filename=True)
            | "PriorResult" >> beam.FlatMap(_prior_from_row, out_dir, config, dict(commits), only_uris))


@beam.ptransform_fn
def SkipDone(entries, prior, retry_failed: bool):  # noqa: N802
    """Returns (entries to tag, plan categories)."""
    selected = ({"entries": entries | "KeyEntries" >> beam.Map(lambda e: (e.uri, e)), "prior": prior}
                | "JoinWithPrior" >> beam.CoGroupByKey()
                | "SelectWork" >> beam.ParDo(SelectWork(retry_failed)).with_outputs(PLAN, main="work"))
    return selected.work, selected[PLAN]


@beam.ptransform_fn
def CountPlan(categories):  # noqa: N802
    """Categories -> one dict {category: count} (every category present)."""
    return (categories
            | "CountCategories" >> beam.combiners.Count.PerElement()
            | "AllCounts" >> beam.combiners.ToList()
            | "AsDict" >> beam.Map(lambda pairs: {**dict.fromkeys(CATEGORIES, 0), **dict(pairs)}))


def format_plan(counts: dict[str, int], retry_failed: bool) -> str:
    counts = {**dict.fromkeys(CATEGORIES, 0), **counts}
    todo = counts[NEW] + counts[CHANGED] + counts[TRANSIENT_BEFORE] + (counts[FAILED_BEFORE] if retry_failed
                                                                       else 0)
    transient = counts[TRANSIENT_BEFORE]
    retried = f", {transient} hit storage errors before (retried)" if transient else ""
    return (f"plan: {sum(counts.values())} input files: {counts[NEW]} new, {counts[CHANGED]} changed, "
            f"{counts[DONE]} done{retried}, {counts[FAILED_BEFORE]} failed before "
            f"({'retried' if retry_failed else 'skipped; --retry_failed retries them'}) -> {todo} to tag")
