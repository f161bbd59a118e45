"""Skip what earlier runs already did: the done-set join, inside the pipeline.

A file is *done* when a committed run has an ``ok`` row for the same URI,
size, modification time and ``config_id`` (model fingerprint + framing).  The
earlier files rows are read by workers and joined by URI with the listing
(a CoGroupByKey), so the driver never holds millions of URIs.  Of several
rows, the latest is the one of the highest commit (``transforms.output.commit_log``).

With ``--channels`` the rows that count are those of the same choice: a mixed
run looks at rows whose ``channel`` is null, a per-channel run at the rows of
its channels (every channel an earlier run found, for ``each``), and a file is
done when each of them is.  With heads (``tag_audio --head``) each head's own
files rows (``OUT/heads/NAME``, its config id) count too: a file is done when
it is done for the base model and for every head.
"""

from __future__ import annotations

import dataclasses
import math

import apache_beam as beam
from apache_beam import pvalue

import storage
from schemas.tables import STATUS_OK, error_kind
from transforms.decoding.stream import EACH, MIX
from transforms.output.layout import FILES, OutputLayout, run_id_of
from transforms.tagging.listing import SKIPPED_LINKS, FileEntry

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
    channel: int | None = None
    target: str = ""  # whose row: "" the base model's, else a head's name


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

    def __init__(self, retry_failed: bool, channels: str | tuple[int, ...] = MIX,
                 targets: tuple[str, ...] = ("",)):
        self._retry_failed = retry_failed
        self._channels = channels
        self._targets = targets

    def process(self, element):
        _uri, grouped = element
        entries = list(grouped["entries"])
        if entries:  # else known from an earlier run but not among this run's inputs
            yield from self._decide(entries[0], list(grouped["prior"]))

    def _decide(self, entry: FileEntry, priors: list[PriorResult]):
        categories = [classify_channels(entry, [p for p in priors if p.target == target], self._channels)
                      for target in self._targets]
        category = next((c for c in categories if c != DONE), DONE)
        beam.metrics.Metrics.counter("plan", category).inc()
        yield pvalue.TaggedOutput(PLAN, category)
        if category in (NEW, CHANGED, TRANSIENT_BEFORE) or (category == FAILED_BEFORE and self._retry_failed):
            yield entry


def _latest(priors: list[PriorResult]) -> PriorResult | None:
    return max(priors, key=lambda p: p.commit) if priors else None


def classify_channels(entry: FileEntry, priors: list[PriorResult],
                      channels: str | tuple[int, ...] = MIX) -> str:
    """``classify`` against the earlier rows of the same channel choice (see the module's docstring)."""
    mixed = [p for p in priors if p.channel is None]
    if channels == MIX:
        return classify(entry, _latest(mixed))
    per_channel: dict[int, list[PriorResult]] = {}
    for prior in priors:
        if prior.channel is not None:
            per_channel.setdefault(prior.channel, []).append(prior)
    wanted = sorted(per_channel) if channels == EACH else list(channels)
    if not per_channel:  # never split: only a failure of the whole file (bad audio) says anything
        return classify(entry, _latest([p for p in mixed if p.status != STATUS_OK]))
    categories = [classify(entry, _latest(per_channel.get(channel, []))) for channel in wanted]
    return next((c for c in categories if c != DONE), DONE)


def _prior_from_row(filename_and_row: tuple[str, dict], out_dir: str, config: str, commits: dict[str, int],
                    target: str = "", only_uris: frozenset[str] | None = None):
    filename, row = filename_and_row
    uri = storage.canonical_uri(row["uri"])
    if only_uris is not None and uri not in only_uris:
        return  # a wave's done-set holds only its own files' earlier rows
    run_id = run_id_of(out_dir, filename)
    if row["config_id"] == config and run_id in commits:
        # Canonical, so rows written before URIs were canonical (relative, './', '//') still match.
        yield uri, PriorResult(
            run_id, commits[run_id], row["status"], row["size_bytes"], row["last_modified"],
            row.get("error") or "", row.get("channel"), target)


@beam.ptransform_fn
def PriorResults(pbegin, out_dir: str, commits: dict[str, int], config: str, target: str = "",  # noqa: N802
                 only_uris: frozenset[str] | None = None):
    """(uri, PriorResult) for every files row of the committed runs ``commits`` ({run id: commit}) with
    this config, read on workers; with ``only_uris`` (a wave's files), only rows of those: what the
    join holds then depends on the wave, not on how many files earlier runs did."""
    layout = OutputLayout(out_dir)
    patterns = [layout.table_parts(FILES, run_id) for run_id in commits]
    return (pbegin
            | "PriorRunPatterns" >> beam.Create(patterns)
            | "ReadPriorFiles" >> beam.io.ReadAllFromParquet(
                # 'channel' is absent from runs older than --channels: read as null (mixed)
                columns=["uri", "channel", "status", "error", "size_bytes", "last_modified", "config_id"],
                with_filename=True)
            | "PriorResult" >> beam.FlatMap(_prior_from_row, out_dir, config, dict(commits), target,
                                            only_uris))


@beam.ptransform_fn
def SkipDone(entries, prior, retry_failed: bool, channels: str | tuple[int, ...] = MIX,  # noqa: N802
             targets: tuple[str, ...] = ("",)):
    """Returns (entries to tag, plan categories); ``targets``: "" (the base model) and the heads' names."""
    selected = ({"entries": entries | "KeyEntries" >> beam.Map(lambda e: (e.uri, e)), "prior": prior}
                | "JoinWithPrior" >> beam.CoGroupByKey()
                | "SelectWork" >> beam.ParDo(SelectWork(retry_failed, channels, targets)).with_outputs(
                    PLAN, main="work"))
    return selected.work, selected[PLAN]


@beam.ptransform_fn
def CountPlan(categories):  # noqa: N802
    """Categories -> one dict {category: count} (every category present)."""
    return (categories
            | "CountCategories" >> beam.combiners.Count.PerElement()
            | "AllCounts" >> beam.combiners.ToList()
            | "AsDict" >> beam.Map(lambda pairs: {**dict.fromkeys(CATEGORIES, 0), **dict(pairs)}))


def format_plan(counts: dict[str, int], retry_failed: bool) -> str:
    counts = dict(counts)
    links = counts.pop(SKIPPED_LINKS, 0)
    counts = {**dict.fromkeys(CATEGORIES, 0), **counts}
    todo = counts[NEW] + counts[CHANGED] + counts[TRANSIENT_BEFORE] + (counts[FAILED_BEFORE] if retry_failed
                                                                       else 0)
    transient = counts[TRANSIENT_BEFORE]
    retried = f", {transient} hit storage errors before (retried)" if transient else ""
    return (f"plan: {sum(counts.values())} input files: {counts[NEW]} new, {counts[CHANGED]} changed, "
            f"{counts[DONE]} done{retried}, {counts[FAILED_BEFORE]} failed before "
            f"({'retried' if retry_failed else 'skipped; --retry_failed retries them'}) -> {todo} to tag"
            + (f"; {links} symlinked folder{'s' if links != 1 else ''} not followed (--follow_symlinks "
               "follows them)" if links else ""))
