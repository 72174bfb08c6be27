"""Outputs without traps: default folders named by the settings, dry runs that touch nothing
tracked, one folder shared by several invocations, fixed colours, readable figures."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

import experiments
from conftest import ROOT, as_run
from plots import plot_comparison, style
from stats import summarize

SMALL = ["--dataset", "synthetic", "--train-size", "256", "--test-size", "128", "--batch-size", "64",
         "--seeds", "1", "--no-progress"]


def _tracked_copy(dest):
    """The repository's tracked files, copied: a clean clone without the history."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    return {f: hashlib.sha1((dest / f).read_bytes()).hexdigest() for f in files if (dest / f).is_file()}


def test_dry_run_in_a_fresh_clone_modifies_no_tracked_file_and_leaves_no_folder(tmp_path):
    before = _tracked_copy(tmp_path)
    (tmp_path / "scratch").mkdir()
    for _ in range(2):  # the second one trains again: a smoke check after a code change tests the code
        p = subprocess.run([sys.executable, "experiments.py", "--dataset", "synthetic", "--dry-run", "--no-progress"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300,
                           # torch's own compile cache (made when torch.optim first imports torch._dynamo)
                           # goes under TMPDIR unless an earlier test in this process already set it: fixed here
                           env={**os.environ, "TMPDIR": str(tmp_path / "scratch"),
                                "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "torch-cache")})
        assert p.returncode == 0, p.stderr
        assert "already in" not in p.stdout and p.stdout.count("seed 0  final acc") == 3
    after = {f: hashlib.sha1((tmp_path / f).read_bytes()).hexdigest() for f in before}
    assert after == before
    assert not (tmp_path / "results" / "dry-run").exists()
    assert list((tmp_path / "scratch").iterdir()) == []  # its scratch folder is gone too
    assert "a dry run: removed when it ends" in p.stdout


def test_a_dry_run_never_touches_a_real_results_folder(tmp_path, capsys):
    real = str(tmp_path / "real")
    assert experiments.main(SMALL + ["--epochs", "1", "--strategies", "standard", "--out", real]) == 0
    before = {f: f.read_bytes() for f in (tmp_path / "real").rglob("*") if f.is_file()}
    capsys.readouterr()
    assert experiments.main(SMALL + ["--dry-run", "--out", real]) == 2
    assert "holds real results; a --dry-run never overwrites them" in capsys.readouterr().err
    assert before == {f: f.read_bytes() for f in (tmp_path / "real").rglob("*") if f.is_file()}


def test_a_plain_rerun_with_other_settings_just_works(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert experiments.main(SMALL + ["--epochs", "1"]) == 0
    assert experiments.main(SMALL + ["--epochs", "2"]) == 0
    assert experiments.main(SMALL + ["--epochs", "2", "--lr", "3e-3"]) == 0
    folders = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert folders == ["synthetic-train_size=256-test_size=128-epochs=1-batch_size=64",
                       "synthetic-train_size=256-test_size=128-epochs=2-batch_size=64",
                       "synthetic-train_size=256-test_size=128-epochs=2-batch_size=64-lr=0.003"]
    # an explicit --out keeps the resume-or-refuse safety
    out = str(tmp_path / "results" / folders[0])
    capsys.readouterr()
    assert experiments.main(SMALL + ["--epochs", "3", "--out", out]) == 2
    assert "other settings" in capsys.readouterr().err


def test_one_folder_two_invocations_keeps_both(tmp_path, capsys):
    out = str(tmp_path / "shared")
    assert experiments.main(SMALL + ["--epochs", "1", "--out", out]) == 0
    assert experiments.main(SMALL + ["--epochs", "1", "--strategies", "standard,alternating-25",
                                     "--out", out]) == 0
    summary = json.loads((tmp_path / "shared" / "summary.json").read_text())
    assert list(summary["strategies"]) == ["standard", "alternating-25", "alternating-epoch",
                                           "alternating-batch"]
    assert "alternating-epoch" in capsys.readouterr().out.split("wrote")[-2]  # the last table too


def _runs(names, diverge=()):
    runs = []
    for name in names:
        for seed in (0, 1):
            bad = name in diverge
            runs.append(as_run(name, seed, {
                "epoch": [1, 2], "train_loss": [2.0, 1.5], "test_loss": [1.8, 1.6],
                "test_acc": [40.0 + seed, float("nan") if bad else 45.0 + seed],
                "epoch_time_s": [1.0, 1.0], "train_flops": [1e12, 1e12], "param_updates": [10, 10],
                "diverged": [False, bad]}))
    return runs


def _legend_colours(fig):
    legend = fig.legends[0]
    return {t.get_text().split(" (")[0]: h.get_color() for t, h in zip(legend.texts, legend.legend_handles)}


def test_a_strategy_keeps_its_colour_across_figures_with_other_subsets():
    a = ["standard", "alternating-epoch", "alternating-batch"]
    b = ["standard", "alternating-batch", "alternating-25"]
    fa = plot_comparison(_runs(a), summarize(_runs(a)))
    fb = plot_comparison(_runs(b), summarize(_runs(b)))
    ca, cb = _legend_colours(fa), _legend_colours(fb)
    assert ca["alternating-batch"] == cb["alternating-batch"] and ca["standard"] == cb["standard"]
    assert len(set(map(str, cb.values()))) == 3
    assert style("alternating-25") == style("alternating-25") != style("alternating-50")


def test_figure_marks_divergence_and_uses_whole_epochs():
    runs = _runs(["standard", "gan-style"], diverge=("gan-style",))
    fig = plot_comparison(runs, summarize(runs))
    labels = [t.get_text() for t in fig.legends[0].texts]
    assert "gan-style (diverged: 2/2 seeds)" in labels
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any(t.startswith("diverged") for t in texts)
    fig.canvas.draw()
    ticks = [t for t in fig.axes[0].get_xticks() if 1 <= t <= 2]
    assert ticks and all(float(t).is_integer() for t in ticks)


@pytest.mark.parametrize("name", [".venv/", "venv/"])
def test_gitignore_leaves_out_virtual_environments(name):
    assert name in (ROOT / ".gitignore").read_text().split()


def test_config_json_says_where_the_results_came_from(tmp_path):
    import re
    args = [sys.executable, "experiments.py", "--dataset", "synthetic", "--train-size", "256",
            "--test-size", "128", "--batch-size", "64", "--epochs", "1", "--seeds", "1",
            "--strategies", "standard", "--no-progress"]
    for name, size in (("a", "256"), ("b", "320")):
        a = [x if x != "256" else size for x in args]
        assert subprocess.run(a + ["--out", str(tmp_path / name)], cwd=ROOT, capture_output=True).returncode == 0
    a, b = (json.loads((tmp_path / n / "config.json").read_text()) for n in ("a", "b"))
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert a["code"]["commit"] == (head or "unknown") and a["code"]["dirty"] in (True, False, "unknown")
    assert "experiments.py" in a["command"] and "--train-size 256" in a["command"]
    assert a["cpu"] and (a["gpu"] is None) == (a["device"] == "cpu") and a["threads"] >= 1 and a["versions"]["torch"]
    assert re.fullmatch(r"[0-9a-f]{16}", a["data_fingerprint"]) and a["data_fingerprint"] != b["data_fingerprint"]
    run = json.loads(next((tmp_path / "a" / "runs").glob("*.json")).read_text())
    assert run["environment"]["code"] == a["code"] and run["environment"]["cpu"] == a["cpu"]


def test_every_named_strategy_has_a_colour_of_its_own():
    """Figures tell strategies apart by colour: with 20 colours the 21st named strategy
    (autofreeze) was drawn in standard's blue."""
    import plots
    colours = [plots.style(n)[0] for n in plots._NAMED]
    assert len(set(colours)) == len(colours)
