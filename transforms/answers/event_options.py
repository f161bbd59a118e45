"""The events settings a run is asked for, read and checked before any work (``tag_audio --events`` and
``beam_jobs.events``): the thresholds file, the classes, where recording start times come from."""

from __future__ import annotations

from collections.abc import Sequence

from schemas.answers import TIME_SOURCES
from transforms.answers import recording_time as rt
from transforms.answers.event_pipeline import EventSettings
from transforms.answers.thresholds import ThresholdsError, read_rules


class EventOptionsError(ValueError):
    """Events cannot be found as asked (a setting, the classes, the frames); ``str(e)`` is one line for
    the user."""


def event_settings(thresholds: str | None = None, classes: Sequence[str] = (), *,
                   start_times: str | None = None, time_sources: Sequence[str] = TIME_SOURCES,
                   file_time_pattern: str | None = None, time_zone: str = "UTC") -> EventSettings:
    """Reads the thresholds file (local or gs://) and checks the time settings; raises EventOptionsError."""
    try:
        time = rt.TimeSettings(sources=tuple(time_sources), file_name_pattern=file_time_pattern or None,
                               time_zone=time_zone, manifest=start_times or None)
        time.check()
        if time.manifest:
            rt.read_manifest_header(time.manifest)
        return EventSettings(read_rules(thresholds, tuple(classes)), time)
    except (ThresholdsError, rt.TimeSettingsError) as e:
        raise EventOptionsError(str(e)) from None


def classes_problem(settings: EventSettings, class_names) -> str | None:
    """Why the classes asked for cannot be found in the model's; None when they can."""
    try:
        chosen = settings.rules.for_classes(class_names)
    except ThresholdsError as e:
        return str(e)
    return None if chosen else "no class to detect events of"


def check_for_model(settings: EventSettings, class_names, what: str) -> None:
    """The classes asked for exist in the model; raises EventOptionsError naming ``what``."""
    if problem := classes_problem(settings, class_names):
        raise EventOptionsError(f"{what}: {problem}")
