"""The one writer of results folders: runs, checkpoints, tables and figures, written atomically.

An experiment's folder holds config.json, runs/<strategy>__seed<k>.json (one per finished
run, saved the moment it ends), metrics.csv, summary.json and comparison_results.png. A
sweep's folder holds sweep.json, one such experiment folder per cell, and sweep.csv,
sweep_summary.json and sweep_results.png. A run in progress keeps a checkpoint in
checkpoints/ at every epoch end, so a killed run resumes where it stopped. A folder made
with other settings, or holding files this suite did not write, is refused rather than
overwritten. It is the one place a run becomes JSON and back: a records.Run is written by
run_to_json and read by run_from_json (load_runs reads a whole folder, read-only).
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import torch

from config import short_value
from records import HISTORY_KEYS, LATER_KEYS, EarlyStop, Environment, History, Made, Memory, Run, to_json
from strategies import RunName, StrategyError

MARK = "alternating-freeze-results/1"
SWEEP_MARK = "alternating-freeze-sweep/1"
CSV_COLUMNS = ("strategy", "seed", *HISTORY_KEYS)
OWN_FILES = ("config.json", "metrics.csv", "summary.json")
# the environment of the invocation that made a folder; later invocations do not overwrite it
ENVIRONMENT_KEYS = ("versions", "device", "device_name", "threads", "code", "command", "host", "cpu", "gpu")
SWEEP_FILES = ("sweep.json", "sweep.csv", "sweep_summary.json", "sweep_results.png")
STAMP_KEYS = ("spec", "engine", "workload")  # what a checkpoint records of the code that made it, as its run will


class ResultsError(Exception):
    """A problem with the --out folder that the user can fix; its message is one line."""


HOST = socket.gethostname()
LEASE_TIMEOUT_S = float(os.environ.get("ALTFREEZE_LEASE_TIMEOUT_S", 900))  # a lease with no heartbeat
STALE_TMP_S = 24 * 3600  # a temp file of another host older than this belongs to a dead writer
_TMP = re.compile(r"~(?P<host>[^~]+)~(?P<pid>\d+)~")


_REPORTED = set()  # (run file, hash) of foreign runs already reported by this process


def warn(msg):
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def settings_hash(settings, defaults=None):
    """A short hash of the settings that differ from their defaults. Runs and checkpoints carry
    it, so one made under other settings is never counted or resumed; a setting added to the
    suite later, left at its default, does not change the hash of older runs."""
    defaults = defaults or {}
    diff = {k: v for k, v in settings.items() if v != defaults.get(k)}
    return hashlib.sha256(json.dumps(_canonical(diff), sort_keys=True).encode()).hexdigest()[:16]


def process_alive(pid):
    """Whether process `pid` of this host still runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def fsync_dir(folder):
    """Make a rename or a new file in `folder` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def clean_stale_tmp(folder):
    """Delete temp files that a killed writer left in `folder`: those of a dead process of this
    host, or of another host after STALE_TMP_S. Writers still alive keep theirs."""
    for f in Path(folder).glob(".*.tmp"):
        m = _TMP.search(f.name)
        try:
            if m and m["host"] == HOST:
                dead = not process_alive(int(m["pid"]))
            else:
                dead = time.time() - f.stat().st_mtime > STALE_TMP_S
            if dead:
                f.unlink()
        except OSError:
            pass


def atomic_write(path, text):
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    _atomic(path, lambda f: f.write(text.encode()))


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's 0600 would hide results from a shared group


_HELD_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2")
                      if hasattr(signal, n))


@contextlib.contextmanager
def signals_held():
    """Deliver SIGINT, SIGTERM and SIGUSR1/2 after the block, not inside it. submitit's USR2
    handler requeues and exits; arriving inside torch.save, that exit broke the zip writer, the
    job failed instead of requeueing, and the launcher had to submit the run again."""
    if threading.current_thread() is not threading.main_thread():
        yield  # Python runs signal handlers in the main thread only
        return
    caught, old = [], {}
    for s in _HELD_SIGNALS:
        previous = signal.getsignal(s)
        if previous is not None:  # None: a handler set outside Python, left alone
            old[s] = signal.signal(s, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(caught):
            signal.raise_signal(s)


def _atomic(path, write):
    with signals_held():
        _write_atomically(path, write)


def _write_atomically(path, write):
    path = Path(path)
    # host and pid in the name: clean_stale_tmp can tell a dead writer's file from a live one's
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}~{HOST}~{os.getpid()}~", suffix=".tmp")
    try:
        os.fchmod(fd, _MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def save_figure(fig, path):
    """A matplotlib Figure as PNG, atomically."""
    _atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))


def _canonical(obj):
    return json.loads(json.dumps(obj, default=str))  # names (RunName, ...) as their text


def _changed(old, new, defaults):
    """The first setting that differs; a setting missing from an older folder counts as its default."""
    defaults = defaults or {}
    # in the order of the settings; one that left the key (no default now) is not compared
    for k in [*new, *sorted((set(old) - set(new)) & set(defaults))]:
        if old.get(k, defaults.get(k)) != new.get(k, defaults.get(k)):
            return k
    return None


def _check_writable(folder, out):
    """Create `folder` (inside --out `out`) and prove a file can be made there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise ResultsError(f"--out {out} cannot be written ({e.strerror or e}); "
                           f"choose a folder you can write to") from None


