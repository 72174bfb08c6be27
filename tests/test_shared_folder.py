"""One results folder, many processes: leases, settings-stamped runs and checkpoints, resume
anywhere, honest summaries. Each test runs real processes on a real folder."""
import csv
import io
import json
import os
import subprocess
import sys
import time

import pytest
import torch

import experiments
from conftest import ROOT, as_run, run_cli
from results import ResultsDir, settings_hash

BASE = ["--dataset", "synthetic", "--train-size", "1024", "--test-size", "256", "--batch-size", "64",
        "--no-progress", "--threads", "1"]
EIGHT = BASE + ["--epochs", "3", "--seeds", "4", "--strategies", "standard,alternating-batch"]
TIMING = {"epoch_time_s", "eval_time_s"}


def _metrics(out):
    with open(out / "metrics.csv") as f:
        return sorted(tuple((k, v) for k, v in r.items() if k not in TIMING) for r in csv.DictReader(f))


def _start(args, out):
    return subprocess.Popen([sys.executable, "experiments.py", *args, "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _leftovers(out):
    return [p for p in out.rglob("*") if p.name.endswith(".tmp") or p.suffix == ".lease"]


@pytest.mark.slow
def test_two_invocations_at_once_train_every_run_once(tmp_path):
    shared, single = tmp_path / "shared", tmp_path / "single"
    procs = [_start(EIGHT, shared) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "INCOMPLETE" not in out and "alternating-batch  4/4" in out.replace("  ", "  ")
    runs = [json.loads(f.read_text()) for f in (shared / "runs").glob("*.json")]
    assert len(runs) == 8
    pids = {r["environment"]["pid"] for r in runs}
    assert pids <= {p.pid for p in procs}
    summary = json.loads((shared / "summary.json").read_text())
    assert summary["complete"] and summary["runs_saved"] == summary["runs_planned"] == 8
    # each run was trained once: a second training would log a takeover or a resume
    logs = "".join(o + e for o, e in outs)
    takeovers = logs.count("took over")
    assert logs.count("resumed ") <= takeovers
    assert _leftovers(shared) == []
    assert experiments.main(EIGHT + ["--out", str(single)]) == 0
    assert _metrics(shared) == _metrics(single)


def test_a_live_lease_is_waited_for_and_a_dead_ones_taken_over(tmp_path, capsys):
    args = BASE + ["--epochs", "1", "--seeds", "1", "--strategies", "standard", "--out", str(tmp_path)]
    cfg = experiments.parse_args(args)
    store = experiments.open_cell(cfg)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        store.leases.dir.mkdir(exist_ok=True)
        lease = store.leases.file("standard", 0)
        import socket
        lease.write_text(json.dumps({"host": socket.gethostname(), "pid": sleeper.pid, "token": "x"}))
        assert store.leases.holder("standard", 0) is not None and store.leases.claim("standard", 0) is None
        sleeper.kill()
        sleeper.wait()
        assert store.leases.holder("standard", 0) is None  # its process is gone
        code, out, err = run_cli(args, capsys)
        assert code == 0
        assert f"took over standard seed 0 from {socket.gethostname()} pid {sleeper.pid}" in out
        assert not lease.exists()
    finally:
        sleeper.kill()


def test_a_silent_lease_of_another_host_goes_stale(tmp_path):
    store = ResultsDir(tmp_path, {"epochs": 1})
    store.leases.dir.mkdir()
    lease = store.leases.file("standard", 0)
    lease.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "x"}))
    assert store.leases.holder("standard", 0) is not None  # another host: only its heartbeat tells
    old = time.time() - 10_000
    os.utime(lease, (old, old))
    assert store.leases.holder("standard", 0) is None
    assert store.leases.claim("standard", 0, log=lambda m: None) is not None


def test_a_lost_lease_stops_the_run_without_saving(tmp_path):
    store = ResultsDir(tmp_path, {"epochs": 1})
    mine = store.leases.claim("standard", 0)
    store.leases.file("standard", 0).write_text(json.dumps({"token": "someone else"}))
    from results import LeaseLost
    with pytest.raises(LeaseLost):
        mine.beat()
    mine.release()
    assert store.leases.file("standard", 0).exists()  # not ours to remove


def test_a_foreign_run_file_is_refused_and_trained_again(tmp_path, capsys):
    args = BASE + ["--epochs", "1", "--seeds", "1", "--strategies", "standard", "--out", str(tmp_path)]
    assert run_cli(args, capsys)[0] == 0
    f = tmp_path / "runs" / "standard__seed0.json"
    run = json.loads(f.read_text())
    own = run["settings_hash"]
    assert own == ResultsDir(tmp_path, experiments.parse_args(args).result_key(),
                             defaults=experiments.DEFAULT_KEY).hash
    run["settings_hash"] = settings_hash({"lr": 0.1})
    run["history"]["test_acc"] = [99.0]  # what a stale job of other settings might have saved
    f.write_text(json.dumps(run))
    code, out, err = run_cli(args, capsys)
    assert code == 0 and "made with other settings" in err and err.count("\n") == 1
    assert json.loads(f.read_text())["settings_hash"] == own  # trained again, under its own settings
    assert "99.00" not in out


