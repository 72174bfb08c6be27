"""One unit of work, a run: (cell, strategy, seed), executed the same way by every launcher.

`execute(unit)` imports the cell's plugins, loads its data (once per process), builds the model
from the seed, trains with a checkpoint at every epoch end, and saves the finished run into the
cell's folder through results.py. A run whose checkpoint is there resumes from it, bit for bit.
Every run records what computed it (its strategy's spec and the engine), and a stored run or
checkpoint made by other code is never reused (`judge`).
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass, replace

import numpy as np
import torch
import torchvision

from config import DEFAULT_KEY, Config
from data import TensorLoader, load_dataset
from models import FreezableMLP
from results import LeaseLost, ResultsDir
from stats import early_stopped
from strategies import (RunName, StrategyError, identity, legacy_spec, load_plugins, spec, spec_difference)
from pack import ENGINE as PACK_ENGINE
from pack import fit_pack
from training_loop import ENGINE, fit, pick_device


@dataclass(frozen=True)
class Unit:
    """Run `name` (a RunName) from seed `seed` in the cell described by `cfg` (whose out is the
    cell's folder). `after` = (folder, RunName, seed) names the run that must be finished first:
    the reference of a matched-budget run, in this cell or (confirmations) in another."""
    cfg: Config
    name: RunName
    seed: int
    after: tuple | None = None

    @property
    def label(self):
        return f"{self.name} seed {self.seed}"


def build_model(cfg, dataset):
    """The MLP of `cfg` (depth blocks of hidden_size, split after first_half_blocks) for the data;
    depth 2, split 1 is the classic 3072-512-512-10 network."""
    return FreezableMLP(dataset.input_size, (cfg.hidden_size,) * cfg.depth, len(dataset.classes),
                        cfg.dropout, split=cfg.first_half_blocks)


_DATA = {}  # datasets already loaded in this process, by what determines them


def dataset_for(cfg, device):
    # the thread count too: the normalising statistics are threaded reductions whose last bits
    # follow it, and a run must see the data a fresh process with its threads makes
    key = (cfg.dataset, str(cfg.data_dir), cfg.train_size, cfg.test_size, cfg.val_size, str(device),
           torch.get_num_threads())
    if key not in _DATA:
        _DATA.clear()  # one dataset at a time: a sweep over datasets should not hold them all
        _DATA[key] = load_dataset(cfg.dataset, cfg.data_dir, device, cfg.train_size, cfg.test_size,
                                  val_size=cfg.val_size)
    return _DATA[key]


ENGINES = {"single": ENGINE, "pack": PACK_ENGINE}


def stamp(name, engine="single"):
    """What a run of `name` records about the code that computes it: its spec and the engine."""
    return {"spec": spec(name), "engine": ENGINES[engine]}


def judge_for(engine="single"):
    """judge(run): why a stored run (or a checkpoint's stamp) was made by other code than would
    run it now under `engine`, or None. Runs saved before runs recorded a spec were made by
    built-ins at version 1, with the reference engine."""
    def judge(run):
        try:
            name = RunName.parse(run["strategy"])
        except StrategyError as e:
            return f"its strategy is not defined in this invocation ({e})"
        now = stamp(name, engine)
        old = run.get("spec") or legacy_spec(name)
        if old is None:
            return f"{name} was saved without a spec, so what made it is unknown"
        if identity(old) != identity(now["spec"]):
            return f"{name} was made by other code: {spec_difference(old, now['spec'])}"
        made_by = run.get("engine", "single/1")
        if made_by != now["engine"]:
            return f"{name} was made by engine {made_by}, this one is {now['engine']}"
        return None
    return judge


judge = judge_for("single")


def open_cell(cfg, overwrite=False):
    """The results folder of the cell `cfg` describes."""
    return ResultsDir(cfg.out, cfg.result_key(), overwrite, defaults=DEFAULT_KEY, judge=judge_for(cfg.engine))


def environment(device):
    """What ran: library versions, the code (git commit, dirty flag), the command line, the CPU,
    the GPU when one is used, and the thread count."""
    dev = torch.device(device)
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    return {"versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "torchvision": torchvision.__version__, "numpy": np.__version__},
            "code": code_version(), "command": " ".join(sys.argv), "host": platform.node(),
            "device": str(dev), "device_name": gpu or cpu_model(), "cpu": cpu_model(), "gpu": gpu,
            "threads": torch.get_num_threads()}


def cpu_model():
    """The CPU's model name (from /proc/cpuinfo on Linux), else what platform reports."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_CODE = {}


def code_version():
    """{"commit", "dirty"} of the git checkout this code runs from ("unknown" outside one)."""
    if not _CODE:
        here = os.path.dirname(os.path.abspath(__file__))
        try:
            commit = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True,
                                    text=True, timeout=10).stdout.strip()
            status = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10)
            _CODE.update(commit=commit or "unknown",
                         dirty=bool(status.stdout.strip()) if commit and status.returncode == 0 else "unknown")
        except (OSError, subprocess.SubprocessError):
            _CODE.update(commit="unknown", dirty="unknown")
    return dict(_CODE)


