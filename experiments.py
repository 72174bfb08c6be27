"""Run the comparison: every strategy on the same seeds, then a summary table and a figure.

    python experiments.py                       # CIFAR-10, core strategies, 3 seeds
    python experiments.py --dataset folder --data-dir DIR --seeds 5
    python experiments.py --dataset synthetic --dry-run
    python experiments.py --dataset fashion-mnist --val-size 5000 --grid lr=1e-3,3e-3 --grid depth=2,4

Library use: `run_experiment(Config(...))` returns (runs, summary); with `Config.grid` set it
runs the sweep and returns (cells, sweep summary).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, replace

from tqdm.auto import tqdm

from config import (CORE, DEFAULT_KEY, PARSERS, STRATEGIES, VERSION, Config, ConfigError, check_config,
                    default_out, expand_strategies, match_targets, matched_name, matched_reference,
                    seed_list)
from data import DATASETS, DataError
from launchers import (HELD, LaunchError, cancel_jobs, live_jobs, run_inprocess, run_local, run_slurm,
                       unit_id)
from plots import plot_accuracy_flops, plot_comparison, plot_sweep
from results import ResultsError, SweepDir
from runs import Unit, build_model, dataset_for, environment, open_cell, run_line  # noqa: F401
from stats import format_table, summarize
from sweep import (cell_label, format_sweep, grid_cells, parse_grid, summarize_sweep, sweep_csv, tune_keys,
                   tuned_comparison)
from training_loop import pick_device


def run_plan(cfg):
    """(strategy, seed) pairs in order: seed-major, so an interrupted sweep leaves whole seeds.
    A matched-budget standard run follows the run it is matched to."""
    names, targets = list(cfg.strategies), match_targets(cfg) if cfg.match_budget != "epochs" else []
    names += [t for t in targets if t not in names]
    plan = []
    for seed in seed_list(cfg.seeds):
        for name in names:
            plan.append((name, seed))
            if name in targets:
                plan.append((matched_name(cfg.match_budget, name), seed))
    return plan


def prepare_cell(cfg, overwrite=False, cell=None):
    """Open (or create) the cell's folder and record its settings and data; return the store."""
    device = pick_device(cfg.device) if cfg.launcher == "local" and cfg.workers == 1 else "cpu"
    store = open_cell(cfg, overwrite)
    data = dataset_for(cfg, device)
    store.write_config(asdict(cfg), {
        **_submit_environment(cfg), "dataset_label": data.label,
        "data_fingerprint": data.fingerprint(),
        "train_samples": len(data.y_train), "test_samples": len(data.y_test),
        "val_samples": 0 if data.y_val is None else len(data.y_val),
        **({"cell": cell} if cell is not None else {})})
    return store, data


def _submit_environment(cfg):
    """The environment config.json records for this invocation. Under SLURM the device is the
    nodes' business (this host may have no GPU): each run's file records the node's own."""
    if cfg.launcher == "local":
        return environment(pick_device(cfg.device))
    return {**environment("cpu"), "device": f"{cfg.device} (chosen on each SLURM node)", "device_name": None}


def units_of(cfg, store):
    """The cell's planned runs that are not saved yet, as units."""
    return [Unit(cfg, name, seed, after=(cfg.out, matched_reference(name), seed) if "@" in name else None)
            for name, seed in run_plan(cfg) if not store.done(name, seed)]


