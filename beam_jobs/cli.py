"""The command line of every job: its parser, its Beam pipeline options, its failures and its entry.

A job module adds its options to a parser (``add_options(parser)``), decorates its ``run`` with
``@job(JOB, add_options)``, which parses the command line (refusing what neither the job nor Beam
knows) and hands ``run`` the options, builds Beam's options with ``pipeline_options`` and returns an
exit status; a ``UsageError`` raised on the way becomes one line on stderr and status 2 (``fail``).
Every module ends with ``main = cli.main_for(run, __name__)``, which also runs the job when the module
is run as a script.  (tag_audio declares its options as a Beam ``PipelineOptions`` class and parses
them itself, with ``parse`` and ``refuse_unknown``.)
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import functools
import logging
import sys
from collections.abc import Callable, Sequence

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

USAGE = 2  # exit status of a bad command line or configuration
# DirectRunner first tries Prism, which downloads a binary; FnApiRunner runs offline in this process.
DEFAULT_RUNNER = "FnApiRunner"
BEAM_OPTIONS_EPILOG = (f"Any Apache Beam pipeline option is accepted as well. Default runner: "
                       f"{DEFAULT_RUNNER} (local).")


class UsageError(Exception):
    """The job cannot start as asked (its command line, or what that names); ``str(e)`` is one line for
    the user, and the exit status is 2."""


class HelpShown(Exception):  # noqa: N818 - no error: the job ends after printing its help
    """``--help`` was asked for and printed: the job ends there, with status 0."""


class JobParser(argparse.ArgumentParser):
    """argparse as every job uses it: no abbreviated options (Beam's own parser takes none either, so
    ``--top`` never silently means ``--top_k``), the module docstring as help, and errors raised as
    ``UsageError`` instead of a usage block printed before ``exit(2)``."""

    def __init__(self, job: str, doc: str | None, epilog: str | None = None, **kwargs):
        super().__init__(prog=f"python -m beam_jobs.{job}", description=doc, epilog=epilog,
                         allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    def error(self, message: str):
        raise UsageError(message)


def job_parser(job: str, doc: str | None, *, beam: bool = False, epilog: str | None = None,
               **kwargs) -> JobParser:
    """The parser of ``python -m beam_jobs.<job>``; ``beam``: the job also takes Beam's options."""
    return JobParser(job, doc, epilog=epilog or (BEAM_OPTIONS_EPILOG if beam else None), **kwargs)


def wants_help(argv: Sequence[str]) -> bool:
    return "--help" in argv or "-h" in argv


def comma_separated(text: str) -> tuple[str, ...]:
    """The items of a comma-separated option value, stripped, empty ones left out."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def arguments(argv: Sequence[str] | None) -> list[str]:
    """``argv``, or the process's command line when None."""
    return list(sys.argv[1:] if argv is None else argv)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None, *, beam: bool = False
          ) -> tuple[argparse.Namespace, list[str]]:
    """(the job's options, the arguments left for Beam).  Raises UsageError for an option neither the
    job nor (``beam``) Beam knows, and HelpShown after printing the help ``--help`` asked for."""
    argv = arguments(argv)
    if wants_help(argv):
        parser.print_help()
        raise HelpShown
    opts, rest = parser.parse_known_args(argv)
    if beam:
        refuse_unknown(rest, parser)
    elif rest:
        raise UsageError(_unknown_message(rest, _option_names(parser)))
    return opts, rest


# --- options several jobs share --------------------------------------------------------------------

def require(opts: argparse.Namespace, or_else: str = "", **needed: str) -> None:
    """Raises UsageError when an option of ``needed`` (option name: what its value is) was not given;
    the one line names them all, and ``or_else`` says what the job does without them."""
    if all(getattr(opts, name) for name in needed):
        return
    named = [f"--{name} {value}" for name, value in needed.items()]
    listed = ", ".join(named[:-1]) + f" and {named[-1]}" if len(named) > 1 else named[0]
    raise UsageError(f"{listed} are required" + (f" (or {or_else})" if or_else else ""))


def add_frames_options(parser: argparse.ArgumentParser, *, required: bool = False,
                       runs: str | None = None) -> None:
    """``--frames OUT_DIR`` (a tag_audio output to read) and, when ``runs`` says what the job does with
    them ("read", "search"), ``--runs`` choosing which of its runs."""
    parser.add_argument("--frames", required=required, default=None, metavar="OUT_DIR",
                        help="A tag_audio output directory (local or gs://).")
    if runs:
        parser.add_argument("--runs", default="", help=f"Comma-separated run ids of --frames to {runs} "
                            "(default: every succeeded run; they must share one model and framing).")


# --- Beam's options -------------------------------------------------------------------------------

def expand_runner_aliases(args: Sequence[str]) -> list[str]:
    """The one place where short runner names on the command line (``--runner dask``) become the names
    Beam knows (``beam_jobs.runners``), before any PipelineOptions is built from them."""
    from beam_jobs.runners import expand_runner_alias

    return expand_runner_alias(list(args))


def with_default_runner(options: PipelineOptions) -> PipelineOptions:
    """``options`` with ``DEFAULT_RUNNER`` when they name no runner."""
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = DEFAULT_RUNNER
    return options