def _read_marked(path, mark, fix, check=None):
    """The JSON file `path` if this suite wrote it (its `suite` is `mark`) and `check` accepts it;
    otherwise a one-line ResultsError that ends with `fix`."""
    try:
        blob = json.loads(Path(path).read_text())
        assert blob.get("suite") == mark
        if check is not None:
            check(blob)
        return blob
    except Exception:
        raise ResultsError(f"{path} is corrupt or was not written by this suite; {fix}") from None


def _complete_run(run):
    """Accept a saved run whose history columns all have one entry per epoch; runs saved before
    validation or train accuracy existed get empty columns for them."""
    h = run["history"]
    for k in LATER_KEYS:
        h.setdefault(k, [None] * len(h["epoch"]))
    assert all(len(h[c]) == len(h["epoch"]) for c in HISTORY_KEYS)
    assert "strategy" in run and "seed" in run


class UnknownStrategy(Exception):
    """A saved run whose strategy is not defined in this invocation (a plugin not loaded)."""


def run_from_json(blob, settings=None):
    """The Run of a run file's JSON (`settings`: its folder's, where known). A strategy that is not
    defined here is UnknownStrategy: the run cannot be named, so it cannot be counted."""
    try:
        name = RunName.parse(blob["strategy"])
    except StrategyError as e:
        raise UnknownStrategy(f"its strategy is not defined in this invocation ({e})") from None
    es, mem, env = blob.get("early_stopped"), blob.get("memory"), blob.get("environment")
    return Run(name, blob["seed"], History.of_columns(blob["history"]),
               Made(blob.get("spec"), blob.get("engine"), blob.get("workload")),
               blob.get("settings_hash"), settings, blob.get("test_samples"),
               None if es is None else EarlyStop(**es), blob.get("schedule_state"),
               None if mem is None else Memory(**mem), None if env is None else Environment(**env))


def run_to_json(run):
    """A Run as its run file's JSON, in the order of the fields runs have always been saved in."""
    blob = {"suite": MARK, "settings_hash": run.settings_hash, "strategy": str(run.name), "seed": run.seed,
            "history": run.history.columns(), "test_samples": run.test_samples,
            "early_stopped": None if run.early_stopped is None else vars(run.early_stopped),
            **{k: v for k, v in vars(run.made).items() if v is not None}}
    if run.schedule_state is not None:
        blob["schedule_state"] = run.schedule_state
    if run.memory is not None:
        blob["memory"] = {k: v for k, v in vars(run.memory).items() if v is not None}
    if run.environment is not None:
        blob["environment"] = {k: v for k, v in vars(run.environment).items()
                               if v is not None or k not in ("pack_size",)}
    return json.dumps(blob) + "\n"


def folder_config(folder):
    """A results folder's config.json as a dict ({} where it is missing or unreadable)."""
    try:
        return json.loads(Path(folder, "config.json").read_text())
    except (OSError, ValueError):
        return {}


def read_sweep_summary(folder):
    """A sweep folder's sweep_summary.json as plain values (sweep.SweepSummary.of_json types them),
    or None where it is not written yet."""
    path = Path(folder, "sweep_summary.json")
    return json.loads(path.read_text()) if path.exists() else None


