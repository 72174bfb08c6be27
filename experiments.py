"""Run the comparison: every strategy on the same seeds, then a summary table and a figure.

    python experiments.py                       # CIFAR-10, core strategies, 3 seeds
    python experiments.py --dataset folder --data-dir DIR --seeds 5
    python experiments.py --dataset synthetic --dry-run

Library use: `run_experiment(Config(...))` returns (runs, summary).
"""
from __future__ import annotations

import argparse
import math
import platform
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torchvision
from tqdm.auto import tqdm

from config import CORE, STRATEGIES, Config, expand_strategies, known_strategy, train_options
from data import DATASETS, DataError, Dataset, TensorLoader, load_dataset
from models import SimpleNN
from plots import plot_comparison
from results import ResultsDir, ResultsError
from stats import format_table, summarize
from training_loop import pick_device, train


class ConfigError(Exception):
    """A setting that cannot work; its message is one line."""


def check_config(cfg):
    """Reject settings that cannot work, with a message that names the fix."""
    for name in ("epochs", "batch_size", "seeds", "switch_every", "eval_batch_size"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or v < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a whole number of at least 1, got {v!r}")
    for name in ("lr", "lr_first", "lr_second"):
        v = getattr(cfg, name)
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive finite number, got {v!r}")
    if cfg.dataset not in DATASETS:
        raise ConfigError(f"unknown --dataset {cfg.dataset!r}; choose one of {', '.join(DATASETS)}")
    for s in cfg.strategies:
        if not known_strategy(s):
            raise ConfigError(f"unknown strategy {s!r} in --strategies; choose from core, all, "
                              f"{', '.join(STRATEGIES)}, or alternating-K for a number K")
    if not cfg.strategies:
        raise ConfigError("--strategies is empty; name at least one strategy, or use core or all")
    if cfg.match_budget not in ("epochs", "flops", "time"):
        raise ConfigError(f"--match-budget must be epochs, flops or time, got {cfg.match_budget!r}")
    dev = cfg.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {dev} was asked for, but CUDA is not available on this machine; "
                          f"use --device cpu or --device auto")
    if dev == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("--device mps was asked for, but MPS is not available on this machine; "
                          "use --device cpu or --device auto")
    if dev not in ("auto", "cpu", "mps") and not dev.startswith("cuda"):
        raise ConfigError(f"unknown --device {dev!r}; choose auto, cpu, cuda, cuda:N or mps")


def run_plan(cfg):
    """(strategy, seed) pairs in order: seed-major, so an interrupted sweep leaves whole seeds.
    A matched-budget standard run follows the run it is matched to."""
    names = list(cfg.strategies)
    if cfg.match_budget != "epochs" and cfg.match_to not in names:
        names.append(cfg.match_to)
    plan = []
    for seed in range(cfg.seeds):
        for name in names:
            plan.append((name, seed))
            if name == cfg.match_to and cfg.match_budget != "epochs":
                plan.append((f"standard@{cfg.match_budget}", seed))
    return plan


def build_model(cfg, dataset):
    """The classic MLP sized for the dataset's images and classes."""
    return SimpleNN(dataset.input_size, cfg.hidden_size, len(dataset.classes), cfg.dropout)


def run_one(cfg, dataset: Dataset, name, seed, device, budget=None, progress=False):
    """Train strategy `name` from seed `seed`: same initial weights, data order and dropout
    stream as every other strategy with that seed."""
    torch.manual_seed(seed)
    model = build_model(cfg, dataset).to(device)
    if cfg.compile:
        model = torch.compile(model)
    train_loader = TensorLoader(dataset.x_train, dataset.y_train, cfg.batch_size, shuffle=True, seed=seed)
    test_loader = TensorLoader(dataset.x_test, dataset.y_test, cfg.eval_batch_size)
    history = train(model, train_loader, test_loader, device=device, progress=progress,
                    desc=f"{name} seed {seed}", **train_options(name, cfg), **(budget or {}))
    return {"strategy": name, "seed": seed, "history": history}


def _budget(cfg, name, seed, store):
    """max_flops / max_seconds for a matched-budget standard run, from its reference run."""
    if "@" not in name:
        return None
    ref = store.done(cfg.match_to, seed)["history"]
    if cfg.match_budget == "flops":
        return {"max_flops": sum(ref["train_flops"])}
    return {"max_seconds": sum(ref["epoch_time_s"])}


def environment(device):
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or
                                                                        platform.machine())
    return {"versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "torchvision": torchvision.__version__, "numpy": np.__version__},
            "device": str(dev), "device_name": name, "threads": torch.get_num_threads()}


