"""Sweeps: cells from --grid, the map with Holm-adjusted tests, the tuned comparison on validation."""
import csv
from dataclasses import replace
import json

import numpy as np
import pytest

from conftest import as_run, run_cli
from stats import holm
from sweep import summarize_sweep, tuned_comparison

TINY = ["--dataset", "synthetic", "--train-size", "384", "--test-size", "128", "--val-size", "128",
        "--batch-size", "64", "--epochs", "1", "--seeds", "2", "--no-progress"]


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_sweep_writes_the_map_and_the_tuned_comparison(tmp_path, capsys):
    out = tmp_path / "s"
    code, text, err = run_cli(TINY + ["--grid", "lr=1e-3,3e-3", "--grid", "depth=2,3", "--out", str(out)],
                              capsys)
    assert code == 0, err
    rows = _rows(out / "sweep.csv")
    assert len(rows) == 4 * 3  # cells x strategies
    assert {"lr", "depth", "strategy", "seeds", "test_acc_mean", "test_acc_std", "diff_vs_standard",
            "ci_low", "ci_high", "p_value", "p_holm", "time_ratio", "flops_ratio"} <= set(rows[0])
    assert {(r["lr"], r["depth"]) for r in rows} == {("0.001", "2"), ("0.001", "3"), ("0.003", "2"),
                                                     ("0.003", "3")}
    for cell in ("lr=0.001__depth=2", "lr=0.003__depth=3"):  # each cell: the usual outputs
        for f in ("config.json", "metrics.csv", "summary.json", "comparison_results.png"):
            assert (out / cell / f).exists()
        assert not list((out / cell).glob("checkpoints/*"))  # each deleted once its run is saved
    cfg = json.loads((out / "lr=0.003__depth=3" / "config.json").read_text())
    assert cfg["settings"]["lr"] == 0.003 and cfg["settings"]["depth"] == 3 and cfg["val_samples"] == 128
    summary = json.loads((out / "sweep_summary.json").read_text())
    assert [g["group"] for g in summary["tuned"]] == [{"depth": 2}, {"depth": 3}]
    assert (out / "sweep_results.png").read_bytes()[:4] == b"\x89PNG"
    assert "tuned comparison" in text and "p (Holm)" in text
    # the history records validation
    metrics = _rows(out / "lr=0.001__depth=2" / "metrics.csv")
    assert all(r["val_acc"] for r in metrics)


def test_sweep_resumes_and_adding_a_value_runs_only_the_new_cell(tmp_path, capsys):
    base = TINY + ["--seeds", "1", "--strategies", "standard,alternating-batch", "--out", str(tmp_path)]
    assert run_cli(base + ["--grid", "lr=1e-3"], capsys)[0] == 0
    before = (tmp_path / "lr=0.001" / "runs" / "standard__seed0.json").stat().st_mtime_ns
    code, out, _ = run_cli(base + ["--grid", "lr=1e-3,2e-3"], capsys)
    assert code == 0 and "4 runs, 2 already in" in out
    assert (tmp_path / "lr=0.001" / "runs" / "standard__seed0.json").stat().st_mtime_ns == before
    assert len(_rows(tmp_path / "sweep.csv")) == 4
    # other grid keys, or other shared settings, are refused
    code, _, err = run_cli(base + ["--grid", "depth=2"], capsys)
    assert code == 2 and "holds a sweep over lr, not depth" in err
    code, _, err = run_cli(base + ["--grid", "lr=1e-3", "--epochs", "2"], capsys)
    assert code == 2 and "other settings (epochs was 1, now 2)" in err


def test_without_validation_the_sweep_says_tuning_needs_it(tmp_path, capsys):
    i = TINY.index("--val-size")
    args = TINY[:i] + TINY[i + 2:]
    code, out, _ = run_cli(args + ["--seeds", "1", "--grid", "lr=1e-3,3e-3", "--out", str(tmp_path)], capsys)
    assert code == 0
    assert "tuned comparison: not made; the tuned comparison needs a validation split (--val-size N)" in out
    summary = json.loads((tmp_path / "sweep_summary.json").read_text())
    assert summary["tuned"] is None and "never on the test set" in summary["tuned_note"]