def load_runs(folder, config=None):
    """Every saved run of a results folder (its runs/*.json) as Runs, in file order, read-only;
    runs saved before they recorded their number of test images get it from config.json. A run
    whose strategy is not defined here is left out, said in one line."""
    config = folder_config(folder) if config is None else config
    runs = []
    for f in sorted(Path(folder, "runs").glob("*.json")):
        try:
            run = run_from_json(_read_run(f), config.get("settings"))
        except UnknownStrategy as e:
            _warn_once(f, "unknown", f"{f} is left out: {e}")
            continue
        runs.append(run if run.test_samples is not None else replace(run, test_samples=config.get("test_samples")))
    return runs


def _has_settings(config):
    assert isinstance(config["settings"], dict)


def _read_run(path):
    return _read_marked(path, MARK, "delete it to recompute that run, or pass --overwrite", _complete_run)


def run_filename(strategy, seed):
    """The file name of a run (its name's text, or a RunName) and seed, without the suffix."""
    return f"{str(strategy).replace('@', '_at_')}__seed{seed}"


class LeaseLost(Exception):
    """Another executor took this run's lease over (it judged ours stale); stop without saving."""


class Lease:
    """The claim of one executor on one run: a file created with O_EXCL, so only one executor
    on any host that shares the folder trains the run. The holder touches it at every epoch end
    (its heartbeat) and removes it once the run is saved."""

    def __init__(self, path, token):
        self.path, self.token = path, token

    def owned(self):
        try:
            return json.loads(self.path.read_text()).get("token") == self.token
        except (OSError, ValueError):
            return False

    def beat(self):
        if not self.owned():
            raise LeaseLost(f"the lease {self.path.name} was taken over by another executor")
        os.utime(self.path)

    def release(self):
        if self.owned():
            self.path.unlink(missing_ok=True)


