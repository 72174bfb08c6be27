"""One unit of work, a run: (cell, strategy, seed), executed the same way by every launcher.

`execute(unit)` imports the cell's plugins, loads its data (once per process), builds the model
from the seed, trains with a checkpoint at every epoch end, and saves the finished run into the
cell's folder through results.py. A run whose checkpoint is there resumes from it, bit for bit.
Every run records what computed it (its strategy's spec and the engine), and a stored run or
checkpoint made by other code is never reused (`judge`).
"""
from __future__ import annotations

import importlib.util
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import workloads
from config import DEFAULT_KEY, Config
from data import TensorLoader, WindowLoader, bigram_bits_per_char, load_dataset
from records import Environment, History, Made, Memory, Run
from results import LeaseLost, ResultsDir
from stats import early_stopped
from strategies import (RunName, StrategyError, identity, legacy_spec, load_plugins, spec, spec_difference)
from pack import ENGINE as PACK_ENGINE
from pack import fit_pack
from training_loop import ENGINE, TrainSpec, fit, pick_device, unit_flops


@dataclass(frozen=True)
class RunRef:
    """A run by where it is saved: its cell's folder, its RunName and its seed."""
    folder: str
    name: RunName
    seed: int


@dataclass(frozen=True)
class Unit:
    """Run `name` (a RunName) from seed `seed` in the cell described by `cfg` (whose out is the
    cell's folder). `after` names the run that must be finished first (a RunRef): the reference
    of a matched-budget run, in this cell or (confirmations) in another."""
    cfg: Config
    name: RunName
    seed: int
    after: RunRef | None = None

    @property
    def ref(self):
        """This unit as a RunRef."""
        return RunRef(self.cfg.out, self.name, self.seed)

    @property
    def label(self):
        return f"{self.name} seed {self.seed}"


def build_model(cfg, dataset):
    """The network of `cfg`'s workload for the data (mlp with its defaults: the classic
    3072-512-512-10 network on CIFAR-10)."""
    return workloads.lookup(cfg.workload).build(cfg.model_settings(), dataset)


def loaders(cfg, data, seed):
    """(train, test, validation or None) loaders of `data` for a run of `seed`: images sliced from
    the device tensors (augmented where the workload's setting says), or text in windows."""
    s = cfg.model_settings()
    if data.kind == "text":
        window = lambda stream, **kw: WindowLoader(stream, s["context"], **kw)  # noqa: E731
        return (window(data.x_train, batch_size=cfg.batch_size, shuffle=True, seed=seed, windows=s["train_size"]),
                window(data.x_test, batch_size=cfg.eval_batch_size),
                window(data.x_val, batch_size=cfg.eval_batch_size) if data.x_val is not None else None)
    return (TensorLoader(data.x_train, data.y_train, cfg.batch_size, shuffle=True, seed=seed,
                         augment=bool(s.get("augment"))),
            TensorLoader(data.x_test, data.y_test, cfg.eval_batch_size),
            TensorLoader(data.x_val, data.y_val, cfg.eval_batch_size) if data.x_val is not None else None)


def data_facts(cfg, data):
    """What config.json records of the data a cell's runs see: the scored items of each split,
    and for text the documents of each split and a bigram model's test bits per character."""
    if data.kind != "text":
        return {"train_samples": len(data.y_train), "test_samples": len(data.y_test),
                "val_samples": 0 if data.y_val is None else len(data.y_val)}
    context = cfg.model_settings()["context"]
    scored = lambda stream: 0 if stream is None else (len(stream) - 1) // context * context  # noqa: E731
    return {"train_samples": len(data.x_train), "test_samples": scored(data.x_test), "val_samples": scored(data.x_val),
            "documents": data.documents, "vocabulary": len(data.classes),
            "bigram_test_bits_per_char": bigram_bits_per_char(data.x_train, data.x_test, context, len(data.classes))}


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


def stamp(name, engine="single", workload="mlp"):
    """What a run of `name` records about the code that computes it: its strategy's spec, the
    engine, and its workload's spec (a plugin workload's file hash included)."""
    return {"spec": spec(name), "engine": ENGINES[engine], "workload": workloads.spec(workload)}


