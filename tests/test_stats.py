import json
import math

import numpy as np
import pytest

from conftest import as_run, run_blob
from stats import format_table, mean_ci, summarize, t_quantile_975


def test_t_quantiles():
    # printed tables of Student's t, two-sided 95%
    for df, q in ((1, 12.706), (2, 4.303), (4, 2.776), (13, 2.160), (30, 2.042)):
        assert t_quantile_975(df) == pytest.approx(q, abs=5e-4)
    assert t_quantile_975(1e9) == pytest.approx(1.96, abs=1e-3)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_paired_t_test_matches_the_textbook_formula():
    from stats import paired
    a, b = [57.1, 57.4, 56.9, 57.3], [55.6, 55.9, 55.8, 55.2]
    d = [x - y for x, y in zip(a, b)]
    n, mean = len(d), sum(d) / len(d)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    t = mean / (sd / math.sqrt(n))
    from scipy import stats as sps
    r = paired(a, b)
    assert r["mean"] == pytest.approx(mean) and r["pairs"] == 4
    assert r["p_value"] == pytest.approx(2 * sps.t.sf(abs(t), n - 1))
    assert r["ci95_high"] - r["mean"] == pytest.approx(3.182 * sd / math.sqrt(n), rel=1e-3)
    same = paired([2.0, 3.0], [1.0, 2.0])  # every pair +1: no spread, no test
    assert same["mean"] == 1 and same["p_value"] is None


def test_mean_ci_by_hand():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    half = 4.302653 * 1.0 / math.sqrt(3)  # sd 1, n 3, df 2
    assert (m, lo, hi) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert mean_ci([5.0]) == (5.0, None, None)


def _history(accs, time=1.0, diverged=False, flops=10.0):
    n = len(accs)
    return {"test_acc": accs, "epoch_time_s": [time] * n, "train_flops": [flops] * n, "param_updates": [100] * n,
            "diverged": [False] * (n - 1) + [diverged]}


def _run(strategy, seed, accs, **kw):
    return as_run(strategy, seed, _history(accs, **kw))


def _save(folder, strategy, seed, accs, **kw):
    """A run file, as results.py writes one."""
    blob = run_blob(strategy, seed, _history(accs, **kw))
    (folder / "runs" / f"{strategy}__seed{seed}.json").write_text(json.dumps(blob))


def test_paired_difference_uses_per_seed_pairs():
    # strategy b is exactly 1 point above a on every seed, although seeds vary a lot:
    # paired CI is a point, an unpaired comparison would be wide
    runs = [_run("standard", s, [50, 60 + 5 * s]) for s in range(3)]
    runs += [_run("b", s, [50, 61 + 5 * s], time=0.5, flops=7.0) for s in range(3)]
    s = summarize(runs)
    d = s["strategies"]["b"]["diff_vs_standard"]
    assert d["mean"] == pytest.approx(1.0) and d["ci95_low"] == pytest.approx(1.0)
    assert d["pairs"] == 3
    assert s["strategies"]["b"]["time_ratio"] == pytest.approx(0.5)
    assert s["strategies"]["b"]["flops_ratio"] == pytest.approx(0.7)
    assert s["strategies"]["standard"]["final_acc_std"] == pytest.approx(5.0)
    assert s["target_acc"] == pytest.approx(0.95 * 65)
    # standard reaches 61.75 at epoch 2 on seeds 1 and 2 only
    assert s["strategies"]["standard"]["reached_target"] == 2


def test_diverged_runs_are_counted_not_averaged():
    runs = [_run("standard", s, [50, 60]) for s in range(2)]
    runs += [_run("b", 0, [50, 61]), _run("b", 1, [10, float("nan")], diverged=True)]
    s = summarize(runs)["strategies"]["b"]
    assert s["diverged"] == 1 and s["final_acc_mean"] == 61
    assert "(diverged)" in format_table(summarize(runs))


def test_single_seed_says_no_interval():
    runs = [_run("standard", 0, [50, 60]), _run("b", 0, [50, 58])]
    table = format_table(summarize(runs))
    assert "1 seed: no CI" in table and "-2.00" in table