def launch(units, cfg, stores, log, poll_s=1.0):
    """Execute units with the configured launcher; print a line per finished run and keep each
    cell's metrics.csv current. Runs that other executors hold (their lease, or a live SLURM job
    of this folder) are waited for, and taken up here if their holder dies. Returns the units
    that did not finish, with reasons."""
    bar = tqdm(total=len(units), desc="runs", disable=not cfg.progress or cfg.launcher == "slurm")
    say = bar.write if cfg.progress and log is print else log  # lines above the bar, unless redirected

    finished = set()

    def on_done(unit, run):
        finished.add(id(unit))
        say(run_line(run))
        stores[unit.cfg.out].refresh().write_metrics()
        bar.update()

    saved = _saved_run(stores)
    pending, failed, waiting_said = list(units), [], False
    try:
        while pending:
            slurm_held = {} if cfg.launcher == "slurm" else live_jobs(cfg.out)
            held = {id(u) for u in pending if stores[u.cfg.out].holder(u.strategy, u.seed) is not None
                    or unit_id(u) in slurm_held}
            ready = _ready(pending, held, stores)
            result = _execute(ready, cfg, stores, on_done, say, lambda u: id(u) in held or
                              stores[u.cfg.out].holder(u.strategy, u.seed) is not None) if ready else []
            failed_now = [(u, why) for u, why in result if why != HELD]
            failed += failed_now
            gone = finished | {id(u) for u, _ in failed_now}
            pending = [u for u in pending if id(u) not in gone]
            for u in list(pending):
                run = saved(u)
                if run is not None:
                    on_done(u, run)
                    pending.remove(u)
                elif u.after and not stores[u.after[0]].saved(*u.after[1:]) and not any(
                        (v.cfg.out, v.strategy, v.seed) == u.after for v in pending):
                    failed.append((u, f"its reference run {u.after[1]} seed {u.after[2]} did not finish"))
                    pending.remove(u)
            if not cfg.wait and failed:
                return failed + [(u, "held elsewhere; --no-wait") for u in pending]
            if pending:
                if not waiting_said:
                    say(f"waiting for {_plural(len(pending), 'run')} that other processes are training "
                        f"(see leases/ in the results folder); a run whose holder dies is taken up here")
                    waiting_said = True
                time.sleep(poll_s)
        return failed
    finally:
        bar.close()


def _ready(pending, held, stores):
    """The pending units this invocation can start now: not held elsewhere, and whose reference
    run (matched budgets) is saved or starts in the same batch."""
    first = [u for u in pending if id(u) not in held and u.after is None]
    starting = {(u.cfg.out, u.strategy, u.seed) for u in first}
    return first + [u for u in pending if id(u) not in held and u.after is not None and
                    (stores[u.after[0]].saved(*u.after[1:]) or u.after in starting)]


def _execute(units, cfg, stores, on_done, say, held):
    if cfg.launcher == "slurm":
        return run_slurm(units, on_done, cfg, cfg.out, is_done=_saved_run(stores), held=held, log=say)
    if cfg.workers > 1:
        return run_local(units, on_done, cfg.workers, cfg.device, cfg.threads, log=say)
    return run_inprocess(units, on_done, threads=cfg.threads, progress=cfg.progress, log=say)


def _saved_run(stores):
    return lambda unit: stores[unit.cfg.out].saved(unit.strategy, unit.seed)


def _ordered_runs(cfg, store):
    """Every run in the folder: the planned strategies first, then any others earlier invocations
    left there, so the summary and figure cover the whole folder."""
    names = [n for n, _ in run_plan(cfg)]
    known = [*CORE, *STRATEGIES]
    others = sorted({n for n, _ in store.runs}, key=lambda n: (known.index(n) if n in known else len(known), n))
    order = list(dict.fromkeys(["standard", *names, *others]))
    return sorted(store.runs.values(), key=lambda r: (order.index(r["strategy"]), r["seed"]))


def summarise_cell(cfg, store, label, title_extra=""):
    """Write the cell's metrics.csv, summary.json and comparison_results.png; return (runs, summary)."""
    store.refresh().write_metrics()
    runs = _ordered_runs(cfg, store)
    summary = summarize(runs, target_frac=cfg.target_frac)
    summary["dataset"] = label
    plan = run_plan(cfg)
    summary["runs_planned"] = len(plan)
    summary["runs_saved"] = sum(store.done(n, s) is not None for n, s in plan)
    summary["complete"] = summary["runs_saved"] == summary["runs_planned"]
    store.write_summary(summary)
    model = f"{cfg.depth} x {cfg.hidden_size} MLP" if (cfg.depth, cfg.hidden_size) != (2, 512) else "MLP"
    title = (f"Alternating freezing vs standard training: {label}, {model}, {cfg.epochs} epochs, "
             f"batch {cfg.batch_size}, {cfg.optimizer.capitalize()} lr {cfg.lr:g}"
             + ("" if cfg.precision == "fp32" else f", {cfg.precision}") + title_extra)
    store.save_figure(plot_comparison(runs, summary, title=title))
    return runs, summary


