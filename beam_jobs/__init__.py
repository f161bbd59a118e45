"""One module per command (``python -m beam_jobs.<job>``): parse the command line, build a config, call
the library in ``transforms/`` and ``audio_models/``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable


def command(run: Callable[[], int]) -> None:
    """Runs a job's ``run()`` as the process: library warnings only, its exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.WARNING)
    # Beam logs a failed bundle's traceback before it raises; the error reaches the user through the
    # exception itself: one line when the job knows the cause (a full disk), the traceback otherwise.
    logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)
    sys.exit(run())


def parse_job_args(parser, argv: list[str] | None):
    """(job options, Beam pipeline arguments) from ``argv`` (the command line when None); None after
    printing the help that ``--help`` / ``-h`` asked for."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        parser.print_help()
        return None
    return parser.parse_known_args(argv)
