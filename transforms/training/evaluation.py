"""Classifier evaluation shared by the trainers: confusion matrices, per-label accuracy, the PNG."""

from __future__ import annotations

import dataclasses
import io

import numpy as np


@dataclasses.dataclass(frozen=True)
class Evaluation:
    labels: tuple[str, ...]
    confusion: np.ndarray  # [true label, predicted label] counts

    @property
    def accuracy(self) -> float | None:
        total = self.confusion.sum()
        return float(np.trace(self.confusion) / total) if total else None

    def per_label(self) -> dict[str, dict[str, float | None]]:
        rows = {}
        for i, label in enumerate(self.labels):
            count = int(self.confusion[i].sum())
            rows[label] = {"accuracy": float(self.confusion[i, i] / count) if count else None,
                           "count": count}
        return rows


def confusion_matrix(true_ids: np.ndarray, predicted_ids: np.ndarray, num_labels: int) -> np.ndarray:
    matrix = np.zeros((num_labels, num_labels), np.int64)
    np.add.at(matrix, (np.asarray(true_ids), np.asarray(predicted_ids)), 1)
    return matrix


def confusion_png(evaluation: Evaluation, title: str) -> bytes:
    """The confusion matrix as a PNG: rows are true labels, columns predictions, counts in cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, matrix = evaluation.labels, evaluation.confusion
    fig, ax = plt.subplots(figsize=(7.5, 6.5), dpi=100)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                    color="white" if count > threshold else "black")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
