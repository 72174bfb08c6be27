"""Run the comparison: every strategy on the same seeds, then a summary table and a figure.

    python experiments.py                       # CIFAR-10, core strategies, 3 seeds
    python experiments.py --dataset folder --data-dir DIR --seeds 5
    python experiments.py --dataset synthetic --dry-run
    python experiments.py --dataset fashion-mnist --val-size 5000 --grid lr=1e-3,3e-3 --grid depth=2,4

Library use: `run_experiment(Config(...))` returns (runs, summary); with `Config.grid` set it
runs the sweep and returns (cells, sweep summary).
"""
from __future__ import annotations

import sys

if __name__ == "__main__":  # Ctrl-C while the slow imports below load: one line and 130, no traceback
    def _interrupted(kind, value, tb, default=sys.excepthook):
        if issubclass(kind, KeyboardInterrupt):
            print("\ninterrupted before anything started", file=sys.stderr, flush=True)
            import os
            os._exit(130)
        default(kind, value, tb)
    sys.excepthook = _interrupted

import argparse
import os
import platform
import shutil
import tempfile
import time
from dataclasses import replace

from config import (DEFAULT_KEY, RETIRED, SETTINGS, VERSION, Config, ConfigError, cell_key, check_config,
                    default_out, grid_keys, seed_list)
from data import DataError
from launchers import (HELD, LaunchError, cancel_jobs, live_jobs, run_inprocess, run_local, run_slurm,
                       unit_id)
from results import ResultsError, SweepDir, warn
from records import Environment
from runs import RunRef, Unit, data_facts, dataset_for, environment, open_cell, run_line
from stats import format_table, summarize
from plugins import PluginError
from strategies import STRATEGIES, RunName, StrategyError, check_portable, load_plugins
from workloads import WorkloadError, lookup as workload_of
from sweep import (cell_label, format_sweep, grid_cells, summarize_sweep, sweep_csv, tune_keys,
                   tuned_comparison)
from training_loop import Progress, ScheduleError, pick_device


def run_plan(cfg):
    """(RunName, seed) pairs in order: seed-major, so an interrupted sweep leaves whole seeds.
    A matched-budget standard run follows the run it is matched to."""
    names = list(cfg.strategies)
    targets = [RunName(t) for t in cfg.match_to] if cfg.match_budget != "epochs" else []
    names += [t for t in targets if t not in names]
    plan = []
    for seed in seed_list(cfg.seeds):
        for name in names:
            plan.append((name, seed))
            if name in targets:
                plan.append((RunName.matched(cfg.match_budget, name.strategy), seed))
    return plan


def prepare_cell(cfg, overwrite=False, cell=None):
    """Open (or create) the cell's folder and record its settings and data; return the store."""
    device = pick_device(cfg.device) if cfg.launcher == "local" and cfg.workers == 1 else "cpu"
    data = dataset_for(cfg, device)  # first: bad data must not leave an empty results folder behind
    store = open_cell(cfg, overwrite)
    store.write_config(cfg.to_json(), {
        **_submit_environment(cfg), "dataset_label": data.label, "plugins": load_plugins(cfg.plugins),
        "data_fingerprint": data.fingerprint(), **data_facts(cfg, data),
        **({"cell": cell} if cell is not None else {})})
    return store, data


def _submit_environment(cfg):
    """The environment config.json records for this invocation. Under SLURM the device is the
    nodes' business (this host may have no GPU): each run's file records the node's own."""
    if cfg.launcher == "local":
        return environment(pick_device(cfg.device))
    return {**environment("cpu"), "device": f"{cfg.device} (chosen on each SLURM node)", "device_name": None}


def units_of(cfg, store, refused, log=print):
    """The cell's planned runs that are not saved yet, as units. A stored run or checkpoint that other
    code made (its identity differs from what would run now) is refused, and only it: not reused and
    not trained over, but named in `refused`; with --discard-stale it is deleted, said, and trained
    again. The folder's other runs stay usable."""
    units = []
    for name, seed in run_plan(cfg):
        if not usable(cfg, store, name, seed, refused, log):
            continue
        if not store.runs.saved(name, seed):
            after = RunRef(cfg.out, RunName(name.reference), seed) if name.budget else None
            units.append(Unit(cfg, name, seed, after=after))
    return units