def _job_id():
    job = os.environ.get("SLURM_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    return f"{array}_{task}" if array and task else job


def _stale(holder, age):
    """Why the lease `holder` (its JSON, or None if unreadable) may be taken over, or None."""
    if holder and holder.get("host") == HOST and not process_alive(holder.get("pid", -1)):
        return "its process is gone"
    if holder and holder.get("job") and holder["job"] == _job_id():
        return "it is this SLURM task's own, from before a requeue"
    if age > LEASE_TIMEOUT_S:
        return f"no heartbeat for {age:.0f} s"
    return None


def _holder_text(h):
    return "unknown holder" if not h else (f"{h.get('host')} pid {h.get('pid')}"
                                           + (f" (SLURM job {h['job']})" if h.get("job") else ""))


class FolderSettings:
    """config.json: the settings a folder's runs were made with (its key and hash) and the
    environment of the invocation that made it. Other settings are refused, not mixed in."""

    def __init__(self, path, settings, defaults):
        self.path = path
        self.settings = _canonical(settings)
        self.defaults = _canonical(defaults or {})
        self.hash = settings_hash(self.settings, self.defaults)
        self.previous = {}  # the config.json found in the folder, if any
        cfg_file = path / "config.json"
        if cfg_file.exists():
            self.previous = _read_marked(cfg_file, MARK, "move it away, choose another --out, or pass "
                                         "--overwrite", check=_has_settings)

    def check_compatible(self):
        if not self.previous:
            leftovers = [n for n in OWN_FILES[1:] if (self.path / n).exists()]
            leftovers += [f"runs/{f.name}" for f in (self.path / "runs").glob("*.json")]
            if leftovers:
                raise ResultsError(f"--out {self.path} holds {leftovers[0]} but no config.json, so it "
                                   f"is not a results folder of this suite; choose another --out "
                                   f"or pass --overwrite")
            return
        k = _changed(self.previous["settings"], self.settings, self.defaults)
        if k:
            old = self.previous["settings"].get(k, self.defaults.get(k))
            raise ResultsError(f"--out {self.path} holds runs made with other settings ({k} was "
                               f"{old!r}, now {self.settings.get(k)!r}); rerun with the same "
                               f"settings to resume, choose another --out, or pass --overwrite")

    def write(self, config, extra):
        """Record the settings and environment; refuse if the data differ from the stored runs'
        (same name and counts), since data_dir itself may legitimately move."""
        for k in ("dataset_label", "train_samples", "val_samples", "test_samples"):
            if k in self.previous and self.previous[k] != extra.get(k):
                raise ResultsError(f"--out {self.path} holds runs on other data ({k} was "
                                   f"{self.previous[k]!r}, now {extra.get(k)!r}); choose another "
                                   f"--out or pass --overwrite")
        # the environment of the invocation that made the folder stays; each run also records its own
        kept = {k: self.previous[k] for k in ENVIRONMENT_KEYS if k in self.previous}
        # the fingerprint hashes the exact float tensors, whose last bits can follow the thread
        # count of the decoding or generating process: a different one is reported, not refused
        if self.previous.get("data_fingerprint") not in (None, extra.get("data_fingerprint")):
            warn(f"{self.path}: data fingerprint {extra.get('data_fingerprint')} differs from the "
                 f"folder's {self.previous['data_fingerprint']} (same dataset, sizes and counts; the "
                 f"tensors differ, perhaps only in rounding); keeping the folder's")
            kept["data_fingerprint"] = self.previous["data_fingerprint"]
        # plugins used by any invocation into the folder accumulate
        plugins = {p["path"]: p for p in [*self.previous.get("plugins", []), *extra.get("plugins", [])]}
        blob = {"suite": MARK, "settings": self.settings, "config": _canonical(config), **extra, **kept,
                "plugins": list(plugins.values())}
        atomic_write(self.path / "config.json", json.dumps(blob, indent=2) + "\n")
        self.previous = blob

    def check_still_ours(self, what):
        """Refuse to write `what` if the folder now holds other settings (an --overwrite with
        other settings while this run trained)."""
        try:
            now = json.loads((self.path / "config.json").read_text())["settings"]
        except (OSError, ValueError, KeyError):
            now = None
        if now is None or settings_hash(now, self.defaults) != self.hash:
            raise ResultsError(f"not saving {what} in {self.path}: the folder was reset or now holds "
                               f"runs of other settings since this run started")


class RunFiles:
    """runs/: one JSON file per finished run, saved the moment it ends, stamped with the folder's
    settings hash and the run's spec. A run counts only if both match what would run now:
    `judge(run)` says why not (its schedule's code changed, its strategy is not defined here)."""

    def __init__(self, path, settings, judge=None):
        self.dir = path / "runs"
        self.settings, self.judge = settings, judge
        self.cache, self.excluded = {}, {}  # excluded: run file -> why it was made by other code

    def file(self, strategy, seed):
        return self.dir / f"{run_filename(strategy, seed)}.json"

    def refresh(self):
        """Re-read runs/ (other processes may have saved runs since)."""
        cache, self.excluded = {}, {}
        for f in sorted(self.dir.glob("*.json")):
            run = self._own(f, _read_run(f))
            if run is not None:
                cache[run.key] = run
        self.cache = cache
        return self

    def all(self):
        return list(self.cache.values())

    def saved(self, name, seed):
        """The Run of `name` (a RunName) and seed if it is saved by now, reading its own file when
        it is not known yet; None if there is none that counts."""
        f = self.file(name, seed)
        if (name, seed) not in self.cache and f.exists():
            run = self._own(f, _read_run(f))
            if run is not None:
                self.cache[name, seed] = run
        return self.cache.get((name, seed))

    def stale(self, name, seed):
        """Why the saved run of `name` and seed cannot be reused although its settings are the
        folder's (its spec differs from what would run now), or None."""
        f = self.file(name, seed)
        if not f.exists() or self.judge is None:
            return None
        blob = _read_run(f)
        if blob.get("settings_hash", self.settings.hash) != self.settings.hash:
            return None
        try:
            run = run_from_json(blob)
        except UnknownStrategy as e:
            return str(e)
        return self.judge(run.name, run.made)

    def _own(self, path, blob):
        """The Run of `blob` if it was made under this folder's settings and by the code that would
        run it now (runs saved before runs carried a hash are the folder's: config.json vouches
        for them); else None, said once."""
        h = blob.get("settings_hash")
        if h is not None and h != self.settings.hash:
            _warn_once(path, h, f"{path} was made with other settings (hash {h}, this folder's is "
                                f"{self.settings.hash}); it is not counted, and its run is trained again")
            return None
        try:
            run = run_from_json(blob, self.settings.settings)
            why = self.judge(run.name, run.made) if self.judge is not None else None
        except UnknownStrategy as e:
            why = str(e)
        if why is not None:
            self.excluded[str(path)] = why  # said by whoever reports on the folder (or refuses it)
            return None
        if run.test_samples is None and "test_samples" in self.settings.previous:  # runs before it was stored
            run = replace(run, test_samples=self.settings.previous["test_samples"])
        return run

    def save(self, run):
        """Persist one finished Run, stamped with the settings hash."""
        run = replace(run, settings_hash=self.settings.hash, settings=self.settings.settings)
        self.settings.check_still_ours(f"{run.name} seed {run.seed}")
        atomic_write(self.file(run.name, run.seed), run_to_json(run))
        self.cache[run.key] = run
        return run


def _warn_once(path, what, message):
    if (str(path), what) not in _REPORTED:
        _REPORTED.add((str(path), what))
        warn(message)


class Checkpoints:
    """checkpoints/: the last epoch-end snapshot of each unfinished run, stamped like its run."""

    def __init__(self, path, settings, judge=None):
        self.dir = path / "checkpoints"
        self.settings, self.judge = settings, judge

    def file(self, strategy, seed):
        return self.dir / f"{run_filename(strategy, seed)}.pt"

    def save(self, strategy, seed, snapshot, stamp=None):
        """`stamp` (the run's spec and engine) goes with it, so a changed schedule never resumes it."""
        self.dir.mkdir(exist_ok=True)
        blob = {"settings_hash": self.settings.hash, "strategy": str(strategy), **(stamp or {}), **snapshot}
        _atomic(self.file(strategy, seed), lambda f: torch.save(blob, f))

    def _read(self, path):
        """(blob, None) or (None, why it cannot be used)."""
        try:
            blob = torch.load(path, map_location="cpu", weights_only=False)
            ok = isinstance(blob, dict) and {"model", "history", "at"} <= set(blob)
            return (blob, None) if ok else (None, "it is not a checkpoint of this suite")
        except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError,
                ModuleNotFoundError, __import__("pickle").UnpicklingError) as e:
            if isinstance(e, (ModuleNotFoundError, AttributeError)):  # a missing class, not bad bytes
                raise ResultsError(f"{path} cannot be loaded here ({type(e).__name__}: {e}); "
                                   f"use the suite's and torch's versions that wrote it") from None
            return None, f"it is corrupt or truncated ({type(e).__name__})"

    def stale(self, strategy, seed):
        """Why the checkpoint of `strategy` and seed must not be resumed although its settings are
        the folder's (its spec differs from what would run now), or None."""
        path = self.file(str(strategy), seed)
        if not path.exists() or self.judge is None:
            return None
        blob, why = self._read(path)
        if blob is None or blob.get("settings_hash", self.settings.hash) != self.settings.hash:
            return None  # load() moves it aside and the run starts over
        return self.judge(strategy, Made(*(blob.get(k) for k in STAMP_KEYS)))

    def load(self, strategy, seed, log=warn):
        """The last epoch-end snapshot of an unfinished run, or None. Loaded to the CPU (the
        training loop moves it to the run's device). A checkpoint that cannot be read, or that
        was made under other settings, is renamed aside and the run starts from epoch 0; one made
        by other code (its spec differs) is refused."""
        path = self.file(strategy, seed)
        if not path.exists():
            return None
        blob, why = self._read(path)
        if why is None and blob.get("settings_hash", self.settings.hash) != self.settings.hash:
            why = f"it was made with other settings (hash {blob['settings_hash']})"
        if why is None:
            stale = self.stale(strategy, seed)
            if stale is not None:
                raise ResultsError(f"the checkpoint of {strategy} seed {seed} in {self.settings.path} cannot "
                                   f"be resumed: {stale}; pass --overwrite to discard the folder's runs, or "
                                   f"choose a new --out")
            for k in ("settings_hash", "strategy", "spec", "workload"):
                blob.pop(k, None)
            return blob
        aside = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")
        path.rename(aside)
        log(f"{path}: {why}; moved aside to {aside.name}, and {strategy} seed {seed} restarts from epoch 0")
        return None

    def drop(self, strategy, seed):
        """Delete a saved run's checkpoint. The folder stays, empty or not: another executor may be
        between its mkdir and its write there (removing it failed that executor's run on CI)."""
        self.file(strategy, seed).unlink(missing_ok=True)