def test_a_run_is_not_saved_into_a_folder_reset_under_it(tmp_path):
    store = ResultsDir(tmp_path, {"epochs": 1})
    store.write_config({}, {})
    (tmp_path / "config.json").write_text(json.dumps(
        {"suite": "alternating-freeze-results/1", "settings": {"epochs": 2}}))
    from results import ResultsError
    with pytest.raises(ResultsError, match="reset or now holds runs of other settings"):
        store.save_run(as_run("standard", 0, {"test_acc": [50.0]}))


def test_a_truncated_checkpoint_restarts_its_run_with_a_warning(tmp_path, capsys):
    args = BASE + ["--epochs", "2", "--seeds", "1", "--strategies", "standard", "--out", str(tmp_path)]
    store = experiments.open_cell(experiments.parse_args(args))
    store.checkpoints.dir.mkdir()
    store.checkpoints.file("standard", 0).write_bytes(b"PK\x03\x04 truncated")
    code, out, err = run_cli(args, capsys)
    assert code == 0
    assert "corrupt or truncated" in out and "restarts from epoch 0" in out
    assert len(json.loads((tmp_path / "runs" / "standard__seed0.json").read_text())["history"]["epoch"]) == 2
    assert list(tmp_path.glob("checkpoints/*.bad-*"))  # kept aside, not deleted


def test_checkpoints_load_to_the_cpu_and_store_only_the_runs_own_device_rng(tmp_path, monkeypatch):
    from training_loop import rng_state
    assert set(rng_state("cpu")) == {"torch", "python", "numpy"}
    store = ResultsDir(tmp_path, {"epochs": 1})
    store.checkpoints.save("standard", 0, {"model": {}, "history": {"epoch": [1]}, "at": {}})
    seen = {}
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: seen.update(kw) or real(*a, **kw))
    assert store.checkpoints.load("standard", 0)["history"] == {"epoch": [1]}
    assert seen["map_location"] == "cpu"


def test_a_requeue_signal_during_a_checkpoint_write_waits_for_the_write(tmp_path):
    """submitit's USR2 handler exits the process. Arriving inside torch.save it broke the zip
    writer (the job failed instead of requeueing); now it is delivered after the file is whole."""
    import signal
    import results

    def exit_like_submitit(signum, frame):
        raise SystemExit(-1)
    previous = signal.signal(signal.SIGUSR2, exit_like_submitit)
    path = tmp_path / "ckpt.pt"
    blob = {"w": torch.arange(100_000.0), "history": {"epoch": [1, 2]}}

    def write(f):
        torch.save(blob["history"], io.BytesIO())
        os.kill(os.getpid(), signal.SIGUSR2)  # the signal lands mid-write
        time.sleep(0.05)
        torch.save(blob, f)
    try:
        with pytest.raises(SystemExit):
            results._atomic(path, write)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    loaded = torch.load(path, weights_only=False)
    assert torch.equal(loaded["w"], blob["w"]) and loaded["history"] == blob["history"]
    assert signal.getsignal(signal.SIGUSR2) is previous


def test_temp_files_of_dead_writers_are_cleaned_on_open(tmp_path):
    import socket
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "runs").mkdir()
    stale = tmp_path / "runs" / f".x.json~{socket.gethostname()}~{dead.pid}~abc.tmp"
    live = tmp_path / "runs" / f".y.json~{socket.gethostname()}~{os.getpid()}~abc.tmp"
    stale.write_text("half")
    live.write_text("being written")
    ResultsDir(tmp_path, {"epochs": 1})
    assert not stale.exists() and live.exists()


def test_an_unfinished_set_says_so(tmp_path, capsys):
    args = BASE + ["--epochs", "1", "--seeds", "1", "--strategies", "standard", "--out", str(tmp_path)]
    assert run_cli(args, capsys)[0] == 0
    cfg = experiments.parse_args(args[:-2] + ["--seeds", "2", "--out", str(tmp_path)])
    store = experiments.open_cell(cfg)
    _, summary = experiments.summarise_cell(cfg, store, "synthetic")
    assert (summary["complete"], summary["runs_saved"], summary["runs_planned"]) == (False, 1, 2)
    assert json.loads((tmp_path / "summary.json").read_text())["complete"] is False
    assert experiments._completeness(summary).startswith("INCOMPLETE: 1 of 2 planned runs")