def _finish(failed, out, log, result):
    """Say which runs did not finish and how to complete them (exit status 1), else return result."""
    if not failed:
        return result
    log(f"{len(failed)} run(s) did not finish: " + "; ".join(f"{u.label} ({why})" for u, why in failed[:3])
        + ("; ..." if len(failed) > 3 else "") + f". Finished runs are saved in {out}; rerun the same "
        f"command to complete the rest (unfinished runs resume from their last epoch)")
    raise Unfinished(len(failed))


def run_experiment(cfg: Config, log=print):
    """Run (or resume) every planned run, write all outputs into cfg.out; return (runs, summary).
    With cfg.grid, run the sweep instead (see run_sweep)."""
    check_config(cfg)
    if cfg.grid:
        return run_sweep(cfg, log)
    cfg = replace(cfg, out=cfg.out or default_out(cfg)).effective()
    log(f"results folder: {cfg.out}")
    if cfg.overwrite:
        _refuse_live_jobs(cfg, log)
    store, data = prepare_cell(cfg, cfg.overwrite)
    units = units_of(cfg, store)
    plan = run_plan(cfg)
    log(f"data: {data.label}, {len(data.y_train)} train / "
        + (f"{len(data.y_val)} validation / " if data.y_val is not None else "")
        + f"{len(data.y_test)} test images; device: {pick_device(cfg.device)}; {cfg.precision}; "
        f"{_plural(cfg.epochs, 'epoch')}; {_seed_range(cfg.seeds)}; {_plural(len(plan), 'run')}"
        + (f", {len(plan) - len(units)} already in {cfg.out} (skipped)" if len(units) < len(plan) else ""))
    failed = launch(units, cfg, {cfg.out: store}, log)
    if not cfg.wait and failed:
        log(f"submitted; rerun the same command to collect the results into {cfg.out}")
        return [], None
    runs, summary = summarise_cell(cfg, store, data.label)
    log(_completeness(summary) + format_table(summary))
    log(f"wrote config.json, metrics.csv, summary.json, comparison_results.png in {cfg.out}")
    return _finish(failed, cfg.out, log, (runs, summary))


def _completeness(summary):
    """A first line for tables of an unfinished set of runs; nothing when every run is saved."""
    if summary.get("complete", True):
        return ""
    return (f"INCOMPLETE: {summary['runs_saved']} of {summary['runs_planned']} planned runs are saved; "
            f"the table covers only those\n")


def _refuse_live_jobs(cfg, log):
    """--overwrite while SLURM jobs of the folder still run would let them save into the new
    folder: refuse, unless --cancel, which scancels them first."""
    jobs = live_jobs(cfg.out) if cfg.out else {}
    if not jobs:
        return
    ids = sorted(set(jobs.values()))
    if not cfg.cancel:
        raise ResultsError(f"--out {cfg.out} has {len(ids)} SLURM jobs still queued or running "
                           f"({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''}); --overwrite would "
                           f"let them save into the new folder: add --cancel to scancel them, or wait")
    cancel_jobs(ids)
    log(f"cancelled {len(ids)} SLURM jobs of {cfg.out}")


def _plural(n, word):
    return f"{n} {word}{'s' if n != 1 else ''}"


def _seed_range(seeds):
    seeds = seed_list(seeds)
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}-{seeds[-1]}"
    return "seeds " + ",".join(map(str, seeds))


class Unfinished(Exception):
    """Some runs did not finish (their workers or jobs died); a rerun completes them."""