def judge_for(engine="single", workload="mlp"):
    """judge(name, made): why a stored run (or a checkpoint) of `name`, made by `made` (a
    records.Made), was made by other code than would
    run it now under `engine` and `workload`, or None. Runs saved before runs recorded a spec were
    made by built-ins at version 1, with the reference engine; before they recorded a workload,
    by the MLP at version 1."""
    def judge(name, made):
        try:
            now = stamp(name, engine, workload)
        except workloads.WorkloadError as e:
            return f"its workload is not defined in this invocation ({e})"
        old = made.spec or legacy_spec(name)
        if old is None:
            return f"{name} was saved without a spec, so what made it is unknown"
        if identity(old) != identity(now["spec"]):
            return f"{name} was made by other code: {spec_difference(old, now['spec'])}"
        made_by = made.engine or "single/1"
        if made_by != now["engine"]:
            return f"{name} was made by engine {made_by}, this one is {now['engine']}"
        old_w = made.workload or workloads.LEGACY
        if workloads.identity(old_w) != workloads.identity(now["workload"]):
            return (f"{name} was made by other code: its workload's code changed ({old_w['code']['where']}: "
                    f"{old_w['code']['fingerprint']} -> {now['workload']['code']['fingerprint']})")
        return None
    return judge


def judge_for_folder(settings):
    """The judge of a folder's own runs: its settings name the engine and workload that made them."""
    return judge_for(settings.get("engine", "single"), settings.get("workload", "mlp"))


def open_cell(cfg, overwrite=False):
    """The results folder of the cell `cfg` describes."""
    return ResultsDir(cfg.out, cfg.result_key(), overwrite, defaults=DEFAULT_KEY,
                      judge=judge_for(cfg.engine, cfg.workload))


def torchvision_version():
    """torchvision.__version__ (local label included) read from its version.py, without the second
    of importing torchvision that every process would otherwise pay for one string."""
    spec = importlib.util.find_spec("torchvision")
    text = Path(spec.origin).with_name("version.py").read_text()
    return re.search(r"__version__ = '([^']+)'", text).group(1)


