"""The one writer of results folders: runs, checkpoints, tables and figures, written atomically.

An experiment's folder holds config.json, runs/<strategy>__seed<k>.json (one per finished
run, saved the moment it ends), metrics.csv, summary.json and comparison_results.png. A
sweep's folder holds sweep.json, one such experiment folder per cell, and sweep.csv,
sweep_summary.json and sweep_results.png. A run in progress keeps a checkpoint in
checkpoints/ at every epoch end, so a killed run resumes where it stopped. A folder made
with other settings, or holding files this suite did not write, is refused rather than
overwritten.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from config import short_value
from training_loop import HISTORY_KEYS, VALIDATION_KEYS

MARK = "alternating-freeze-results/1"
SWEEP_MARK = "alternating-freeze-sweep/1"
CSV_COLUMNS = ("strategy", "seed", *HISTORY_KEYS)
OWN_FILES = ("config.json", "metrics.csv", "summary.json")
ENVIRONMENT_KEYS = ("versions", "device", "device_name", "threads")
SWEEP_FILES = ("sweep.json", "sweep.csv", "sweep_summary.json", "sweep_results.png")


class ResultsError(Exception):
    """A problem with the --out folder that the user can fix; its message is one line."""


def atomic_write(path, text):
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    _atomic(path, lambda f: f.write(text.encode()))


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's 0600 would hide results from a shared group


def _atomic(path, write):
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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


def save_figure(fig, path):
    """A matplotlib Figure as PNG, atomically."""
    _atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))


def _canonical(obj):
    return json.loads(json.dumps(obj))


def _changed(old, new, defaults):
    """The first setting that differs; a setting missing from an older folder counts as its default."""
    defaults = defaults or {}
    for k in [*new, *sorted(set(old) - set(new))]:  # in the order of the settings
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
    validation existed get empty validation columns."""
    h = run["history"]
    for k in VALIDATION_KEYS:
        h.setdefault(k, [None] * len(h["epoch"]))
    assert all(len(h[c]) == len(h["epoch"]) for c in HISTORY_KEYS)
    assert "strategy" in run and "seed" in run


def _has_settings(config):
    assert isinstance(config["settings"], dict)


def _read_run(path):
    return _read_marked(path, MARK, "delete it to recompute that run, or pass --overwrite", _complete_run)


def run_filename(strategy, seed):
    return f"{strategy.replace('@', '_at_')}__seed{seed}"


