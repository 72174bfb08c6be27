"""Launchers execute units (runs.Unit): in this process, in local worker processes, or as
SLURM jobs through submitit. They hand out tasks: one unit each with the reference engine, a
pack of units with --engine pack. Every launcher runs the same `runs.execute_task`, so every run
is saved by the same code, atomically, and a rerun of the same command completes what is missing.

Each launcher calls `on_done(unit, run, by)` as runs finish (`by`: the pid of the process that handed
the run back, or "slurm" for a job of this submission) and returns the units that did not
finish, with the reason, as a list of (unit, reason); the reason HELD means that another
executor (another invocation, worker or SLURM job) holds the run's lease, and the caller waits.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from dataclasses import replace

from runs import execute_task
from training_loop import Progress
from results import atomic_write

ROOT = Path(__file__).resolve().parent
HELD = "another executor holds it"


class LaunchError(Exception):
    """A launcher that cannot start; its message is one line."""


def waves(units):
    """Units in the order their dependencies allow: those that need no other run first."""
    first = [u for u in units if u.after is None]
    return [w for w in (first, [u for u in units if u.after is not None]) if w]


def tasks_of(units, size=None):
    """The units of a wave as tasks: one unit each with the reference engine; with --engine pack,
    packs of at most `size` units whose cells differ at most in lr and its schedule (a pack's
    members each follow their own lr, schedule and budget, and share everything else)."""
    if not units or units[0].cfg.engine != "pack":
        return [[u] for u in units]
    groups = {}
    for u in units:
        groups.setdefault(pack_key(u.cfg), []).append(u)
    size = size or pack_size(units[0].cfg, len(units))
    return [g[i:i + size] for g in groups.values() for i in range(0, len(g), size)]


def pack_key(cfg):
    """What the members of one pack share: the cell's settings but for lr and its schedule."""
    return replace(cfg, lr=1.0, lr_schedule="constant", warmup_epochs=0, out=None, strategies=(), seeds=1)


