"""Results are saved per run, atomically; reruns resume; foreign or corrupt folders are refused."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, sigint_as_at_a_terminal
from results import ResultsDir, ResultsError

BASE = ["--dataset", "synthetic", "--train-size", "512", "--test-size", "128", "--batch-size", "64",
        "--no-progress"]
ARGS = BASE + ["--epochs", "2", "--seeds", "2"]
ONE = BASE + ["--epochs", "1", "--seeds", "1"]
TIMING = {"epoch_time_s", "eval_time_s"}


def _cli(out, *extra, **kw):
    return subprocess.Popen([sys.executable, "experiments.py", *ARGS, "--out", str(out), *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _wait_for_first_run(proc, out, timeout=120):
    runs = out / "runs"
    t0 = time.time()
    while time.time() - t0 < timeout:
        if runs.exists() and list(runs.glob("*.json")):
            return
        if proc.poll() is not None:
            pytest.fail(f"process ended before its first run: {proc.stderr.read()}")
        time.sleep(0.02)
    pytest.fail("no run finished in time")


def _results(out):
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return sorted(tuple((k, v) for k, v in r.items() if k not in TIMING) for r in rows)


def test_kill_after_first_run_then_resume_recomputes_nothing(tmp_path):
    out = tmp_path / "out"
    proc = _cli(out)
    _wait_for_first_run(proc, out)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait()
    saved = {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in (out / "runs").glob("*.json")}
    assert 1 <= len(saved) < 6
    if (out / "metrics.csv").exists():  # written after each run, atomically: whole rows of saved runs
        with open(out / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) % 2 == 0 and len(rows) <= 2 * len(saved)
        assert {f"{r['strategy']}__seed{r['seed']}.json" for r in rows} <= set(saved)

    rerun = subprocess.run([sys.executable, "experiments.py", *ARGS, "--out", str(out)], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(saved)} already in {out} (skipped)" in rerun.stdout
    for name, (content, mtime) in saved.items():  # not recomputed, not rewritten
        f = out / "runs" / name
        assert f.read_bytes() == content and f.stat().st_mtime_ns == mtime
    assert len(list((out / "runs").glob("*.json"))) == 6

    # nothing lost: the resumed results equal an uninterrupted run's
    fresh = tmp_path / "fresh"
    full = subprocess.run([sys.executable, "experiments.py", *ARGS, "--out", str(fresh)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr
    assert _results(out) == _results(fresh)


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path):
    out = tmp_path / "out"
    proc = _cli(out, preexec_fn=sigint_as_at_a_terminal)
    _wait_for_first_run(proc, out)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "rerun the same command to resume" in err and "Traceback" not in err
    assert len(list((out / "runs").glob("*.json"))) >= 1


def test_same_settings_resume_and_other_settings_refuse(tmp_path, capsys):
    import experiments
    args = ONE + ["--out", str(tmp_path)]
    assert experiments.main(args) == 0
    capsys.readouterr()
    assert experiments.main(args) == 0
    assert "3 already in" in capsys.readouterr().out
    # more seeds and strategies reuse what is there
    assert experiments.main(args + ["--seeds", "2", "--strategies", "standard"]) == 0
    assert "1 already in" in capsys.readouterr().out
    # a different setting is refused, with the fix named...
    assert experiments.main(args + ["--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "other settings (lr was 0.001, now 0.01)" in err and "--overwrite" in err
    # ...unless --overwrite is given
    assert experiments.main(args + ["--lr", "0.01", "--overwrite"]) == 0
    assert "already in" not in capsys.readouterr().out


def test_other_data_in_the_same_folder_is_refused(tmp_path):
    """data_dir may move between invocations, but the data themselves must be the same."""
    import experiments
    assert experiments.main(ONE + ["--out", str(tmp_path)]) == 0
    store = ResultsDir(tmp_path, experiments.parse_args(ONE).result_key())
    with pytest.raises(ResultsError, match="other data"):
        store.write_config({}, {"dataset_label": "something else", "train_samples": 512,
                                "test_samples": 128})


@pytest.mark.parametrize("damage, expected", [
    (lambda d: (d / "config.json").write_text("{not json"), "config.json is corrupt"),
    (lambda d: (d / "config.json").write_text('{"name": "someone else"}'), "config.json is corrupt"),
    (lambda d: next((d / "runs").glob("*.json")).write_text('{"truncated'), "is corrupt"),
])
def test_corrupt_results_are_refused_not_overwritten(tmp_path, damage, expected):
    import experiments
    args = ONE + ["--out", str(tmp_path)]
    assert experiments.main(args) == 0
    damage(tmp_path)
    before = {f: f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()}
    with pytest.raises(ResultsError, match=expected):
        experiments.run_experiment(experiments.parse_args(args))
    assert before == {f: f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()}


def test_foreign_results_file_is_refused(tmp_path):
    (tmp_path / "metrics.csv").write_text("epoch,acc\n1,50\n")
    with pytest.raises(ResultsError, match="no config.json"):
        ResultsDir(tmp_path, {"epochs": 1})
    assert (tmp_path / "metrics.csv").read_text() == "epoch,acc\n1,50\n"
    ResultsDir(tmp_path, {"epochs": 1}, overwrite=True)  # the explicit way out
    assert not (tmp_path / "metrics.csv").exists()


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    from results import atomic_write
    target = tmp_path / "metrics.csv"
    atomic_write(target, "old\n")

    def boom(*a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]  # no temporary left behind


def test_config_json_records_settings_and_environment(tmp_path):
    import experiments
    args = ONE + ["--out", str(tmp_path)]
    assert experiments.main(args) == 0
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["settings"]["epochs"] == 1 and "seeds" not in cfg["settings"]
    assert cfg["config"]["seeds"] == 1 and cfg["train_samples"] == 512