def test_stats_cli_reads_a_results_folder_against_any_reference(tmp_path, capsys):
    from stats import main
    (tmp_path / "runs").mkdir()
    for args in [("standard", 0, [50, 60]), ("freezeout", 0, [50, 58]), ("standard", 1, [50, 61]),
                 ("freezeout", 1, [50, 60])]:
        _save(tmp_path, *args)
    main([str(tmp_path), "--reference", "freezeout"])
    out = capsys.readouterr().out
    assert "diff vs freezeout [95% CI]" in out
    assert "+1.50 [" in out  # standard minus b: +2 and +1


def test_stats_cli_compares_two_folders_run_by_run(tmp_path, capsys):
    from stats import main
    for folder, shift in (("a", 0.5), ("b", 0.0)):
        (tmp_path / folder / "runs").mkdir(parents=True)
        for seed in range(3):
            _save(tmp_path / folder, "standard", seed, [50, 60 + seed + shift])
            _save(tmp_path / folder, "freezeout", seed, [50, 58 + seed + shift * seed])
    main([str(tmp_path / "a"), "--against", str(tmp_path / "b")])
    out = capsys.readouterr().out.splitlines()
    std = next(line for line in out if line.startswith("standard"))
    alt = next(line for line in out if line.startswith("freezeout "))
    assert "+0.50 [+0.50, +0.50]" in std  # a - b, seed by seed
    assert "0,1,2" in alt and "-2.00 [" in alt  # b's own alt - standard: -2 on every seed


def test_equal_flops_interpolates_the_reference_at_the_same_compute():
    from stats import equal_flops
    runs = []
    for seed in range(3):
        runs.append(_run("standard", seed, [40 + seed, 50 + seed, 55 + seed, 58 + seed], flops=10.0))
        # 4 epochs at 7 FLOPs = 28: standard at epoch 2.8, between 50 + seed and 55 + seed
        runs.append(_run("alt", seed, [30, 40, 48, 53 + seed * 0.5], flops=7.0))
    d = equal_flops(runs)["alt"]
    assert d["reference_epochs"] == [2.8, 2.8, 2.8]
    assert d["mean"] == pytest.approx(((53 - 54) + (53.5 - 55) + (54 - 56)) / 3) and d["pairs"] == 3


def test_stats_cli_equal_flops_says_approximate_and_warns_on_a_decaying_schedule(tmp_path, capsys):
    import json

    from stats import main
    for name, schedule in (("const", "constant"), ("cos", "cosine")):
        folder = tmp_path / name
        (folder / "runs").mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"settings": {"lr_schedule": schedule},
                                                        "test_samples": 1000}))
        for seed in range(3):
            _save(folder, "standard", seed, [40 + seed, 50 + seed, 55 + seed, 58 + seed], flops=10.0)
            _save(folder, "freezeout", seed, [30, 40, 48, 53 + seed * 0.5], flops=7.0)
    main([str(tmp_path / "const"), str(tmp_path / "cos"), "--equal-flops"])
    out = capsys.readouterr().out
    assert "Holm over the 2 comparisons above" in out and "APPROXIMATE" in out
    assert f"warning: {tmp_path / 'cos'} used lr schedule cosine" in out
    assert f"{tmp_path / 'const'} used lr schedule" not in out


# --- equivalence: TOST on constructed cases ----------------------------------------------------
def test_tost_shows_equivalence_when_the_90_interval_lies_inside_the_margin():
    from stats import paired, verdict
    from scipy import stats as sps
    # differences of -0.05 .. +0.07 points: mean 0.01, far inside +-0.25
    a = [90.00 + x for x in (0.03, -0.05, 0.07, 0.00, 0.02, -0.01)]
    b = [90.00] * 6
    d = paired(a, b, n=10000, margin=0.25)
    diffs = [round(x * 100) for x in (0.03, -0.05, 0.07, 0.00, 0.02, -0.01)]  # in images
    want = max(sps.ttest_1samp(diffs, -25, alternative="greater").pvalue,
               sps.ttest_1samp(diffs, 25, alternative="less").pvalue)
    assert d["p_tost"] == pytest.approx(want) and d["p_tost"] < 1e-4
    from dataclasses import replace
    assert verdict(replace(d, p_holm=d.p_value, p_tost_holm=d.p_tost)) == "equivalent within +-0.25"