def run_experiment(cfg: Config, log=print):
    """Run (or resume) every planned run, write all outputs into cfg.out; return (runs, summary)."""
    check_config(cfg)
    cfg = cfg.effective()
    device = pick_device(cfg.device)
    store = ResultsDir(cfg.out, cfg.result_key(), cfg.overwrite)
    dataset = load_dataset(cfg.dataset, cfg.data_dir, device, cfg.train_size, cfg.test_size)
    store.write_config(asdict(cfg), {**environment(device), "dataset_label": dataset.label,
                                     "train_samples": len(dataset.y_train),
                                     "test_samples": len(dataset.y_test)})
    plan = run_plan(cfg)
    done = [(n, s) for n, s in plan if store.done(n, s)]
    log(f"data: {dataset.label}, {len(dataset.y_train)} train / {len(dataset.y_test)} test images; "
        f"device: {device}; {cfg.epochs} epochs; seeds 0-{cfg.seeds - 1}; {len(plan)} runs"
        + (f", {len(done)} already in {cfg.out} (skipped)" if done else ""))
    bar = tqdm(plan, desc="runs", disable=not cfg.progress)
    for name, seed in bar:
        if store.done(name, seed):
            continue
        run = run_one(cfg, dataset, name, seed, device, _budget(cfg, name, seed, store), cfg.progress)
        store.save_run(run)
        h = run["history"]
        tag = "  DIVERGED (loss not finite), stopped early" if any(h["diverged"]) else ""
        bar.write(f"{name:<26} seed {seed}  final acc {h['test_acc'][-1]:6.2f}%  "
                  f"{sum(h['epoch_time_s']):7.1f} s training{tag}")
    runs = [store.done(n, s) for n, s in plan]
    summary = summarize(runs, target_frac=cfg.target_frac)
    summary["dataset"] = dataset.label
    store.write_summary(summary)
    title = (f"Alternating freezing vs standard training: {dataset.label}, "
             f"{cfg.epochs} epochs, batch {cfg.batch_size}, Adam lr {cfg.lr:g}")
    plot_comparison(runs, summary, Path(cfg.out) / "comparison_results.png", title)
    log(format_table(summary))
    log(f"wrote config.json, metrics.csv, summary.json, comparison_results.png in {cfg.out}")
    return runs, summary


# --- command line -----------------------------------------------------------------
class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # one line naming the problem, no usage dump
        self.exit(2, f"error: {message}; see python experiments.py --help\n")


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        v = None
    if v is None or v < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return v


def _positive_float(text):
    try:
        v = float(text)
    except ValueError:
        v = None
    if v is None or not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return v


def parse_args(argv=None):
    d = Config()
    p = _OneLineParser(description=__doc__.split("\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default=d.dataset, choices=DATASETS,
                   help="cifar10 (torchvision, downloaded into --data-dir), folder (ImageFolder "
                        "with train/ and test/), or synthetic (generated, no files)")
    p.add_argument("--data-dir", default=d.data_dir, help="where the data lives")
    p.add_argument("--train-size", type=_positive_int, default=d.train_size,
                   help="use a seeded random subset of this many training images")
    p.add_argument("--test-size", type=_positive_int, default=d.test_size,
                   help="use a seeded random subset of this many test images")
    p.add_argument("--epochs", type=_positive_int, default=d.epochs)
    p.add_argument("--batch-size", type=_positive_int, default=d.batch_size)
    p.add_argument("--lr", type=_positive_float, default=d.lr, help="learning rate")
    p.add_argument("--optimizer", default=d.optimizer, choices=("adam", "adamw", "sgd"))
    p.add_argument("--seeds", type=_positive_int, default=d.seeds,
                   help="run seeds 0..N-1; a seed fixes initial weights and data order for all strategies")
    p.add_argument("--strategies", default=",".join(d.strategies) if d.strategies != CORE else "core",
                   help=f"comma list, 'core' ({', '.join(CORE)}) or 'all' ({', '.join(STRATEGIES)}); "
                        "also alternating-K for any K")
    p.add_argument("--switch-every", type=_positive_int, default=d.switch_every,
                   help="K batches for the alternating-k strategy")
    p.add_argument("--lr-first", type=_positive_float, default=d.lr_first,
                   help="gan-style: first half's learning rate (default: --lr)")
    p.add_argument("--lr-second", type=_positive_float, default=d.lr_second,
                   help="gan-style: second half's learning rate (default: 4 x --lr)")
    p.add_argument("--freeze-bn-stats", action="store_true",
                   help="frozen half's BatchNorm running statistics stay fixed too")
    p.add_argument("--match-budget", default=d.match_budget, choices=("epochs", "flops", "time"),
                   help="flops/time: add a standard run stopped at the FLOPs or seconds that "
                        "--match-to used with the same seed")
    p.add_argument("--match-to", default=d.match_to, help="reference strategy for --match-budget")
    p.add_argument("--target-frac", type=_positive_float, default=d.target_frac,
                   help="epochs-to-target uses this fraction of standard's mean final accuracy")
    p.add_argument("--device", default=d.device, help="auto (CUDA, then MPS, else CPU), cpu, cuda, mps")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (opt-in)")
    p.add_argument("--out", default=d.out, help="folder for config.json, metrics.csv, summary.json, "
                                                 "comparison_results.png and runs/")
    p.add_argument("--overwrite", action="store_true",
                   help="discard results already in --out instead of resuming")
    p.add_argument("--dry-run", action="store_true",
                   help="smoke check: 1 epoch of 4 batches per strategy, 1 seed")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm bars")
    a = p.parse_args(argv)
    return replace(d, **{**vars(a), "strategies": expand_strategies(a.strategies)})


def main(argv=None):
    try:
        cfg = parse_args(argv)
        run_experiment(cfg)
    except (ConfigError, DataError, ResultsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        out = cfg.out if "cfg" in locals() else "--out"
        print(f"\ninterrupted: finished runs are saved in {out}; rerun the same command to resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