def run_sweep(cfg: Config, log=print):
    """Every cell of cfg.grid, each with its usual outputs in a subfolder of cfg.out, then
    sweep.csv, sweep_summary.json and sweep_results.png over every cell in the folder. With
    --confirm-seeds N, each strategy's tuned choice (standard's included) then runs on N fresh
    seeds, plus equal-compute standard runs under --match-budget flops, and the tuned comparison
    reports only those fresh seeds."""
    cfg = replace(cfg, out=cfg.out or default_out(cfg))
    keys = [k for k, _ in cfg.grid]
    tune = tune_keys(cfg.tune, keys)
    if cfg.confirm_seeds and (not tune or not cfg.val_size):
        raise ConfigError("--confirm-seeds needs something to tune (--grid lr=... or --tune KEYS) and a "
                          "validation split (--val-size N) to choose it on")
    confirming = bool(cfg.confirm_seeds)
    # matched-budget runs belong to the confirmation when there is one, not to every cell
    cells = grid_cells(replace(cfg, match_budget="epochs") if confirming else cfg)
    base = {k: v for k, v in cells[0][1].result_key().items() if k not in keys}
    log(f"results folder: {cfg.out}")
    if cfg.overwrite:
        _refuse_live_jobs(cfg, log)
    sweep = SweepDir(cfg.out, base, keys, cfg.overwrite, defaults=DEFAULT_KEY)
    stores, units, labels, by_values = {}, [], {}, {}
    for values, cell in cells:
        cell = replace(cell, out=str(sweep.cell_path(values)))
        store, data = prepare_cell(cell, cell=values)
        stores[cell.out], labels[cell.out] = store, data.label
        by_values[tuple(sorted(values.items()))] = cell
        units += units_of(cell, store)
    total = sum(len(run_plan(c)) for _, c in cells)
    log(f"sweep: {len(cells)} cells ({' x '.join(f'{len(v)} {k}' for k, v in cfg.grid)}), "
        f"{_plural(total, 'run')}, {total - len(units)} already in {cfg.out} (skipped); data: {data.label}; "
        f"{cells[0][1].precision}")
    failed = launch(units, cfg, stores, log)
    if not cfg.wait and failed:
        log(f"submitted; rerun the same command to collect the results into {cfg.out}")
        return [], None
    selection = seed_list(cells[0][1].seeds)
    fresh, confirming_units = None, []
    if confirming and not failed:
        fresh = list(range(max(selection) + 1, max(selection) + 1 + cfg.effective().confirm_seeds))
        done = [(v, list(stores[str(sweep.cell_path(v))].refresh().runs.values())) for v, _ in cells]
        tuned, _ = tuned_comparison(done, keys, "standard", tune, cfg.metric, selection)
        confirming_units = confirmation_units(tuned, by_values, fresh, cfg.match_budget == "flops")
        units = [u for u in confirming_units if not stores[u.cfg.out].done(u.strategy, u.seed)]
        log(f"confirmation: {_plural(len(units), 'run')} to go on fresh {_seed_range(tuple(fresh))} "
            f"(each strategy at its tuned choice" + (", plus equal-compute standard runs)"
                                                     if cfg.match_budget == "flops" else ")"))
        failed += launch(units, cfg, stores, log)
    done, saved, planned = [], 0, 0
    per_cell = replace(cfg, match_budget="epochs") if confirming else cfg  # as planned above
    for values, folder in sweep.cells():
        cell = replace(per_cell, **values, grid=(), out=str(folder)).effective()
        store = stores.get(str(folder)) or open_cell(cell)
        runs, s = summarise_cell(cell, store, labels.get(str(folder), data.label),
                                 f"\nsweep cell {cell_label(values)}")
        saved, planned = saved + s["runs_saved"], planned + s["runs_planned"]
        done.append((values, runs))
    planned += len(confirming_units)
    saved += sum(stores[u.cfg.out].refresh().done(u.strategy, u.seed) is not None for u in confirming_units)
    summary = summarize_sweep(done, keys, target_frac=cfg.target_frac, metric=cfg.metric, tune=tune,
                              selection_seeds=selection, confirm_seeds=fresh)
    summary.update(dataset=data.label, runs_saved=saved, runs_planned=planned, complete=saved == planned)
    sweep.write_table(sweep_csv(summary))
    sweep.write_summary(summary)
    run_cfg = cfg.effective()
    shared = ", ".join(v for k, v in (("epochs", _plural(run_cfg.epochs, "epoch")),
                                      ("seeds", _plural(len(seed_list(run_cfg.seeds)), "seed")),
                                      ("precision", cfg.precision)) if k not in keys)
    sweep.save_figure(plot_sweep(summary, title=f"{data.label}: freezing schedules vs standard ({shared})"))
    if fresh is not None:
        sweep.save_figure(plot_accuracy_flops(summary, done, title=f"{data.label}: confirmed on fresh seeds"),
                          "accuracy_vs_flops.png")
    log(_completeness(summary) + format_sweep(summary))
    log(f"wrote sweep.csv, sweep_summary.json, sweep_results.png and {len(done)} cell folders in {cfg.out}")
    return _finish(failed, cfg.out, log, (done, summary))