def pack_size(cfg, n_units):
    """--pack, else as many members as fit in half the free memory of a CUDA device (at most 64), or
    16 on a CPU, where larger packs stop paying (benchmark.py --pack)."""
    if cfg.pack:
        return cfg.pack
    if torch.cuda.is_available() and cfg.device != "cpu":
        free, _ = torch.cuda.mem_get_info()
        width, depth = cfg.resolved("hidden_size"), cfg.resolved("depth")  # None on cfg: the workload's default
        params = 3072 * width + depth * width * width + 10 * width  # an upper bound for these MLPs
        per_member = 16 * params + 64 * max(cfg.batch_size, cfg.eval_batch_size) * width * depth
        return max(1, min(64, n_units, int(0.5 * free // per_member)))
    return max(1, min(16, n_units))


def default_threads(workers):
    """torch threads per run: this process's threads (cores, or OMP_NUM_THREADS) split evenly."""
    return max(1, torch.get_num_threads() // workers)


# --- in this process -------------------------------------------------------------------
def run_inprocess(units, on_done, device=None, threads=None, progress=False, log=print):
    """One task after another in this process (--workers 1): no start-up cost per run."""
    if threads:
        torch.set_num_threads(threads)
    held = []
    for wave in waves(units):
        for task in tasks_of(wave, units[0].cfg.pack):
            for unit, run in execute_task(task, device, log=log, progress=progress).items():
                if run is None:
                    held.append((unit, HELD))
                else:
                    on_done(unit, run, os.getpid())
    return held


# --- local worker processes --------------------------------------------------------------
def _worker(tasks, events, threads, device, parent):
    """A worker process: run the tasks the coordinator (pid `parent`) hands it, one at a time,
    and report each run as it is saved, and each task's end. It exits at the sentinel, or when the coordinator is gone. The pid
    comes from the coordinator: one read here could already be init's, if the coordinator died
    while this interpreter was still starting."""
    torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.cuda.set_device(device)  # events, streams and new tensors on this worker's GPU
    try:
        while True:
            try:
                item = tasks.get(timeout=1.0)
            except queue.Empty:
                if os.getppid() != parent:  # orphaned: the coordinator was killed
                    # nobody reads the events any more, and other orphans keep the pipe open: without
                    # this, exiting would wait forever to flush what this worker put there
                    events.cancel_join_thread()
                    return
                continue
            if item is None:
                return
            t, task = item
            try:
                execute_task(task, device, log=lambda msg, t=t: events.put(("log", os.getpid(), t, msg)),
                             on_run=lambda unit, run, t=t: events.put(("run", os.getpid(), t, (unit, run))))
                events.put(("done", os.getpid(), t, None))
            except Exception as e:
                events.put(("error", os.getpid(), t, f"{type(e).__name__}: {e}".splitlines()[0]))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the coordinator reports it
        pass


def worker_devices(device, workers):
    """The device of each worker: spread over the GPUs when there are several, else all alike."""
    if device in ("auto", "cuda") and torch.cuda.is_available():
        n = torch.cuda.device_count()
        return [f"cuda:{w % n}" for w in range(workers)]
    return [device] * workers


@dataclass
class _Slot:
    """One local worker: its process, its task queue, and the index of the task it holds."""
    process: object
    tasks: object
    holding: int | None = None


def run_local(units, on_done, workers, device="auto", threads=None, log=print):
    """`workers` processes, each handed one task at a time by this coordinator, which therefore
    always knows which units a worker holds. A worker that dies at any moment is reported and
    replaced on the same device, so the other runs finish; its runs keep their last checkpoints."""
    threads = threads or default_threads(workers)
    ctx = mp.get_context("spawn")  # fresh interpreters: no forked OpenMP or CUDA state
    failed = []
    for wave in waves(units):
        tasks = tasks_of(wave, wave[0].cfg.pack)
        todo = list(enumerate(tasks))
        left = {t: set(task) for t, task in enumerate(tasks)}  # units of each task not yet reported
        events = ctx.Queue()
        devices = worker_devices(device, min(workers, len(tasks)))
        slots = {}

        def start(n):
            queue_ = ctx.Queue()
            p = ctx.Process(target=_worker, args=(queue_, events, threads, devices[n], os.getpid()), daemon=True)
            p.start()
            slots[n] = _Slot(p, queue_)

        def hand_out():
            for slot in slots.values():
                if slot.holding is None and todo:
                    slot.holding, task = todo.pop(0)
                    slot.tasks.put((slot.holding, task))

        def give_up(t, why):
            failed.extend((u, why) for u in left.pop(t, ()))

        for n in range(len(devices)):
            start(n)
        try:
            hand_out()
            while left:
                try:
                    kind, pid, t, payload = events.get(timeout=0.5)
                except queue.Empty:
                    for n, slot in list(slots.items()):
                        p = slot.process
                        if p.is_alive():
                            continue
                        if slot.holding is not None and slot.holding in left:
                            labels = ", ".join(u.label for u in left[slot.holding])
                            log(f"worker {p.pid} died (exit code {p.exitcode}) while running {labels}; "
                                f"the other runs go on")
                            give_up(slot.holding, f"its worker process died (exit code {p.exitcode})")
                        if todo:
                            start(n)  # a replacement on the same device
                        else:
                            del slots[n]
                    hand_out()
                    continue
                if kind == "log":
                    log(payload)
                    continue
                if kind == "run":
                    unit, run = payload
                    left.get(t, set()).discard(unit)
                    if run is None:
                        failed.append((unit, HELD))
                    else:
                        on_done(unit, run, pid)
                    continue
                for slot in slots.values():
                    if slot.process.pid == pid:
                        slot.holding = None
                if kind == "error":
                    log(f"{', '.join(u.label for u in left.get(t, ()))} failed: {payload}")
                give_up(t, payload if kind == "error" else "the task ended without saving it")
                hand_out()
        finally:
            for slot in slots.values():
                if slot.process.is_alive():
                    slot.tasks.put(None)
            for slot in slots.values():
                slot.process.join(timeout=5)
                if slot.process.is_alive():
                    slot.process.terminate()
                    slot.process.join(timeout=5)
        if any(why != HELD for _, why in failed):
            break  # a later wave needs the runs of this one
    return failed


# --- SLURM through submitit ----------------------------------------------------------------
try:
    from submitit.helpers import Checkpointable
except ImportError:  # submitit is needed for --launcher slurm only
    Checkpointable = object


class SlurmRun(Checkpointable):
    """The callable a SLURM job runs. On preemption or timeout submitit calls `checkpoint`,
    which requeues the same unit; it then resumes from its last epoch-end checkpoint (its own
    lease, from before the requeue, is recognised by the job id and taken over)."""

    def __call__(self, task):
        from config import ConfigError, check_device
        cfg = task[0].cfg
        try:
            check_device(cfg.device, cfg.precision)  # on the node that runs it
        except ConfigError as e:
            raise SystemExit(f"error: {e}") from None
        cpus = int(os.environ.get("SLURM_CPUS_PER_TASK", "0"))
        torch.set_num_threads(cfg.threads or cpus or torch.get_num_threads())
        runs = execute_task(task, log=lambda msg: print(msg, flush=True))
        return [None if run is None else f"{run.name} seed {run.seed}" for run in runs.values()]  # None: held


def unit_id(unit):
    return f"{unit.cfg.out}::{unit.name}::{unit.seed}"


def _queued_jobs():
    """{job id: state} of this user's jobs and array tasks that SLURM still holds."""
    p = subprocess.run(["squeue", "--me", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True)
    if p.returncode != 0:
        raise LaunchError(f"squeue failed: {p.stderr.strip().splitlines()[0] if p.stderr.strip() else p.returncode}")
    return dict(line.split("|", 1) for line in p.stdout.split())


def live_jobs(out):
    """The job ids in OUT/slurm/jobs.json that SLURM still holds ({} without SLURM or jobs)."""
    jobs_file = Path(out) / "slurm" / "jobs.json"
    if not jobs_file.exists() or shutil.which("squeue") is None:
        return {}
    known = json.loads(jobs_file.read_text())
    queued = _queued_jobs()
    return {u: j for u, j in known.items() if j in queued}


def cancel_jobs(job_ids):
    subprocess.run(["scancel", *sorted(set(job_ids))], capture_output=True)


def _ended_state(job):
    """sacct's state of a job that left squeue, or None where accounting is not kept."""
    if shutil.which("sacct") is None:
        return None
    p = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job, "-o", "State"], capture_output=True, text=True)
    lines = p.stdout.split()
    return lines[0].split()[0] if p.returncode == 0 and lines else None


def max_array_size():
    """The cluster's MaxArraySize (how many tasks one job array may have), 1001 if unknown."""
    p = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True)
    for line in p.stdout.splitlines():
        if line.split("=")[0].strip() == "MaxArraySize":
            try:
                return int(line.split("=", 1)[1])
            except ValueError:
                break
    return 1001


class _Jobs:
    """OUT/slurm/jobs.json (unit -> job id), read and rewritten under an exclusive lock, so that
    two invocations submitting at once neither submit a unit twice nor lose job ids."""

    def __init__(self, folder):
        self.file = Path(folder) / "jobs.json"
        self.lock_file = Path(folder) / "jobs.lock"

    def __enter__(self):
        import fcntl
        self._fd = os.open(self.lock_file, os.O_CREAT | os.O_RDWR, 0o666)
        fcntl.lockf(self._fd, fcntl.LOCK_EX)  # POSIX locks: honoured over NFS with lockd
        self.known = json.loads(self.file.read_text()) if self.file.exists() else {}
        return self

    def save(self):
        atomic_write(self.file, json.dumps(self.known, indent=1) + "\n")

    def __exit__(self, *exc):
        os.close(self._fd)  # releases the lock


# SLURM (22.05 here) sends a job that was requeued at its time-limit USR2 that USR2 again the
# moment it restarts, before Python has installed submitit's handler; USR2's default action then
# kills the job (exit 140) and the run waits for the next invocation. Python starts with USR2
# ignored, so that stale signal is dropped; submitit's handler replaces the ignore at job start,
# and the restarted job still gets its own USR2 before its time limit (measured: 25 s before).
USR2_SAFE_PYTHON = f"bash -c 'trap \"\" USR2; exec \"$0\" \"$@\"' {shlex.quote(sys.executable)}"


def run_slurm(units, on_done, cfg, out, is_done, held=lambda u: False, log=print):
    """Submit the units that are neither finished nor queued nor held as job arrays (chunked by the
    cluster's MaxArraySize), then (unless cfg.wait is False) wait with a progress bar. Job ids are
    kept in OUT/slurm/jobs.json, so a later invocation collects what finished and resubmits only
    what is missing."""
    if shutil.which("sbatch") is None:
        raise LaunchError("--launcher slurm needs SLURM: sbatch is not on the PATH; use --launcher "
                          "local, or run on a machine of your SLURM cluster")
    import submitit
    folder = Path(out) / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    executor = submitit.AutoExecutor(folder=folder, slurm_max_num_timeout=cfg.slurm_max_requeues,
                                     slurm_python=USR2_SAFE_PYTHON)
    extra = dict(a.split("=", 1) for a in cfg.slurm_args)
    if cfg.slurm_mem:
        extra["mem"] = cfg.slurm_mem
    # submitit's own options (not sbatch's): how long before the time limit SLURM sends USR2,
    # on which the job saves its place and requeues itself
    own = {f"slurm_{k}": int(extra.pop(k)) for k in ("signal_delay_s",) if k in extra}
    executor.update_parameters(
        name="alternating-freeze", timeout_min=cfg.slurm_time, cpus_per_task=cfg.slurm_cpus_per_task,
        slurm_partition=cfg.slurm_partition, slurm_additional_parameters=extra,
        slurm_setup=[f"export PYTHONPATH={ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"],
        **({"slurm_array_parallelism": cfg.slurm_array_parallelism} if cfg.slurm_array_parallelism else {}),
        **({"slurm_gpus_per_task": cfg.slurm_gpus_per_task} if cfg.slurm_gpus_per_task else {}), **own)
    failed = []
    chunk = max(1, max_array_size())
    for wave in waves(units):
        with _Jobs(folder) as jobs:
            queued = _queued_jobs()
            waiting = {unit_id(u) for u in wave if jobs.known.get(unit_id(u)) in queued}
            todo = [u for u in wave if unit_id(u) not in waiting and not held(u) and is_done(u) is None]
            if waiting:
                log(f"{len(waiting)} runs are still queued or running from an earlier submission")
            tasks = tasks_of(todo, cfg.pack)
            for start in range(0, len(tasks), chunk):
                part = tasks[start:start + chunk]
                try:
                    submitted = executor.map_array(SlurmRun(), part)
                except Exception as e:
                    jobs.save()
                    raise LaunchError(f"sbatch refused the job array: {str(e).strip().splitlines()[-1]}") from None
                for task, job in zip(part, submitted):
                    for u in task:
                        jobs.known[unit_id(u)] = job.job_id
                jobs.save()
                runs = sum(len(t) for t in part)
                log(f"submitted {runs} runs as SLURM job array {submitted[0].job_id.split('_')[0]} "
                    + (f"of {len(part)} packs " if runs != len(part) else "") + f"(logs in {folder})")
            known = dict(jobs.known)
        mine = [u for u in wave if unit_id(u) in known]
        failed += [(u, HELD) for u in wave if u not in mine and is_done(u) is None]
        for u in wave:
            if u not in mine and is_done(u) is not None:
                on_done(u, is_done(u), None)  # saved before this submission: by whoever saved it
        if not cfg.wait:
            return [(u, "submitted; --no-wait") for u in wave] + \
                [(u, "waits for the first wave") for w in waves(units)[1:] for u in w if w is not wave]
        failed += _wait(mine, known, on_done, is_done, held, folder, cfg.progress)
        if any(why != HELD for _, why in failed):
            break
    return failed


GRACE_S = float(os.environ.get("ALTFREEZE_SLURM_GRACE_S", 60))  # NFS: a saved run may show up late
POLL_MAX_S = 10.0


def _wait(wave, known, on_done, is_done, held, folder, progress):
    """Poll (own jobs only, backing off to every POLL_MAX_S) until every unit of the wave is saved
    or its job has ended without saving it: sacct says it ended, and GRACE_S passed for the run
    file to appear. A unit another executor holds is handed back as HELD."""
    left, failed, gone_since, pause = list(wave), [], {}, 1.0
    bar = Progress(len(wave), "SLURM runs", progress)
    try:
        while left:
            queued = _queued_jobs()
            for u in list(left):
                run, job = is_done(u), known[unit_id(u)]
                if run is not None:
                    on_done(u, run, "slurm")
                elif job in queued or _ended_state(job) in ("RUNNING", "PENDING", "REQUEUED", "COMPLETING"):
                    gone_since.pop(job, None)
                    continue
                elif held(u):
                    failed.append((u, HELD))
                elif time.time() - gone_since.setdefault(job, time.time()) < GRACE_S:
                    continue
                else:
                    failed.append((u, f"SLURM job {job} ended without saving it (see "
                                      f"{folder}/{job}_0_log.err)"))
                left.remove(u)
                bar.update()
            if left:
                time.sleep(pause)
                pause = min(POLL_MAX_S, pause * 1.5)
    finally:
        bar.close()
    return failed
