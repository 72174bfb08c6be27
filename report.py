"""The headline: the key paired comparisons from the committed results, as one forest plot.

    python report.py                  # prints the table, writes results/headline.png

Read-only: every number comes from saved runs (runs/*.json) or from a sweep's
sweep_summary.json, which experiments.py wrote from its saved runs. A folder that is missing
or unfinished is named and left out, never filled in.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from plots import plot_forest
from stats import format_diff, load_runs, paired, test_samples, text_table


def folder_comparisons(folder, pairs, section):
    """Paired final-accuracy differences a - b (seeds both have) for each (a, b) in pairs."""
    runs = [r for r in load_runs(folder) if not any(r["history"]["diverged"])]
    by = {(r["strategy"], r["seed"]): r for r in runs}
    rows = []
    for a, b, label in pairs:
        seeds = sorted(s for (n, s) in by if n == a and (b, s) in by)
        d = paired([by[a, s]["history"]["test_acc"][-1] for s in seeds],
                   [by[b, s]["history"]["test_acc"][-1] for s in seeds], test_samples(runs))
        rows.append({"section": section, "label": label, "seeds": len(seeds), **d})
    return rows


def protocol_comparisons(folder, section):
    """The confirmed tuned comparisons and equal-compute comparisons of a protocol sweep, with
    the Holm-adjusted p-values of the family its sweep_summary.json declares."""
    s = json.loads(Path(folder, "sweep_summary.json").read_text())
    if not s.get("confirm_seeds") or not s.get("complete", True):
        return [], f"{folder}: not confirmed on fresh seeds yet (rerun its command)"
    rows = []
    for g in s["tuned"]:
        for name, e in g["strategies"].items():
            for key, what in (("diff_vs_standard", "vs tuned standard"),
                              ("diff_vs_matched", "vs standard at its FLOPs")):
                if e.get(key):
                    rows.append({"section": section, "label": f"{name} {what}",
                                 "seeds": e[key]["pairs"], **e[key]})
    note = f"{folder}: family of {s['family']['size']} ({s['family']['name']}), seeds {s['confirm_seeds']}"
    return rows, note


def collect(root="results"):
    root = Path(root)
    rows, notes = [], []
    classic = root / "cifar10-jpeg"
    if (classic / "runs").exists():
        rows += folder_comparisons(classic, [("alternating-epoch", "standard", "alternating-epoch vs standard"),
                                             ("alternating-batch", "standard", "alternating-batch vs standard")],
                                   "CIFAR-10 (JPEG copy), classic MLP, 15 epochs, fp32")
    ablations = root / "cifar10-jpeg-ablations"
    if (ablations / "runs").exists():
        rows += folder_comparisons(ablations, [
            ("alternating-batch-reset", "alternating-batch", "new Adam at every switch (batch) vs kept"),
            ("standard-reset-batch", "standard", "standard, new Adam every batch vs kept"),
            ("alternating-batch-bnfixed", "alternating-batch", "frozen half's BN statistics fixed vs updating")],
            "CIFAR-10 (JPEG copy): the earlier version's confounds")
    for name, section in (("protocol-fashion-mnist", "Fashion-MNIST, tuned on validation, 10 fresh seeds"),
                          ("protocol-cifar10-jpeg", "CIFAR-10 (JPEG copy), 40 epochs, tuned, 10 fresh seeds")):
        if (root / name / "sweep_summary.json").exists():
            r, note = protocol_comparisons(root / name, section)
            rows += r
            notes.append(note)
        else:
            notes.append(f"{root / name}: not run yet")
    return rows, notes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--results", default="results", metavar="DIR", help="the committed results folder")
    p.add_argument("--out", default="results/headline.png", metavar="PNG", help="where the figure goes")
    a = p.parse_args(argv)
    rows, notes = collect(a.results)
    print(text_table(["comparison", "", "seeds", "difference, points [95% CI]", "p", "p (Holm, its family)"],
                     [[r["section"], r["label"], r["seeds"], format_diff(r),
                       "-" if r["p_value"] is None else f"{r['p_value']:.2g}",
                       "-" if r.get("p_holm") is None else f"{r['p_holm']:.2g}"] for r in rows]))
    for n in notes:
        print(n)
    plot_forest(rows, a.out, title="Paired differences in test accuracy (points, 95% t-intervals)")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