def usable(cfg, store, name, seed, refused, log):
    """False for a stale run or checkpoint of (name, seed), which then goes into `refused`; with
    --discard-stale, its files are deleted (and listed) and it counts as never run."""
    why = store.runs.stale(name, seed) or store.checkpoints.stale(name, seed)
    if why is None:
        return True
    if cfg.discard_stale:
        store.discard(name, seed)
        log(f"discarded {name} seed {seed} in {store.path} (and its checkpoint): {why}")
        return True
    refused.append(f"{name} seed {seed} in {store.path} ({why})")
    return False


def launch(units, cfg, stores, log, poll_s=1.0):
    """Execute units with the configured launcher; print a line per finished run and keep each
    cell's metrics.csv current. Runs that other executors hold (their lease, or a live SLURM job
    of this folder) are waited for, and taken up here if their holder dies. Returns the units
    that did not finish, with reasons."""
    bar = Progress(len(units), "runs", cfg.progress and cfg.launcher != "slurm")
    say = bar.write if log is print else log  # lines above a bar on a terminal; plain lines elsewhere
    finished = set()

    def on_done(unit, run, by=None):
        """`by` handed the run back: it trained it when the run records its pid (or a SLURM job of
        this submission did); otherwise another process saved it, and the line says so."""
        finished.add(unit)
        env = run.environment or Environment()
        say(run_line(run, ours=by == "slurm" or (env.pid == by and env.host == platform.node())))
        stores[unit.cfg.out].runs.refresh()
        stores[unit.cfg.out].write_metrics()
        bar.update()

    def holder(u):
        return stores[u.cfg.out].leases.holder(u.name, u.seed)

    saved = _saved_run(stores)
    pending, failed, waiting_said = list(units), [], False
    try:
        while pending:
            slurm_held = {} if cfg.launcher == "slurm" else live_jobs(cfg.out)
            held = {u for u in pending if holder(u) is not None or unit_id(u) in slurm_held}
            ready = _ready(pending, held, stores)
            result = _execute(ready, cfg, stores, on_done, say,
                              lambda u: u in held or holder(u) is not None) if ready else []
            failed_now = [(u, why) for u, why in result if why != HELD]
            failed += failed_now
            gone = finished | {u for u, _ in failed_now}
            pending = [u for u in pending if u not in gone]
            for u in list(pending):
                run = saved(u)
                if run is not None:
                    on_done(u, run, None)  # another process trained it
                    pending.remove(u)
                elif u.after and not _is_saved(stores, u.after) and not any(v.ref == u.after for v in pending):
                    failed.append((u, f"its reference run {u.after.name} seed {u.after.seed} did not finish"))
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
    first = [u for u in pending if u not in held and u.after is None]
    starting = {u.ref for u in first}
    return first + [u for u in pending if u not in held and u.after is not None and
                    (_is_saved(stores, u.after) or u.after in starting)]


def _execute(units, cfg, stores, on_done, say, held):
    if cfg.launcher == "slurm":
        return run_slurm(units, on_done, cfg, cfg.out, is_done=_saved_run(stores), held=held, log=say)
    if cfg.workers > 1:
        return run_local(units, on_done, cfg.workers, cfg.device, cfg.threads, log=say)
    return run_inprocess(units, on_done, threads=cfg.threads, progress=cfg.progress and sys.stderr.isatty(),
                         log=say)


def _saved_run(stores):
    return lambda unit: stores[unit.cfg.out].runs.saved(unit.name, unit.seed)


def _is_saved(stores, ref):
    """Whether the run `ref` (a RunRef) is saved in its folder, opened by this invocation."""
    return stores[ref.folder].runs.saved(ref.name, ref.seed) is not None


def _ordered_runs(cfg, store):
    """Every run in the folder: the planned strategies first, then any others earlier invocations
    left there, so the summary and figure cover the whole folder."""
    names = [n for n, _ in run_plan(cfg)]
    known = list(STRATEGIES)
    others = sorted({r.name for r in store.runs.all()},
                    key=lambda n: (known.index(str(n)) if str(n) in known else len(known), str(n)))
    order = list(dict.fromkeys([RunName.parse("standard"), *names, *others]))
    return sorted(store.runs.all(), key=lambda r: (order.index(r.name), r.seed))