def confirmation_units(tuned, cells, seeds, matched):
    """Units that confirm a tuned comparison: each strategy's chosen cell on the fresh seeds and,
    with `matched`, a standard run in standard's chosen cell stopped at the FLOPs of each
    strategy that trained with fewer FLOPs than standard (on the selection seeds)."""
    units = []
    for g in tuned:
        ref = g["strategies"].get("standard") or {}
        ref_cell = cells.get(tuple(sorted(ref["cell"].items()))) if ref.get("cell") else None
        ref_flops = _mean_flops(ref)
        for name, e in g["strategies"].items():
            if not e.get("cell"):
                continue
            cell = cells[tuple(sorted(e["cell"].items()))]
            units += [Unit(cell, name, s) for s in seeds]
            if matched and name != "standard" and ref_cell is not None and _mean_flops(e) < ref_flops:
                units += [Unit(ref_cell, matched_name("flops", name), s, after=(cell.out, name, s))
                          for s in seeds]
    return units


def _mean_flops(entry):
    return entry.get("train_flops_mean") or float("inf")


# --- command line -----------------------------------------------------------------
class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # one line naming the problem, no usage dump
        self.exit(2, f"error: {message}; see python experiments.py --help\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Every option shows its real default: on/off switches say so, and options whose default is
    None say in their help what that means (a test holds every flag to this)."""

    def _get_help_string(self, action):
        h = action.help or ""
        if not action.option_strings or "default" in h or action.default is argparse.SUPPRESS:
            return h
        if isinstance(action, argparse._StoreTrueAction):
            return h + " (default: off)"
        if action.default is None or action.default == [] or isinstance(action, argparse._StoreFalseAction):
            return h
        return h + " (default: %(default)s)"


class _ListStrategies(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        print(strategy_table())
        parser.exit()


def strategy_table():
    """Every named strategy and what it does, as a plain-text table."""
    from stats import text_table
    rows = [[n, s.description if s else "halves switch every --switch-every batches"]
            for n, s in STRATEGIES.items()]
    rows += [["alternating-K", "halves switch every K batches (any whole number K)"],
             ["standard@flops", "standard, stopped at --match-to's training FLOPs (--match-budget flops)"],
             ["standard@time", "standard, stopped at --match-to's training seconds (--match-budget time)"]]
    return text_table(["strategy", "what it does"], rows)


def version_line():
    from runs import code_version
    c = code_version()
    dirty = " (with uncommitted changes)" if c["dirty"] is True else ""
    return f"alternating-freeze {VERSION}, git commit {c['commit']}{dirty}"


def _type(name):
    """argparse type for a setting, from the one parser config.py keeps for it."""
    def parse(text):
        try:
            return PARSERS[name](text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parse.__name__ = name
    return parse


def parse_args(argv=None):
    p = build_parser()
    a = vars(p.parse_args(argv))
    for kv in a["slurm_args"]:
        if "=" not in kv or not kv.split("=", 1)[0]:
            p.error(f"argument --slurm-arg: expected KEY=VALUE, got {kv!r}")
    a["tune"] = tuple(k.strip().replace("-", "_") for k in a["tune"].split(",") if k.strip())
    return replace(Config(), **{**a, "strategies": expand_strategies(a["strategies"]),
                                "grid": parse_grid(a["grid"]), "slurm_args": tuple(a["slurm_args"])})


def build_parser():
    """The command line: one flag per Config setting, defaults taken from Config."""
    d = Config()
    p = _OneLineParser(description=__doc__.split("\n")[0], formatter_class=_HelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=d.dataset, choices=DATASETS,
                   help="cifar10, cifar100, mnist, fashion-mnist, svhn (torchvision: downloaded into "
                        "--data-dir, or read from it offline), folder (ImageFolder with train/ and "
                        "test/), or synthetic (generated, no files)")
    g.add_argument("--data-dir", default=d.data_dir, metavar="DIR", help="where the data lives")
    g.add_argument("--train-size", type=_type("train_size"), default=d.train_size,
                   metavar="N", help="use a seeded random subset of N training images (default: all)")
    g.add_argument("--test-size", type=_type("test_size"), default=d.test_size,
                   metavar="N", help="use a seeded random subset of N test images (default: all)")
    g.add_argument("--val-size", type=_type("val_size"), default=d.val_size, metavar="N",
                   help="hold out this many training images for validation (the same ones for every "
                        "strategy and seed); anything selected is selected on them")
    g = p.add_argument_group("the experiment")
    g.add_argument("--epochs", type=_type("epochs"), default=d.epochs, metavar="N", help="epochs per run")
    g.add_argument("--batch-size", type=_type("batch_size"), default=d.batch_size, metavar="N",
                   help="training batch size")
    g.add_argument("--lr", type=_type("lr"), default=d.lr, metavar="LR", help="learning rate")
    g.add_argument("--optimizer", default=d.optimizer, choices=("adam", "adamw", "sgd"),
                   help="one optimizer persists across switches (its state kept)")
    g.add_argument("--seeds", type=_type("seeds"), default=d.seeds, metavar="N|A-B|A,B,...",
                   help="seeds 0..N-1, a range A-B or a list; a seed fixes initial weights and data order "
                        "for all strategies")
    g.add_argument("--weight-decay", type=_type("weight_decay"), default=d.weight_decay, metavar="WD",
                   help="adam: L2 penalty added to the gradient; adamw: decoupled decay")
    g.add_argument("--lr-schedule", default=d.lr_schedule, choices=("constant", "cosine", "linear"),
                   help="run-wide lr factor per step, decaying to 0 at the run's last step")
    g.add_argument("--warmup-epochs", type=_type("warmup_epochs"), default=d.warmup_epochs, metavar="N",
                   help="linear lr warmup before the schedule")
    g.add_argument("--strategies", default=",".join(d.strategies) if d.strategies != CORE else "core",
                   metavar="LIST",
                   help=f"comma list of strategies (see --list-strategies), 'core' ({', '.join(CORE)}) "
                        "or 'all'")
    g.add_argument("--switch-every", type=_type("switch_every"), default=d.switch_every, metavar="K",
                   help="K batches for the alternating-k strategy")
    g.add_argument("--lr-first", type=_type("lr_first"), default=d.lr_first, metavar="LR",
                   help="gan-style: first half's learning rate (default: --lr)")
    g.add_argument("--lr-second", type=_type("lr_second"), default=d.lr_second, metavar="LR",
                   help="gan-style: second half's learning rate (default: 4 x --lr)")
    g.add_argument("--freeze-bn-stats", action="store_true",
                   help="frozen half's BatchNorm running statistics stay fixed too")
    g.add_argument("--match-budget", default=d.match_budget, choices=("epochs", "flops", "time"),
                   help="flops/time: add a standard run stopped at the FLOPs or seconds that "
                        "--match-to used with the same seed")
    g.add_argument("--match-to", default=d.match_to, metavar="STRATEGY[,...]",
                   help="reference strategies for --match-budget (in a confirmed sweep: every strategy "
                        "that used fewer FLOPs than standard)")
    g.add_argument("--target-frac", type=_type("target_frac"), default=d.target_frac, metavar="F",
                   help="epochs-to-target uses this fraction of standard's mean final accuracy")
    g.add_argument("--metric", default=d.metric, choices=("final", "early-stopped"),
                   help="test accuracy that tables and the tuned comparison report: after the last epoch, "
                        "or at the epoch of best validation accuracy (needs --val-size)")
    g = p.add_argument_group("model and numerics")
    g.add_argument("--depth", type=_type("depth"), default=d.depth, metavar="N", help="hidden blocks")
    g.add_argument("--split", type=_type("split"), default=d.split, metavar="N",
                   help="hidden blocks in the first half (default: depth // 2, at least 1)")
    g.add_argument("--hidden-size", type=_type("hidden_size"), default=d.hidden_size, metavar="N",
                   help="width of every hidden block")
    g.add_argument("--dropout", type=_type("dropout"), default=d.dropout, metavar="P",
                   help="dropout probability after every hidden block")
    g.add_argument("--precision", default=d.precision, choices=("fp32", "bf16", "tf32"),
                   help="fp32; bf16 autocast with fp32 weights and optimizer state; tf32 (CUDA only)")
    g = p.add_argument_group("sweeps")
    g.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="vary a setting (repeatable; the cells are the product): e.g. --grid "
                        "lr=3e-4,1e-3,3e-3 --grid depth=2,4 (default: no grid, one experiment)")
    g.add_argument("--tune", default=",".join(d.tune), metavar="KEY[,KEY...]",
                   help="grid keys each strategy tunes on validation accuracy, per group of cells that "
                        "agree on the others (default: lr, when lr is gridded)")
    g.add_argument("--confirm-seeds", type=_type("confirm_seeds"), default=d.confirm_seeds, metavar="N",
                   help="after tuning, run each strategy's choice on N fresh seeds (numbered after the "
                        "tuning seeds); the tuned comparison then reports only those")
    g = p.add_argument_group("running")
    g.add_argument("--device", default=d.device, metavar="DEV",
                   help="auto (CUDA, then MPS, else CPU), cpu, cuda, cuda:N, mps")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--out", default=d.out, metavar="DIR",
                   help="results folder (default: results/<dataset and the settings that differ from "
                        "the defaults>; dry runs: results/dry-run/...)")
    g.add_argument("--overwrite", action="store_true",
                   help="discard results already in --out instead of resuming")
    g.add_argument("--dry-run", action="store_true",
                   help="smoke check: 1 epoch of 4 batches per strategy, 1 seed")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   help="turn off the progress bars (shown by default)")
    g = p.add_argument_group("launching runs")
    g.add_argument("--launcher", default=d.launcher, choices=("local", "slurm"),
                   help="local: --workers processes on this machine; slurm: a job array via submitit")
    g.add_argument("--workers", type=_type("workers"), default=d.workers, metavar="N",
                   help="local: concurrent run processes (torch threads are split between them; "
                        "spread over the GPUs if there are several)")
    g.add_argument("--threads", type=_type("threads"), default=d.threads, metavar="N",
                   help="torch threads per run (default: cores / workers; slurm: --slurm-cpus-per-task)")
    g.add_argument("--slurm-partition", default=d.slurm_partition, metavar="NAME",
                   help="partition to submit to (default: the cluster's default partition)")
    g.add_argument("--slurm-time", type=_type("slurm_time"), default=d.slurm_time, metavar="TIME",
                   help="time limit per job: minutes, or [D-]HH:MM:SS as sbatch takes it (default: 60 minutes)")
    g.add_argument("--slurm-cpus-per-task", type=_type("slurm_cpus_per_task"), default=d.slurm_cpus_per_task,
                   metavar="N", help="CPU cores per job (and its torch threads)")
    g.add_argument("--slurm-gpus-per-task", type=_type("slurm_gpus_per_task"), default=d.slurm_gpus_per_task,
                   metavar="N", help="GPUs per job")
    g.add_argument("--slurm-mem", default=d.slurm_mem, metavar="MEM",
                   help="memory per job, as sbatch --mem takes it (e.g. 8G; default: the cluster's)")
    g.add_argument("--slurm-array-parallelism", type=_type("slurm_array_parallelism"),
                   default=d.slurm_array_parallelism, metavar="N",
                   help="at most N array tasks at once (default: no limit)")
    g.add_argument("--slurm-max-requeues", type=_type("slurm_max_requeues"), default=d.slurm_max_requeues,
                   metavar="N", help="requeues of a job after a timeout or preemption")
    g.add_argument("--cancel", action="store_true",
                   help="with --overwrite: scancel the folder's live SLURM jobs first (without it, "
                        "--overwrite refuses while they run)")
    g.add_argument("--slurm-arg", dest="slurm_args", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. --slurm-arg account=mylab (repeatable; default: none)")
    g.add_argument("--no-wait", dest="wait", action="store_false",
                   help="slurm: do not wait for the jobs (waiting is the default): submit and return; rerun "
                        "the same command to collect the results")
    g = p.add_argument_group("information")
    g.add_argument("--list-strategies", action=_ListStrategies, nargs=0, default=argparse.SUPPRESS,
                   help="print every strategy with what it does, and exit")
    g.add_argument("--version", action="version", version=version_line(),
                   help="print the suite's version and git commit, and exit")
    return p


def main(argv=None):
    cfg = None
    try:
        cfg = parse_args(argv)
        run_experiment(cfg)
    except (ConfigError, DataError, ResultsError, LaunchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Unfinished:
        return 1
    except KeyboardInterrupt:
        out = (cfg.out or default_out(cfg)) if cfg else "--out"
        print(f"\ninterrupted: finished runs are saved in {out}, and the run in progress keeps its "
              f"last finished epoch; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