def test_tost_does_not_show_equivalence_for_a_real_difference_or_a_wide_interval():
    from stats import paired, verdict
    behind = paired([89.6, 89.5, 89.7, 89.6], [90.0, 90.0, 90.0, 90.0], n=10000, margin=0.25)  # -0.4
    assert behind["p_tost"] > 0.5
    from dataclasses import replace
    assert verdict(replace(behind, p_holm=behind.p_value, p_tost_holm=behind.p_tost)) == "behind"
    wide = paired([90.5, 89.4, 90.3, 89.8], [90.0] * 4, n=10000, margin=0.25)  # mean 0, sd 0.5: unsure
    wide = replace(wide, p_holm=wide.p_value, p_tost_holm=wide.p_tost)
    assert wide["p_tost"] > 0.05 and wide["p_value"] > 0.05 and verdict(wide) == "not shown different"


def test_tost_with_tied_differences_is_exact():
    from stats import paired
    inside = paired([90.1, 91.1, 89.1], [90.0, 91.0, 89.0], n=10000, margin=0.25)  # +10 images, every seed
    outside = paired([90.3, 91.3, 89.3], [90.0, 91.0, 89.0], n=10000, margin=0.25)  # +30 images, every seed
    assert inside["p_value"] is None and inside["p_tost"] == 0.0
    assert outside["p_tost"] == 1.0
    assert paired([90.0], [89.9], n=10000, margin=0.25)["p_tost"] is None  # one pair: no test


def test_the_declared_family_counts_its_equivalence_tests_and_adjusts_them_apart():
    from sweep import summarize_sweep

    def r(strategy, seed, correct, val=60.0):
        return as_run(strategy, seed, {
            "epoch": [1], "test_acc": [correct / 100.0], "val_acc": [val], "epoch_time_s": [1.0],
            "train_flops": [1], "param_updates": [1], "diverged": [False]}, test_samples=10000)
    runs = [r("standard", s, 9000 + 3 * s) for s in range(6)]
    runs += [r("alternating-epoch", s, 9000 + 3 * s + (s % 3) - 1) for s in range(6)]  # level
    runs += [r("alternating-batch", s, 8950 + 3 * s + (s % 2)) for s in range(6)]      # 0.5 behind
    s = summarize_sweep([({"lr": 0.001}, runs)], ["lr"], tune=("lr",), selection_seeds=[0, 1],
                        confirm_seeds=[2, 3, 4, 5], margin=0.25)
    fam = s["family"]
    assert fam["size"] == 2 and fam["tests"] == 2 and fam["tost_tests"] == 2
    e = s["tuned"][0]["strategies"]
    tosts = [e[n]["diff_vs_standard"]["p_tost"] for n in ("alternating-epoch", "alternating-batch")]
    adjusted = [e[n]["diff_vs_standard"]["p_tost_holm"] for n in ("alternating-epoch", "alternating-batch")]
    assert min(adjusted) == pytest.approx(min(1.0, 2 * min(tosts)))  # Holm over the 2 TOSTs
    from stats import verdict
    assert verdict(e["alternating-epoch"]["diff_vs_standard"]) == "equivalent within +-0.25"
    assert verdict(e["alternating-batch"]["diff_vs_standard"]) == "behind"
    from sweep import format_sweep
    assert "equivalence test (TOST, margin +-0.25 points" in format_sweep(s)


# --- the three latent statistics risks -----------------------------------------------------------
def _one(strategy, seed, correct, n=10000, diverged=False):
    return as_run(strategy, seed, {"test_acc": [100.0 * correct / n], "val_acc": [60.0], "epoch_time_s": [1.0],
                                   "train_flops": [1], "param_updates": [1], "diverged": [diverged]}, test_samples=n)