class Leases:
    """leases/: which executor trains which run (see Lease)."""

    def __init__(self, path, settings):
        self.dir = path / "leases"
        self.settings = settings

    def file(self, strategy, seed):
        return self.dir / f"{run_filename(strategy, seed)}.lease"

    def holder(self, strategy, seed):
        """The live holder's lease (a dict) of a run, or None if it is free or its lease is stale."""
        path = self.file(strategy, seed)
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return None
        h = _read_lease(path)
        return None if _stale(h, age) else (h or {})

    def claim(self, strategy, seed, log=print):
        """A Lease on the run for this process, or None while another live executor holds it.
        A stale lease (dead process on this host, or no heartbeat for LEASE_TIMEOUT_S) is taken
        over, and the takeover is logged with the old holder."""
        self.dir.mkdir(exist_ok=True)
        path = self.file(strategy, seed)
        token = uuid.uuid4().hex
        blob = json.dumps({"host": HOST, "pid": os.getpid(), "job": _job_id(), "time": time.time(),
                           "token": token, "settings_hash": self.settings.hash})
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _MODE)
            except FileExistsError:
                try:
                    age = time.time() - path.stat().st_mtime
                except FileNotFoundError:
                    continue  # released meanwhile: try again
                old = _read_lease(path)
                why = _stale(old, age)
                if why is None:
                    return None
                aside = path.with_name(f".{path.name}~{HOST}~{os.getpid()}~{token}.stale")
                try:
                    os.rename(path, aside)  # atomic: of several takers, one wins
                except FileNotFoundError:
                    continue
                aside.unlink(missing_ok=True)
                log(f"took over {strategy} seed {seed} from {_holder_text(old)}: {why}")
                continue
            with os.fdopen(fd, "w") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            fsync_dir(self.dir)
            return Lease(path, token)
        return None