# --- beside SLURM (the real single-node cluster of tests/slurm_cluster.sh) ----------------------
def _slurm(args, out, *extra, timeout=300):
    return subprocess.run([sys.executable, "experiments.py", *args, "--launcher", "slurm", "--out", str(out),
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_a_local_invocation_beside_a_no_wait_slurm_sweep_trains_nothing_twice(slurm, tmp_path):
    args = BASE + ["--epochs", "2", "--seeds", "2", "--strategies", "standard,alternating-batch"]
    out = tmp_path / "out"
    p = _slurm(args, out, "--no-wait")
    assert p.returncode == 0 and "submitted 4 runs" in p.stdout, p.stdout + p.stderr
    local = _start(args, out)
    stdout, stderr = local.communicate(timeout=600)
    assert local.returncode == 0, stderr
    # it waited for the runs SLURM held (or found them all saved already), and took none over
    assert "waiting for " in stdout or "4 already in" in stdout
    assert "INCOMPLETE" not in stdout and "took over" not in stdout
    runs = [json.loads(f.read_text()) for f in (out / "runs").glob("*.json")]
    assert len(runs) == 4 and all(r["environment"]["pid"] != local.pid for r in runs)  # all by SLURM
    collect = _slurm(args, out)
    assert collect.returncode == 0 and "submitted" not in collect.stdout
    assert json.loads((out / "summary.json").read_text())["complete"]


@pytest.mark.slow
def test_overwrite_with_live_slurm_jobs_is_refused_in_one_line(slurm, tmp_path):
    args = BASE + ["--train-size", "6000", "--epochs", "50", "--seeds", "1", "--strategies", "standard"]
    out = tmp_path / "out"
    assert _slurm(args, out, "--no-wait").returncode == 0
    job = next(iter(json.loads((out / "slurm" / "jobs.json").read_text()).values()))
    try:
        p = _slurm(args, out, "--overwrite", "--no-wait")
        assert p.returncode == 2 and p.stderr.count("\n") == 1
        assert f"SLURM jobs still queued or running ({job})" in p.stderr and "--cancel" in p.stderr
        p = _slurm(args + ["--epochs", "1"], out, "--overwrite", "--cancel")
        assert p.returncode == 0, p.stderr
        assert "cancelled 1 SLURM jobs" in p.stdout
        assert json.loads((out / "summary.json").read_text())["complete"]
    finally:
        subprocess.run(["scancel", job.split("_")[0]], capture_output=True)


def _workers_of(token, parent=None):
    """Worker processes (spawned interpreters) started under CHAOS_TOKEN=token, orphans included
    unless `parent` names the coordinator they must belong to."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = open(f"/proc/{d}/cmdline", "rb").read()
            env = open(f"/proc/{d}/environ", "rb").read()
        except OSError:
            continue
        if b"spawn_main" in cmd and f"CHAOS_TOKEN={token}".encode() in env.split(b"\0"):
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if parent is None or ppid == parent:
                pids.append(int(d))
    return pids


@pytest.mark.slow
def test_chaos_random_sigkills_of_workers_and_coordinators_lose_and_duplicate_nothing(tmp_path):
    """12 runs on 2 workers; at seeded random moments SIGKILL a worker or the coordinator (whose
    workers then finish their run as orphans), restarting the command after each coordinator
    kill; then rerun to completion. The fp32 metrics must equal an uninterrupted run's, every
    run must be saved once under the folder's settings, and nothing may be left behind."""
    import random
    import uuid
    rng = random.Random(20261127)
    args = BASE + ["--train-size", "4000", "--epochs", "5", "--seeds", "4",
                   "--strategies", "standard,alternating-epoch,alternating-batch", "--workers", "2"]
    ref = tmp_path / "uninterrupted"
    assert subprocess.run([sys.executable, "experiments.py", *args, "--out", str(ref)], cwd=ROOT,
                          capture_output=True, timeout=600).returncode == 0
    out, token = tmp_path / "chaos", uuid.uuid4().hex
    env = {**os.environ, "CHAOS_TOKEN": token}
    cmd = [sys.executable, "experiments.py", *args, "--out", str(out)]
    kills, proc, t0 = [], None, time.time()
    while len(kills) < 8 and len(list((out / "runs").glob("*.json"))) < 12:
        assert time.time() - t0 < 600, f"chaos did not finish; kills so far {kills}"
        if proc is None or proc.poll() is not None:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and not _workers_of(token, proc.pid):  # kill once work is under way
            time.sleep(0.1)
        time.sleep(rng.uniform(0.5, 3.0))
        if proc.poll() is not None:
            continue
        victim = rng.choice(["worker", "coordinator"])
        workers = _workers_of(token)
        if victim == "worker" and workers:
            os.kill(rng.choice(workers), 9)
        else:
            victim = "coordinator"
            os.kill(proc.pid, 9)
            proc.wait()
        kills.append(victim)
        print(f"chaos: killed a {victim} at {time.time() - t0:.0f} s", flush=True)
    if proc is not None and proc.poll() is None:
        proc.wait(timeout=600)
    while _workers_of(token):  # orphans finish the run they hold, then exit
        assert time.time() - t0 < 900
        time.sleep(0.2)
    assert len(kills) >= 6 and {"worker", "coordinator"} <= set(kills), kills
    final = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stdout + final.stderr
    assert _metrics(out) == _metrics(ref)
    runs = [json.loads(f.read_text()) for f in (out / "runs").glob("*.json")]
    folder_hash = json.loads((out / "config.json").read_text())
    expected = settings_hash(folder_hash["settings"], experiments.DEFAULT_KEY)
    assert len(runs) == 12 and len({(r["strategy"], r["seed"]) for r in runs}) == 12
    assert all(r["settings_hash"] == expected for r in runs)
    assert _leftovers(out) == [] and not list(out.rglob("*.pt")) and not list(out.rglob("*.tmp"))
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())


def test_the_in_process_data_cache_is_keyed_by_thread_count():
    """A run with --threads 1 in a process that loaded the data with 2 threads must not reuse it:
    the data's last bits follow the thread count (CI saw the in-process run differ from the
    same run in a fresh process)."""
    import runs
    from config import Config
    from data import torch_threads
    cfg = Config(dataset="synthetic", train_size=64, test_size=32)
    with torch_threads(2):
        a = runs.dataset_for(cfg, "cpu")
        assert runs.dataset_for(cfg, "cpu") is a
    with torch_threads(1):
        assert runs.dataset_for(cfg, "cpu") is not a


def _stress(tmp_path, rounds):
    """Two invocations on one folder at once, one of them with 2 local workers, many tiny runs of
    several epochs (a checkpoint written and dropped for each), `rounds` times over fresh folders:
    every invocation ends with status 0, every run is saved once, and nothing is left behind."""
    args = BASE + ["--train-size", "128", "--test-size", "64", "--epochs", "1", "--seeds", "20",
                   "--strategies", "standard,alternating-batch,alternating-epoch"]
    for r in range(rounds):
        out = tmp_path / f"round{r}"
        procs = [_start(args + ["--workers", "3"], out), _start(args, out)]
        results = [p.communicate(timeout=600) for p in procs]
        for p, (text, err) in zip(procs, results):
            assert p.returncode == 0, f"round {r}: {text[-2000:]}{err[-2000:]}"
            assert "failed" not in text + err, f"round {r}: {text[-2000:]}"
        runs = [json.loads(f.read_text()) for f in (out / "runs").glob("*.json")]
        assert len(runs) == 60 == len({(x["strategy"], x["seed"]) for x in runs})
        # only the invocation whose executor trained a run prints its training time; the other, if it
        # reports that run at all, says who saved it
        lines = [line for text, _ in results for line in text.splitlines() if " final acc " in line and " seed " in line]
        trained = [line for line in lines if line.endswith(" s training")]
        assert len(trained) == 60 == len({line.split("final acc")[0].split() [0] + line.split("seed")[1].split()[0]
                                          for line in trained})
        assert all("saved by pid " in line for line in lines if line not in trained)
        assert _leftovers(out) == [] and not list(out.rglob("*.pt")), _leftovers(out)


def test_workers_and_another_invocation_on_one_folder_never_fail_a_run(tmp_path):
    """The race CI once hit: a checkpoint folder removed between another executor's mkdir and its
    write failed that executor's run. The quick version: one round."""
    _stress(tmp_path, rounds=1)


@pytest.mark.slow
def test_the_stress_test_repeated(tmp_path):
    _stress(tmp_path, rounds=3)


def test_a_dropped_checkpoint_leaves_the_folder_another_executor_is_writing_into(tmp_path, monkeypatch):
    """The interleaving behind that race, made certain: executor B saves its finished run (and
    drops its checkpoint) just after executor A made sure checkpoints/ exists and before A creates
    its temp file there. A's write must still succeed."""
    import results
    from config import Config
    cfg = Config(dataset="synthetic", out=str(tmp_path))
    a, b = (ResultsDir(tmp_path, cfg.result_key(), defaults=experiments.DEFAULT_KEY) for _ in range(2))
    snapshot = {"model": {}, "history": {}, "at": {}}
    b.checkpoints.save("standard", 1, snapshot)
    mkstemp = results.tempfile.mkstemp

    def b_finishes_first(*args, **kwargs):
        b.checkpoints.drop("standard", 1)
        return mkstemp(*args, **kwargs)

    monkeypatch.setattr(results.tempfile, "mkstemp", b_finishes_first)
    a.checkpoints.save("standard", 0, snapshot)
    assert a.checkpoints.file("standard", 0).exists() and not b.checkpoints.file("standard", 1).exists()
