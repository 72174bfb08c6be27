"""The one configuration object: every setting declared once.

`Config` is shared by the CLI (experiments.py builds every flag from these fields), the notebook
and library users. Each field is a `setting(...)`: its default, the parser that its flag and its
--grid values go through, its help, whether it is part of a results folder's key (whether it
changes what a run computes) and whether a sweep may vary it. Nothing about a setting is
spelled anywhere else.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field, fields, replace

from data import DATASETS, TEXT_DATASETS
from plugins import PluginError, did_you_mean
from strategies import RunName, StrategyError, StrategyName, expand, load_plugins
from workloads import SHARED, WORKLOADS, WorkloadError, lookup as workload_of

PRECISIONS = ("fp32", "bf16", "tf32")
LR_SCHEDULES = ("constant", "cosine", "linear")
OPTIMIZERS = ("adam", "adamw", "sgd")

VERSION = "1.2.0"


class ConfigError(Exception):
    """A setting that cannot work; its message is one line."""


# --- one parser per setting, shared by the flags and by --grid values ---------------------
def _number(kind, text):
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return kind(text) if kind is float or float(text).is_integer() else None
    try:
        return kind(text)
    except (TypeError, ValueError):
        return None


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
            raise ValueError(f"must be one of {', '.join(options)}, got {text!r}{did_you_mean(text, options)}")
        return text
    parse.options = options
    return parse


def workload_name(text):
    """A registered workload (built in, or from a --plugin loaded before the flags are parsed)."""
    if text not in WORKLOADS:
        raise ValueError(f"must be a registered workload ({', '.join(WORKLOADS)}), got {text!r}"
                         f"{did_you_mean(text, WORKLOADS)}; a network of your own: --plugin FILE.py")
    return text


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


def strategy_list(text):
    """'core', 'all' or a comma list of strategy names (knobs and variants allowed) -> RunNames."""
    try:
        names = expand(text)
    except StrategyError as e:
        raise ValueError(str(e)) from None
    if not names:
        raise ValueError("is empty; name at least one strategy, or use core or all")
    return names


def strategy_names(text):
    """--match-to: a comma list of strategies (no matched runs) -> StrategyNames."""
    return tuple(n.strategy for n in strategy_list(text))


def key_list(text):
    """'lr,weight-decay' -> ('lr', 'weight_decay')."""
    if isinstance(text, (tuple, list)):
        return tuple(text)
    return tuple(k.strip().replace("-", "_") for k in str(text).split(",") if k.strip())


def plugin_ref(text):
    """A plugin as the workers and SLURM jobs will import it: a file by its absolute path (they
    may start elsewhere), a module by its name."""
    t = str(text).strip()
    if t.endswith(".py") or os.sep in t:
        return os.path.abspath(os.path.expanduser(t))
    return t


def key_value(text):
    if "=" not in str(text) or not str(text).split("=", 1)[0]:
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    return str(text)


def grid_entry(spec_):
    """'lr=1e-3,3e-3' -> ('lr', (0.001, 0.003)), each value through its setting's own parser. Keys
    that vary together are one axis: 'optimizer,weight_decay=adam:0,adamw:0.05' ->
    (('optimizer', 'weight_decay'), (('adam', 0.0), ('adamw', 0.05)))."""
    if isinstance(spec_, tuple):
        return spec_
    head, sep, text = str(spec_).partition("=")
    keys = tuple(k.strip().replace("-", "_") for k in head.split(","))
    if not sep or not all(keys):
        raise ValueError(f"{spec_!r} is not KEY=V1,V2,...; e.g. --grid lr=3e-4,1e-3,3e-3")
    for key in keys:
        if key not in GRID_KEYS:
            raise ValueError(f"unknown key {key!r}{did_you_mean(key, GRID_KEYS)}; a grid can vary "
                             f"{', '.join(GRID_KEYS)}")
    items = [v.strip() for v in text.split(",") if v.strip()]
    if not items:
        raise ValueError(f"{head}= has no values; give at least one, e.g. --grid {head}=V1,V2")
    values = []
    for item in items:
        parts = item.split(":") if len(keys) > 1 else [item]
        if len(parts) != len(keys):
            raise ValueError(f"{head}={item}: give one value per key, joined by ':' ({':'.join(keys)})")
        try:
            parsed = tuple(SETTINGS[k].parse(v) for k, v in zip(keys, parts))
        except ValueError as e:
            bad = next(k for k, v in zip(keys, parts) if _fails(k, v))
            raise ValueError(f"{head}={item}: {flag(bad)} {e}") from None
        values.append(parsed if len(keys) > 1 else parsed[0])
    return (keys if len(keys) > 1 else keys[0]), tuple(dict.fromkeys(values))


def _fails(key, text):
    try:
        SETTINGS[key].parse(text)
        return False
    except ValueError:
        return True


def grid_keys(grid):
    """Every key a grid varies, in order (an axis of several keys gives each)."""
    return [k for key, _ in grid for k in (key if isinstance(key, tuple) else (key,))]


def grid_values(grid, combo):
    """{key: value} of one cell: `combo` holds one value per axis."""
    out = {}
    for (key, _), v in zip(grid, combo):
        out.update(zip(key, v) if isinstance(key, tuple) else [(key, v)])
    return out


def parse_grid(specs):
    """['lr=1e-3,3e-3', 'depth=2,4'] -> (('lr', (0.001, 0.003)), ('depth', (2, 4))); errors are one line."""
    try:
        return Config(grid=tuple(specs)).grid
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(f"--grid {e}") from None


# --- the declaration of a setting ------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """What the CLI, the results key and --grid know about one Config field."""
    name: str
    default: object
    parse: object        # text -> value, raising ValueError with the message's tail; None: any text
    help: str
    group: str
    metavar: str | None
    key: bool            # part of a results folder's key: it changes what a run computes
    grid: bool           # a --grid may vary it
    switch: bool         # an on/off flag (store_true; store_false with a --no- flag)
    many: bool           # a repeatable flag: each occurrence is one item
    flag: str            # the command-line flag
    none: str | None     # what None means, for the help text

    def check(self, value):
        """`value` if its parser accepts it (None where None is allowed), else ValueError."""
        if value is None and self.none is not None:
            return None
        if self.parse is None or self.switch:
            return value
        if self.many:
            return tuple(self.parse(v) for v in value)
        return self.parse(value)


def setting(default, parse=None, help="", *, group, metavar=None, key=True, grid=None, switch=False,
            many=False, flag=None, none=None):
    return field(default=default, metadata=dict(parse=parse, help=help, group=group, metavar=metavar, key=key,
                                                grid=key if grid is None else grid, switch=switch, many=many,
                                                flag=flag, none=none))


DATA, EXPERIMENT, MODEL, SWEEPS, RUNNING, LAUNCH = ("data", "the experiment", "model and numerics", "sweeps",
                                                   "running", "launching runs")


@dataclass(frozen=True)
class Config:
    # data
    dataset: str = setting("cifar10", choice(*DATASETS), "cifar10, cifar100, mnist, fashion-mnist, svhn "
                           "(torchvision: downloaded into --data-dir, or read from it offline), folder "
                           "(ImageFolder with train/ and test/), synthetic (generated, no files), text (a plain-text "
                           "file or folder of files at --data-dir) or shakespeare (--data-dir/shakespeare, made by "
                           "python data.py shakespeare)", group=DATA)
    data_dir: str = setting("./data", help="where the data lives", group=DATA, metavar="DIR", key=False)
    train_size: int | None = setting(None, positive_int, "use a seeded random subset of N training images (text: "
                                     "N windows drawn per epoch)", group=DATA, metavar="N",
                                     none="all (text: as many windows as the training text holds)")
    test_size: int | None = setting(None, positive_int, "use a seeded random subset of N test images (text: hold "
                                    "out N documents for test)", group=DATA, metavar="N",
                                    none="all (text: 10%% of the documents)")
    val_size: int = setting(0, nonnegative_int, "hold out this many training images (text: documents) for "
                            "validation, the same for every strategy and seed; anything selected is selected on them",
                            group=DATA, metavar="N")
    # the experiment
    epochs: int = setting(15, positive_int, "epochs per run", group=EXPERIMENT, metavar="N")
    batch_size: int = setting(128, positive_int, "training batch size", group=EXPERIMENT, metavar="N")
    lr: float = setting(1e-3, positive_float, "learning rate", group=EXPERIMENT, metavar="LR")
    optimizer: str = setting("adam", choice(*OPTIMIZERS), "one optimizer persists across switches (its state "
                             "kept); sgd has momentum 0.9", group=EXPERIMENT)
    weight_decay: float = setting(0.0, nonnegative_float, "adam: L2 penalty added to the gradient; adamw: "
                                  "decoupled decay", group=EXPERIMENT, metavar="WD")
    lr_schedule: str = setting("constant", choice(*LR_SCHEDULES), "run-wide lr factor per step, decaying to 0 "
                               "at the run's last step", group=EXPERIMENT)
    warmup_epochs: int = setting(0, nonnegative_int, "linear lr warmup before the schedule", group=EXPERIMENT,
                                 metavar="N")
    seeds: int | tuple = setting(3, seed_spec, "seeds 0..N-1, a range A-B or a list; a seed fixes initial "
                                 "weights and data order for all strategies", group=EXPERIMENT,
                                 metavar="N|A-B|A,B,...", key=False)
    strategies: tuple = setting(expand("core"), strategy_list, "comma list of strategies (see "
                                "--list-strategies), 'core' (standard, alternating-epoch, alternating-batch) "
                                "or 'all'; knobs in brackets, variants with |: 'freezeout[t0=0.5|0.8]'",
                                group=EXPERIMENT, metavar="LIST", key=False)
    freeze_bn_stats: bool = setting(False, help="frozen units' BatchNorm running statistics stay fixed too",
                                    group=EXPERIMENT, switch=True)
    match_budget: str = setting("epochs", choice("epochs", "flops", "time"), "flops/time: add a standard run "
                                "stopped at the FLOPs or seconds that --match-to used with the same seed",
                                group=EXPERIMENT, key=False)
    match_to: tuple = setting(strategy_names("alternating-batch"), strategy_names, "reference strategies for "
                              "--match-budget (in a confirmed sweep: every strategy that used fewer FLOPs than "
                              "standard)", group=EXPERIMENT, metavar="STRATEGY[,...]", key=False)
    target_frac: float = setting(0.95, positive_float, "epochs-to-target uses this fraction of standard's mean "
                                 "final accuracy", group=EXPERIMENT, metavar="F", grid=False)
    metric: str = setting("final", choice("final", "early-stopped"), "test accuracy that tables and the tuned "
                          "comparison report: after the last epoch, or at the epoch of best validation "
                          "accuracy (needs --val-size)", group=EXPERIMENT, key=False)
    # model: the workload and the shared model settings; unset, each takes the workload's default
    workload: str = setting("mlp", workload_name, "the network and its task: mlp (the classic MLP), cnn (a small "
                            "ResNet), gpt (a character-level transformer, on --dataset text or shakespeare), or "
                            "one a --plugin registers; --list-workloads shows each with its settings", group=MODEL,
                            metavar="NAME")
    depth: int | None = setting(None, positive_int, "mlp: hidden blocks (2); cnn: residual blocks per stage (1); gpt: "
                                "transformer blocks (4)", group=MODEL, metavar="N", none="the workload's")
    split: int | None = setting(None, nonnegative_int, "blocks in the first half (the alternating strategies' halves; "
                                "cnn and gpt: after the stem or embeddings)", group=MODEL, metavar="N",
                                none="depth // 2 blocks (mlp: at least 1)")
    hidden_size: int | None = setting(None, positive_int, "mlp: width of every hidden block (512); cnn: channels of "
                                      "the first stage (16); gpt: embedding width (128)", group=MODEL, metavar="N",
                                      none="the workload's")
    dropout: float | None = setting(None, probability, "dropout probability (mlp: after every hidden block, 0.3; cnn: "
                                    "before the head, 0; gpt: in every block, 0)", group=MODEL, metavar="P",
                                    none="the workload's")
    heads: int | None = setting(None, positive_int, "gpt: attention heads (4)", group=MODEL, metavar="N",
                                none="the workload's")
    context: int | None = setting(None, positive_int, "gpt: characters per window (64)", group=MODEL, metavar="N",
                                  none="the workload's")
    augment: bool | None = setting(None, boolean, "cnn: random flips and 2-pixel translations of training images, "
                                   "drawn from the run's seed (on)", group=MODEL, metavar="on|off",
                                   none="the workload's")
    label_smoothing: float | None = setting(None, probability, "cnn: label smoothing of the training loss (0)",
                                            group=MODEL, metavar="E", none="the workload's")
    precision: str = setting("fp32", choice(*PRECISIONS), "fp32; bf16 autocast with fp32 weights and optimizer "
                             "state; tf32 (CUDA only)", group=MODEL)
    # a sweep: ((key, (value, ...)), ...); the cells are the product of the value lists
    grid: tuple = setting((), grid_entry, "vary a setting (repeatable; the cells are the product): e.g. --grid "
                          "lr=3e-4,1e-3,3e-3 --grid depth=2,4", group=SWEEPS, metavar="KEY=V1,V2,...",
                          key=False, many=True, none="no grid, one experiment")
    tune: tuple = setting((), key_list, "grid keys each strategy tunes on validation accuracy, per group of "
                          "cells that agree on the others; a strategy given as several variants "
                          "(freezeout[t0=0.5|0.8]) also tunes its knobs", group=SWEEPS, metavar="KEY[,KEY...]",
                          key=False, none="lr, when lr is gridded")
    margin: float = setting(0.25, positive_float, "equivalence margin (points of test accuracy) of the TOST that "
                            "each comparison of a sweep's declared family also gets; fix it before the runs",
                            group=SWEEPS, metavar="POINTS", key=False)
    confirm_seeds: int = setting(0, nonnegative_int, "after tuning, run each strategy's choice on N fresh seeds "
                                 "(numbered after the tuning seeds); the tuned comparison then reports only "
                                 "those", group=SWEEPS, metavar="N", key=False)
    # running
    device: str = setting("auto", help="auto (CUDA, then MPS, else CPU), cpu, cuda, cuda:N, mps", group=RUNNING,
                          metavar="DEV", grid=False)
    compile: bool = setting(False, help="torch.compile the model", group=RUNNING, switch=True, grid=False)
    eval_batch_size: int = setting(1000, positive_int, "evaluation batch size", group=RUNNING, metavar="N",
                                   grid=False)
    engine: str = setting("single", choice("single", "pack"), "single: one model per run, the reference "
                          "engine; pack: the runs of a cell (and of cells that differ only in lr or its "
                          "schedule) trained together as one batched model, each with its own seed, data "
                          "order, dropout stream, schedule and budget; a results folder holds runs of one "
                          "engine", group=RUNNING, grid=False)
    pack: int | None = setting(None, positive_int, "--engine pack: at most N runs per pack", group=RUNNING,
                               metavar="N", key=False, none="as many as the device's memory holds, at most 64")
    plugins: tuple = setting((), plugin_ref, "a Python file or module that registers strategies, imported before any "
                             "name is resolved, here and in every worker and SLURM job (repeatable)",
                             group=RUNNING, metavar="FILE.py|MODULE", key=False, many=True, flag="--plugin",
                             none="none")
    out: str | None = setting(None, help="results folder", group=RUNNING, metavar="DIR", key=False,
                              none="results/<dataset and the settings that differ from the defaults>")
    overwrite: bool = setting(False, help="discard results already in --out instead of resuming", group=RUNNING,
                              key=False, switch=True)
    discard_stale: bool = setting(False, help="delete exactly the stored runs (and checkpoints) that other code made "
                                  "than would run now, listing each, and train them again; the folder's other runs "
                                  "are kept", group=RUNNING, key=False, switch=True)
    dry_run: bool = setting(False, help="smoke check: 1 epoch of 4 batches per strategy, 1 seed, in a scratch "
                            "folder of its own that it removes afterwards", group=RUNNING, switch=True, grid=False)
    progress: bool = setting(True, help="turn off the progress output (bars on a terminal, one line per "
                             "finished run otherwise)", group=RUNNING, key=False, switch=True, flag="--no-progress")
    # launching runs
    launcher: str = setting("local", choice("local", "slurm"), "local: --workers processes on this machine; "
                            "slurm: a job array via submitit", group=LAUNCH, key=False)
    workers: int = setting(1, positive_int, "local: concurrent run processes (torch threads are split between "
                           "them; spread over the GPUs if there are several)", group=LAUNCH, metavar="N", key=False)
    threads: int | None = setting(None, positive_int, "torch threads per run", group=LAUNCH, metavar="N", key=False,
                                  none="cores / workers; slurm: --slurm-cpus-per-task")
    slurm_partition: str | None = setting(None, help="partition to submit to", group=LAUNCH, metavar="NAME",
                                          key=False, none="the cluster's default partition")
    slurm_time: int = setting(60, slurm_minutes, "time limit per job: minutes, or [D-]HH:MM:SS as sbatch takes "
                              "it", group=LAUNCH, metavar="TIME", key=False)
    slurm_cpus_per_task: int = setting(1, positive_int, "CPU cores per job (and its torch threads)", group=LAUNCH,
                                       metavar="N", key=False)
    slurm_gpus_per_task: int = setting(0, nonnegative_int, "GPUs per job", group=LAUNCH, metavar="N", key=False)
    slurm_mem: str | None = setting(None, help="memory per job, as sbatch --mem takes it (e.g. 8G)", group=LAUNCH,
                                    metavar="MEM", key=False, none="the cluster's")
    slurm_array_parallelism: int | None = setting(None, positive_int, "at most N array tasks at once",
                                                  group=LAUNCH, metavar="N", key=False, none="no limit")
    slurm_max_requeues: int = setting(3, nonnegative_int, "requeues of a job after a timeout or preemption",
                                      group=LAUNCH, metavar="N", key=False)
    slurm_args: tuple = setting((), key_value, "any other sbatch option, e.g. --slurm-arg account=mylab",
                                group=LAUNCH, metavar="KEY=VALUE", key=False, many=True, flag="--slurm-arg",
                                none="none")
    wait: bool = setting(True, help="slurm: do not wait for the jobs (waiting is the default): submit and return; "
                         "rerun the same command to collect the results", group=LAUNCH, key=False, switch=True,
                         flag="--no-wait")
    cancel: bool = setting(False, help="with --overwrite: scancel the folder's live SLURM jobs first (without it, "
                           "--overwrite refuses while they run)", group=LAUNCH, key=False, switch=True)

    def __post_init__(self):
        """Settings given as text (Config(strategies="standard,mine"), seeds="0-4", ...) become
        their values, through the same parsers as the flags; plugins are imported first, since
        strategy names are checked against what they register."""
        plugins = (self.plugins,) if isinstance(self.plugins, str) else self.plugins
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        set_("plugins", tuple(plugin_ref(p) for p in plugins))
        try:
            load_plugins(self.plugins)
        except (StrategyError, PluginError) as e:
            raise ConfigError(str(e)) from None
        for name in ("strategies", "match_to", "seeds", "tune", "grid", "slurm_args"):
            value, s = getattr(self, name), SETTINGS[name]
            if isinstance(value, list):
                value = tuple(value)
            if isinstance(value, str) or (isinstance(value, tuple) and any(isinstance(v, str) for v in value)
                                          and name not in ("tune", "slurm_args")):
                try:
                    value = s.parse(value) if not s.many else tuple(s.parse(v) for v in value)
                except ValueError as e:
                    raise ConfigError(f"{s.flag} {e}") from None
            set_(name, value)
        keys = grid_keys(self.grid)
        for k in keys:
            if keys.count(k) > 1:
                raise ConfigError(f"--grid {k} is given twice; put all its values in one --grid {k}=V1,V2,...")

    def effective(self):
        """The config as run: --dry-run shrinks data, epochs and seeds to a smoke check."""
        if not self.dry_run:
            return self
        small = dict(epochs=1, seeds=(seed_list(self.seeds)[0],), confirm_seeds=min(self.confirm_seeds, 1))
        if self.dataset in TEXT_DATASETS:  # the documents stay; an epoch is 4 batches of windows
            return replace(self, **small, train_size=4 * self.batch_size)
        val = self.batch_size if self.val_size else 0
        return replace(self, **small, val_size=val, train_size=4 * self.batch_size + val, test_size=2 * self.batch_size)

    def resolved(self, name):
        """A setting a workload may give a default to: as given, else the workload's default."""
        value = getattr(self, name)
        return workload_of(self.workload).settings.get(name) if value is None else value

    def model_settings(self):
        """{setting: value} of the shared settings the workload reads (see workloads.SHARED)."""
        return {k: self.resolved(k) for k in workload_of(self.workload).settings}

    def result_key(self):
        """Settings that change a run's result: a results folder holds runs of one key only.
        Seeds and strategies may grow between invocations; runs already done are reused.
        data_dir is left out so that the same data extracted elsewhere can resume a folder. The
        model settings are the workload's values (its defaults where unset), so a folder of the
        MLP keeps the key it had before there were other workloads."""
        return {s.name: self.resolved(s.name) if s.name in SHARED else getattr(self, s.name)
                for s in SETTINGS.values() if s.key}

    def to_json(self):
        """Every setting as JSON-ready values (names as their text)."""
        return _jsonable(asdict(self))