def test_one_mismatched_test_set_size_does_not_switch_later_strategies_to_float_differences():
    """The reference's n was overwritten inside the loop: after a strategy scored on another test
    set size, every later one lost its integer counts (and three ties of exactly 165 images got a
    spurious p-value)."""
    from sweep import tuned_comparison
    counts = [6000, 6010, 5812, 6103, 5977]  # seeds 0-4; as float percentages 5812..5977 differ in the 15th digit
    runs = [_one("standard", s, c) for s, c in enumerate(counts)]
    runs += [_one("alternating-epoch", s, c // 2 + s % 2, n=5000) for s, c in enumerate(counts)]  # another n
    runs += [_one("alternating-batch", s, c + 165) for s, c in enumerate(counts)]  # +165 images, every seed
    groups, _ = tuned_comparison([({"lr": 0.001}, runs)], ["lr"], selection_seeds=[0, 1], confirm_seeds=[2, 3, 4])
    d = groups[0]["strategies"]["alternating-batch"]["diff_vs_standard"]
    assert d["mean"] == pytest.approx(1.65) and d["p_value"] is None


def test_diverged_runs_are_counted_in_the_comparison_not_dropped_silently():
    from sweep import format_tuned, tuned_comparison
    runs = [_one("standard", s, 6000 + 10 * s) for s in range(6)]
    runs += [_one("alternating-epoch", s, 5990 + 10 * s + s % 2, diverged=(s == 3)) for s in range(6)]
    groups, _ = tuned_comparison([({"lr": 0.001}, runs)], ["lr"], selection_seeds=[0, 1], confirm_seeds=[2, 3, 4, 5])
    e = groups[0]["strategies"]["alternating-epoch"]
    assert e["diverged"] == 1 and e["diff_vs_standard"]["pairs"] == 3 and e["diff_vs_standard"]["dropped"] == 1
    summary = {"reference": "standard", "alpha": 0.05, "margin": None, "tuned": groups, "tuned_keys": ["lr"],
               "confirm_seeds": [2, 3, 4, 5], "selection_seeds": [0, 1]}
    assert "3 (1 diverged)" in format_tuned(summary)


def test_equal_flops_says_which_seeds_it_leaves_out():
    from stats import equal_flops, format_equal_flops

    def run(strategy, seed, flops, accs):
        return as_run(strategy, seed, {"test_acc": accs, "train_flops": flops})
    runs = [run("standard", s, [10, 10], [50.0, 60.0]) for s in range(3)]
    runs += [run("alternating-epoch", 0, [7, 7], [55.0, 56.0]), run("alternating-epoch", 1, [7, 7], [55.0, 57.0]),
             run("alternating-epoch", 2, [15, 15], [55.0, 58.0])]  # seed 2 spent more than standard's whole run
    rows = equal_flops(runs)
    assert rows["alternating-epoch"].pairs == 2 and rows["alternating-epoch"].left_out == [2]
    assert "seeds 2: budget beyond standard's run" in format_equal_flops(rows)


def test_compare_pairs_two_folders_by_seed_and_counts_a_seed_lost_to_divergence():
    """The budget comparison pairs a strategy's folder with standard's (each at its own tuned
    settings) by seed; a seed that diverged on either side is dropped and counted, not hidden."""
    from stats import adjusted, compare
    a = [_one("alternating-epoch", s, 9000 + 10 * s + 5) for s in range(2, 7)]
    a[0] = _one("alternating-epoch", 2, 0, diverged=True)
    b = [_one("standard", s, 9000 + 10 * s + (s % 2)) for s in range(2, 7)]
    row = compare(a, "alternating-epoch", b, "standard", margin=0.25)
    assert row.diff.pairs == 4 and row.diff.dropped == 1
    assert row.diff.mean == pytest.approx(np.mean([0.05 - 0.01 * (s % 2) for s in range(3, 7)]))
    assert row.a_mean == pytest.approx(np.mean([90.05 + 0.1 * s for s in range(3, 7)]))
    c = [_one("layer-freezing", s, 9000 + 10 * s - 20 + s % 3) for s in range(2, 7)]
    fixed = adjusted([row, compare(c, "layer-freezing", b, "standard", margin=0.25)])
    assert fixed[0].diff.p_holm >= row.diff.p_value  # Holm never lowers a p-value


def test_the_interaction_of_two_gaps_is_welchs_test_on_their_per_seed_differences():
    """A trend across depths (or budgets, or workloads) is tested as the difference of two paired
    gaps from independent runs: the same interval and p-value as Welch's test on the per-seed gaps."""
    import numpy as np
    from scipy import stats as sps
    from stats import difference_of_gaps, paired
    rng = np.random.default_rng(0)
    a_diffs, b_diffs = rng.normal(-0.1, 0.1, 10), rng.normal(-0.4, 0.2, 8)
    a, b = paired(a_diffs, np.zeros(10)), paired(b_diffs, np.zeros(8))
    d = difference_of_gaps(a, b)
    welch = sps.ttest_ind(b_diffs, a_diffs, equal_var=False)
    assert d.mean == pytest.approx(b_diffs.mean() - a_diffs.mean())
    assert d.p_value == pytest.approx(welch.pvalue, rel=1e-9)
    ci = welch.confidence_interval(0.95)
    assert (d.ci95_low, d.ci95_high) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))
    assert difference_of_gaps(a, paired([1.0], [0.0])) is None  # one pair: no interval


