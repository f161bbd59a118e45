"""PTransforms, DoFns and the plain functions they call, grouped by domain.

- ``storage``: every read and write of the product (local paths, ``gs://``).
- ``decoding``: any audio file to mono float32 at a model's rate, streaming, in decoder processes.
- ``tagging``: the tag_audio pipeline: listing, work units, the batched model, frames and files rows.
- ``output``: the output layout and run records, publishing, the done-set, the reader API.
- ``training``: training sets, heads and the keyword model built from frames and clips.

Dependencies point one way: storage <- decoding <- tagging -> output; training reads output.
"""
