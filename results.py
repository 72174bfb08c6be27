"""The results folder: config.json, runs/*.json, metrics.csv, summary.json, written atomically.

Each finished run (strategy x seed) is saved the moment it ends, so an
interrupted sweep loses at most the run in progress, and rerunning the same
command resumes. A folder made with other settings, or holding files this suite
did not write, is refused rather than overwritten.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

from training_loop import HISTORY_KEYS

MARK = "alternating-freeze-results/1"
CSV_COLUMNS = ("strategy", "seed", *HISTORY_KEYS)
OWN_FILES = ("config.json", "metrics.csv", "summary.json")


class ResultsError(Exception):
    """A problem with the --out folder that the user can fix; its message is one line."""


def atomic_write(path, text):
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _canonical(obj):
    return json.loads(json.dumps(obj))


class ResultsDir:
    """The --out folder of one experiment; see the module docstring."""

    def __init__(self, out, settings, overwrite=False):
        self.path = Path(out)
        self.runs_dir = self.path / "runs"
        self.settings = _canonical(settings)
        self.previous = {}  # the config.json found in the folder, if any
        self._check_writable()
        if overwrite:
            self._clear()
        self._check_compatible()
        self.runs = self._load_runs()

    def _check_writable(self):
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=self.runs_dir).close()
        except OSError as e:
            raise ResultsError(f"--out {self.path} cannot be written ({e.strerror or e}); "
                               f"choose a folder you can write to") from None

    def _clear(self):
        for name in OWN_FILES:
            (self.path / name).unlink(missing_ok=True)
        for f in self.runs_dir.glob("*.json"):
            f.unlink()

    def _check_compatible(self):
        cfg_file = self.path / "config.json"
        if not cfg_file.exists():
            leftovers = [n for n in OWN_FILES[1:] if (self.path / n).exists()]
            leftovers += [f"runs/{f.name}" for f in self.runs_dir.glob("*.json")]
            if leftovers:
                raise ResultsError(f"--out {self.path} holds {leftovers[0]} but no config.json, so it "
                                   f"is not a results folder of this suite; choose another --out "
                                   f"or pass --overwrite")
            return
        try:
            stored = json.loads(cfg_file.read_text())
            assert stored.get("suite") == MARK
            old = stored["settings"]
            self.previous = stored
        except Exception:
            raise ResultsError(f"{cfg_file} is corrupt or was not written by this suite; move it "
                               f"away, choose another --out, or pass --overwrite") from None
        changed = [k for k in sorted(set(old) | set(self.settings)) if old.get(k) != self.settings.get(k)]
        if changed:
            k = changed[0]
            raise ResultsError(f"--out {self.path} holds runs made with other settings ({k} was "
                               f"{old.get(k)!r}, now {self.settings.get(k)!r}); rerun with the same "
                               f"settings to resume, choose another --out, or pass --overwrite")

    def _load_runs(self):
        runs = {}
        for f in sorted(self.runs_dir.glob("*.json")):
            try:
                run = json.loads(f.read_text())
                assert run.get("suite") == MARK
                key = (run["strategy"], run["seed"])
                assert all(len(run["history"][c]) == len(run["history"]["epoch"])
                           for c in HISTORY_KEYS)
            except Exception:
                raise ResultsError(f"{f} is corrupt or was not written by this suite; delete it to "
                                   f"recompute that run, or pass --overwrite") from None
            runs[key] = run
        return runs

    # --- writing ----------------------------------------------------------------
    def write_config(self, config, extra):
        """Record the settings and environment; refuse if the data differ from the stored runs'
        (same name and counts), since data_dir itself may legitimately move."""
        for k in ("dataset_label", "train_samples", "test_samples"):
            if k in self.previous and self.previous[k] != extra.get(k):
                raise ResultsError(f"--out {self.path} holds runs on other data ({k} was "
                                   f"{self.previous[k]!r}, now {extra.get(k)!r}); choose another "
                                   f"--out or pass --overwrite")
        blob = {"suite": MARK, "settings": self.settings, "config": _canonical(config), **extra}
        atomic_write(self.path / "config.json", json.dumps(blob, indent=2) + "\n")

    def done(self, strategy, seed):
        return self.runs.get((strategy, seed))

    def save_run(self, run):
        """Persist one finished run, then regenerate metrics.csv from every saved run."""
        run = {"suite": MARK, **run}
        name = f"{run['strategy'].replace('@', '_at_')}__seed{run['seed']}.json"
        atomic_write(self.runs_dir / name, json.dumps(run) + "\n")
        self.runs[(run["strategy"], run["seed"])] = run
        atomic_write(self.path / "metrics.csv", metrics_csv(self.runs.values()))

    def write_summary(self, summary):
        atomic_write(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")


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
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    return v