def summarise_cell(cfg, store, label, title_extra=""):
    """Write the cell's metrics.csv, summary.json and comparison_results.png; return (runs, summary)."""
    store.runs.refresh()
    for path, why in store.runs.excluded.items():
        warn(f"{path} is not counted: {why}")
    store.write_metrics()
    runs = _ordered_runs(cfg, store)
    plan = run_plan(cfg)
    saved = sum(store.runs.saved(n, s) is not None for n, s in plan)
    summary = replace(summarize(runs, target_frac=cfg.target_frac), dataset=label, runs_planned=len(plan),
                      runs_saved=saved, complete=saved == len(plan),
                      bigram_bits=store.settings.previous.get("bigram_test_bits_per_char"))
    store.write_summary(summary)
    model = workload_of(cfg.workload).describe(cfg.model_settings())
    title = (f"Freezing schedules vs standard training: {label}, {model}, {cfg.epochs} epochs, "
             f"batch {cfg.batch_size}, {cfg.optimizer.capitalize()} lr {cfg.lr:g}"
             + ("" if cfg.precision == "fp32" else f", {cfg.precision}") + title_extra)
    from plots import plot_comparison  # matplotlib loads only where a figure is drawn, not in workers
    store.save_figure(plot_comparison(runs, summary, title=title))
    return runs, summary


def _finish(failed, out, log, result, refused=()):
    """Say which runs did not finish or were refused, and how to complete them (exit status 1),
    else return result."""
    if refused:
        log(f"{_plural(len(refused), 'stored run')} made by other code than would run now were refused (not reused, "
            f"not trained over): " + "; ".join(refused[:3]) + ("; ..." if len(refused) > 3 else "")
            + ". Rerun with --discard-stale to delete exactly those and train them again (--overwrite discards "
            "the whole folder)")
    if failed:
        log(f"{len(failed)} run(s) did not finish: " + "; ".join(f"{u.label} ({why})" for u, why in failed[:3])
            + ("; ..." if len(failed) > 3 else "") + f". Finished runs are saved in {out}; rerun the same "
            f"command to complete the rest (unfinished runs resume from their last epoch)")
    if failed or refused:
        raise Unfinished(len(failed) + len(refused))
    return result


SCRATCH = "altfreeze-dry-run-"  # a dry run's own folder, in the temp directory


def run_experiment(cfg: Config, log=print):
    """Run (or resume) every planned run, write all outputs into cfg.out; return (runs, summary).
    With cfg.grid, run the sweep instead (see run_sweep). A dry run trains in a scratch folder of
    its own (unless --out names one), which it removes when it ends."""
    check_config(cfg)
    check_portable(cfg.strategies, cfg.workers > 1 or cfg.launcher == "slurm")
    if cfg.dry_run and cfg.out is None:
        scratch = tempfile.mkdtemp(prefix=SCRATCH)
        try:
            return run_experiment(replace(cfg, out=scratch, overwrite=True), log)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    if cfg.grid:
        return run_sweep(cfg, log)
    cfg = replace(cfg, out=cfg.out or default_out(cfg), overwrite=cfg.overwrite or cfg.dry_run).effective()
    scratch = cfg.dry_run and os.path.basename(cfg.out).startswith(SCRATCH)
    log(f"results folder: {cfg.out}" + (" (a dry run: removed when it ends)" if scratch else ""))
    if cfg.overwrite:
        _refuse_live_jobs(cfg, log)
    store, data = prepare_cell(cfg, cfg.overwrite)
    refused = []
    units = units_of(cfg, store, refused, log)
    plan = run_plan(cfg)
    log(f"data: {_data_line(cfg, data)}; {workload_of(cfg.workload).describe(cfg.model_settings())}; "
        f"device: {pick_device(cfg.device)}; {cfg.precision}; "
        f"{_plural(cfg.epochs, 'epoch')}; {_seed_range(cfg.seeds)}; {_plural(len(plan), 'run')}"
        + (f", {len(plan) - len(units) - len(refused)} already in {cfg.out} (skipped)"
           if len(units) + len(refused) < len(plan) else "")
        + (f", {len(refused)} refused (made by other code)" if refused else ""))
    failed = launch(units, cfg, {cfg.out: store}, log)
    if not cfg.wait and failed:
        log(f"submitted; rerun the same command to collect the results into {cfg.out}")
        return [], None
    runs, summary = summarise_cell(cfg, store, data.label)
    log(_completeness(summary) + format_table(summary))
    log(f"dry run done: every stage ran; its scratch folder {cfg.out} is removed now" if scratch else
        f"wrote config.json, metrics.csv, summary.json, comparison_results.png in {cfg.out}")
    return _finish(failed, cfg.out, log, (runs, summary), refused)