class ResultsDir:
    """The folder of one experiment (a sweep's cell), by its four jobs: `settings` (config.json,
    the key and its hash), `runs` (runs/), `checkpoints` and `leases`; see the module docstring.
    `judge(run)` says why a run of this folder's settings was made by other code, or None."""

    def __init__(self, out, settings, overwrite=False, defaults=None, judge=None):
        self.path = Path(out)
        self.settings = FolderSettings(self.path, settings, defaults)
        _check_writable(self.path / "runs", self.path)
        for folder in ("", "runs", "checkpoints"):
            clean_stale_tmp(self.path / folder)
        if overwrite:
            self._clear()
        self.settings.check_compatible()
        self.runs = RunFiles(self.path, self.settings, judge).refresh()
        self.checkpoints = Checkpoints(self.path, self.settings, judge)
        self.leases = Leases(self.path, self.settings)

    @property
    def hash(self):
        return self.settings.hash

    @classmethod
    def reader(cls, out, defaults=None, judge=None):
        """An existing results folder opened under the settings its config.json records (to read
        a run another cell made: the reference of a matched-budget run)."""
        previous = _read_marked(Path(out) / "config.json", MARK, "choose another folder",
                                check=_has_settings)
        return cls(out, previous["settings"], defaults=defaults, judge=judge)

    def _clear(self):
        previous = self.settings.previous
        if self.settings.settings.get("dry_run") and previous and not previous["settings"].get("dry_run"):
            raise ResultsError(f"--out {self.path} holds real results; a --dry-run never overwrites "
                               f"them: leave out --out (a dry run makes a scratch folder of its own)")
        for name in (*OWN_FILES, "comparison_results.png"):
            (self.path / name).unlink(missing_ok=True)
        for f in (self.path / "runs").glob("*.json"):
            f.unlink()
        for sub in ("checkpoints", "leases", "slurm"):  # slurm: its jobs were cancelled or are gone
            shutil.rmtree(self.path / sub, ignore_errors=True)
        self.settings.previous = {}

    def discard(self, strategy, seed):
        """Delete one run's file and checkpoint (a stale run: --discard-stale)."""
        self.runs.file(strategy, seed).unlink(missing_ok=True)
        self.runs.cache.pop((strategy, seed), None)
        self.checkpoints.drop(strategy, seed)

    def write_config(self, config, extra):
        self.settings.write(config, extra)

    def save_run(self, run):
        """Persist one finished run, then drop its checkpoint."""
        run = self.runs.save(run)
        self.checkpoints.drop(run.name, run.seed)
        return run

    def write_metrics(self):
        """metrics.csv from every saved run."""
        atomic_write(self.path / "metrics.csv", metrics_csv(self.runs.all()))

    def write_summary(self, summary):
        atomic_write(self.path / "summary.json", json.dumps(to_json(summary), indent=2) + "\n")

    def save_figure(self, fig, name="comparison_results.png"):
        save_figure(fig, self.path / name)


