"""What a reader or a worker needs to know about a model, without its weights.

Frames and files tables record a spec in their metadata (``schemas.tables``);
the model package builds specs from model files (``audio_models``).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything a reader or a worker needs to know about a model, without its weights."""

    name: str  # model kind: 'yamnet', 'keyword', 'head', 'savedmodel'
    sample_rate: int
    window_samples: int
    hop_samples: int
    class_names: tuple[str, ...]
    embedding_dim: int  # 0 when the model has no embedding output
    fingerprint: str  # hex digest of the weights; identifies a model version

    @property
    def window_s(self) -> float:
        return self.window_samples / self.sample_rate

    @property
    def hop_s(self) -> float:
        return self.hop_samples / self.sample_rate

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def identity(self) -> str:
        """Short, human-readable model identity: ``name@fingerprint[:12]``."""
        return f"{self.name}@{self.fingerprint[:12]}"
