"""What a run records, declared once, below both the loop that makes it and the store that keeps it.

`Epoch` is one row of a run's history: the training loop makes one after every epoch, results.py
writes them as metrics.csv's columns, and the reports read them back. `HISTORY_KEYS` are its
fields, in order.
"""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Epoch:
    """One epoch of one run. Accuracies are percentages of the scored items (test images, or
    test characters); losses are mean cross-entropy in nats; train_* are measured on the epoch's
    training batches as they were trained (dropout on, weights moving)."""
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float | None
    val_acc: float | None
    test_loss: float
    test_acc: float
    epoch_time_s: float
    eval_time_s: float
    steps: int
    steps_first: int
    steps_second: int
    param_updates: int
    train_flops: int
    diverged: bool


HISTORY_KEYS = tuple(f.name for f in fields(Epoch))
VALIDATION_KEYS = ("val_loss", "val_acc")  # None without a validation split, absent in older runs
LATER_KEYS = (*VALIDATION_KEYS, "train_acc")  # history columns that runs saved before them lack
