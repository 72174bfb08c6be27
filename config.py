"""The one configuration object, and the named strategies it can run.

`Config` is shared by the CLI (experiments.py builds its flags from these
defaults), the notebook and library users. A strategy is data: a schedule of
which parameter group trains when, plus optimizer options.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields

from training_loop import STANDARD, Schedule, alternating

CORE = ("standard", "alternating-epoch", "alternating-batch")


@dataclass
class Config:
    # data
    dataset: str = "cifar10"           # cifar10 | folder | synthetic
    data_dir: str = "./data"
    train_size: int | None = None      # a seeded random subset (synthetic: how many to generate)
    test_size: int | None = None
    # the experiment
    epochs: int = 15
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    seeds: int = 3                     # seeds 0..seeds-1, paired across strategies
    strategies: tuple = CORE
    switch_every: int = 10             # K for alternating-k (batches)
    lr_first: float | None = None      # gan-style: first half's lr (default: lr)
    lr_second: float | None = None     # gan-style: second half's lr (default: 4 x lr, two-timescale)
    freeze_bn_stats: bool = False      # frozen half's BatchNorm running stats fixed too
    match_budget: str = "epochs"       # epochs | flops | time: extra standard run on the budget of...
    match_to: str = "alternating-batch"  # ...this strategy's run with the same seed
    target_frac: float = 0.95          # epochs-to-target: this fraction of standard's mean final acc
    # model
    hidden_size: int = 512
    dropout: float = 0.3
    # running
    device: str = "auto"
    compile: bool = False
    eval_batch_size: int = 1000
    out: str = "."
    overwrite: bool = False
    dry_run: bool = False
    progress: bool = True

    def effective(self):
        """The config as run: --dry-run shrinks data, epochs and seeds to a smoke check."""
        if not self.dry_run:
            return self
        return Config(**{**asdict(self), "epochs": 1, "seeds": 1,
                         "train_size": 4 * self.batch_size, "test_size": 2 * self.batch_size})

    def result_key(self):
        """Settings that change a run's result: a results folder holds runs of one key only.
        Seeds and strategies may grow between invocations; runs already done are reused.
        data_dir is left out so that the same data extracted elsewhere can resume a folder."""
        skip = {"seeds", "strategies", "match_budget", "out", "overwrite", "progress", "data_dir"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


@dataclass(frozen=True)
class Strategy:
    """How one named strategy trains: a schedule plus optimizer options."""
    schedule: Schedule = STANDARD
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
}
_ALTERNATING_K = re.compile(r"alternating-(\d+)$")


def known_strategy(name):
    return name in STRATEGIES or bool(_ALTERNATING_K.match(name)) or _matched_budget(name)


def _matched_budget(name):
    return name.startswith("standard@") and name[len("standard@"):] in ("flops", "time")


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
                optimizer=cfg.optimizer, group_lrs=lrs, separate_optimizers=s.separate_optimizers,
                reset_optimizer=s.reset_optimizer,
                freeze_bn_stats=cfg.freeze_bn_stats if s.freeze_bn_stats is None else s.freeze_bn_stats)


def expand_strategies(spec):
    """'core', 'all' or a comma list -> tuple of names (unknown names are kept for the caller to reject)."""
    if isinstance(spec, str):
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    names = []
    for s in spec:
        names += list(CORE) if s == "core" else list(STRATEGIES) if s == "all" else [s]
    return tuple(dict.fromkeys(names))