def _data_line(cfg, data):
    """'CIFAR-10 (JPEG copy), 45000 train / 5000 validation / 10000 test images', or for text the
    characters of each split and the test characters scored."""
    if data.kind == "text":
        facts = data_facts(cfg, data)
        return (f"{data.label}; {len(data.x_train)} train / "
                + (f"{len(data.x_val)} validation / " if data.x_val is not None else "")
                + f"{len(data.x_test)} test characters ({facts['test_samples']} scored), vocabulary "
                f"{facts['vocabulary']}; a bigram model: {facts['bigram_test_bits_per_char']:.3f} test bits/char")
    return (f"{data.label}, {len(data.y_train)} train / "
            + (f"{len(data.y_val)} validation / " if data.y_val is not None else "")
            + f"{len(data.y_test)} test images")


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
    keys = grid_keys(cfg.grid)
    tune = tune_keys(cfg.tune, keys)
    variants = len({n.strategy for n in cfg.strategies}) > len({n.strategy.base for n in cfg.strategies})
    if cfg.confirm_seeds and (not (tune or variants) or not cfg.val_size):
        raise ConfigError("--confirm-seeds needs something to tune (--grid lr=..., --tune KEYS, or variants "
                          "of a strategy's knobs) and a validation split (--val-size N) to choose it on")
    confirming = bool(cfg.confirm_seeds)
    # matched-budget runs belong to the confirmation when there is one, not to every cell
    cells = grid_cells(replace(cfg, match_budget="epochs") if confirming else cfg)
    base = {k: v for k, v in cells[0][1].result_key().items() if k not in keys}
    log(f"results folder: {cfg.out}")
    if cfg.overwrite:
        _refuse_live_jobs(cfg, log)
    sweep = SweepDir(cfg.out, base, keys, cfg.overwrite, defaults=DEFAULT_KEY)
    stores, units, labels, by_values, refused = {}, [], {}, {}, []
    for values, cell in cells:
        cell = replace(cell, out=str(sweep.cell_path(values)))
        store, data = prepare_cell(cell, cell=values)
        stores[cell.out], labels[cell.out] = store, data.label
        by_values[cell_key(values)] = cell
        units += units_of(cell, store, refused, log)
    total = sum(len(run_plan(c)) for _, c in cells)
    axes = " x ".join(f"{len(v)} {'+'.join(k) if isinstance(k, tuple) else k}" for k, v in cfg.grid)
    log(f"sweep: {len(cells)} cells ({axes}), "
        f"{_plural(total, 'run')}, {total - len(units) - len(refused)} already in {cfg.out} (skipped)"
        + (f", {len(refused)} refused (made by other code)" if refused else "") + f"; data: {data.label}; "
        f"{cells[0][1].precision}")
    failed = launch(units, cfg, stores, log)
    if not cfg.wait and failed:
        log(f"submitted; rerun the same command to collect the results into {cfg.out}")
        return [], None
    selection = seed_list(cells[0][1].seeds)
    fresh, confirming_units = None, []
    if confirming and not failed:
        fresh = list(range(max(selection) + 1, max(selection) + 1 + cfg.effective().confirm_seeds))
        done = [(v, stores[str(sweep.cell_path(v))].runs.refresh().all()) for v, _ in cells]
        tuned, _ = tuned_comparison(done, keys, "standard", tune, cfg.metric, selection, margin=cfg.margin)
        confirming_units = [u for u in confirmation_units(tuned, by_values, fresh, cfg.match_budget == "flops")
                            if usable(cfg, stores[u.cfg.out], u.name, u.seed, refused, log)]
        units = [u for u in confirming_units if not stores[u.cfg.out].runs.saved(u.name, u.seed)]
        log(f"confirmation: {_plural(len(units), 'run')} to go on fresh {_seed_range(tuple(fresh))} "
            f"(each strategy at its tuned choice" + (", plus equal-compute standard runs)"
                                                     if cfg.match_budget == "flops" else ")"))
        failed += launch(units, cfg, stores, log)
    done, saved, planned, bigram = [], 0, 0, None
    per_cell = replace(cfg, match_budget="epochs") if confirming else cfg  # as planned above
    for values, folder in sweep.cells():
        cell = replace(per_cell, **values, grid=(), out=str(folder)).effective()
        store = stores.get(str(folder)) or open_cell(cell)
        runs, s = summarise_cell(cell, store, labels.get(str(folder), data.label),
                                 f"\nsweep cell {cell_label(values)}")
        saved, planned = saved + s["runs_saved"], planned + s["runs_planned"]
        bigram = s["bigram_bits"]  # text workloads: the same for every cell (one dataset)
        done.append((values, runs))
    planned += len(confirming_units)
    saved += sum(stores[u.cfg.out].runs.saved(u.name, u.seed) is not None for u in confirming_units)
    summary = summarize_sweep(done, keys, target_frac=cfg.target_frac, metric=cfg.metric, tune=tune,
                              selection_seeds=selection, confirm_seeds=fresh, margin=cfg.margin)
    summary = replace(summary, dataset=data.label, runs_saved=saved, runs_planned=planned, complete=saved == planned,
                      bigram_bits=bigram)
    sweep.write_table(sweep_csv(summary))
    sweep.write_summary(summary)
    run_cfg = cfg.effective()
    shared = ", ".join(v for k, v in (("epochs", _plural(run_cfg.epochs, "epoch")),
                                      ("seeds", _plural(len(seed_list(run_cfg.seeds)), "seed")),
                                      ("precision", cfg.precision)) if k not in keys)
    from plots import plot_accuracy_flops, plot_sweep
    sweep.save_figure(plot_sweep(summary, title=f"{data.label}: freezing schedules vs standard ({shared})"))
    if fresh is not None:
        sweep.save_figure(plot_accuracy_flops(summary, done, title=f"{data.label}: confirmed on fresh seeds"),
                          "accuracy_vs_flops.png")
    log(_completeness(summary) + format_sweep(summary))
    log(f"wrote sweep.csv, sweep_summary.json, sweep_results.png and {len(done)} cell folders in {cfg.out}")
    return _finish(failed, cfg.out, log, (done, summary), refused)


