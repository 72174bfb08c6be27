"""The one configuration object, and the named strategies it can run.

`Config` is shared by the CLI (experiments.py builds its flags from these
defaults), the notebook and library users. A strategy is data: a schedule of
which parameter group trains when, plus optimizer options.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field, fields

from data import DATASETS
from training_loop import (LR_SCHEDULES, PRECISIONS, STANDARD, CyclicBlocks, FreezeOut, LayerFreezing,
                           LayerOut, Schedule, alternating)

VERSION = "1.1.0"
CORE = ("standard", "alternating-epoch", "alternating-batch")


@dataclass
class Config:
    # data
    dataset: str = "cifar10"           # see data.DATASETS
    data_dir: str = "./data"
    train_size: int | None = None      # a seeded random subset (synthetic: how many to generate)
    test_size: int | None = None
    val_size: int = 0                  # held out of the training images; selection uses only this
    # the experiment
    epochs: int = 15
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0          # adam: L2 added to the gradient; adamw: decoupled
    lr_schedule: str = "constant"      # constant | cosine | linear (to 0 at the run's last step)
    warmup_epochs: int = 0             # linear warmup before the schedule
    seeds: int | tuple = 3             # N: seeds 0..N-1; or a tuple of seed numbers. Paired across strategies
    strategies: tuple = CORE
    switch_every: int = 10             # K for alternating-k (batches)
    lr_first: float | None = None      # gan-style: first half's lr (default: lr)
    lr_second: float | None = None     # gan-style: second half's lr (default: 4 x lr, two-timescale)
    freeze_bn_stats: bool = False      # frozen half's BatchNorm running stats fixed too
    match_budget: str = "epochs"       # epochs | flops | time: extra standard run on the budget of...
    match_to: str = "alternating-batch"  # ...these strategies' runs (comma list) with the same seed
    target_frac: float = 0.95          # epochs-to-target: this fraction of standard's mean final acc
    metric: str = "final"              # final | early-stopped: what tables and the tuned comparison report
    tune: tuple = ()                   # grid keys each strategy tunes on validation (default: lr if gridded)
    confirm_seeds: int = 0             # after tuning: run each choice on this many fresh seeds
    # model
    depth: int = 2                     # hidden blocks
    split: int | None = None           # blocks in the first half (default: depth // 2, at least 1)
    hidden_size: int = 512
    dropout: float = 0.3
    precision: str = "fp32"            # fp32 | bf16 (autocast) | tf32 (CUDA)
    # a sweep: ((key, (value, ...)), ...); the cells are the product of the value lists
    grid: tuple = ()
    # running
    device: str = "auto"
    compile: bool = False
    eval_batch_size: int = 1000
    out: str | None = None             # default: results/<dataset and settings>, see default_out()
    overwrite: bool = False
    dry_run: bool = False
    progress: bool = True
    # launching runs
    launcher: str = "local"            # local | slurm
    workers: int = 1                   # local: concurrent run processes
    threads: int | None = None         # torch threads per run (default: cores / workers)
    slurm_partition: str | None = None
    slurm_time: int = 60               # minutes per job
    slurm_cpus_per_task: int = 1
    slurm_gpus_per_task: int = 0
    slurm_mem: str | None = None       # sbatch --mem, e.g. 8G (default: the cluster's)
    slurm_array_parallelism: int | None = None  # at most this many array tasks at once
    slurm_max_requeues: int = 3        # requeues after a timeout or preemption (submitit's limit)
    slurm_args: tuple = ()             # ("KEY=VALUE", ...) passed on to submitit
    wait: bool = True                  # slurm: wait for the jobs, then summarise
    cancel: bool = False               # with --overwrite: scancel this folder's live SLURM jobs

    def effective(self):
        """The config as run: --dry-run shrinks data, epochs and seeds to a smoke check."""
        if not self.dry_run:
            return self
        val = self.batch_size if self.val_size else 0
        return Config(**{**asdict(self), "epochs": 1, "seeds": (seed_list(self.seeds)[0],), "val_size": val,
                         "confirm_seeds": min(self.confirm_seeds, 1),
                         "train_size": 4 * self.batch_size + val, "test_size": 2 * self.batch_size})

    @property
    def first_half_blocks(self):
        return self.split if self.split is not None else max(1, self.depth // 2)

    def result_key(self):
        """Settings that change a run's result: a results folder holds runs of one key only.
        Seeds and strategies may grow between invocations; runs already done are reused.
        data_dir is left out so that the same data extracted elsewhere can resume a folder."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in NOT_IN_KEY}


