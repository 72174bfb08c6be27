"""report.py's gap-against-depth and gap-against-budget tables, read from constructed folders."""
import json

import pytest

import report
from conftest import run_blob
from records import to_json
from stats import Paired, holm
from sweep import Family, SweepSummary, TunedEntry, TunedGroup


def _diff(mean, p=0.01):
    return Paired(mean, mean - 0.1, mean + 0.1, p, 10, margin=0.25, p_tost=0.5, p_holm=p, p_tost_holm=1.0)


def _write(folder, groups=(), complete=True):
    """A confirmed protocol's sweep_summary.json, as sweep.py writes one."""
    size = sum(len(g.strategies) - 1 for g in groups)
    s = SweepSummary([], "standard", 0.05, 0.25, "final", ["lr"], [0, 1], list(range(2, 12)), [], list(groups),
                     None, Family("f", 2 * size, [], 2 * size), complete=complete)
    (folder / "sweep_summary.json").write_text(json.dumps(to_json(s)))


def _summary(folder, group, diffs):
    folder.mkdir(parents=True)
    strategies = {"standard": TunedEntry({"lr": 0.001})}
    strategies.update({n: TunedEntry({"lr": 0.001}, diff_vs_standard=_diff(m)) for n, m in diffs.items()})
    _write(folder, [TunedGroup(group, strategies)])


def test_the_depth_gaps_join_depth_2_with_the_depth_protocols_and_keep_only_their_strategies(tmp_path):
    _summary(tmp_path / report.DEPTH_2, {}, {"freezeout": -0.5, "layerout": -0.3, "alternating-epoch": -0.8})
    _summary(tmp_path / report.DEPTHS[4], {}, {"freezeout": -0.2, "alternating-epoch": -0.6})
    rows, notes = report.depth_gaps(tmp_path)
    assert sorted((r.strategy, r.x, r.diff.mean) for r in rows) == [
        ("alternating-epoch", 2, -0.8), ("alternating-epoch", 4, -0.6), ("freezeout", 2, -0.5), ("freezeout", 4, -0.2)]
    assert any(str(tmp_path / report.DEPTHS[8]) in n and "not run yet" in n for n in notes)
    assert "freezeout" in report.format_gaps(rows, "depth")


def _run(strategy, seed, correct):
    return run_blob(strategy, seed, {"test_acc": [correct / 100.0], "val_acc": [60.0], "epoch_time_s": [1.0],
                                     "train_flops": [1], "param_updates": [1]}, test_samples=10000)


def test_the_budget_gaps_pair_each_strategy_with_standard_in_its_cell_and_holm_over_four(tmp_path):
    _summary(tmp_path / report.DEPTH_2, {}, {"alternating-epoch": -0.8, "layer-freezing": -0.1, "freezeout": -0.5})
    offsets = {("alternating-epoch", 40): -40, ("layer-freezing", 40): 3,
               ("alternating-epoch", 100): -10, ("layer-freezing", 100): 1}
    folder = tmp_path / report.BUDGET
    for epochs in (40, 100):
        runs = folder / f"epochs={epochs}" / "runs"
        runs.mkdir(parents=True)
        for name in report.BUDGET_STRATEGIES:
            label = name if name != "layer-freezing" else "layer-freezing[freeze_start=0.25]"  # a knob variant
            for s in range(2, 12):
                correct = 9000 + 7 * s + offsets.get((name, epochs), 0) + (s % 3 if name != "standard" else 0)
                (runs / f"{label}__seed{s}.json").write_text(json.dumps(_run(label, s, correct)))
    _write(folder, complete=False)
    assert report.budget_gaps(tmp_path)[1] == [f"{folder}: not finished (rerun its command)"]
    _write(folder, complete=True)
    rows, notes = report.budget_gaps(tmp_path)
    assert not notes
    assert sorted({r.x for r in rows}) == [15, 40, 100]
    assert {r.strategy for r in rows} == {"alternating-epoch", "layer-freezing"}  # freezeout is not in it
    family = [r for r in rows if r.x != 15]
    assert len(family) == 4 and all(r.diff.pairs == 10 for r in family)
    alt40 = next(r for r in family if r.strategy == "alternating-epoch" and r.x == 40)
    assert alt40.diff.mean == pytest.approx(-0.40 + 0.011)  # -40 images, plus s % 3 (a mean of 1.1 over seeds 2-11)
    assert [r.diff.p_holm for r in family] == pytest.approx(holm([r.diff.p_value for r in family]))


def test_the_headline_is_drawn_from_the_committed_folders(tmp_path):
    """python report.py on the committed results draws the figure, and the resets family is the
    2 comparisons declared before those runs, Holm-adjusted over exactly those 2."""
    from conftest import ROOT
    report.main(["--results", str(ROOT / "results"), "--out", str(tmp_path / "headline.png")])
    assert (tmp_path / "headline.png").exists()
    rows, _ = report.collect(ROOT / "results")
    resets = [r for r in rows if "optimizer resets" in r.section]
    assert len(resets) == 2 and all(r.diff.pairs == 10 for r in resets)
    assert [r.diff.p_holm for r in resets] == pytest.approx(holm([r.diff.p_value for r in resets]))


def test_the_cnn_and_gpt_protocols_join_the_headline_once_confirmed_and_not_before(tmp_path):
    _summary(tmp_path / report.CNN, {}, {"lisa": -0.4, "gradual-unfreezing": 0.1})
    rows, notes = report.collect(tmp_path)
    cnn = [r for r in rows if r.section.startswith("ResNet-8 (cnn)")]
    assert sorted((r.label, r.diff.mean) for r in cnn) == [("gradual-unfreezing vs tuned standard", 0.1),
                                                           ("lisa vs tuned standard", -0.4)]
    assert any(str(tmp_path / report.GPT) in n and "not run yet" in n for n in notes)
    _write(tmp_path / report.CNN, complete=False)  # under way: a note, no rows
    rows, notes = report.collect(tmp_path)
    assert not [r for r in rows if r.section.startswith("ResNet-8")]
    assert any(str(tmp_path / report.CNN) in n and "not confirmed" in n for n in notes)