def _run(strategy, seed, test, val, diverged=False):
    return as_run(strategy, seed, {
        "epoch": [1], "test_acc": [test], "val_acc": [val], "epoch_time_s": [1.0], "train_flops": [1],
        "param_updates": [1], "diverged": [diverged]})


def test_tuned_comparison_selects_on_validation_never_on_test():
    # at lr 0.01 alternating has the better *test* accuracy but the worse validation accuracy
    cells = [({"lr": 0.001}, [_run("standard", s, 60 + s, 61) for s in range(3)]
              + [_run("alternating-epoch", s, 50 + s, 70) for s in range(3)]),
             ({"lr": 0.01}, [_run("standard", s, 62 + s, 65) for s in range(3)]
              + [_run("alternating-epoch", s, 90 + s, 40) for s in range(3)]),
             ({"lr": 0.1}, [_run("standard", s, 10, 10, diverged=(s == 0)) for s in range(3)]
              + [_run("alternating-epoch", s, 55, 50 + s) for s in range(3)])]
    groups, note = tuned_comparison(cells, ["lr"])
    assert note is None and len(groups) == 1
    st = groups[0]["strategies"]
    assert st["alternating-epoch"]["lr"] == 0.001 and st["alternating-epoch"]["edges"] == {"lr": "lowest"}
    assert st["standard"]["lr"] == 0.01 and st["standard"]["at_edge"] is None  # 0.1 diverged: not eligible
    d = st["alternating-epoch"]["diff_vs_standard"]  # alt at 0.001 (50, 51, 52) minus standard at 0.01 (62, 63, 64)
    assert d["mean"] == pytest.approx(-12) and d["pairs"] == 3


def test_holm_step_down_by_hand():
    p = [0.01, 0.04, None, 0.03, 0.5]
    # sorted 0.01, 0.03, 0.04, 0.5 -> x4, x3, x2, x1, made monotone
    assert holm(p) == pytest.approx([0.04, 0.09, None, 0.09, 0.5])


def test_map_rows_and_holm_over_every_comparison():
    # no validation split, so nothing is tuned: the map's rows are the declared family
    cells = [({"lr": lr}, [_run("standard", s, 60 + s, None) for s in range(3)]
              + [_run("alternating-epoch", s, 58 + s + 0.1 * s * s, None) for s in range(3)]) for lr in (0.001, 0.01)]
    s = summarize_sweep(cells, ["lr"])
    assert s["family"]["size"] == 2
    alt = [r for r in s["rows"] if r["strategy"] == "alternating-epoch"]
    assert len(s["rows"]) == 4 and len(alt) == 2
    assert all(r["p_holm"] == pytest.approx(min(1, 2 * r["p_value"])) for r in alt)


@pytest.mark.parametrize("args, expected", [
    (["--grid", "colour=1,2"], "--grid: unknown key 'colour'"),
    (["--grid", "weight-decays=0,1e-4"], "unknown key 'weight_decays' (did you mean weight_decay?)"),
    (["--grid", "lr=1e-3,0"], "--grid: lr=0: --lr must be a positive finite number, got '0'"),
    (["--grid", "lr="], "--grid: lr= has no values"),
    (["--grid", "lr=1e-3", "--grid", "lr=3e-3"], "--grid lr is given twice"),
    (["--grid", "depth=2,x"], "--grid: depth=x: --depth must be a whole number of at least 1"),
    (["--grid", "lr"], "is not KEY=V1,V2,..."),
    (["--depth", "0"], "--depth: must be a whole number of at least 1, got '0'"),
    (["--split", "3"], "--split must be between 1 and --depth (2), got 3"),
    (["--grid", "depth=1,2", "--split", "2"], "cell depth=1: --split must be between 1 and --depth (1)"),
    (["--val-size", "384"], "--val-size 384 leaves no training data"),
    (["--val-size", "-1"], "--val-size: must be a whole number of at least 0, got '-1'"),
])
def test_bad_sweep_input_gets_one_line(args, expected, tmp_path, capsys):
    code, _, err = run_cli(TINY + args + ["--out", str(tmp_path / "o")], capsys)
    assert code == 2, err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err