# settings that do not change what a run computes (threads change fp32 rounding, see ARCHITECTURE.md)
NOT_IN_KEY = {"seeds", "strategies", "match_budget", "out", "overwrite", "progress", "data_dir", "grid",
              "launcher", "workers", "threads", "slurm_partition", "slurm_time", "slurm_cpus_per_task",
              "slurm_gpus_per_task", "slurm_args", "wait", "slurm_mem", "slurm_array_parallelism",
              "slurm_max_requeues", "cancel", "metric", "tune", "confirm_seeds",
              "match_to"}  # a matched run's name says what it is matched to
# settings a --grid may vary: those that change results, less the ones about running
GRID_KEYS = tuple(f.name for f in fields(Config) if f.name not in NOT_IN_KEY
                  and f.name not in {"dry_run", "device", "compile", "eval_batch_size", "target_frac",
                                     "match_to"})
DEFAULT_KEY = Config().result_key()


class ConfigError(Exception):
    """A setting that cannot work; its message is one line."""


# --- one parser per setting, shared by the flags and by --grid values ---------------------
def positive_int(text):
    v = _number(int, text)
    if v is None or v < 1:
        raise ValueError(f"must be a whole number of at least 1, got {text!r}")
    return v


def nonnegative_int(text):
    v = _number(int, text)
    if v is None or v < 0:
        raise ValueError(f"must be a whole number of at least 0, got {text!r}")
    return v


def positive_float(text):
    v = _number(float, text)
    if v is None or not math.isfinite(v) or v <= 0:
        raise ValueError(f"must be a positive finite number, got {text!r}")
    return v


def nonnegative_float(text):
    v = _number(float, text)
    if v is None or not math.isfinite(v) or v < 0:
        raise ValueError(f"must be a finite number of at least 0, got {text!r}")
    return v


def slurm_minutes(text):
    """A SLURM time limit in whole minutes, from minutes ('90') or sbatch's [D-]HH:MM:SS
    ('2:00:00', '1-12:00:00'); seconds round up."""
    if isinstance(text, int) and not isinstance(text, bool):
        return positive_int(text)
    t = str(text).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})", t)
    if m:
        d, h, mi, sec = (int(g or 0) for g in m.groups())
        minutes = d * 1440 + h * 60 + mi + (sec > 0)
        if minutes >= 1 and mi < 60 and sec < 60:
            return minutes
    elif re.fullmatch(r"\d+", t) and int(t) >= 1:
        return int(t)
    raise ValueError(f"must be minutes or [D-]HH:MM:SS, got {text!r}")


def seed_spec(text):
    """'3' -> 3 (seeds 0-2); '5-9' -> (5, 6, 7, 8, 9); '0,3,7' -> (0, 3, 7). Tuples pass through."""
    if isinstance(text, (tuple, list)):
        seeds = tuple(nonnegative_int(s) for s in text)
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"must list distinct seeds, got {text!r}")
        return seeds
    t = str(text).strip()
    if "," in t or "-" in t:
        seeds = []
        for part in (p.strip() for p in t.split(",") if p.strip()):
            lo, sep, hi = part.partition("-")
            a, b = _number(int, lo), _number(int, hi) if sep else _number(int, lo)
            if a is None or b is None or a < 0 or b < a:
                raise ValueError(f"must be N (seeds 0..N-1), a range A-B or a list A,B,C; got {text!r}")
            seeds += range(a, b + 1)
        return seed_spec(tuple(seeds))
    return positive_int(t)


def seed_list(seeds):
    """The seed numbers a Config.seeds value names."""
    return list(range(seeds)) if isinstance(seeds, int) else list(seeds)


