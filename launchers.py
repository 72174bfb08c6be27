"""Launchers execute units (runs.Unit): in this process, in local worker processes, or as
SLURM jobs through submitit. Every launcher runs the same `runs.execute`, so every run is
saved by the same code, atomically, and a rerun of the same command completes what is missing.

Each launcher calls `on_done(unit, run)` as runs finish and returns the units that did not
finish, with the reason, as a list of (unit, reason).
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import shutil
import subprocess
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from runs import execute
from results import atomic_write

ROOT = Path(__file__).resolve().parent


class LaunchError(Exception):
    """A launcher that cannot start; its message is one line."""


def waves(units):
    """Units in the order their dependencies allow: those that need no other run first."""
    first = [u for u in units if u.after is None]
    return [w for w in (first, [u for u in units if u.after is not None]) if w]


def default_threads(workers):
    """torch threads per run: this process's threads (cores, or OMP_NUM_THREADS) split evenly."""
    return max(1, torch.get_num_threads() // workers)


# --- in this process -------------------------------------------------------------------
def run_inprocess(units, on_done, device=None, threads=None, progress=False, log=print):
    """One run after another in this process (--workers 1): no start-up cost per run."""
    if threads:
        torch.set_num_threads(threads)
    for unit in units:
        on_done(unit, execute(unit, device, log=log, progress=progress))
    return []


# --- local worker processes --------------------------------------------------------------
def _worker(tasks, events, threads, device):
    """A worker process: take units until the sentinel, report each start and end."""
    torch.set_num_threads(threads)
    try:
        while (item := tasks.get()) is not None:
            i, unit = item
            events.put(("start", os.getpid(), i, None))
            try:
                run = execute(unit, device, log=lambda msg, i=i: events.put(("log", os.getpid(), i, msg)))
                events.put(("done", os.getpid(), i, run))
            except Exception as e:
                events.put(("error", os.getpid(), i, f"{type(e).__name__}: {e}".splitlines()[0]))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the coordinator reports it
        pass


def worker_devices(device, workers):
    """The device of each worker: spread over the GPUs when there are several, else all alike."""
    if device in ("auto", "cuda") and torch.cuda.is_available():
        n = torch.cuda.device_count()
        return [f"cuda:{w % n}" for w in range(workers)]
    return [device] * workers


def run_local(units, on_done, workers, device="auto", threads=None, log=print):
    """`workers` processes take units from a queue. A worker that dies is reported and replaced,
    so the other runs finish; its run keeps its last checkpoint for the next invocation."""
    threads = threads or default_threads(workers)
    ctx = mp.get_context("spawn")  # fresh interpreters: no forked OpenMP or CUDA state
    failed = []
    for wave in waves(units):
        tasks, events = ctx.Queue(), ctx.Queue()
        for i, unit in enumerate(wave):
            tasks.put((i, unit))
        n = min(workers, len(wave))
        for _ in range(n):
            tasks.put(None)
        devices = worker_devices(device, n)
        procs = [ctx.Process(target=_worker, args=(tasks, events, threads, devices[w]), daemon=True)
                 for w in range(n)]
        for p in procs:
            p.start()
        pending, running = set(range(len(wave))), {}  # running: pid -> unit index
        try:
            while pending:
                try:
                    kind, pid, i, payload = events.get(timeout=0.5)
                except queue.Empty:
                    for p in [p for p in procs if not p.is_alive() and p.pid in running]:
                        i = running.pop(p.pid)
                        pending.discard(i)
                        failed.append((wave[i], f"its worker process died (exit code {p.exitcode})"))
                        log(f"worker {p.pid} died (exit code {p.exitcode}) while running "
                            f"{wave[i].label}; the other runs go on")
                        procs.remove(p)
                        if pending - set(running.values()):  # a replacement takes the dead one's sentinel
                            procs.append(ctx.Process(target=_worker, daemon=True,
                                                     args=(tasks, events, threads, devices[0])))
                            procs[-1].start()
                    continue
                if kind == "start":
                    running[pid] = i
                elif kind == "log":
                    log(payload)
                else:
                    running.pop(pid, None)
                    pending.discard(i)
                    if kind == "done":
                        on_done(wave[i], payload)
                    else:
                        failed.append((wave[i], payload))
                        log(f"{wave[i].label} failed: {payload}")
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join(timeout=10)
        if failed:
            break  # a later wave needs the runs of this one
    return failed


# --- SLURM through submitit ----------------------------------------------------------------
try:
    from submitit.helpers import Checkpointable
except ImportError:  # submitit is needed for --launcher slurm only
    Checkpointable = object


class SlurmRun(Checkpointable):
    """The callable a SLURM job runs. On preemption or timeout submitit calls `checkpoint`,
    which requeues the same unit; it then resumes from its last epoch-end checkpoint."""

    def __call__(self, unit):
        cpus = int(os.environ.get("SLURM_CPUS_PER_TASK", "0"))
        torch.set_num_threads(unit.cfg.threads or cpus or torch.get_num_threads())
        run = execute(unit, log=lambda msg: print(msg, flush=True))
        return {"strategy": run["strategy"], "seed": run["seed"]}


def _unit_id(unit):
    return f"{unit.cfg.out}::{unit.strategy}::{unit.seed}"


def _queued_jobs():
    """{job id: state} of every job and array task SLURM still holds (pending, running, ...)."""
    p = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True)
    if p.returncode != 0:
        raise LaunchError(f"squeue failed: {p.stderr.strip().splitlines()[0] if p.stderr.strip() else p.returncode}")
    return dict(line.split("|", 1) for line in p.stdout.split())