def budget(unit, store, model, data):
    """max_flops / max_seconds for a matched-budget standard run, from its reference run. A FLOPs
    budget also fits the lr schedule to it: total_steps is the number of standard steps whose
    FLOPs fit, so a cosine reaches zero where the matched run stops (within one step)."""
    cfg, name, seed = unit.cfg, unit.name, unit.seed
    if name.budget is None:
        return {}
    folder, ref_name, ref_seed = unit.after or (cfg.out, RunName(name.reference), seed)
    ref_store = store if str(folder) == str(cfg.out) else ResultsDir.reader(folder, DEFAULT_KEY,
                                                                            judge_for(cfg.engine))
    ref = ref_store.runs.saved(ref_name, ref_seed)["history"]
    if name.budget == "time":
        return {"max_seconds": sum(ref["epoch_time_s"])}
    flops = sum(ref["train_flops"])
    per_sample = model.unit_train_flops(frozenset(range(len(model.units()))))
    return {"max_flops": flops, "total_steps": steps_within(flops, per_sample, len(data.y_train), cfg.batch_size)}


def steps_within(budget, flops_per_sample, n_train, batch_size):
    """How many steps of standard training (full batches, then the epoch's last short one) fit
    within `budget` FLOPs."""
    sizes = [batch_size] * (n_train // batch_size) + ([n_train % batch_size] if n_train % batch_size else [])
    per_epoch = flops_per_sample * n_train
    epochs, rest = divmod(budget, per_epoch)
    steps = int(epochs) * len(sizes)
    for size in sizes:
        if size * flops_per_sample > rest:
            break
        rest -= size * flops_per_sample
        steps += 1
    return steps


def execute(unit, device=None, log=print, progress=False):
    """Run `unit` (or resume it from its checkpoint) and save it; return the run. A run already
    saved is returned as it is; one that another live executor holds (its lease) gives None.
    The lease is refreshed at every epoch end and released when the run ends either way."""
    load_plugins(unit.cfg.plugins)  # before any name is resolved: in workers and SLURM jobs too
    cfg, name, seed = unit.cfg, unit.name, unit.seed
    device = pick_device(device or cfg.device)
    store = open_cell(cfg)
    if store.runs.saved(name, seed):
        return store.runs.saved(name, seed)
    lease = store.leases.claim(name, seed, log)
    if lease is None:
        return None
    try:
        if store.runs.saved(name, seed):  # the previous holder saved it just before we claimed it
            return store.runs.saved(name, seed)
        return _train_and_save(unit, device, store, lease, log, progress)
    except LeaseLost as e:
        log(f"{unit.label}: {e}; stopped without saving")
        return None
    finally:
        lease.release()


def _train_and_save(unit, device, store, lease, log, progress):
    cfg, name, seed = unit.cfg, unit.name, unit.seed
    data = dataset_for(cfg, device)
    snapshot = store.checkpoints.load(name, seed, log=log)
    if snapshot is not None:
        log(f"resumed {name} seed {seed} from epoch {len(snapshot['history']['epoch'])}")
    torch.manual_seed(seed)  # same initial weights and dropout stream for every strategy
    model = build_model(cfg, data).to(device)
    if cfg.compile:
        model = torch.compile(model)
    train_loader = TensorLoader(data.x_train, data.y_train, cfg.batch_size, shuffle=True, seed=seed)
    test_loader = TensorLoader(data.x_test, data.y_test, cfg.eval_batch_size)
    val_loader = (TensorLoader(data.x_val, data.y_val, cfg.eval_batch_size)
                  if data.x_val is not None else None)
    run_stamp = stamp(name, cfg.engine)

    def checkpoint(snapshot):
        lease.beat()  # raises LeaseLost if another executor took the run over
        store.checkpoints.save(name, seed, snapshot, run_stamp)

    spec_ = replace(cfg.train_spec(name), seed=seed, **budget(unit, store, model, data))
    history, schedule_state = fit(model, train_loader, test_loader, spec_, device=device, val_loader=val_loader,
                                  resume=snapshot, on_epoch_end=checkpoint, progress=progress, desc=unit.label)
    lease.beat()
    run = _run_record(unit, history, schedule_state, run_stamp, data, device)
    store.save_run(run)
    return run


def execute_task(units, device=None, log=print, progress=False, on_run=None):
    """Execute a task: its units one after another (the reference engine), or as one pack. Calls
    on_run(unit, run) as each run is saved (None: another executor holds it) and returns
    {unit: run or None}."""
    on_run = on_run or (lambda unit, run: None)
    if units[0].cfg.engine == "pack":
        return execute_pack(units, device, log, progress, on_run)
    out = {}
    for unit in units:
        out[unit] = execute(unit, device, log, progress)
        on_run(unit, out[unit])
    return out


def execute_pack(units, device=None, log=print, progress=False, on_run=lambda unit, run: None):
    """Train `units` as one pack (see pack.py): every unit claims its lease, resumes from its own
    checkpoint if it has one, and is saved (and its lease released) the moment it ends. Units
    already saved or held elsewhere are left out of the pack."""
    load_plugins(units[0].cfg.plugins)
    device = pick_device(device or units[0].cfg.device)
    out, claimed = {}, []
    try:
        for unit in units:
            if unit.name.budget == "time":
                raise StrategyError(f"{unit.name}: a time-matched run needs --engine single (a pack's members "
                                    f"share their steps, so none has a time of its own)")
            store = open_cell(unit.cfg)
            run = store.runs.saved(unit.name, unit.seed)
            lease = None if run else store.leases.claim(unit.name, unit.seed, log)
            if run is None and lease is not None and store.runs.saved(unit.name, unit.seed):
                run = store.runs.saved(unit.name, unit.seed)
                lease.release()
                lease = None
            if lease is None:
                out[unit] = run
                on_run(unit, run)
            else:
                claimed.append((unit, store, lease))
        if claimed:
            _train_pack_and_save(claimed, device, log, progress, out, on_run)
    finally:
        for _, _, lease in claimed:
            lease.release()
    return out


def _train_pack_and_save(claimed, device, log, progress, out, on_run):
    cfg = claimed[0][0].cfg
    data = dataset_for(cfg, device)
    models, gens, loaders, specs, resumes = [], [], [], [], []
    for unit, store, _ in claimed:
        snapshot = store.checkpoints.load(unit.name, unit.seed, log=log)
        if snapshot is not None:
            log(f"resumed {unit.name} seed {unit.seed} from epoch {len(snapshot['history']['epoch'])}")
        torch.manual_seed(unit.seed)  # each member's initial weights, as the reference engine makes them
        model = build_model(unit.cfg, data)
        gens.append(torch.Generator())
        gens[-1].set_state(torch.get_rng_state())  # CPU: where the reference's dropout stream starts
        models.append(model)
        loaders.append(TensorLoader(data.x_train, data.y_train, cfg.batch_size, shuffle=True, seed=unit.seed))
        specs.append(replace(unit.cfg.train_spec(unit.name), seed=unit.seed, **budget(unit, store, model, data)))
        resumes.append(snapshot)
    stamps = [stamp(u.name, "pack") for u, _, _ in claimed]
    test_loader = TensorLoader(data.x_test, data.y_test, cfg.eval_batch_size)
    val_loader = TensorLoader(data.x_val, data.y_val, cfg.eval_batch_size) if data.x_val is not None else None

    def checkpoint(i, snapshot):
        unit, store, lease = claimed[i]
        try:
            lease.beat()
        except LeaseLost as e:
            log(f"{unit.label}: {e}; stopped without saving")
            out[unit] = None
            on_run(unit, None)
            return False
        store.checkpoints.save(unit.name, unit.seed, snapshot, stamps[i])
        return True

    def finish(i, history, schedule_state):
        unit, store, lease = claimed[i]
        run = _run_record(unit, history, schedule_state, stamps[i], data, device, pack_size=len(claimed))
        store.save_run(run)
        lease.release()
        out[unit] = run
        on_run(unit, run)

    fit_pack(models, loaders, test_loader, specs, device=device, val_loader=val_loader, resumes=resumes,
             on_epoch_end=checkpoint, on_finish=finish, generators=gens, progress=progress,
             desc=f"pack of {len(claimed)}")


def _run_record(unit, history, schedule_state, run_stamp, data, device, **extra):
    """The JSON record of a finished run, as results.py saves it."""
    return {"strategy": str(unit.name), "seed": unit.seed, "history": history, "test_samples": len(data.y_test),
            "early_stopped": early_stopped(history), **run_stamp,
            **({"schedule_state": schedule_state} if schedule_state is not None else {}),
            "environment": {"device": str(device), "threads": torch.get_num_threads(),
                            "host": platform.node(), "pid": os.getpid(), "code": code_version(),
                            "cpu": cpu_model(), "gpu": torch.cuda.get_device_name(device)
                            if device.type == "cuda" else None, **extra}}


def run_line(run):
    """The one line a launcher prints for a finished run."""
    h = run["history"]
    tag = "  DIVERGED (loss not finite), stopped early" if any(h["diverged"]) else ""
    return (f"{run['strategy']:<26} seed {run['seed']}  final acc {h['test_acc'][-1]:6.2f}%  "
            f"{sum(h['epoch_time_s']):7.1f} s training{tag}")