def environment(device):
    """What ran: library versions, the code (git commit, dirty flag), the command line, the CPU,
    the GPU when one is used, and the thread count."""
    dev = torch.device(device)
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    return {"versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "torchvision": torchvision_version(), "numpy": np.__version__},
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


def budget(unit, store, model, train_loader):
    """max_flops / max_seconds for a matched-budget standard run, from its reference run. A FLOPs
    budget also fits the lr schedule to it: total_steps is the number of standard steps whose
    FLOPs fit, so a cosine reaches zero where the matched run stops (within one step)."""
    cfg, name, seed = unit.cfg, unit.name, unit.seed
    if name.budget is None:
        return {}
    after = unit.after or RunRef(cfg.out, RunName(name.reference), seed)
    ref_store = store if str(after.folder) == str(cfg.out) else ResultsDir.reader(
        after.folder, DEFAULT_KEY, judge_for(cfg.engine, cfg.workload))
    ref = ref_store.runs.saved(after.name, after.seed).history
    if name.budget == "time":
        return {"max_seconds": ref.total("epoch_time_s")}
    flops = ref.total("train_flops")
    per_sample = unit_flops(model, train_loader).train(frozenset(range(len(model.units()))))
    return {"max_flops": flops, "total_steps": steps_within(flops, per_sample, train_loader.samples, cfg.batch_size)}


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


@dataclass
class _Claim:
    """A unit this executor holds the lease of, in its cell's folder."""
    unit: Unit
    store: ResultsDir
    lease: object


def execute_task(units, device=None, log=print, progress=False, on_run=None):
    """Execute a task, the one path for both engines: each unit claims its lease (a unit already
    saved, or held by another live executor, is reported as it is: its run, or None), resumes
    from its own checkpoint if it has one, and its run is saved the moment it ends, then its lease
    released. The reference engine trains the claimed units one after another; --engine pack
    trains them as one pack. Calls on_run(unit, run) as each is known and returns {unit: run}."""
    on_run = on_run or (lambda unit, run: None)
    load_plugins(units[0].cfg.plugins)  # before any name is resolved: in workers and SLURM jobs too
    device = pick_device(device or units[0].cfg.device)
    out = {}
    groups = [units] if units[0].cfg.engine == "pack" else [[u] for u in units]
    for group in groups:
        claimed = []
        try:
            for unit in group:
                claim = _claim(unit, log)
                if isinstance(claim, _Claim):
                    claimed.append(claim)
                else:
                    out[unit] = claim
                    on_run(unit, claim)
            if claimed:
                _train_and_save(claimed, device, log, progress, out, on_run)
        finally:
            for c in claimed:
                c.lease.release()
    return out


def _claim(unit, log):
    """A _Claim on `unit`, or its saved run, or None while another live executor holds it."""
    if unit.name.budget == "time" and unit.cfg.engine == "pack":
        raise StrategyError(f"{unit.name}: a time-matched run needs --engine single (a pack's members "
                            f"share their steps, so none has a time of its own)")
    store = open_cell(unit.cfg)
    run = store.runs.saved(unit.name, unit.seed)
    if run is not None:
        return run
    lease = store.leases.claim(unit.name, unit.seed, log)
    if lease is None:
        return None
    if store.runs.saved(unit.name, unit.seed):  # the previous holder saved it just before we claimed it
        lease.release()
        return store.runs.saved(unit.name, unit.seed)
    return _Claim(unit, store, lease)


def _train_and_save(claimed, device, log, progress, out, on_run):
    """Train the claimed units together (one run, or a pack), checkpoint each at every epoch end
    and save each the moment it ends; a unit whose lease was taken over stops unsaved."""
    cfg = claimed[0].unit.cfg
    data = dataset_for(cfg, device)
    engine = cfg.engine
    models, gens, train_loaders, specs, resumes, stamps = [], [], [], [], [], []
    for c in claimed:
        unit = c.unit
        snapshot = c.store.checkpoints.load(unit.name, unit.seed, log=log)
        if snapshot is not None:
            log(f"resumed {unit.name} seed {unit.seed} from epoch {len(snapshot['history']['epoch'])}")
        torch.manual_seed(unit.seed)  # same initial weights and dropout stream for every strategy
        model = build_model(unit.cfg, data)
        gens.append(torch.Generator())
        gens[-1].set_state(torch.get_rng_state())  # a pack member's dropout starts where the reference's does
        train, test_loader, val_loader = loaders(unit.cfg, data, unit.seed)
        models.append(model)
        train_loaders.append(train)
        specs.append(TrainSpec.of(unit.cfg, unit.name, seed=unit.seed, **budget(unit, c.store, model, train)))
        resumes.append(snapshot)
        stamps.append(stamp(unit.name, engine, unit.cfg.workload))

    def checkpoint(i, snapshot):
        c = claimed[i]
        try:
            c.lease.beat()  # LeaseLost if another executor took the run over
        except LeaseLost as e:
            log(f"{c.unit.label}: {e}; stopped without saving")
            out[c.unit] = None
            on_run(c.unit, None)
            return False
        c.store.checkpoints.save(c.unit.name, c.unit.seed, snapshot, stamps[i])
        return True

    def finish(i, fitted):
        c = claimed[i]
        try:
            c.lease.beat()
        except LeaseLost as e:
            log(f"{c.unit.label}: {e}; stopped without saving")
            out[c.unit] = None
            on_run(c.unit, None)
            return
        run = _run_record(c.unit, fitted, stamps[i], test_loader, device,
                          len(claimed) if engine == "pack" else None)
        run = c.store.save_run(run)
        c.lease.release()
        out[c.unit] = run
        on_run(c.unit, run)

    if engine == "pack":
        fit_pack(models, train_loaders, test_loader, specs, device=device, val_loader=val_loader, resumes=resumes,
                 on_epoch_end=checkpoint, on_finish=finish, generators=gens, progress=progress,
                 desc=f"pack of {len(claimed)}")
    else:
        model = models[0].to(device)
        if cfg.compile:
            model = torch.compile(model)
        fit(model, train_loaders[0], test_loader, specs[0], device=device, val_loader=val_loader, resume=resumes[0],
            on_epoch_end=lambda snapshot: checkpoint(0, snapshot), on_finish=lambda fitted: finish(0, fitted),
            progress=progress, desc=claimed[0].unit.label)


def _run_record(unit, fitted, run_stamp, test_loader, device, pack_size=None):
    """The Run of a finished unit, as results.py saves it."""
    history = History.of_columns(fitted.history)
    return Run(unit.name, unit.seed, history, Made(**run_stamp), test_samples=test_loader.scored,
               early_stopped=early_stopped(history), schedule_state=fitted.schedule_state,
               memory=Memory(**fitted.memory),
               environment=Environment(str(device), torch.get_num_threads(), platform.node(), os.getpid(),
                                       code_version(), cpu_model(), torch.cuda.get_device_name(device)
                                       if device.type == "cuda" else None, pack_size))


def run_line(run, ours=True):
    """The one line printed for a finished run: its training time when this invocation trained it,
    else who saved it (another invocation, worker or machine on a shared folder)."""
    env = run.environment or Environment()
    tag = "  DIVERGED (loss not finite), stopped early" if run.diverged else ""
    done = (f"{run.history.total('epoch_time_s'):7.1f} s training" if ours else
            f"saved by pid {env.pid or '?'} on host {env.host or '?'}")
    return f"{str(run.name):<26} seed {run.seed}  final acc {run.final.test_acc:6.2f}%  {done}{tag}"
