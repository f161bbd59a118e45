"""Decoding: any audio or video file to mono float32 samples at a model's rate, streaming.

- ``source``: a URI opened as a seekable byte source, its container and audio stream facts.
- ``stream``: ``AudioStream`` (decode, downmix, resample), ``probe``, ``decode_all``.
- ``windows``: frame arithmetic, ``WorkUnit`` planning and ``WindowAssembler``.
- ``messages``: one unit's decode as a stream of messages, and their wire format.
- ``pool`` / ``worker``: decoder processes beside the model's process.
"""
