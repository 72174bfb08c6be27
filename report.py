"""The headline: the key paired comparisons from the committed results, as one forest plot.

    python report.py                  # prints the table, writes results/headline.png

Read-only: every number comes from saved runs (runs/*.json) or from a sweep's
sweep_summary.json, which experiments.py wrote from its saved runs. A folder that is missing
or unfinished is named and left out, never filled in.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from plots import plot_forest, plot_gaps
from results import load_runs, read_sweep_summary
from stats import Gap, Interaction, Labelled, adjusted, compare, difference_of_gaps, family, format_diff, text_table, verdict
from sweep import SweepSummary

DEPTH_2 = "protocol-knobs-fashion-mnist"  # the depth-2, 15-epoch protocol with every method's knobs
DEPTHS = {4: "protocol-depth4-fashion-mnist", 8: "protocol-depth8-fashion-mnist"}  # the depth-2 knob choices
CNN, GPT = "protocol-cnn-cifar10-jpeg", "protocol-gpt-shakespeare"  # the other workloads (RESULTS.md)
BUDGET = "budget-fashion-mnist"           # one sweep of the three at their depth-2 choices: cells epochs=40, 100
BUDGET_STRATEGIES = ("standard", "alternating-epoch", "layer-freezing")


def folder_comparisons(folder, pairs, section, declared=False, margin=0.25):
    """Paired final-accuracy differences a - b, on the seeds both ran without diverging, for each
    (a, b, label) in pairs; declared: the pairs are a family fixed before the runs, Holm-adjusted
    over it, and apart over its TOSTs at +-margin (stats.family)."""
    runs = load_runs(folder)
    ab = [(a, b) for a, b, _ in pairs]
    rows = family(runs, ab, margin) if declared else [compare(runs, a, runs, b, margin) for a, b in ab]
    return [Labelled(section, label, row.diff) for (_, _, label), row in zip(pairs, rows)]


def sweep_summary(folder):
    """(its SweepSummary, None), or (None, why there is none: not run yet, or not finished)."""
    blob = read_sweep_summary(folder)
    if blob is None:
        return None, f"{folder}: " + ("not finished (rerun its command)" if Path(folder).exists() else "not run yet")
    return SweepSummary.of_json(blob), None


def confirmed_summary(folder):
    """(the SweepSummary of a sweep confirmed on fresh seeds, None), or (None, why not)."""
    s, note = sweep_summary(folder)
    if s is not None and (not s.confirm_seeds or s.complete is False):
        return None, f"{folder}: not confirmed on fresh seeds yet (rerun its command)"
    return s, note


def protocol_comparisons(folder, section):
    """The confirmed tuned comparisons and equal-compute comparisons of a protocol sweep, with
    the Holm-adjusted p-values of the family its sweep_summary.json declares."""
    s, note = confirmed_summary(folder)
    if s is None:
        return [], note
    rows = []
    for g in s.tuned:
        for name, e in g.strategies.items():
            for d, what in ((e.diff_vs_standard, "vs tuned standard"), (e.diff_vs_matched, "vs standard at its FLOPs")):
                if d:
                    rows.append(Labelled(section, f"{name} {what}", d))
    note = f"{folder}: family of {s.family.size} ({s.family.name}), seeds {s.confirm_seeds}"
    return rows, note


def tuned_gaps(folder, x_of):
    """Each confirmed strategy's difference to tuned standard, one row per group of the sweep, at
    x = x_of(group); Holm and TOST as its sweep_summary.json has them (that folder's family)."""
    s, note = confirmed_summary(folder)
    if s is None:
        return [], note
    rows = [Gap(name, x_of(g.group), f"{Path(folder).name} ({s.family.size})", e.diff_vs_standard)
            for g in s.tuned for name, e in g.strategies.items() if e.diff_vs_standard]
    return rows, None


def depth_gaps(root="results"):
    """Gap to tuned standard against depth: depth 2 from the knobs protocol, 4 and 8 from one
    protocol each (its strategies at their depth-2 knob choices, lr tuned at that depth)."""
    rows, notes = [], []
    for depth, folder in ((2, DEPTH_2), *DEPTHS.items()):
        r, note = tuned_gaps(Path(root, folder), lambda g, depth=depth: depth)
        rows += r
        notes += [note] if note else []
    keep = {r.strategy for r in rows if r.x != 2}  # the strategies the depth protocol runs
    return [r for r in rows if r.strategy in keep], notes


def budget_gaps(root="results", margin=0.25):
    """Gap to tuned standard against the epoch budget: 15 epochs from the knobs protocol; 40 and
    100 from the budget sweep, one family of four comparisons (Holm, and TOST at +-margin)
    declared before those runs: alternating-epoch and layer-freezing against standard at each."""
    rows, note = tuned_gaps(Path(root, DEPTH_2), lambda g: 15)
    rows = [r for r in rows if r.strategy in BUDGET_STRATEGIES]
    notes = [note] if note else []
    folder = Path(root, BUDGET)
    s, note = sweep_summary(folder)
    if s is None or s.complete is False:
        return rows, notes + [note or f"{folder}: not finished (rerun its command)"]
    family = []
    for epochs in (40, 100):
        runs = load_runs(folder / f"epochs={epochs}")
        name = {r.name.family: r.name for r in runs}  # each one's knob variant
        for n in BUDGET_STRATEGIES[1:]:
            family.append((epochs, n, compare(runs, name[n], runs, name["standard"], margin)))
    fixed = adjusted([row for _, _, row in family])
    for (epochs, n, _), row in zip(family, fixed):
        rows.append(Gap(n, epochs, f"{BUDGET} (4)", row.diff))
    return rows, notes


def format_gaps(rows, what):
    return text_table([what, "strategy", "seeds", "difference vs standard [95% CI]", "p (Holm)",
                       "TOST p (Holm)", "verdict", "family (size)"],
                      [[f"{r.x:g}", r.strategy, r.diff.pairs, format_diff(r.diff),
                        "-" if r.diff.p_holm is None else f"{r.diff.p_holm:.2g}",
                        "-" if r.diff.p_tost_holm is None else f"{r.diff.p_tost_holm:.2g}",
                        verdict(r.diff), r.family] for r in sorted(rows, key=lambda r: (r.x, r.strategy))])


def interactions(rows):
    """For each strategy, its gap at each setting minus its gap at the setting before (depth 4 minus
    depth 2, ...): the difference of two paired gaps with Welch's interval, the only test of a trend
    (each gap comes from its own runs and family)."""
    out = []
    for name in dict.fromkeys(r.strategy for r in rows):
        mine = sorted((r for r in rows if r.strategy == name), key=lambda r: r.x)
        for a, b in zip(mine, mine[1:]):
            d = difference_of_gaps(a.diff, b.diff)
            if d is not None:
                out.append(Interaction(name, a.x, b.x, d))
    return out


def format_interactions(rows, what):
    return text_table([f"{what}", "strategy", "gap there minus gap before [95% CI]", "p (Welch)", "reads"],
                      [[f"{r.start:g} -> {r.end:g}", r.strategy, format_diff(r.diff),
                        "-" if r.diff.p_value is None else f"{r.diff.p_value:.2g}",
                        "changes" if r.diff.ci95_low > 0 or r.diff.ci95_high < 0 else "not shown to change"]
                       for r in rows]) + ("\nnot adjusted for multiplicity: a trend is claimed only where its "
                                          "interval excludes 0")


def collect(root="results"):
    root = Path(root)
    rows, notes = [], []
    confound = root / "confound-cifar10-jpeg"  # the classic setting on 10 seeds (0-9)
    if (confound / "runs").exists():
        rows += folder_comparisons(confound, [("alternating-epoch", "standard", "alternating-epoch vs standard"),
                                              ("alternating-batch", "standard", "alternating-batch vs standard")],
                                   "CIFAR-10 (JPEG copy), classic MLP, 15 epochs, fp32")
        rows += folder_comparisons(confound, [
            ("alternating-batch-reset", "alternating-batch", "new Adam at every batch switch vs kept"),
            ("alternating-epoch-reset", "alternating-epoch", "new Adam at every epoch switch vs kept")],
            "CIFAR-10 (JPEG copy): the earlier version's optimizer resets", declared=True)
        notes.append(f"{confound}: resets family of 2, declared before the runs")
    ablations = root / "cifar10-jpeg-ablations"
    if (ablations / "runs").exists():
        rows += folder_comparisons(ablations, [
            ("alternating-batch-bnfixed", "alternating-batch", "frozen half's BN statistics fixed vs updating")],
            "CIFAR-10 (JPEG copy): the earlier version's BatchNorm statistics")
    for name, section in ((DEPTH_2, "Fashion-MNIST, each method's knobs tuned on validation, 10 fresh seeds"),
                          ("protocol-cifar10-jpeg", "CIFAR-10 (JPEG copy), 40 epochs, tuned, 10 fresh seeds"),
                          # the other workloads: in the figure once their protocols are confirmed, a note until then
                          (CNN, "ResNet-8 (cnn), CIFAR-10 (JPEG copy), 15 epochs, tuned, 10 fresh seeds"),
                          (GPT, "character transformer (gpt), Shakespeare, next-character accuracy, 10 fresh seeds")):
        r, note = protocol_comparisons(root / name, section)
        rows += r
        notes.append(note)
    return rows, notes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--results", default="results", metavar="DIR", help="the committed results folder")
    p.add_argument("--out", default="results/headline.png", metavar="PNG",
                   help="where the headline figure goes; gap_vs_depth.png and gap_vs_budget.png go beside it")
    p.add_argument("--margin", type=float, default=0.25, help="the declared equivalence margin (points)")
    a = p.parse_args(argv)
    rows, notes = collect(a.results)
    print(text_table(["comparison", "", "seeds", "difference, points [95% CI]", "p", "p (Holm, its family)"],
                     [[r.section, r.label, r.diff.pairs, format_diff(r.diff),
                       "-" if r.diff.p_value is None else f"{r.diff.p_value:.2g}",
                       "-" if r.diff.p_holm is None else f"{r.diff.p_holm:.2g}"] for r in rows]))
    for n in notes:
        print(n)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    plot_forest(rows, a.out, title="Paired differences in test accuracy (points, 95% t-intervals)")
    print(f"wrote {a.out}")
    out = Path(a.out).parent
    for what, (gaps, gap_notes), png, tuned in (
            ("depth", depth_gaps(a.results), "gap_vs_depth.png", "lr tuned at each depth"),
            ("epochs", budget_gaps(a.results, a.margin), "gap_vs_budget.png", "the 15-epoch choices at every budget")):
        print(f"\nthe gap against {what} (Fashion-MNIST, {tuned}, 10 fresh seeds)")
        print(format_gaps(gaps, what) if gaps else "(no runs yet)")
        for n in gap_notes:
            print(n)
        trend = interactions(gaps)
        if trend:
            print(f"\nthe interaction: does the gap change with {what}?")
            print(format_interactions(trend, what))
        if len({r.x for r in gaps}) > 1:  # a curve needs two settings; one is only the table above
            plot_gaps(gaps, out / png, xlabel=what, log_x=True, margin=a.margin,
                      title=f"Fashion-MNIST: each strategy minus standard against {what}\n({tuned}; 95% intervals)")
            print(f"wrote {out / png}")


if __name__ == "__main__":
    main()