def probability(text):
    v = _number(float, text)
    if v is None or not 0 <= v < 1:
        raise ValueError(f"must be a number in [0, 1), got {text!r}")
    return v


def boolean(text):
    t = str(text).lower()
    if t in ("true", "1", "yes", "on"):
        return True
    if t in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"must be true or false, got {text!r}")


def choice(*options):
    def parse(text):
        if text not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {text!r}")
        return text
    return parse


def _number(kind, text):
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return kind(text) if kind is float or float(text).is_integer() else None
    try:
        return kind(text)
    except (TypeError, ValueError):
        return None


PARSERS = {
    "dataset": choice(*DATASETS), "train_size": positive_int, "test_size": positive_int,
    "val_size": nonnegative_int, "epochs": positive_int, "batch_size": positive_int, "lr": positive_float,
    "optimizer": choice("adam", "adamw", "sgd"), "switch_every": positive_int, "lr_first": positive_float,
    "lr_second": positive_float, "freeze_bn_stats": boolean,
    "match_budget": choice("epochs", "flops", "time"), "target_frac": positive_float,
    "depth": positive_int, "split": positive_int, "hidden_size": positive_int, "dropout": probability,
    "precision": choice(*PRECISIONS), "eval_batch_size": positive_int, "seeds": seed_spec,
    "weight_decay": nonnegative_float, "lr_schedule": choice(*LR_SCHEDULES),
    "warmup_epochs": nonnegative_int, "metric": choice("final", "early-stopped"),
    "confirm_seeds": nonnegative_int,
    "workers": positive_int, "threads": positive_int, "slurm_time": slurm_minutes,
    "slurm_cpus_per_task": positive_int, "slurm_gpus_per_task": nonnegative_int,
    "launcher": choice("local", "slurm"), "slurm_array_parallelism": positive_int,
    "slurm_max_requeues": nonnegative_int,
}


def flag(name):
    return "--" + name.replace("_", "-")


def check_config(cfg):
    """Reject settings that cannot work, with a one-line message that names the fix."""
    for name, parse in PARSERS.items():
        v = getattr(cfg, name)
        if v is None and name in ("train_size", "test_size", "lr_first", "lr_second", "split", "threads",
                                  "slurm_array_parallelism"):
            continue
        try:
            parse(v)
        except ValueError as e:
            raise ConfigError(f"{flag(name)} {e}") from None
    if not 1 <= cfg.first_half_blocks <= cfg.depth:
        raise ConfigError(f"--split must be between 1 and --depth ({cfg.depth}), got {cfg.split}: the "
                          f"first half holds blocks 1..split, the second half the rest and the head")
    for s in cfg.strategies:
        if not known_strategy(s):
            raise ConfigError(f"unknown strategy {s!r} in --strategies; choose from core, all, "
                              f"{', '.join(STRATEGIES)}, or alternating-K for a number K")
    if not cfg.strategies:
        raise ConfigError("--strategies is empty; name at least one strategy, or use core or all")
    if cfg.warmup_epochs >= cfg.epochs:
        raise ConfigError(f"--warmup-epochs ({cfg.warmup_epochs}) must be fewer than --epochs ({cfg.epochs})")
    if cfg.launcher == "slurm":  # the nodes, not this submit host, have (or lack) the GPUs: they check
        check_device_name(cfg.device, cfg.precision)
    else:
        check_device(cfg.device, cfg.precision)


def check_device_name(dev, precision="fp32"):
    """What a submit host can check without the run's hardware: the device and precision names."""
    if dev not in ("auto", "cpu", "mps") and not re.fullmatch(r"cuda(:\d+)?", dev):
        raise ConfigError(f"unknown --device {dev!r}; choose auto, cpu, cuda, cuda:N or mps")
    if precision == "tf32" and dev in ("cpu", "mps"):
        raise ConfigError(f"--precision tf32 needs a CUDA GPU (TF32 is a tensor-core format), not --device {dev}")


