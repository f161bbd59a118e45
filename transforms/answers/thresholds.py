"""Which classes become events, and with which thresholds.

A thresholds file (CSV or JSON, local or ``gs://``) gives, per class: ``on``
(a frame at or above it starts an event), ``off`` (the event goes on while
frames stay at or above it), ``min_duration_s`` (shorter events are dropped),
``merge_gap_s`` (events of one class closer than this become one) and
``smooth_s`` (scores are first averaged over this much of the neighbouring
frames, so one stray frame neither starts nor cuts an event).
Missing values take the defaults; a row whose class is ``*`` sets them.

CSV::

    class,on,off,min_duration_s,merge_gap_s,smooth_s
    *,0.5,0.3,0,0,0
    Dog,0.4,0.2,0.5,1.0,1.5

JSON: ``{"default": {"on": 0.5, ...}, "classes": {"Dog": {"on": 0.4, ...}}}``
or a list of objects with a ``class`` key, like the CSV rows.

Classes: those named (``--event_classes``), else the classes the file lists,
else every class of the model except background classes (names such as
``_silence_``, ``_unknown_`` or ``_negative_``).
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import io
import json
from collections.abc import Sequence

import storage

DEFAULT_ROW = "*"
FIELDS = ("on", "off", "min_duration_s", "merge_gap_s", "smooth_s")


class ThresholdsError(ValueError):
    """The thresholds or classes cannot be used; ``str(e)`` is one line for the user."""


@dataclasses.dataclass(frozen=True)
class ClassThresholds:
    on: float = 0.5
    off: float = 0.3
    min_duration_s: float = 0.0
    merge_gap_s: float = 0.0
    smooth_s: float = 0.0  # 0: each frame's own score

    def check(self, name: str) -> None:
        if not 0.0 <= self.off <= self.on:
            raise ThresholdsError(f"{name}: needs 0 <= off <= on (got on={self.on}, off={self.off})")
        if min(self.min_duration_s, self.merge_gap_s, self.smooth_s) < 0:
            raise ThresholdsError(f"{name}: min_duration_s, merge_gap_s and smooth_s must be >= 0")


@dataclasses.dataclass(frozen=True)
class EventRules:
    """Thresholds per class and which classes to detect; picklable, resolved against a model's classes
    by ``for_classes``."""

    default: ClassThresholds = ClassThresholds()
    per_class: tuple[tuple[str, ClassThresholds], ...] = ()
    classes: tuple[str, ...] = ()  # empty: the listed classes, else every non-background class

    def thresholds(self, name: str) -> ClassThresholds:
        return dict(self.per_class).get(name, self.default)

    def for_classes(self, class_names: Sequence[str]) -> list[tuple[int, str, ClassThresholds]]:
        """(class index, name, thresholds) of every class to detect; raises ThresholdsError for a name
        the model does not have."""
        wanted = self.classes or tuple(name for name, _ in self.per_class)
        index = {name: i for i, name in enumerate(class_names)}
        if not wanted:
            return [(i, name, self.default) for i, name in enumerate(class_names) if not is_background(name)]
        unknown = [name for name in wanted if name not in index]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(class_names), n=3)
            hint = f" (close: {', '.join(close)})" if close else ""
            raise ThresholdsError(f"{len(unknown)} class(es) the model does not have: "
                                  f"{', '.join(repr(u) for u in unknown[:5])}{hint}")
        return [(index[name], name, self.thresholds(name)) for name in dict.fromkeys(wanted)]

    def to_document(self) -> dict:
        return {"default": dataclasses.asdict(self.default),
                "classes": {name: dataclasses.asdict(t) for name, t in self.per_class},
                "selected": list(self.classes)}


def rules_above(min_score: float, smooth_s: float = 0.0) -> EventRules:
    """Every non-background class; an event starts at ``min_score`` and goes on down to the default
    ``off`` (or ``min_score`` when that is lower), on scores averaged over ``smooth_s``."""
    return EventRules(ClassThresholds(on=min_score, off=min(min_score, ClassThresholds().off),
                                      smooth_s=smooth_s))


def is_background(name: str) -> bool:
    """``_silence_``, ``_unknown_``, ``_negative_``: what a model says when nothing of interest sounds."""
    return len(name) > 2 and name.startswith("_") and name.endswith("_")


def _thresholds(values: dict, base: ClassThresholds, where: str) -> ClassThresholds:
    given = {}
    for key in FIELDS:
        value = values.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        try:
            given[key] = float(value)
        except (TypeError, ValueError):
            raise ThresholdsError(f"{where}: {key} must be a number, not {value!r}") from None
    if "on" in given and "off" not in given:
        given["off"] = min(base.off, given["on"])
    thresholds = dataclasses.replace(base, **given)
    thresholds.check(where)
    return thresholds


def parse_thresholds(text: str, source: str = "thresholds", default: ClassThresholds = ClassThresholds(),
                     classes: Sequence[str] = ()) -> EventRules:
    """A thresholds file's text (JSON if it starts with '{' or '[', else CSV) as EventRules."""
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            document = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise ThresholdsError(f"{source} is not valid JSON: {e}") from None
        if isinstance(document, dict):
            rows = [{"class": DEFAULT_ROW, **(document.get("default") or {})}]
            rows += [{"class": name, **values} for name, values in (document.get("classes") or {}).items()]
        elif isinstance(document, list) and all(isinstance(row, dict) for row in document):
            rows = document
        else:
            raise ThresholdsError(f"{source}: expected an object with 'default'/'classes' or a list of "
                                  "objects")
    else:
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "class" not in [f.strip() for f in reader.fieldnames]:
            raise ThresholdsError(f"{source}: the CSV needs a header with a 'class' column "
                                  f"and some of {', '.join(FIELDS)}")
        rows = [{k.strip(): v for k, v in row.items() if k} for row in reader]
    defaults = [row for row in rows if str(row.get("class", "")).strip() == DEFAULT_ROW]
    for row in defaults:
        default = _thresholds(row, default, f"{source}: default row")
    per_class: dict[str, ClassThresholds] = {}
    for number, row in enumerate(rows, start=1):
        name = str(row.get("class", "")).strip()
        if name == DEFAULT_ROW:
            continue
        if not name:
            raise ThresholdsError(f"{source}: row {number} has no class")
        per_class[name] = _thresholds(row, default, f"{source}: {name}")
    return EventRules(default, tuple(per_class.items()), tuple(classes))


def read_rules(thresholds_path: str | None = None, classes: Sequence[str] = (),
               default: ClassThresholds = ClassThresholds()) -> EventRules:
    """The rules of a thresholds file (local or ``gs://``) and a class selection; defaults without a file."""
    if not thresholds_path:
        default.check("default thresholds")
        return EventRules(default, (), tuple(classes))
    try:
        text = storage.read_bytes(thresholds_path).decode("utf-8-sig")
    except Exception as e:  # noqa: BLE001 - missing file, no access: one line for the user
        raise ThresholdsError(f"cannot read thresholds file {thresholds_path}: "
                              f"{' '.join(str(e).split())[:200]}") from None
    return parse_thresholds(text, thresholds_path, default, classes)
