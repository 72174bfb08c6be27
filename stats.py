"""Paired multi-seed statistics: mean, spread, t-intervals on per-seed differences.

A run is a dict {"strategy", "seed", "history"} where history is training_loop's
per-epoch dict of lists. Seed s means the same initial weights and data order
for every strategy, so differences to standard are taken per seed (paired).
"""
from __future__ import annotations

import math

import numpy as np

# Two-sided 95% Student-t quantiles t_{0.975, df}; between rows we interpolate in 1/df.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042,
         40: 2.021, 60: 2.000, 120: 1.980, math.inf: 1.960}


def t_quantile_975(df):
    """t_{0.975} for df degrees of freedom (exact to 3 decimals at the table's rows)."""
    if df < 1:
        raise ValueError("need at least 1 degree of freedom")
    rows = sorted(_T975)
    if df in _T975:
        return _T975[df]
    hi = next(r for r in rows if r > df)
    lo = rows[rows.index(hi) - 1]
    w = (1 / lo - 1 / df) / (1 / lo - (0 if hi == math.inf else 1 / hi))
    return _T975[lo] + w * (_T975[hi] - _T975[lo])


def mean_ci(values):
    """(mean, low, high) of a 95% t-interval; low/high are None with fewer than 2 values."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return None, None, None
    m = float(v.mean())
    if len(v) < 2:
        return m, None, None
    half = t_quantile_975(len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return m, m - half, m + half


def _std(values):
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def _mean(values):
    return float(np.mean(values)) if len(values) else None


def run_diverged(run):
    return any(run["history"]["diverged"])


def final_acc(run):
    return run["history"]["test_acc"][-1]


def epochs_to(run, target):
    """First epoch whose test accuracy reaches `target`, or None."""
    h = run["history"]
    return next((e for e, a in zip(h["epoch"], h["test_acc"]) if a >= target), None)


def _costs(runs):
    """Means over runs of: seconds per epoch, total training FLOPs, total parameter updates."""
    return tuple(_mean([agg(r["history"][key]) for r in runs]) for key, agg in
                 (("epoch_time_s", np.mean), ("train_flops", sum), ("param_updates", sum)))


def summarize(runs, reference="standard", target_frac=0.95):
    """Per-strategy summary dict (JSON-ready), in the order strategies first appear in `runs`."""
    by_strategy = {}
    for r in runs:
        by_strategy.setdefault(r["strategy"], {})[r["seed"]] = r
    ok = lambda rs: {s: r for s, r in rs.items() if not run_diverged(r)}  # noqa: E731
    ref = ok(by_strategy.get(reference, {}))
    ref_acc = _mean([final_acc(r) for r in ref.values()])
    target = None if ref_acc is None else target_frac * ref_acc
    ref_time, ref_flops, ref_updates = _costs(ref.values())
    ratio = lambda a, b: None if a is None or not b else a / b  # noqa: E731

    out = {}
    for name, seeds in by_strategy.items():
        good = ok(seeds)
        accs = [final_acc(r) for r in good.values()]
        pairs = [final_acc(r) - final_acc(ref[s]) for s, r in good.items() if s in ref]
        d_mean, d_lo, d_hi = mean_ci(pairs) if name != reference else (None, None, None)
        reached = [epochs_to(r, target) for r in good.values()] if target is not None else []
        hit = [e for e in reached if e is not None]
        epoch_time, flops, updates = _costs(good.values())
        out[name] = {
            "seeds": sorted(seeds), "diverged": len(seeds) - len(good),
            "epochs": _mean([len(r["history"]["epoch"]) for r in good.values()]),
            "final_acc_mean": _mean(accs), "final_acc_std": _std(accs),
            "diff_vs_standard": {"mean": d_mean, "ci95_low": d_lo, "ci95_high": d_hi,
                                 "pairs": len(pairs) if name != reference else 0},
            "epoch_time_s": epoch_time, "time_ratio": ratio(epoch_time, ref_time),
            "train_flops": flops, "flops_ratio": ratio(flops, ref_flops),
            "param_updates": updates, "updates_ratio": ratio(updates, ref_updates),
            "epochs_to_target": _mean(hit), "reached_target": len(hit),
        }
    return {"reference": reference, "target_acc": target, "target_frac": target_frac,
            "strategies": out}


def _fmt(x, spec=".2f", none="-"):
    return none if x is None else format(x, spec)


def format_table(summary):
    """The summary as a plain-text table, ready to paste into a paper or a README."""
    target = summary["target_acc"]
    head = ["strategy", "seeds", "final acc (%)", f"diff vs {summary['reference']} [95% CI]", "s/epoch",
            "time x", "FLOPs x", "updates x", f"epochs to {_fmt(target, '.1f')}%"]
    rows = []
    for name, s in summary["strategies"].items():
        d = s["diff_vs_standard"]
        if name == summary["reference"]:
            diff = "(reference)"
        elif d["mean"] is None:
            diff = "-"
        elif d["ci95_low"] is None:
            diff = f"{d['mean']:+.2f} (1 seed: no CI)"
        else:
            diff = f"{d['mean']:+.2f} [{d['ci95_low']:+.2f}, {d['ci95_high']:+.2f}]"
        n = len(s["seeds"])
        acc = _fmt(s["final_acc_mean"])
        if s["final_acc_std"] is not None:
            acc += f" +- {s['final_acc_std']:.2f}"
        seeds = f"{n - s['diverged']}/{n}" + (" (diverged)" if s["diverged"] else "")
        if target is None:
            reach = "-"  # no standard runs to set the target
        elif s["epochs_to_target"] is None:
            reach = "never"
        else:
            reach = f"{s['epochs_to_target']:.1f} ({s['reached_target']}/{n - s['diverged']})"
        rows.append([name, seeds, acc, diff, _fmt(s["epoch_time_s"]), _fmt(s["time_ratio"]),
                     _fmt(s["flops_ratio"]), _fmt(s["updates_ratio"]), reach])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])


def load_runs(folder):
    """Every saved run in a results folder (its runs/*.json), in file order."""
    import json
    from pathlib import Path
    return [json.loads(f.read_text()) for f in sorted(Path(folder, "runs").glob("*.json"))]


def main(argv=None):
    """Re-read a results folder and print its table against any reference strategy (read-only)."""
    import argparse
    p = argparse.ArgumentParser(description=main.__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("folder", help="an --out folder of experiments.py")
    p.add_argument("--reference", default="standard", help="paired differences are taken to this strategy")
    p.add_argument("--target-frac", type=float, default=0.95)
    a = p.parse_args(argv)
    runs = load_runs(a.folder)
    order = sorted({r["strategy"] for r in runs}, key=lambda s: (s != a.reference, s))
    runs.sort(key=lambda r: (order.index(r["strategy"]), r["seed"]))
    print(format_table(summarize(runs, reference=a.reference, target_frac=a.target_frac)))


if __name__ == "__main__":
    main()