def _jsonable(v):
    if isinstance(v, (StrategyName, RunName)):
        return str(v)
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


SETTINGS = {f.name: Setting(f.name, f.default, flag=f.metadata["flag"] or "--" + f.name.replace("_", "-"),
                            **{k: v for k, v in f.metadata.items() if k != "flag"}) for f in fields(Config)}
GRID_KEYS = tuple(n for n, s in SETTINGS.items() if s.grid)
# settings of earlier versions that became knobs: a folder that has them at their old default
# is unaffected; the flag says where the setting went
RETIRED = {"switch_every": "the period is a knob now: alternating-k[every=K] (or alternating-K)",
           "lr_first": "the rates are knobs now: gan-style[first_lr=F,second_lr=S], multiples of --lr",
           "lr_second": "the rates are knobs now: gan-style[first_lr=F,second_lr=S], multiples of --lr"}
RETIRED_DEFAULTS = {"switch_every": 10, "lr_first": None, "lr_second": None}
# what each setting of a folder's key is when a folder does not say: today's defaults, and the
# retired settings' old ones (so folders made before they retired keep their settings hash)
DEFAULT_KEY = {**RETIRED_DEFAULTS, **Config().result_key()}


def flag(name):
    return SETTINGS[name].flag if name in SETTINGS else "--" + name.replace("_", "-")


