"""The recipe of an adaptation round, one for `models adapt`, `bench adapt` and the drift demo
(kept free of torch: the CLI reads its defaults)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """One distillation round: epochs over the collected examples, batch sizes of each half of
    a mixed batch, the learning rate and the softmax temperature of the soft targets."""

    epochs: int = 3
    batch: int = 64
    original_batch: int = 1024
    lr: float = 5e-4
    temperature: float = 0.5  # sharpens the label-smoothed cloud model's answers
    seed: int = 0
