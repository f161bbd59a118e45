"""Tagging: the tag_audio pipeline.

- ``pipeline``: ``TagAudioConfig`` and the ``TagAudio`` composite (its ``expand`` is the story).
- ``run``: ``prepare`` (every read before the graph), ``execute``, ``plan_only``.
- ``listing``: ``--input`` / ``--input_manifest`` -> one ``FileEntry`` per file.
- ``units``: ``PlanUnits`` and ``DecodeUnits`` (work units -> window chunks).
- ``inference``: ``RunModelBatched``, one model per worker process.
- ``frame_table`` / ``file_report``: frames rows as Arrow tables; exactly one files row per input.
- ``progress``, ``malloc_tuning``, ``bundle_outputs``: worker plumbing.
"""
