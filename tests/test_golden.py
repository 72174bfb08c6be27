"""Run identity: a built-in schedule's factors cannot change without a new version, and every
committed results folder still reads, each run counted, under the code as it is now."""
import glob
import json
from pathlib import Path

import pytest

from conftest import ROOT
from fixtures.golden import FILE, compute
from strategies import BUILTIN


def test_built_in_factors_change_only_with_a_version_bump():
    golden, now = json.loads(FILE.read_text()), compute()
    assert set(golden) == set(BUILTIN), "a built-in was added or removed: rerun python tests/fixtures/golden.py"
    for name in BUILTIN:
        if now[name]["factors"] != golden[name]["factors"]:
            assert now[name]["version"] != golden[name]["version"], (
                f"{name}'s factors changed but its schedule's version did not: bump `version` so that "
                f"runs made with the old code are not reused, then rerun python tests/fixtures/golden.py")
            pytest.fail(f"{name} has a new version: rerun python tests/fixtures/golden.py")
        assert now[name]["version"] == golden[name]["version"], f"{name}: rerun python tests/fixtures/golden.py"


def test_the_golden_factors_would_catch_a_changed_schedule(monkeypatch):
    """The check above can fail: FreezeOut with another default t0 gives other factors."""
    import schedules
    golden = json.loads(FILE.read_text())
    monkeypatch.setattr(schedules.FreezeOut, "stop_fraction", lambda self, unit, run: 0.5)
    assert compute()["freezeout"]["factors"] != golden["freezeout"]["factors"]


def test_every_committed_results_folder_reads_with_every_run_counted():
    from config import DEFAULT_KEY
    from results import ResultsDir
    from runs import judge_for_folder
    folders = sorted(Path(f).parent for f in glob.glob(str(ROOT / "results" / "**" / "config.json"), recursive=True))
    assert len(folders) > 20
    for folder in folders:
        settings = json.loads((folder / "config.json").read_text())["settings"]
        store = ResultsDir.reader(folder, DEFAULT_KEY, judge_for_folder(settings))
        files = sorted(p.stem for p in (folder / "runs").glob("*.json"))
        assert len(store.runs.all()) == len(files) > 0, folder


def test_a_run_file_read_as_a_run_and_written_back_is_byte_identical():
    """results.py is the one place a Run becomes JSON and back: the two are inverses on the run files
    of today's format (the cnn pilot's runs record every field a run has)."""
    from results import run_from_json, run_to_json
    files = sorted((ROOT / "results" / "pilot-cnn-cifar10-jpeg" / "runs").glob("*.json"))
    assert len(files) == 8
    for f in files:
        run = run_from_json(json.loads(f.read_text()))
        assert run.memory is not None and run.made.workload is not None and len(run.history) == 15
        assert run_to_json(run) == f.read_text(), f.name