def test_stats_cli_leaves_out_a_run_whose_strategy_is_not_defined_and_reads_a_plugins_runs(tmp_path, capsys):
    """A run is read as a records.Run, named by a RunName: a strategy not defined here cannot be named,
    so its run is left out in one line; --plugin defines a plugin's strategies."""
    from conftest import ROOT
    from stats import main
    (tmp_path / "runs").mkdir()
    for seed in (0, 1):
        _save(tmp_path, "standard", seed, [50, 60 + seed])
        _save(tmp_path, "late-freeze", seed, [50, 59 + 2 * seed])
    _save(tmp_path, "no-such-strategy", 0, [50, 70])
    main([str(tmp_path), "--plugin", str(ROOT / "examples" / "late_freeze.py")])
    out, err = capsys.readouterr()
    assert "late-freeze" in out and "-0.50 [" in out  # -1 and 0 points: the plugin's runs are read
    assert "no-such-strategy" not in out and "no-such-strategy__seed0.json is left out" in err
    assert "unknown strategy 'no-such-strategy'" in err and err.count("\n") == 1


def test_a_schedule_that_froze_nothing_is_flagged_identical_not_equivalent():
    """LISA on a network with one middle unit trains everything: the same computation as
    standard. The tables say so instead of a +0.00 [+0.00, +0.00] that reads like a finding; one
    differing epoch on one seed is enough to drop the flag."""
    from sweep import format_tuned, summarize_sweep
    h = lambda acc: {"test_acc": [50.0, acc], "val_acc": [50.0, 50.0], "train_loss": [1.0, 0.9],  # noqa: E731
                     "train_flops": [10, 10]}
    runs = [as_run("standard", s, h(60.0 + s)) for s in range(4)] + [as_run("lisa", s, h(60.0 + s)) for s in range(4)]
    runs += [as_run("freezeout", s, h(60.0 + s + (s == 3) * 0.01)) for s in range(4)]
    s = summarize(runs)
    assert s.strategies["lisa"].identical is True and s.strategies["freezeout"].identical is None
    assert s.strategies["standard"].identical is None
    table = format_table(s.to_json())
    assert "identical to standard" in next(line for line in table.splitlines() if line.startswith("lisa"))
    assert "+0.00" not in next(line for line in table.splitlines() if line.startswith("lisa"))
    assert "identical to standard" not in next(line for line in table.splitlines() if line.startswith("freezeout"))
    tuned = summarize_sweep([({"lr": 0.001}, runs)], ["lr"], selection_seeds=[0, 1], confirm_seeds=[2, 3])
    e = tuned.tuned[0].strategies
    assert e["lisa"].identical is True and e["freezeout"].identical is None
    lines = format_tuned(tuned.to_json()).splitlines()
    assert next(line for line in lines if " lisa " in line).endswith("identical to standard on every seed: froze nothing here")
    assert "froze nothing" not in next(line for line in lines if " freezeout " in line)