class ResultsDir:
    """The folder of one experiment (a sweep's cell); see the module docstring."""

    def __init__(self, out, settings, overwrite=False, defaults=None):
        self.path = Path(out)
        self.runs_dir = self.path / "runs"
        self.checkpoints_dir = self.path / "checkpoints"
        self.settings = _canonical(settings)
        self.defaults = _canonical(defaults or {})
        self.previous = {}  # the config.json found in the folder, if any
        _check_writable(self.runs_dir, self.path)
        self._read_previous()
        if overwrite:
            self._clear()
        self._check_compatible()
        self.runs = self._load_runs()

    def _read_previous(self):
        cfg_file = self.path / "config.json"
        if cfg_file.exists():
            self.previous = _read_marked(cfg_file, MARK, "move it away, choose another --out, or pass "
                                         "--overwrite", check=_has_settings)

    def _clear(self):
        if self.settings.get("dry_run") and self.previous and not self.previous["settings"].get("dry_run"):
            raise ResultsError(f"--out {self.path} holds real results; a --dry-run never overwrites "
                               f"them: leave out --out (dry runs go under results/dry-run/)")
        for name in (*OWN_FILES, "comparison_results.png"):
            (self.path / name).unlink(missing_ok=True)
        for f in self.runs_dir.glob("*.json"):
            f.unlink()
        shutil.rmtree(self.checkpoints_dir, ignore_errors=True)
        self.previous = {}

    def _check_compatible(self):
        if not self.previous:
            leftovers = [n for n in OWN_FILES[1:] if (self.path / n).exists()]
            leftovers += [f"runs/{f.name}" for f in self.runs_dir.glob("*.json")]
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

    def _load_runs(self):
        runs = {}
        for f in sorted(self.runs_dir.glob("*.json")):
            run = _read_run(f)
            runs[run["strategy"], run["seed"]] = run
        return runs

    def refresh(self):
        """Re-read runs/ (other processes may have saved runs since)."""
        self.runs = self._load_runs()
        return self

    def saved(self, strategy, seed):
        """The run if another process has saved it by now, reading only its own file."""
        f = self.runs_dir / f"{run_filename(strategy, seed)}.json"
        if (strategy, seed) not in self.runs and f.exists():
            self.runs[strategy, seed] = _read_run(f)
        return self.runs.get((strategy, seed))

    # --- writing ----------------------------------------------------------------
    def write_config(self, config, extra):
        """Record the settings and environment; refuse if the data differ from the stored runs'
        (same name and counts), since data_dir itself may legitimately move."""
        for k in ("dataset_label", "train_samples", "val_samples", "test_samples"):
            if k in self.previous and self.previous[k] != extra.get(k):
                raise ResultsError(f"--out {self.path} holds runs on other data ({k} was "
                                   f"{self.previous[k]!r}, now {extra.get(k)!r}); choose another "
                                   f"--out or pass --overwrite")
        # the environment of the invocation that made the folder stays; each run also records its own
        kept = {k: self.previous[k] for k in ENVIRONMENT_KEYS if k in self.previous}
        blob = {"suite": MARK, "settings": self.settings, "config": _canonical(config), **extra, **kept}
        atomic_write(self.path / "config.json", json.dumps(blob, indent=2) + "\n")
        self.previous = blob

    def done(self, strategy, seed):
        return self.runs.get((strategy, seed))

    def save_run(self, run):
        """Persist one finished run, then drop its checkpoint."""
        run = {"suite": MARK, **run}
        atomic_write(self.runs_dir / f"{run_filename(run['strategy'], run['seed'])}.json",
                     json.dumps(run) + "\n")
        self.runs[(run["strategy"], run["seed"])] = run
        self.checkpoint_path(run["strategy"], run["seed"]).unlink(missing_ok=True)
        try:
            self.checkpoints_dir.rmdir()  # only when no other run is in progress
        except OSError:
            pass

    def write_metrics(self):
        """metrics.csv from every saved run."""
        atomic_write(self.path / "metrics.csv", metrics_csv(self.runs.values()))

    def write_summary(self, summary):
        atomic_write(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")

    def save_figure(self, fig, name="comparison_results.png"):
        save_figure(fig, self.path / name)

    # --- checkpoints of runs in progress ------------------------------------------
    def checkpoint_path(self, strategy, seed):
        return self.checkpoints_dir / f"{run_filename(strategy, seed)}.pt"

    def save_checkpoint(self, strategy, seed, snapshot):
        self.checkpoints_dir.mkdir(exist_ok=True)
        _atomic(self.checkpoint_path(strategy, seed), lambda f: torch.save(snapshot, f))

    def load_checkpoint(self, strategy, seed):
        """The last epoch-end snapshot of an unfinished run, or None."""
        path = self.checkpoint_path(strategy, seed)
        if not path.exists():
            return None
        try:
            return torch.load(path, weights_only=False)
        except Exception:
            raise ResultsError(f"{path} is corrupt; delete it to restart that run from epoch 0") from None


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
                continue
            out.append((values, cfg.parent))
        return out

    def write_table(self, text):
        atomic_write(self.path / "sweep.csv", text)

    def write_summary(self, summary):
        atomic_write(self.path / "sweep_summary.json", json.dumps(summary, indent=2) + "\n")

    def save_figure(self, fig):
        save_figure(fig, self.path / "sweep_results.png")



def metrics_csv(runs):
    """One row per strategy, seed and epoch."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for run in sorted(runs, key=lambda r: (r["strategy"], r["seed"])):
        h = run["history"]
        for i in range(len(h["epoch"])):
            w.writerow([run["strategy"], run["seed"],
                        *(_cell(h[c][i]) for c in HISTORY_KEYS)])
    return buf.getvalue()


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    return v