def check_device(dev, precision="fp32"):
    """Check the device and precision against this machine (where the run executes)."""
    import torch
    check_device_name(dev, precision)
    cuda = torch.cuda.is_available()
    if dev.startswith("cuda") and not cuda:
        raise ConfigError(f"--device {dev} was asked for, but CUDA is not available on this machine; "
                          f"use --device cpu or --device auto")
    if dev == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("--device mps was asked for, but MPS is not available on this machine; "
                          "use --device cpu or --device auto")
    if dev.startswith("cuda:") and cuda and int(dev[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"--device {dev} was asked for, but this machine has "
                          f"{torch.cuda.device_count()} CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if precision == "bf16" and (dev == "mps" or (dev == "auto" and not cuda and _mps())) and \
            not _mps_bf16():
        raise ConfigError("--precision bf16 on MPS needs macOS 14 or later and a torch that supports it; "
                          "use --precision fp32 there")
    if precision == "tf32" and (not cuda or dev in ("cpu", "mps")):
        raise ConfigError("--precision tf32 needs a CUDA GPU (TF32 is a tensor-core format); "
                          "use --precision fp32 or bf16 here")


def _mps():
    import torch
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def _mps_bf16():
    import torch
    try:
        torch.ones(1, device="mps", dtype=torch.bfloat16)
        return True
    except (RuntimeError, TypeError):
        return False


def default_out(cfg, root="results"):
    """results/<dataset>[-<setting>=<value>...][-grid-<keys>]: the settings that differ from the
    defaults name the folder, so a rerun with other settings lands in a folder of its own."""
    key, base = cfg.result_key(), DEFAULT_KEY
    grid_keys = [k for k, _ in cfg.grid]
    parts = [cfg.dataset] + [f"{k}={short_value(v)}" for k, v in key.items()
                             if k not in ("dataset", "dry_run", *grid_keys) and v != base[k]]
    if grid_keys:
        parts.append("grid-" + ",".join(grid_keys))
    name = "-".join(parts).replace(os.sep, "_")
    if len(name) > 120:  # keep paths usable; the full settings are in config.json
        import hashlib
        name = name[:100] + "-" + hashlib.sha1(name.encode()).hexdigest()[:10]
    return os.path.join(root, "dry-run" if cfg.dry_run else "", name)


def cell_label(values):
    """'lr=0.001, depth=2': a sweep cell's (or a tuned choice's) settings as tables show them."""
    return ", ".join(f"{k}={short_value(v)}" for k, v in values.items())


def short_value(v):
    """A setting's value as folder names and tables show it: 0.001, not 0.0010000."""
    return format(v, "g") if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class Strategy:
    """How one named strategy trains: a schedule plus optimizer options."""
    schedule: object = STANDARD          # a training_loop schedule: Schedule, FreezeOut, ...
    reset_optimizer: bool = False        # re-create Adam at every phase change
    separate_optimizers: bool = False    # one optimizer per half (GAN style)
    two_timescale: bool = False          # per-half learning rates from lr_first / lr_second
    freeze_bn_stats: bool | None = None  # None: follow Config.freeze_bn_stats
    description: str = field(default="", compare=False)


STRATEGIES = {
    "standard": Strategy(description="every layer, every step"),
    "alternating-epoch": Strategy(alternating(1, "epoch"), description="halves switch every epoch"),
    "alternating-batch": Strategy(alternating(1, "batch"), description="halves switch every batch"),
    "alternating-k": None,  # built from Config.switch_every, see strategy()
    "alternating-epoch-reset": Strategy(alternating(1, "epoch"), reset_optimizer=True,
                                        description="earlier version: new Adam at each switch"),
    "alternating-batch-reset": Strategy(alternating(1, "batch"), reset_optimizer=True,
                                        description="earlier version: new Adam at each switch"),
    "standard-reset-epoch": Strategy(Schedule(unit="epoch"), reset_optimizer=True,
                                     description="standard, new Adam every epoch"),
    "standard-reset-batch": Strategy(Schedule(unit="batch"), reset_optimizer=True,
                                     description="standard, new Adam every batch"),
    "alternating-epoch-bnfixed": Strategy(alternating(1, "epoch"), freeze_bn_stats=True,
                                          description="frozen half's BN stats fixed"),
    "alternating-batch-bnfixed": Strategy(alternating(1, "batch"), freeze_bn_stats=True,
                                          description="frozen half's BN stats fixed"),
    "gan-style": Strategy(alternating(1, "batch"), separate_optimizers=True, two_timescale=True,
                          description="one Adam per half, per-half lr"),
    # published freezing methods, adapted to this MLP and to Adam (see ARCHITECTURE.md)
    "freezeout": Strategy(FreezeOut(), description="blocks stop in turn, each lr cosine to 0 (Brock 2017)"),
    "layer-freezing": Strategy(LayerFreezing(), description="first blocks freeze late in training (Composer)"),
    "cyclic-blocks": Strategy(CyclicBlocks(), description="one unit at a time, ascending (BAdam)"),
    "cyclic-blocks-descending": Strategy(CyclicBlocks(order="descending"),
                                         description="one unit at a time, descending (BAdam)"),
    "cyclic-blocks-random": Strategy(CyclicBlocks(order="random"),
                                     description="one unit at a time, random order per round (BAdam)"),
    "cyclic-blocks-reset": Strategy(CyclicBlocks(), reset_optimizer=True,
                                    description="cyclic blocks, Adam state cleared at each switch (BAdam)"),
    "layerout": Strategy(LayerOut(), description="blocks freeze at random each epoch (Goutam 2020)"),
}
_ALTERNATING_K = re.compile(r"alternating-(\d+)$")


def known_strategy(name):
    return name in STRATEGIES or bool(_ALTERNATING_K.match(name)) or _matched_budget(name)


def _matched_budget(name):
    kind, _, ref = name.partition("=")
    return kind in ("standard@flops", "standard@time") and (not ref or known_strategy(ref))


def budget_kind(name):
    """'flops' or 'time' for a matched-budget run name, else None."""
    return name.partition("=")[0].partition("@")[2] or None if name.startswith("standard@") else None


LEGACY_MATCH = "alternating-batch"  # the run named plain standard@flops is matched to this one


def matched_name(budget, reference):
    """The matched-budget standard run for `reference`: standard@flops=<reference>, or plain
    standard@flops for alternating-batch (the name older folders use)."""
    return f"standard@{budget}" if reference == LEGACY_MATCH else f"standard@{budget}={reference}"


def matched_reference(name, cfg=None):
    """The strategy whose budget matched-budget run `name` gets."""
    return name.partition("=")[2] or LEGACY_MATCH


def match_targets(cfg):
    """--match-to as a list of strategy names."""
    return [s.strip() for s in cfg.match_to.split(",") if s.strip()]


def strategy(name, cfg):
    """The `Strategy` for `name`; 'alternating-K' (K a number) switches every K batches."""
    if name == "alternating-k":
        return Strategy(alternating(cfg.switch_every, "batch"))
    m = _ALTERNATING_K.match(name)
    if m:
        return Strategy(alternating(int(m.group(1)), "batch"))
    if _matched_budget(name):
        return STRATEGIES["standard"]
    return STRATEGIES[name]


def train_options(name, cfg):
    """Keyword arguments for training_loop.train() for strategy `name` under `cfg`."""
    s = strategy(name, cfg)
    lrs = (cfg.lr_first or cfg.lr, cfg.lr_second or 4 * cfg.lr) if s.two_timescale else None
    return dict(schedule=s.schedule, num_epochs=cfg.epochs, learning_rate=cfg.lr,
                optimizer=cfg.optimizer, weight_decay=cfg.weight_decay, lr_schedule=cfg.lr_schedule,
                warmup_epochs=cfg.warmup_epochs, precision=cfg.precision, group_lrs=lrs,
                separate_optimizers=s.separate_optimizers, reset_optimizer=s.reset_optimizer,
                freeze_bn_stats=cfg.freeze_bn_stats if s.freeze_bn_stats is None else s.freeze_bn_stats)


def expand_strategies(spec):
    """'core', 'all' or a comma list -> tuple of names (unknown names are kept for the caller to reject)."""
    if isinstance(spec, str):
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    names = []
    for s in spec:
        names += list(CORE) if s == "core" else list(STRATEGIES) if s == "all" else [s]
    return tuple(dict.fromkeys(names))
