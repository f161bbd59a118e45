"""PTransforms, DoFns and the plain functions they call, grouped by domain.

- ``decoding``: any audio file to mono float32 at a model's rate, streaming, in decoder processes.
- ``output``: the output layout and run records, publishing, the reader API.
- ``answers``: sound events and search by example, from frames.
- ``tagging``: the tag_audio pipeline: listing, the done-set, work units, the batched model, frames and
  files rows.
- ``training``: training sets, heads and the keyword model built from frames and clips.

Storage is the top-level ``storage`` package, below all of these. Dependencies point one way:
decoding <- output <- answers <- tagging; training reads output and decoding (docs/architecture.md).
"""
