"""What a run records, declared once, below both the loop that makes it and the store that keeps it.

`Epoch` is one row of a run's history: the training loop makes one after every epoch, results.py
writes them as metrics.csv's columns, and the reports read them back. `HISTORY_KEYS` are its
fields, in order. `Run` is one finished run as every layer above sees it: its name, seed, the
settings it was made under, its history as typed epochs, what code made it and where. Only
results.py turns a Run into JSON and back. `Record` is the base of the summaries that tables,
figures and JSON read (stats.py, sweep.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from strategies import RunName, StrategyName


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


@dataclass(frozen=True)
class History:
    """A run's epochs, in order; `column(key)` reads one field of every epoch."""
    epochs: tuple = ()

    @classmethod
    def of_columns(cls, columns):
        """From the loop's history (one list per HISTORY_KEYS field)."""
        n = len(columns["epoch"])
        return cls(tuple(Epoch(**{k: columns[k][i] for k in HISTORY_KEYS}) for i in range(n)))

    def columns(self):
        """One list per HISTORY_KEYS field: the loop's layout, and the run file's."""
        return {k: self.column(k) for k in HISTORY_KEYS}

    def column(self, key):
        return [getattr(e, key) for e in self.epochs]

    def total(self, key):
        return sum(self.column(key))

    @property
    def final(self):
        return self.epochs[-1]

    @property
    def diverged(self):
        return any(e.diverged for e in self.epochs)

    def __len__(self):
        return len(self.epochs)

    def __iter__(self):
        return iter(self.epochs)


@dataclass(frozen=True)
class EarlyStop:
    """The first epoch of best validation accuracy, and the test accuracy an early-stopped run reports."""
    epoch: int
    val_acc: float
    test_acc: float


@dataclass(frozen=True)
class Memory:
    """A run's memory at its peaks: the process's resident set (CPU) or device memory (CUDA), and
    the bytes of its trainable parameters and of its optimizer's state."""
    trainable_param_bytes: int | None = None
    optimizer_state_bytes: int | None = None
    peak_resident_bytes: int | None = None
    peak_device_bytes: int | None = None

    @property
    def peak(self):
        return self.peak_resident_bytes if self.peak_device_bytes is None else self.peak_device_bytes


@dataclass(frozen=True)
class Environment:
    """Where a run was trained: by which process, on what, at which commit of the code."""
    device: str | None = None
    threads: int | None = None
    host: str | None = None
    pid: int | None = None
    code: dict | None = None   # {"commit", "dirty"}
    cpu: str | None = None
    gpu: str | None = None
    pack_size: int | None = None  # --engine pack: how many runs trained together


@dataclass(frozen=True)
class Made:
    """What code made a run (or a checkpoint): its strategy's spec, the engine and the workload's
    spec; None where a run saved before they were recorded lacks one."""
    spec: dict | None = None
    engine: str | None = None
    workload: dict | None = None


@dataclass(frozen=True)
class Run:
    """One finished run: run `name` from `seed`, under the folder settings whose hash is
    `settings_hash` (`settings` itself where the folder's config.json was read)."""
    name: RunName
    seed: int
    history: History
    made: Made = Made()
    settings_hash: str | None = None
    settings: dict | None = field(default=None, compare=False, repr=False)
    test_samples: int | None = None
    early_stopped: EarlyStop | None = None
    schedule_state: object = None
    memory: Memory | None = None
    environment: Environment | None = None

    @property
    def key(self):
        return self.name, self.seed

    @property
    def diverged(self):
        return self.history.diverged

    @property
    def final(self):
        return self.history.final


class Record:
    """A frozen summary record (a dataclass) that tables, figures and JSON read: r["mean"] and
    r.get("mean") read its fields as they read the JSON it becomes (to_json); a name that is not
    a field is a KeyError. A record is never patched: what a later step adds makes a new one
    (dataclasses.replace)."""

    def __getitem__(self, key):
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key, default=None):
        return getattr(self, key, default)

    def __contains__(self, key):
        return getattr(self, key, None) is not None

    def to_json(self):
        """Every field; a field added later (`later()`) only where it has a value, so the summaries of
        folders made before it existed are written byte for byte as they were."""
        return {f.name: to_json(getattr(self, f.name)) for f in fields(self)
                if not (f.metadata.get("later") and getattr(self, f.name) is None)}


def later(default=None):
    """A Record field added after summaries were first written: absent from JSON while None."""
    return field(default=default, metadata={"later": True})


def to_json(value):
    """Records, names, and the dicts and lists that hold them, as plain JSON values."""
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, (RunName, StrategyName)):
        return str(value)
    if isinstance(value, dict):
        return {str(k) if isinstance(k, (RunName, StrategyName)) else k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value