def _read_lease(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None  # being written, or gone: the file's age decides


class SweepDir:
    """The --out folder of a sweep: sweep.json (the settings shared by every cell and the grid's
    keys), one ResultsDir per cell, and the sweep's table, summary and figure.

    Values may be added to the grid between invocations; a cell already there resumes."""

    def __init__(self, out, base_settings, grid_keys, overwrite=False, defaults=None):
        self.path = Path(out)
        self.base = _canonical(base_settings)
        self.keys = list(grid_keys)
        self.defaults = _canonical(defaults or {})
        _check_writable(self.path, self.path)
        if overwrite:
            self._clear()
        self._check_compatible()
        atomic_write(self.path / "sweep.json", json.dumps(
            {"suite": SWEEP_MARK, "grid_keys": self.keys, "settings": self.base}, indent=2) + "\n")

    def _stored(self):
        f = self.path / "sweep.json"
        return _read_marked(f, SWEEP_MARK, "choose another --out or pass --overwrite") if f.exists() else None

    def _clear(self):
        if self._stored() is None and (self.path / "config.json").exists():
            raise ResultsError(f"--out {self.path} is an experiment's folder, not a sweep's; "
                               f"choose another --out")
        for _, cell in self.cells():
            shutil.rmtree(cell)
        shutil.rmtree(self.path / "slurm", ignore_errors=True)  # its jobs were cancelled or are gone
        for name in SWEEP_FILES:
            (self.path / name).unlink(missing_ok=True)

    def _check_compatible(self):
        stored = self._stored()
        if stored is None:
            if (self.path / "config.json").exists():
                raise ResultsError(f"--out {self.path} is an experiment's folder, not a sweep's; "
                                   f"choose another --out")
            return
        if stored["grid_keys"] != self.keys:
            raise ResultsError(f"--out {self.path} holds a sweep over {','.join(stored['grid_keys'])}, "
                               f"not {','.join(self.keys)}; add values to the same --grid keys to "
                               f"extend it, or choose another --out")
        k = _changed(stored["settings"], self.base, self.defaults)
        if k:
            old = stored["settings"].get(k, self.defaults.get(k))
            raise ResultsError(f"--out {self.path} holds a sweep made with other settings ({k} was "
                               f"{old!r}, now {self.base.get(k)!r}); rerun with the same settings to "
                               f"resume, choose another --out, or pass --overwrite")

    def cell_path(self, values):
        """cell folder: <key>=<value>__<key>=<value>, in the grid's key order."""
        return self.path / "__".join(f"{k}={short_value(values[k])}" for k in self.keys)

    def cells(self):
        """(grid values, folder) of every cell in the folder, from each cell's config.json."""
        out = []
        for cfg in sorted(self.path.glob("*/config.json")):
            try:
                stored = json.loads(cfg.read_text())
                values = {k: stored["settings"][k] for k in self.keys}
            except Exception:
                warn(f"{cfg} cannot be read as a cell of this sweep; that cell is left out of the map")
                continue
            out.append((values, cfg.parent))
        return out

    def write_table(self, text):
        atomic_write(self.path / "sweep.csv", text)

    def write_summary(self, summary):
        atomic_write(self.path / "sweep_summary.json", json.dumps(to_json(summary), indent=2) + "\n")

    def save_figure(self, fig, name="sweep_results.png"):
        save_figure(fig, self.path / name)



def metrics_csv(runs):
    """One row per strategy, seed and epoch."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for run in sorted(runs, key=lambda r: (str(r.name), r.seed)):
        for e in run.history:
            w.writerow([run.name, run.seed, *(_cell(getattr(e, c)) for c in HISTORY_KEYS)])
    return buf.getvalue()


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    return v
