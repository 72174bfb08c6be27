import math

import pytest

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


def _run(strategy, seed, accs, time=1.0, diverged=False, flops=10.0):
    n = len(accs)
    return {"strategy": strategy, "seed": seed, "history": {
        "epoch": list(range(1, n + 1)), "test_acc": accs, "epoch_time_s": [time] * n,
        "train_flops": [flops] * n, "param_updates": [100] * n,
        "diverged": [False] * (n - 1) + [diverged]}}


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
    import json

    from stats import main
    (tmp_path / "runs").mkdir()
    for run in [_run("standard", 0, [50, 60]), _run("b", 0, [50, 58]), _run("standard", 1, [50, 61]),
                _run("b", 1, [50, 60])]:
        (tmp_path / "runs" / f"{run['strategy']}__seed{run['seed']}.json").write_text(json.dumps(run))
    main([str(tmp_path), "--reference", "b"])
    out = capsys.readouterr().out
    assert "diff vs b [95% CI]" in out
    assert "+1.50 [" in out  # standard minus b: +2 and +1


def test_stats_cli_compares_two_folders_run_by_run(tmp_path, capsys):
    import json

    from stats import main
    for folder, shift in (("a", 0.5), ("b", 0.0)):
        (tmp_path / folder / "runs").mkdir(parents=True)
        for seed in range(3):
            for run in (_run("standard", seed, [50, 60 + seed + shift]),
                        _run("alt", seed, [50, 58 + seed + shift * seed])):
                (tmp_path / folder / "runs" / f"{run['strategy']}__seed{seed}.json").write_text(json.dumps(run))
    main([str(tmp_path / "a"), "--against", str(tmp_path / "b")])
    out = capsys.readouterr().out.splitlines()
    std = next(line for line in out if line.startswith("standard"))
    alt = next(line for line in out if line.startswith("alt "))
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
            for run in (_run("standard", seed, [40 + seed, 50 + seed, 55 + seed, 58 + seed], flops=10.0),
                        _run("alt", seed, [30, 40, 48, 53 + seed * 0.5], flops=7.0)):
                (folder / "runs" / f"{run['strategy']}__seed{seed}.json").write_text(json.dumps(run))
    main([str(tmp_path / "const"), str(tmp_path / "cos"), "--equal-flops"])
    out = capsys.readouterr().out
    assert "Holm over the 2 comparisons above" in out and "APPROXIMATE" in out
    assert f"warning: {tmp_path / 'cos'} used lr schedule cosine" in out
    assert f"{tmp_path / 'const'} used lr schedule" not in out