def check_config(cfg):
    """Reject settings that cannot work, with a one-line message that names the fix."""
    for name, s in SETTINGS.items():
        try:
            s.check(getattr(cfg, name))
        except ValueError as e:
            raise ConfigError(f"{s.flag} {e}") from None
    check_workload(cfg)
    if not cfg.strategies:
        raise ConfigError("--strategies is empty; name at least one strategy, or use core or all")
    if cfg.engine == "pack" and (cfg.match_budget == "time" or any(n.budget == "time" for n in cfg.strategies)):
        raise ConfigError("a time-matched run needs --engine single: a pack's members share their steps, so none "
                          "has a training time of its own (match FLOPs instead: --match-budget flops)")
    if cfg.warmup_epochs >= cfg.epochs:
        raise ConfigError(f"--warmup-epochs ({cfg.warmup_epochs}) must be fewer than --epochs ({cfg.epochs})")
    if cfg.launcher == "slurm":  # the nodes, not this submit host, have (or lack) the GPUs: they check
        check_device_name(cfg.device, cfg.precision)
    else:
        check_device(cfg.device, cfg.precision)


def check_workload(cfg):
    """The workload reads the model settings given, its data is the dataset's kind, and its own
    checks pass; the pack engine only trains workloads built for it."""
    w = workload_of(cfg.workload)
    given = [k for k in SHARED if getattr(cfg, k) is not None and k not in w.settings and SETTINGS[k].group == MODEL]
    if given:
        raise ConfigError(f"{flag(given[0])} is not a setting of workload {cfg.workload} (its settings: "
                          f"{', '.join(flag(k) for k in w.settings) or 'none'}; --list-workloads shows them all)")
    kind = "text" if cfg.dataset in TEXT_DATASETS else "images"
    if kind != w.data:
        raise ConfigError(f"workload {cfg.workload} learns from {w.data}, and --dataset {cfg.dataset} is {kind}"
                          + ("; use --dataset text --data-dir DIR or --dataset shakespeare" if w.data == "text" else
                             "; use --workload gpt for text"))
    try:
        w.check(cfg.model_settings())
    except WorkloadError as e:
        raise ConfigError(str(e)) from None
    if cfg.engine == "pack" and not w.pack:
        raise ConfigError(f"--engine pack trains the MLP only (its batched step is the MLP's); workload "
                          f"{cfg.workload} runs with --engine single")


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
    keys = grid_keys(cfg.grid)
    parts = [cfg.dataset] + [f"{k}={short_value(v)}" for k, v in key.items()
                             if k not in ("dataset", "dry_run", *keys) and v != base[k]]
    if keys:
        parts.append("grid-" + ",".join(keys))
    name = "-".join(parts).replace(os.sep, "_")
    if len(name) > 120:  # keep paths usable; the full settings are in config.json
        import hashlib
        name = name[:100] + "-" + hashlib.sha1(name.encode()).hexdigest()[:10]
    return os.path.join(root, name)


def cell_label(values):
    """'lr=0.001, depth=2': a sweep cell's (or a tuned choice's) settings as tables show them."""
    return ", ".join(f"{k}={short_value(v)}" for k, v in values.items())


def short_value(v):
    """A setting's value as folder names and tables show it: 0.001, not 0.0010000."""
    return format(v, "g") if isinstance(v, float) else str(v)


def cell_key(values):
    """A hashable key of a cell's grid values, whatever order the dict has."""
    return tuple(sorted(values.items()))