def confirmation_units(tuned, cells, seeds, matched):
    """Units that confirm a tuned comparison: each strategy's chosen candidate (its cell and knob
    variant) on the fresh seeds and, with `matched`, a standard run in standard's chosen cell
    stopped at the FLOPs of each strategy that trained with fewer FLOPs than standard (on the
    selection seeds)."""
    units = []
    for g in tuned:
        ref = g["strategies"].get("standard") or {}
        ref_cell = cells.get(cell_key(ref["cell"])) if ref.get("cell") else None
        ref_flops = _mean_flops(ref)
        for name, e in g["strategies"].items():
            if not e.get("cell"):
                continue
            cell, variant = cells[cell_key(e.cell)], e.variant
            units += [Unit(cell, variant, s) for s in seeds]
            if matched and name != "standard" and ref_cell is not None and _mean_flops(e) < ref_flops:
                units += [Unit(ref_cell, RunName.matched("flops", variant.strategy), s, after=RunRef(cell.out, variant, s))
                          for s in seeds]
    return units


def _mean_flops(entry):
    return entry.get("train_flops_mean") or float("inf")


# --- command line -----------------------------------------------------------------
class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # one line naming the problem, no usage dump
        message = message[len("argument "):] if message.startswith("argument --") else message
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


class _ListWorkloads(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        print(workload_table())
        parser.exit()


def workload_table():
    """Every registered workload (built-in and from plugins), the data it learns from, its settings
    with their defaults, and what it is, as a plain-text table."""
    from stats import text_table
    from workloads import DESCRIPTIONS, WORKLOADS
    from config import flag
    rows = [[name, w.data, ", ".join(f"{flag(k)} {_value(v)}" for k, v in w.settings.items()) or "-",
             DESCRIPTIONS[name]] for name, w in WORKLOADS.items()]
    return (text_table(["workload", "data", "settings (defaults)", "what it is"], rows)
            + "\nchoose one with --workload NAME; a setting it does not list is refused")


def _value(v):
    if v is None:
        return "(derived)"
    if isinstance(v, bool):
        return "on" if v else "off"
    return format(v, "g") if isinstance(v, float) else str(v)


def strategy_table():
    """Every registered strategy (built-in and from plugins), its knobs with their defaults, and
    what it does, as a plain-text table."""
    from stats import text_table
    from strategies import table_rows
    rows = table_rows()
    rows += [["alternating-K", "-", "alternating-k[every=K], for any whole number K"],
             ["standard@flops=S", "-", "standard, stopped at S's training FLOPs (--match-budget flops)"],
             ["standard@time=S", "-", "standard, stopped at S's training seconds (--match-budget time)"]]
    return (text_table(["strategy", "knobs (defaults)", "what it does"], rows)
            + "\nset knobs in the name: freezeout[t0=0.5,cubic=false]; variants: freezeout[t0=0.5|0.8]")


def version_line():
    from runs import code_version
    c = code_version()
    dirty = " (with uncommitted changes)" if c["dirty"] is True else ""
    return f"alternating-freeze {VERSION}, git commit {c['commit']}{dirty}"


def _type(setting):
    """argparse type for a setting: the one parser its declaration holds."""
    def parse(text):
        try:
            return setting.parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parse.__name__ = setting.name
    return parse


def _retired(name):
    def parse(text):
        raise argparse.ArgumentTypeError(RETIRED[name])
    return parse


def _shown(setting):
    """A setting's default as --help shows it."""
    v = setting.default
    if setting.switch:
        return "on" if v else "off"
    if v is None or v == ():
        return setting.none or "none"
    if setting.name == "strategies" and v == Config().strategies:
        return "core"
    if isinstance(v, tuple):
        return ",".join(map(str, v))
    return format(v, "g") if isinstance(v, float) else str(v)


def build_parser():
    """The command line: one flag per setting, everything about it from its declaration."""
    p = _OneLineParser(description=__doc__.split("\n")[0], formatter_class=_HelpFormatter,
                       argument_default=argparse.SUPPRESS)
    groups = {}
    for s in SETTINGS.values():
        g = groups.get(s.group) or groups.setdefault(s.group, p.add_argument_group(s.group))
        help_ = f"{s.help} (default: {_shown(s)})"
        if s.switch:
            g.add_argument(s.flag, dest=s.name, help=help_,
                           action="store_false" if s.flag.startswith("--no-") else "store_true")
            continue
        options = getattr(s.parse, "options", None)
        metavar = s.metavar or ("|".join(options) if options else None)
        g.add_argument(s.flag, dest=s.name, help=help_, metavar=metavar, action="append" if s.many else "store",
                       **({"type": _type(s)} if s.parse is not None else {}))
    for name, why in RETIRED.items():
        p.add_argument("--" + name.replace("_", "-"), type=_retired(name), help=argparse.SUPPRESS)
    g = p.add_argument_group("information")
    g.add_argument("--list-strategies", action=_ListStrategies, nargs=0,
                   help="print every strategy with its knobs and what it does, and exit")
    g.add_argument("--list-workloads", action=_ListWorkloads, nargs=0,
                   help="print every workload with its settings and what it is, and exit")
    g.add_argument("--version", action="version", version=version_line(),
                   help="print the suite's version and git commit, and exit")
    return p


_NUMBER = __import__("re").compile(r"-(\d|\.\d|inf\b|nan\b)", __import__("re").I)


def _join_negative_values(argv):
    """--lr -1e-3 -> --lr=-1e-3: argparse would take -1e-3 for a flag and say 'expected one
    argument'; joined, the value reaches the setting's parser and gets its own message."""
    takes_value = {s.flag for s in SETTINGS.values() if not s.switch}
    out, i = [], 0
    while i < len(argv):
        if argv[i] in takes_value and i + 1 < len(argv) and _NUMBER.match(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _plugins_in(argv):
    """The --plugin values of a command line, read before parsing: strategy names are checked
    against the registry while the flags are parsed."""
    out = []
    for i, a in enumerate(argv):
        if a == "--plugin" and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif a.startswith("--plugin="):
            out.append(a.split("=", 1)[1])
    return out


def parse_args(argv=None):
    argv = _join_negative_values(list(sys.argv[1:] if argv is None else argv))
    p = build_parser()
    try:
        load_plugins(_plugins_in(argv))
    except (StrategyError, PluginError) as e:
        p.error(str(e))
    a = vars(p.parse_args(argv))
    try:
        return Config(**a)
    except ConfigError as e:
        p.error(str(e))


def main(argv=None):
    cfg = None
    try:
        cfg = parse_args(argv)
        run_experiment(cfg)
    except (ConfigError, DataError, ResultsError, LaunchError, StrategyError, ScheduleError, PluginError,
            WorkloadError) as e:
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
