"""The command line end to end on synthetic data, and every bad input's one-line error."""
import csv
import json
import subprocess
import sys
import time

import pytest

import experiments
from conftest import ROOT, run_cli, sigint_as_at_a_terminal
from training_loop import pick_device

TINY = ["--dataset", "synthetic", "--train-size", "256", "--test-size", "128", "--batch-size", "64",
        "--no-progress"]


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_cli_writes_every_output(tmp_path, capsys):
    code, out, err = run_cli(TINY + ["--epochs", "2", "--seeds", "2", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    rows = _rows(tmp_path / "metrics.csv")
    assert len(rows) == 3 * 2 * 2
    assert {(r["strategy"], r["seed"], r["epoch"]) for r in rows} == {
        (s, str(seed), str(e)) for s in ("standard", "alternating-epoch", "alternating-batch")
        for seed in (0, 1) for e in (1, 2)}
    assert {"strategy", "seed", "epoch", "train_loss", "test_loss", "test_acc", "epoch_time_s"} <= set(rows[0])
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["config"]["epochs"] == 2 and cfg["config"]["lr"] == 1e-3
    assert cfg["versions"]["torch"] and cfg["versions"]["torchvision"] and cfg["device"] == str(pick_device("auto"))
    assert cfg["dataset_label"] == "synthetic CIFAR-shaped"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["strategies"]) == ["standard", "alternating-epoch", "alternating-batch"]
    png = (tmp_path / "comparison_results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    # the printed table names every strategy and the paired difference column
    assert "diff vs standard [95% CI]" in out and "alternating-batch" in out


def test_all_strategies_with_intervals_and_matched_budget(tmp_path, capsys):
    args = TINY + ["--epochs", "2", "--seeds", "3", "--strategies", "all", "--match-budget", "flops",
                   "--out", str(tmp_path)]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    s = json.loads((tmp_path / "summary.json").read_text())["strategies"]
    from strategies import BUILTIN
    assert set(s) == set(BUILTIN) | {"standard@flops"}
    for name, row in s.items():
        assert len(row["seeds"]) == 3
        if name != "standard":
            d = row["diff_vs_standard"]
            assert d["ci95_low"] <= d["mean"] <= d["ci95_high"], name
    # the matched standard run spent the FLOPs of alternating-batch, to within one step
    from models import SimpleNN
    step = 64 * SimpleNN().train_flops_per_sample((0, 1))
    budget = s["alternating-batch"]["train_flops"]
    assert budget - step < s["standard@flops"]["train_flops"] <= budget


def test_dry_run_is_a_quick_smoke_check(tmp_path, capsys):
    code, out, err = run_cli(["--dataset", "synthetic", "--dry-run", "--no-progress", "--out",
                              str(tmp_path)], capsys)
    assert code == 0, err
    assert len(_rows(tmp_path / "metrics.csv")) == 3


def test_divergence_is_recorded_and_other_runs_go_on(tmp_path, capsys):
    args = TINY + ["--epochs", "3", "--seeds", "1", "--strategies", "standard,gan-style[second_lr=1e35]",
                   "--out", str(tmp_path)]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    rows = _rows(tmp_path / "metrics.csv")
    gan = [r for r in rows if r["strategy"] == "gan-style[second_lr=1e+35]"]
    assert gan[-1]["diverged"] == "1" and len(gan) < 3  # marked, and stopped early
    assert len([r for r in rows if r["strategy"] == "standard"]) == 3
    assert "DIVERGED" in out and "0/1 (diverged)" in out


@pytest.mark.parametrize("args, expected", [
    (["--epochs", "0"], "--epochs: must be a whole number of at least 1, got '0'"),
    (["--epochs", "-3"], "--epochs: must be a whole number of at least 1, got '-3'"),
    (["--batch-size", "0"], "--batch-size: must be a whole number of at least 1, got '0'"),
    (["--lr", "0"], "--lr: must be a positive finite number, got '0'"),
    (["--lr=-1e-3"], "--lr: must be a positive finite number"),
    (["--lr", "nan"], "--lr: must be a positive finite number, got 'nan'"),
    (["--lr", "inf"], "--lr: must be a positive finite number, got 'inf'"),
    (["--lr", "fast"], "--lr: must be a positive finite number, got 'fast'"),
    (["--seeds", "0"], "--seeds: must be a whole number of at least 1, got '0'"),
    (["--strategies", "standard,bogus"], "--strategies: unknown strategy 'bogus'"),
    (["--strategies", "standard,freezout"], "unknown strategy 'freezout' (did you mean freezeout?)"),
    (["--dataset", "imagenet"], "--dataset: must be one of cifar10, cifar100"),
    (["--dataset", "fashion_mnist"], "got 'fashion_mnist' (did you mean fashion-mnist?)"),
    (["--lr", "-1e-3"], "--lr: must be a positive finite number, got '-1e-3'"),
    (["--epochs", "-2"], "--epochs: must be a whole number of at least 1, got '-2'"),
    (["--switch-every", "20"], "--switch-every: the period is a knob now: alternating-k[every=K]"),
    (["--strategies", "freezeout[t0=1.5]"], "freezeout[t0=1.5]: t0 must be in (0, 1], got 1.5"),
])
def test_bad_flags_get_one_line(args, expected, tmp_path, capsys):
    code, out, err = run_cli(args + ["--out", str(tmp_path)], capsys)
    assert code == 2
    assert expected in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cuda_without_cuda(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    code, _, err = run_cli(TINY + ["--device", "cuda", "--out", str(tmp_path)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "CUDA is not available" in err and "--device cpu" in err


def test_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = run_cli(TINY + ["--out", str(blocker / "sub")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "cannot be written" in err and "choose a folder you can write to" in err


@pytest.mark.parametrize("setup, expected", [
    ("missing", "does not exist"),
    ("no_train", "has no train/ subfolder"),
    ("empty", "holds no images"),
    ("sizes", "all images must have one size"),
    ("text_file", "is not an image"),
])
def test_bad_image_folder_via_cli(setup, expected, tmp_path, capsys):
    from PIL import Image
    root = tmp_path / "imgs"
    if setup != "missing":
        for split in ("train", "test"):
            (root / split / "a").mkdir(parents=True)
            if setup != "empty":
                Image.new("RGB", (8, 8)).save(root / split / "a" / "0.png")
    if setup == "no_train":
        import shutil
        shutil.rmtree(root / "train")
    if setup == "sizes":
        Image.new("RGB", (9, 9)).save(root / "train" / "a" / "1.png")
    if setup == "text_file":
        (root / "train" / "a" / "readme.txt").write_text("x")
    code, _, err = run_cli(["--dataset", "folder", "--data-dir", str(root), "--out", str(tmp_path / "o")],
                           capsys)
    assert code == 2 and expected in err and err.count("\n") == 1


def test_cifar_missing_without_network(tmp_path, capsys, monkeypatch):
    import urllib.error

    import torchvision.datasets.cifar as cifar

    def no_network(*a, **k):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(cifar, "download_and_extract_archive", no_network)
    code, _, err = run_cli(["--data-dir", str(tmp_path / "d"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "CIFAR-10 is not in" in err and "--dataset folder" in err


def test_a_real_process_prints_no_traceback(tmp_path):
    """The same guarantees hold in a separate interpreter, as a user runs it."""
    p = subprocess.run([sys.executable, "experiments.py", "--dataset", "folder", "--data-dir",
                        str(tmp_path / "none"), "--out", str(tmp_path / "o")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.startswith("error: --data-dir") and p.stderr.count("\n") == 1


def test_help_shows_every_real_default_and_no_none(capsys):
    import argparse
    p = experiments.build_parser()
    text = p.format_help()
    assert "(default: None)" not in text and "(default: True)" not in text and "(default: False)" not in text
    fmt = experiments._HelpFormatter("experiments.py")
    for a in p._actions:
        if not a.option_strings or isinstance(a, (argparse._HelpAction, argparse._VersionAction)) \
                or a.help == argparse.SUPPRESS:  # retired flags: they only say where their setting went
            continue
        h = " ".join(fmt._get_help_string(a).split())
        if a.nargs == 0 and not isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            continue  # --list-strategies: an action, not a setting
        assert "default" in h, a.option_strings  # a value, "off", or what none means
        if isinstance(a, argparse._StoreFalseAction):  # --no-*: says what it turns off, not "True"
            assert a.option_strings[0].startswith("--no-") and "default" in h and "True" not in h
        if a.default not in (None, [], "") and not isinstance(a, argparse._StoreTrueAction) and "%(default)s" in \
                fmt._get_help_string(a):
            assert f"(default: {a.default})" in h % {"default": a.default}


@pytest.mark.parametrize("text, minutes", [("90", 90), ("2:00:00", 120), ("1-00:00:00", 1440),
                                           ("0:00:30", 1), ("1-2:30:00", 1590)])
def test_slurm_time_takes_minutes_or_sbatch_clock(text, minutes):
    assert experiments.parse_args(["--slurm-time", text]).slurm_time == minutes


def test_slurm_time_rejects_other_forms_in_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        experiments.main(["--slurm-time", "2h"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert "--slurm-time" in err and "[D-]HH:MM:SS" in err and err.count("\n") == 1


def test_version_and_strategy_list(capsys):
    with pytest.raises(SystemExit):
        experiments.parse_args(["--version"])
    out = capsys.readouterr().out
    assert out.startswith("alternating-freeze ") and "git commit" in out
    with pytest.raises(SystemExit):
        experiments.parse_args(["--list-strategies"])
    out = capsys.readouterr().out
    for name in ("standard", "freezeout", "layer-freezing", "cyclic-blocks", "layerout", "alternating-K"):
        assert name in out


@pytest.mark.parametrize("text, seeds", [("3", 3), ("5-9", (5, 6, 7, 8, 9)), ("0,3,7", (0, 3, 7)),
                                         ("0-1,4", (0, 1, 4))])
def test_seeds_take_counts_ranges_and_lists(text, seeds):
    assert experiments.parse_args(["--seeds", text]).seeds == seeds


def test_bad_data_leaves_no_results_folder_behind(tmp_path, capsys):
    out = tmp_path / "o"
    code, _, err = run_cli(["--dataset", "folder", "--data-dir", str(tmp_path / "none"), "--out", str(out)], capsys)
    assert code == 2 and "does not exist" in err and not out.exists()


def test_a_data_path_that_is_a_file_says_so(tmp_path, capsys):
    (tmp_path / "cifar.tar.gz").write_bytes(b"not a folder")
    for dataset, expected in (("folder", "is a file, not a folder"), ("fashion-mnist", "is a file, not a folder")):
        code, _, err = run_cli(["--dataset", dataset, "--data-dir", str(tmp_path / "cifar.tar.gz"),
                                "--out", str(tmp_path / "o")], capsys)
        assert code == 2 and expected in err and err.count("\n") == 1, err


def test_a_piped_run_prints_plain_lines_and_no_carriage_returns(tmp_path):
    """Progress bars only on a terminal: in a log file, CI or SLURM's output one line per run."""
    p = subprocess.run([sys.executable, "experiments.py", *TINY[:-1], "--epochs", "2", "--seeds", "2",
                        "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "\r" not in p.stdout + p.stderr and "it/s" not in p.stdout + p.stderr
    import re
    assert len(re.findall(r"seed \d  final acc", p.stdout)) == 6  # a line per finished run


def test_ctrl_c_during_the_imports_is_one_line_and_130(tmp_path):
    import signal
    proc = subprocess.Popen([sys.executable, "experiments.py", *TINY, "--out", str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_at_a_terminal)
    time.sleep(0.4)  # torch is still importing
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().count("\n") == 0 and "interrupted" in err