def names_a_runner(args: Sequence[str]) -> bool:
    """Whether the arguments choose a runner themselves."""
    return bool(PipelineOptions(expand_runner_aliases(args)).view_as(StandardOptions).runner)


def pipeline_options(args: Sequence[str]) -> PipelineOptions:
    """Beam's options from the arguments a job left to Beam, with ``DEFAULT_RUNNER`` unless one is named."""
    return with_default_runner(PipelineOptions(expand_runner_aliases(args)))


def beam_parser() -> argparse.ArgumentParser:
    """A parser of every option of every PipelineOptions class defined in this process (Beam's own and
    any a job defines), built by Beam itself."""
    with contextlib.suppress(ImportError):  # Beam's Dask runner registers its options when imported
        import apache_beam.runners.dask.dask_runner  # noqa: F401
    built: list[argparse.ArgumentParser] = []
    PipelineOptions([]).get_all_options(add_extra_args_fn=built.append)
    parser = built[0]
    parser.error = _raise_usage  # a bad value of a Beam option: one line, as the job's own
    return parser


def refuse_unknown(args: Sequence[str], job: argparse.ArgumentParser | None = None) -> None:
    """Raises UsageError naming the first argument in ``args`` that Beam does not take (Beam would log
    'Discarding unparseable args' and run without it), with the nearest option of ``job`` or Beam."""
    beam = beam_parser()
    _, unknown = beam.parse_known_args(list(args))
    if unknown:
        names = (_option_names(job) if job is not None else []) + _option_names(beam)
        raise UsageError(_unknown_message(unknown, names))


def _raise_usage(message: str):
    raise UsageError(message)


def _option_names(parser: argparse.ArgumentParser) -> list[str]:
    return [name for action in parser._actions for name in action.option_strings if name.startswith("--")]


def _unknown_message(unknown: Sequence[str], known: Sequence[str]) -> str:
    options = [arg for arg in unknown if arg.startswith("-")]
    if not options:
        return f"unexpected argument {unknown[0]!r} (--help lists the options)"
    name = options[0].split("=", 1)[0]
    nearest = difflib.get_close_matches(name, list(dict.fromkeys(known)), n=1)
    hint = f"did you mean {nearest[0]}?" if nearest else "--help lists the options"
    return f"unknown option {name}: {hint}"


# --- failures and the process entry -----------------------------------------------------------------

def fail(job: str, message: str, status: int = USAGE) -> int:
    """Prints ``job: message`` as one line on stderr; returns ``status`` for the job to exit with."""
    print(f"{job}: {message}", file=sys.stderr)
    return status


def job(name: str, options: Callable[[argparse.ArgumentParser], object] | None = None, *, beam: bool = False,
        **parser_kwargs) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorates a job's ``run``: the result is ``run(argv=None) -> int``, where a UsageError raised on the
    way becomes ``fail(name, ...)`` and the help printed for ``--help`` status 0.

    With ``options`` (a function adding the job's options to its parser), the job's parser is built here
    (``job_parser``, the module docstring as help, ``parser_kwargs``) and the decorated function receives
    the parsed options instead of ``argv``; with ``beam`` also the arguments left for Beam.  The job's
    ``run.parse(argv)`` then gives (options, arguments left for Beam) without running it."""
    def decorate(body: Callable[..., int]) -> Callable[..., int]:
        def parse_job(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
            parser = job_parser(name, sys.modules[body.__module__].__doc__, beam=beam, **parser_kwargs)
            options(parser)
            return parse(parser, argv, beam=beam)

        @functools.wraps(body)
        def run(argv: Sequence[str] | None = None) -> int:
            try:
                if options is None:
                    return body(argv)
                opts, rest = parse_job(argv)
                return body(opts, rest) if beam else body(opts)
            except UsageError as e:
                return fail(name, str(e))
            except HelpShown:
                return 0
        if options is not None:
            run.parse = parse_job
        return run
    return decorate


def main_for(run: Callable[[list[str] | None], int], module: str, log_level: int = logging.WARNING
             ) -> Callable[[Sequence[str] | None], int]:
    """A job's ``main(argv=None) -> int``: ``run`` as the process runs it (``entry``).  When ``module`` is
    ``"__main__"`` (``python -m beam_jobs.<job>``) it runs there and then, and the process exits with its
    status: every job module ends with ``main = cli.main_for(run, __name__)``."""

    def main(argv: Sequence[str] | None = None) -> int:
        return entry(run, argv, log_level)

    if module == "__main__":
        sys.exit(main())
    return main


def entry(run: Callable[[list[str] | None], int], argv: Sequence[str] | None = None,
          log_level: int = logging.WARNING) -> int:
    """Runs a job's ``run(argv)`` as the process does: log lines from ``log_level`` up (by default
    warnings only, no INFO lines from TensorFlow or Beam); returns the exit status for ``sys.exit``."""
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(log_level)
    # Beam logs a failed bundle's traceback before it raises; the error reaches the user through the
    # exception itself: one line when the job knows the cause (a full disk), the traceback otherwise.
    logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)
    return run(None if argv is None else list(argv))
