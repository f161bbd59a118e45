"""One module per command (``python -m beam_jobs.<job>``): parse the command line, build a config, call
the library in ``transforms/`` and ``audio_models/``.

Every command line is parsed here and nowhere else: ``cli.py`` holds what all
jobs share (parsers, Beam's pipeline options and the default runner, one-line
failures, the process entry); ``event_arguments.py`` and ``training_arguments.py``
the options two jobs share.
"""
