"""A stretch of one file as samples: seek to ``start_s``, decode to ``end_s``, nothing more.

For pictures and queries that look at seconds of a recording (timelines, search
thumbnails, query embeddings), where decoding the whole file would be waste.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class AudioSpan:
    samples: np.ndarray  # mono float32
    sample_rate: int
    start_s: float

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate


def load_audio_span(uri: str, sample_rate: int, start_s: float, end_s: float,
                    channel: int | None = None) -> AudioSpan:
    """Decodes only ``[start_s, end_s)`` of ``uri`` at ``sample_rate``, mixed or one ``channel`` (raises
    what the decoder raises)."""
    # Imported here: the plot and answers modules import this one, and FFmpeg's bindings cost them
    # start-up time whenever no audio is drawn.
    from transforms.decoding.stream import AudioStream

    first = int(round(start_s * sample_rate))
    wanted = int(round((end_s - start_s) * sample_rate))
    chunks, have = [], 0
    with AudioStream(uri, sample_rate, start_sample=first, chunk_samples=min(max(wanted, 1), 160_000),
                     channels=(channel,) if channel is not None else "mix") as stream:
        for chunk in stream:
            if chunk.ndim == 2:
                chunk = chunk[:, 0]
            chunks.append(chunk[:wanted - have])
            have += chunks[-1].size
            if have >= wanted:
                break
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return AudioSpan(samples.astype(np.float32, copy=False), sample_rate, start_s)