def test_missing_dataset_offline_is_one_line(tmp_path, capsys, monkeypatch):
    import urllib.error

    import torchvision.datasets.utils as utils

    def no_network(*a, **k):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(utils.urllib.request, "urlopen", no_network)
    code, _, err = run_cli(["--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "d"),
                            "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"Fashion-MNIST is not in {tmp_path / 'd' / 'FashionMNIST' / 'raw'}" in err
    assert "train-images-idx3-ubyte.gz" in err


# --- the protocol: selection seeds, confirmation seeds, integer counts, the declared family ----
def _r(strategy, seed, test, val, n=10000):
    """A one-epoch run scored on n test images (test is a count of correct images)."""
    return as_run(strategy, seed, {
        "epoch": [1], "test_acc": [100.0 * test / n], "val_acc": [val], "epoch_time_s": [1.0],
        "train_flops": [1], "param_updates": [1], "diverged": [False]}, test_samples=n)


def test_tuning_selects_on_the_seeds_common_to_every_candidate():
    # alt at lr 0.01 has a third seed with a huge validation score; only seeds 0 and 1 are common
    cells = [({"lr": 0.001}, [_r("standard", s, 6000, 60) for s in range(2)]
              + [_r("alternating-epoch", s, 6000, 70) for s in range(2)]),
             ({"lr": 0.01}, [_r("standard", s, 6000, 50) for s in range(2)]
              + [_r("alternating-epoch", s, 6000, 65) for s in range(2)] + [_r("alternating-epoch", 2, 6000, 100)])]
    groups, _ = tuned_comparison(cells, ["lr"])
    alt = groups[0]["strategies"]["alternating-epoch"]
    assert alt["lr"] == 0.001 and alt["selected_on"] == [0, 1] and alt["val_acc_mean"] == 70


def test_confirm_seeds_compare_only_the_fresh_seeds():
    sel = [_r("standard", s, 6000, 60) for s in range(2)] + [_r("alternating-epoch", s, 9000, 70) for s in range(2)]
    fresh = [_r("standard", s, 6000 + s, 60) for s in range(2, 5)] + [_r("alternating-epoch", s, 5900 + 2 * s, 70)
                                                                      for s in range(2, 5)]
    cells = [({"lr": 0.001}, sel + fresh)]
    groups, _ = tuned_comparison(cells, ["lr"], selection_seeds=[0, 1], confirm_seeds=[2, 3, 4])
    alt = groups[0]["strategies"]["alternating-epoch"]
    assert alt["seeds"] == [2, 3, 4] and alt["confirmed"]
    d = alt["diff_vs_standard"]  # (5904 - 6002, 5906 - 6003, 5908 - 6004) / 10000 -> -0.97 points
    assert d["pairs"] == 3 and d["mean"] == pytest.approx(-0.97)
    biased, _ = tuned_comparison(cells, ["lr"], selection_seeds=[0, 1])
    assert biased[0]["strategies"]["alternating-epoch"]["seeds"] == [0, 1]
    assert biased[0]["strategies"]["alternating-epoch"]["diff_vs_standard"]["mean"] == pytest.approx(30.0)


def test_three_differences_of_exactly_165_images_give_no_p_value():
    from stats import paired
    a = [100.0 * c / 10000 for c in (5812, 6103, 5977)]
    b = [100.0 * (c - 165) / 10000 for c in (5812, 6103, 5977)]
    float_diffs = np.array(a) - np.array(b)
    assert np.ptp(float_diffs) > 0  # the trap: as floats they differ in the 15th digit
    d = paired(a, b, n=10000)
    assert d["p_value"] is None and d["mean"] == pytest.approx(1.65)
    assert d["ci95_low"] == pytest.approx(1.65) and d["ci95_high"] == pytest.approx(1.65)


def test_the_family_holm_count_equals_the_comparisons_it_declares():
    # two groups x (alt, alt2) confirmed: 4 comparisons; one of them has no p-value (a tie)
    def cell(depth, lr, shift):
        runs = [_r("standard", s, 6000 + 10 * s, 60) for s in range(5)]
        runs += [_r("alternating-epoch", s, 6000 + 10 * s + shift + (s % 2), 65) for s in range(5)]
        runs += [_r("alternating-batch", s, 6000 + 10 * s + 7, 55) for s in range(5)]  # exactly +7 images: no p
        return ({"depth": depth, "lr": lr}, runs)
    cells = [cell(2, 0.001, 30), cell(3, 0.001, 40)]
    s = summarize_sweep(cells, ["depth", "lr"], tune=("lr",), selection_seeds=[0, 1], confirm_seeds=[2, 3, 4])
    fam = s["family"]
    assert fam["size"] == 4 and len(fam["members"]) == 4 and fam["tests"] == 2
    ds = [e["diff_vs_standard"] for g in s["tuned"] for n, e in g["strategies"].items() if n != "standard"]
    smallest = min(d["p_value"] for d in ds if d["p_value"] is not None)
    assert min(d["p_holm"] for d in ds if d["p_holm"] is not None) == pytest.approx(min(1.0, 4 * smallest))
    assert all(r["p_holm"] is None for r in s["rows"])  # the map is not re-adjusted: not in the family
    # and the figure says so: the map claims no Holm stars, the tuned panel names what was tuned
    from plots import plot_sweep
    a_map, a_tuned, _ = plot_sweep(s).axes  # the colorbar comes last
    assert "exploratory" in a_map.get_title() and "Holm" not in a_map.get_title()
    assert not any(t.get_text().endswith("*") for t in a_map.texts)
    assert "best\nlr (chosen on validation)" in a_tuned.get_title() and "3 fresh seeds" in a_tuned.get_title()
    assert any("lr 0.001" in t.get_text() for t in a_tuned.get_yticklabels())


def test_confirmed_sweep_end_to_end(tmp_path, capsys):
    """Tune lr x schedule on seeds 0-1, confirm on 2 fresh seeds with equal-compute runs: the
    report uses seeds 2-3 only, every planned run is saved, and the family is what it declares."""
    args = ["--dataset", "synthetic", "--train-size", "448", "--test-size", "128", "--val-size", "64",
            "--batch-size", "64", "--epochs", "2", "--seeds", "0-1", "--strategies", "standard,alternating-epoch",
            "--grid", "lr=1e-3,3e-3", "--grid", "lr_schedule=constant,cosine", "--tune", "lr,lr_schedule",
            "--confirm-seeds", "2", "--match-budget", "flops", "--no-progress", "--threads", "1",
            "--out", str(tmp_path)]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    s = json.loads((tmp_path / "sweep_summary.json").read_text())
    assert s["confirm_seeds"] == [2, 3] and s["selection_seeds"] == [0, 1] and s["complete"]
    alt = s["tuned"][0]["strategies"]["alternating-epoch"]
    assert alt["seeds"] == [2, 3] and alt["selected_on"] == [0, 1]
    assert s["family"]["size"] == 2 and len(s["family"]["members"]) == 2  # vs standard, vs its FLOPs
    assert "fresh seeds 2-3" in out and (tmp_path / "accuracy_vs_flops.png").exists()


def test_a_sweep_tunes_a_strategys_knobs_with_the_grid_keys(tmp_path, capsys):
    """freezeout given as two variants of t0: each is a candidate beside the lr cells, the choice
    names the knob, its edge is flagged, and standard (no knobs) is tuned on lr alone."""
    args = TINY + ["--strategies", "standard,freezeout[t0=0.5|0.8]", "--grid", "lr=1e-3,3e-3",
                   "--out", str(tmp_path)]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    s = json.loads((tmp_path / "sweep_summary.json").read_text())
    (group,) = s["tuned"]
    fo, std = group["strategies"]["freezeout"], group["strategies"]["standard"]
    assert set(fo["choice"]) == {"lr", "t0"} and fo["choice"]["t0"] in (0.5, 0.8)
    assert fo["variant"] == ("freezeout[t0=0.5]" if fo["choice"]["t0"] == 0.5 else "freezeout")
    assert fo["candidates"] == 4 and std["candidates"] == 2 and set(std["choice"]) == {"lr"}
    assert "t0" in fo["at_edge"]  # two values tried: the choice is at one end
    assert set(group["strategies"]) == {"standard", "freezeout"}  # one comparison per strategy, not per variant
    assert f"t0={fo['choice']['t0']:g}" in out and s["family"]["size"] == 1
    rows = {(r["lr"], r["strategy"]) for r in _rows(tmp_path / "sweep.csv")}
    assert ("0.001", "freezeout[t0=0.5]") in rows and ("0.003", "freezeout") in rows  # the map: every variant


def test_keys_that_vary_together_are_one_axis_of_the_grid(tmp_path, capsys):
    """Adam without decay against AdamW with one decoupled decay: two cells, not four."""
    args = TINY + ["--seeds", "1", "--strategies", "standard", "--grid", "optimizer,weight_decay=adam:0,adamw:0.05",
                   "--out", str(tmp_path)]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "optimizer=adam__weight_decay=0", "optimizer=adamw__weight_decay=0.05"]
    cfg = json.loads((tmp_path / "optimizer=adamw__weight_decay=0.05" / "config.json").read_text())["settings"]
    assert cfg["optimizer"] == "adamw" and cfg["weight_decay"] == 0.05
    assert "2 cells (2 optimizer+weight_decay)" in out
    assert json.loads((tmp_path / "sweep_summary.json").read_text())["grid_keys"] == ["optimizer", "weight_decay"]


def test_ties_between_candidates_are_broken_the_same_whatever_order_the_runs_come_in():
    """Planning the confirmation and summarising it must choose alike: exact ties (as in a dry run,
    where alternating-k and alternating-50 cannot differ) go to the first cell in grid order and the
    first variant by knob value, never to whichever run was read first."""
    import random
    runs = [_r(n, s, 6000, 60) for n in ("standard", "alternating-50", "alternating-k") for s in range(2)]
    cells = [({"lr": lr}, list(runs)) for lr in (0.003, 0.001)]
    picks = set()
    for seed in range(5):
        shuffled = [(v, random.Random(seed).sample(rs, len(rs))) for v, rs in random.Random(seed).sample(cells, 2)]
        groups, _ = tuned_comparison(shuffled, ["lr"])
        e = groups[0]["strategies"]["alternating-k"]
        picks.add((e["variant"], e["choice"]["lr"]))
    assert picks == {("alternating-k", 0.001)}


def test_the_tuned_table_reports_each_strategys_train_accuracy_and_train_test_gap():
    """Regulariser or slow learner: the gap is last-epoch train minus final test accuracy, by seed;
    runs saved before train accuracy was recorded give '-', not a number."""
    from sweep import format_tuned, summarize_sweep

    def run(strategy, seed, train, test):
        return as_run(strategy, seed, {"test_acc": [test], "val_acc": [60.0], "train_acc": [train]})
    runs = [run("standard", s, 80.0 + s, 57.0 + s / 2) for s in range(4)]
    runs += [run("alternating-epoch", s, 71.0, 56.0) for s in range(4)]
    runs += [_run("freezeout", s, 55.0, 60.0) for s in range(4)]  # no train_acc: an old run
    s = summarize_sweep([({"lr": 0.001}, runs)], ["lr"], tune=("lr",), selection_seeds=[0, 1], confirm_seeds=[2, 3])
    e = s["tuned"][0]["strategies"]
    assert e["standard"]["train_acc_mean"] == pytest.approx(82.5)
    assert e["standard"]["train_test_gap"] == pytest.approx(82.5 - 58.25)
    assert e["alternating-epoch"]["train_test_gap"] == pytest.approx(15.0)
    assert e["freezeout"]["train_acc_mean"] is None and e["freezeout"]["train_test_gap"] is None
    table = format_tuned(s)
    assert "train-test gap" in table.splitlines()[1] and "15.00" in table


def _curve(strategy, seed, accs, flops, val=60.0, steps=10):
    """A run with a test accuracy and FLOPs per epoch."""
    n = len(accs)
    return as_run(strategy, seed, {
        "epoch": list(range(1, n + 1)), "test_acc": list(accs), "val_acc": [val] * n, "epoch_time_s": [1.0] * n,
        "train_flops": [flops] * n, "steps": [steps] * n, "param_updates": [1] * n, "diverged": [False] * n}, test_samples=10000)


def test_time_to_target_counts_steps_and_flops_to_tuned_standards_final_mean_and_the_seeds_that_never_reach_it():
    from sweep import format_tuned, summarize_sweep
    std = [_curve("standard", s, [50, 60, 70], 100) for s in (2, 3)]  # final mean 70
    alt = [_curve("alternating-epoch", 2, [65, 71, 72], 60), _curve("alternating-epoch", 3, [50, 60, 69], 60)]
    sel = [_curve(n, s, [60], 100) for n in ("standard", "alternating-epoch") for s in (0, 1)]
    cells = [({"lr": 0.01}, std + alt + sel), ({"lr": 0.1}, [_curve(n, s, [60], 100, val=10) for n in
                                                              ("standard", "alternating-epoch") for s in (0, 1)])]
    s = summarize_sweep(cells, ["lr"], selection_seeds=[0, 1], confirm_seeds=[2, 3])
    tt = s.tuned[0].strategies["alternating-epoch"].to_target
    assert tt == {"target": 70.0, "steps_mean": 20.0, "flops_mean": 120.0, "reached": 1, "of": 2}
    assert s.tuned[0].strategies["standard"].to_target["steps_mean"] == 30.0
    text = format_tuned(s.to_json() | {"tuned": [g.to_json() for g in s.tuned]})
    assert "20 steps, 0.40 (1/2)" in text  # 20 steps and 120 FLOPs of standard's 300, one seed of two


def test_the_flops_column_comes_from_the_reported_seeds_not_the_tuning_seeds():
    """A random schedule trains other FLOPs on other seeds: the confirmed table reports the fresh
    seeds' FLOPs (LayerOut was 0.93 on its tuning seeds against 0.912 on seeds 2-11)."""
    from sweep import summarize_sweep
    runs = [_curve("standard", s, [60], 100) for s in range(4)]
    runs += [_curve("layerout", s, [60], 93 if s < 2 else 91) for s in range(4)]
    cells = [({"lr": lr}, runs) for lr in (0.01, 0.1)]
    confirmed = summarize_sweep(cells, ["lr"], selection_seeds=[0, 1], confirm_seeds=[2, 3])
    tuning = summarize_sweep(cells, ["lr"], selection_seeds=[0, 1])
    assert confirmed.tuned[0].strategies["layerout"].train_flops_mean == 91
    assert tuning.tuned[0].strategies["layerout"].train_flops_mean == 93


def test_ties_in_tuning_are_reported_in_the_choice_column_with_the_tie_break():
    from sweep import format_tuned, summarize_sweep
    runs = [_curve(n, s, [60], 100) for n in ("standard", "cyclic-blocks") for s in range(2)]
    cells = [({"lr": lr}, list(runs)) for lr in (0.001, 0.003, 0.01)]
    s = summarize_sweep(cells, ["lr"], selection_seeds=[0, 1])
    e = s.tuned[0].strategies["cyclic-blocks"]
    assert e.choice == {"lr": 0.001} and e.ties == [{"lr": 0.003}, {"lr": 0.01}]
    text = format_tuned(s.to_json())
    assert "lr=0.001 (tied with lr=0.003; lr=0.01: the first in grid and knob order)" in text


def test_the_tuned_table_reports_test_loss_and_for_characters_bits_per_character():
    """The gpt protocol scores next-character accuracy with test bits per character beside it: the
    table shows each strategy's mean final test loss over the reported seeds, in bits when the
    workload scores characters, in nats otherwise, and '-' is never a typed-in number."""
    import math
    from sweep import format_tuned, summarize_sweep
    mem = {"peak_resident_bytes": 2 ** 20}

    def run(strategy, seed, loss):
        return as_run(strategy, seed, {"test_acc": [50.0], "val_acc": [50.0], "test_loss": [loss]}, memory=mem)
    runs = [run("standard", s, 1.0 + s) for s in range(4)] + [run("lisa", s, 2.0) for s in range(4)]
    s = summarize_sweep([({"lr": 0.001}, runs)], ["lr"], tune=("lr",), selection_seeds=[0, 1], confirm_seeds=[2, 3])
    e = s.tuned[0].strategies
    assert e["standard"].test_loss_mean == pytest.approx(3.5)  # seeds 2 and 3 only, the reported ones
    assert e["lisa"].test_loss_mean == pytest.approx(2.0)
    head = lambda t: t.splitlines()[1]  # noqa: E731
    nats = format_tuned(s.to_json())
    assert "test loss" in head(nats) and "3.500" in nats
    chars = format_tuned(replace(s, bigram_bits=4.1).to_json())
    assert "test bits/char" in head(chars) and f"{3.5 / math.log(2):.3f}" in chars and "4.100 test bits/char" in chars
    old = [as_run(n, r.seed, {"test_acc": [50.0], "val_acc": [50.0], "test_loss": [1.0]}) for n in ("standard", "lisa")
           for r in runs[:4]]  # saved before runs recorded memory: the column stays out, as the table was
    assert "test loss" not in head(format_tuned(summarize_sweep([({"lr": 0.001}, old)], ["lr"],
                                                                selection_seeds=[0, 1]).to_json()))


def test_the_tuned_table_reports_memory_peaks_as_means_over_the_reported_seeds():
    """Memory beside accuracy: the peak resident set, the trainable parameters' and the optimizer
    state's peak bytes, each the mean over the seeds reported (here the fresh seeds 2 and 3)."""
    from sweep import format_tuned, summarize_sweep
    MB = 2 ** 20

    def run(strategy, seed, peak, trainable):
        return as_run(strategy, seed, {"test_acc": [50.0 + (strategy != "standard")], "val_acc": [50.0]}, memory={
            "peak_resident_bytes": peak * MB, "trainable_param_bytes": trainable * MB, "optimizer_state_bytes": 8 * MB})
    runs = [run("standard", s, 100 + 10 * s, 4) for s in range(4)]
    runs += [run("cyclic-blocks", s, 90, 1 + s) for s in range(4)]
    s = summarize_sweep([({"lr": 0.001}, runs)], ["lr"], selection_seeds=[0, 1], confirm_seeds=[2, 3])
    m = s.tuned[0].strategies["cyclic-blocks"].memory
    assert m == {"peak_bytes": 90 * MB, "trainable_bytes": 3.5 * MB, "optimizer_bytes": 8 * MB}
    table = format_tuned(s.to_json()).splitlines()
    assert all(c in table[1] for c in ("peak MB", "trainable MB", "optimizer MB"))
    rows = {line.split()[2]: line.split()[-3:] for line in table[3:5]}  # the last three columns: no note here
    assert rows == {"standard": ["125.0", "4.0", "8.0"], "cyclic-blocks": ["90.0", "3.5", "8.0"]}