def run_slurm(units, on_done, cfg, out, is_done, log=print):
    """Submit the units that are neither finished nor still queued as one job array, then (unless
    cfg.wait is False) wait with a progress bar. Job ids are kept in OUT/slurm/jobs.json, so a
    later invocation collects what finished and resubmits only what is missing."""
    if shutil.which("sbatch") is None:
        raise LaunchError("--launcher slurm needs SLURM: sbatch is not on the PATH; use --launcher "
                          "local, or run on a machine of your SLURM cluster")
    import submitit
    folder = Path(out) / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    jobs_file = folder / "jobs.json"
    known = json.loads(jobs_file.read_text()) if jobs_file.exists() else {}
    executor = submitit.AutoExecutor(folder=folder)
    extra = dict(a.split("=", 1) for a in cfg.slurm_args)
    executor.update_parameters(
        name="alternating-freeze", timeout_min=cfg.slurm_time, cpus_per_task=cfg.slurm_cpus_per_task,
        slurm_partition=cfg.slurm_partition, slurm_additional_parameters=extra,
        slurm_setup=[f"export PYTHONPATH={ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"],
        **({"slurm_gpus_per_task": cfg.slurm_gpus_per_task} if cfg.slurm_gpus_per_task else {}))
    failed = []
    for wave in waves(units):
        queued = _queued_jobs()
        waiting = {_unit_id(u): known[_unit_id(u)] for u in wave if known.get(_unit_id(u)) in queued}
        todo = [u for u in wave if _unit_id(u) not in waiting]
        if waiting:
            log(f"{len(waiting)} runs are still queued or running from an earlier submission")
        if todo:
            jobs = executor.map_array(SlurmRun(), todo)
            for u, job in zip(todo, jobs):
                known[_unit_id(u)] = job.job_id
            atomic_write(jobs_file, json.dumps(known, indent=1) + "\n")
            log(f"submitted {len(todo)} runs as SLURM job array {jobs[0].job_id.split('_')[0]} "
                f"(logs in {folder})")
        if not cfg.wait:
            return [(u, "submitted; --no-wait") for u in wave] + \
                [(u, "waits for the first wave") for w in waves(units)[1:] for u in w if w is not wave]
        failed += _wait(wave, known, on_done, is_done, folder, cfg.progress)
        if failed:
            break
    return failed


def _wait(wave, known, on_done, is_done, folder, progress):
    """Poll until every unit of the wave is saved or its job has left the queue."""
    left = list(wave)
    failed = []
    with tqdm(total=len(wave), desc="SLURM runs", disable=not progress) as bar:
        while left:
            queued = _queued_jobs()
            for u in list(left):
                run = is_done(u)
                job = known[_unit_id(u)]
                if run is not None:
                    on_done(u, run)
                elif job not in queued:
                    failed.append((u, f"SLURM job {job} ended without saving it (see "
                                      f"{folder}/{job}_0_log.err)"))
                else:
                    continue
                left.remove(u)
                bar.update()
            if left:
                time.sleep(1.0)
    return failed
