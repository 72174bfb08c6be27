"""Sweeps: the cells of a grid, and the map they draw.

A grid is ((key, (value, ...)), ...) over Config fields; its cells are the product of
the value lists. The map has one row per cell and strategy: the paired difference to
standard in that cell, with a paired t-test whose p-values are adjusted by Holm's method
over every comparison in the sweep. When lr is a grid key and there is a validation
split, the tuned comparison gives each strategy its own best learning rate per group of
cells that differ only in lr, chosen on validation accuracy; test accuracy is only reported.
"""
from __future__ import annotations

import csv
import io
import itertools
from dataclasses import replace

from config import GRID_KEYS, PARSERS, ConfigError, check_config, flag, short_value
from stats import (final_acc, final_val_acc, format_diff, holm, mean_or_none, paired, run_diverged,
                   std_or_none, summarize, text_table)

ALPHA = 0.05
SWEEP_COLUMNS = ("strategy", "seeds", "diverged", "test_acc_mean", "test_acc_std", "val_acc_mean",
                 "diff_vs_standard", "ci_low", "ci_high", "p_value", "p_holm", "time_ratio",
                 "flops_ratio", "updates_ratio")


# --- the grid ------------------------------------------------------------------------------
def parse_grid(specs):
    """['lr=1e-3,3e-3', 'depth=2,4'] -> (('lr', (0.001, 0.003)), ('depth', (2, 4))).
    Each value passes the same check as its flag; errors are one line."""
    grid, seen = [], set()
    for spec in specs:
        key, sep, text = spec.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--grid {spec!r} is not KEY=V1,V2,...; e.g. --grid lr=3e-4,1e-3,3e-3")
        if key not in GRID_KEYS:
            raise ConfigError(f"--grid: unknown key {key!r}; a grid can vary "
                              f"{', '.join(GRID_KEYS)}")
        if key in seen:
            raise ConfigError(f"--grid {key} is given twice; put all its values in one "
                              f"--grid {key}=V1,V2,...")
        seen.add(key)
        items = [v.strip() for v in text.split(",") if v.strip()]
        if not items:
            raise ConfigError(f"--grid {key}= has no values; give at least one, e.g. --grid {key}=V1,V2")
        values = []
        for item in items:
            try:
                values.append(PARSERS[key](item))
            except ValueError as e:
                raise ConfigError(f"--grid {key}={item}: {flag(key)} {e}") from None
        grid.append((key, tuple(dict.fromkeys(values))))
    return tuple(grid)


def grid_cells(cfg):
    """(values, cell config) for every cell of cfg.grid, each checked like a command line;
    the cell config has no grid and has --dry-run applied."""
    keys = [k for k, _ in cfg.grid]
    cells = []
    for combo in itertools.product(*(vals for _, vals in cfg.grid)):
        values = dict(zip(keys, combo))
        cell = replace(cfg, **values, grid=())
        try:
            check_config(cell)
        except ConfigError as e:
            raise ConfigError(f"cell {cell_label(values)}: {e}") from None
        cells.append((values, cell.effective()))
    return cells


def cell_label(values):
    return ", ".join(f"{k}={short_value(v)}" for k, v in values.items())



def _order(v):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


# --- the map -------------------------------------------------------------------------------
def summarize_sweep(cells, keys, reference="standard", target_frac=0.95):
    """cells: [(values, runs)] -> {"grid_keys", "rows", "tuned", "tuned_note"}.
    Rows are per cell and strategy; p_holm adjusts every row's p-value as one family."""
    cells = sorted(cells, key=lambda c: [_order(c[0][k]) for k in keys])
    rows = []
    for values, runs in cells:
        s = summarize(runs, reference, target_frac)
        for name, st in s["strategies"].items():
            d = st["diff_vs_standard"]
            rows.append({**values, "strategy": name, "seeds": len(st["seeds"]), "diverged": st["diverged"],
                         "test_acc_mean": st["final_acc_mean"], "test_acc_std": st["final_acc_std"],
                         "val_acc_mean": st["val_acc_mean"], "diff_vs_standard": d["mean"],
                         "ci_low": d["ci95_low"], "ci_high": d["ci95_high"], "p_value": d["p_value"],
                         "time_ratio": st["time_ratio"], "flops_ratio": st["flops_ratio"],
                         "updates_ratio": st["updates_ratio"]})
    for row, p in zip(rows, holm([r["p_value"] for r in rows])):
        row["p_holm"] = p
    tuned, note = tuned_comparison(cells, keys, reference)
    return {"grid_keys": list(keys), "reference": reference, "alpha": ALPHA, "rows": rows,
            "tuned": tuned, "tuned_note": note}


def tuned_comparison(cells, keys, reference="standard"):
    """(groups, note). Per group of cells that differ only in lr, each strategy at the lr with the
    best mean final validation accuracy (an lr where a seed diverged is not eligible), its test
    accuracy there, and the paired difference to the reference at the reference's own best lr."""
    if "lr" not in keys:
        return None, "the tuned comparison needs lr as a grid key (--grid lr=...)"
    has_val = any(final_val_acc(r) is not None for _, runs in cells for r in runs)
    if not has_val:
        return None, ("the tuned comparison needs a validation split (--val-size N): learning rates "
                      "are chosen on validation data only, never on the test set")
    groups = {}
    for values, runs in cells:
        rest = tuple((k, values[k]) for k in keys if k != "lr")
        groups.setdefault(rest, []).append((values["lr"], runs))
    out = []
    for rest, members in groups.items():
        best = {}
        for name in dict.fromkeys(r["strategy"] for _, runs in members for r in runs):
            best[name] = _best_lr(name, members)
        ref = best.get(reference)
        entry = {"group": dict(rest), "strategies": {}}
        for name, b in best.items():
            if b is None:
                entry["strategies"][name] = {"lr": None, "note": "diverged at every lr"}
                continue
            accs = {s: final_acc(r) for s, r in b["runs"].items()}
            e = {"lr": b["lr"], "lrs": b["lrs"], "at_edge": b["edge"], "val_acc_mean": b["val"],
                 "test_acc_mean": mean_or_none(accs.values()), "test_acc_std": std_or_none(accs.values()),
                 "seeds": sorted(accs)}
            if name != reference and ref is not None:
                common = sorted(set(accs) & set(ref["runs"]))
                e["diff_vs_standard"] = paired([accs[s] for s in common],
                                               [final_acc(ref["runs"][s]) for s in common])
            entry["strategies"][name] = e
        out.append(entry)
    diffs = [e["diff_vs_standard"] for g in out for e in g["strategies"].values() if "diff_vs_standard" in e]
    for d, p in zip(diffs, holm([d["p_value"] for d in diffs])):
        d["p_holm"] = p
    return out, None


def _best_lr(name, members):
    """{"lr", "lrs", "edge", "val", "runs"} of the strategy's best lr in a group, or None."""
    scores = {}
    for lr, runs in members:
        mine = {r["seed"]: r for r in runs if r["strategy"] == name}
        vals = [final_val_acc(r) for r in mine.values()]
        if mine and not any(run_diverged(r) for r in mine.values()) and None not in vals:
            scores[lr] = (sum(vals) / len(vals), mine)
    if not scores:
        return None
    lrs = sorted(lr for lr, runs in members if any(r["strategy"] == name for r in runs))
    lr = max(scores, key=lambda k: scores[k][0])
    edge = None if len(lrs) < 2 else "lowest" if lr == lrs[0] else "highest" if lr == lrs[-1] else None
    return {"lr": lr, "lrs": lrs, "edge": edge, "val": scores[lr][0], "runs": scores[lr][1]}


# --- text ------------------------------------------------------------------------------------
def sweep_csv(summary):
    """sweep.csv: one row per cell and strategy, the grid keys first."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = [*summary["grid_keys"], *SWEEP_COLUMNS]
    w.writerow(cols)
    for row in summary["rows"]:
        w.writerow(["" if row.get(c) is None else f"{row[c]:.6g}" if isinstance(row[c], float)
                    else row[c] for c in cols])
    return buf.getvalue()


def _f(x, spec="+.2f"):
    return "-" if x is None else format(x, spec)


def _p(x):
    return "-" if x is None else f"{x:.2g}" if x >= 0.001 else "<0.001"


def format_sweep(summary):
    """The map and the tuned comparison as plain-text tables."""
    keys, ref = summary["grid_keys"], summary["reference"]
    head = [*keys, "strategy", "seeds", "test acc (%)", f"diff vs {ref} [95% CI]", "p", "p (Holm)", ""]
    body = []
    for r in summary["rows"]:
        acc = _f(r["test_acc_mean"], ".2f") + ("" if r["test_acc_std"] is None else
                                                f" +- {r['test_acc_std']:.2f}")
        diff = "(reference)" if r["strategy"] == ref else format_diff(
            {"mean": r["diff_vs_standard"], "ci95_low": r["ci_low"], "ci95_high": r["ci_high"]})
        seeds = f"{r['seeds'] - r['diverged']}/{r['seeds']}"
        sig = "*" if r["p_holm"] is not None and r["p_holm"] < summary["alpha"] else ""
        body.append([*(short_value(r[k]) for k in keys), r["strategy"], seeds, acc, diff, _p(r["p_value"]),
                     _p(r["p_holm"]), sig])
    tests = sum(r["p_value"] is not None for r in summary["rows"])
    parts = [text_table(head, body), f"* Holm-adjusted p < {summary['alpha']} over all {tests} comparisons in the "
                                 f"sweep (paired t-tests on final test accuracy)" if tests else
             "no p-values: a paired t-test needs 2 or more seeds whose differences vary"]
    if summary["tuned"] is None:
        parts.append(f"tuned comparison: not made; {summary['tuned_note']}")
    else:
        parts.append(format_tuned(summary))
    return "\n".join(parts)


def format_tuned(summary):
    ref = summary["reference"]
    head = ["group", "strategy", "best lr (val)", "val acc (%)", "test acc (%)",
            f"diff vs {ref} at its best lr [95% CI]", "p (Holm)", "note"]
    body = []
    for g in summary["tuned"]:
        label = cell_label(g["group"]) or "all cells"
        for name, e in g["strategies"].items():
            if e["lr"] is None:
                body.append([label, name, "-", "-", "-", "-", "-", e["note"]])
                continue
            d = e.get("diff_vs_standard")
            diff = "(reference)" if name == ref else format_diff(d)
            note = f"at the {e['at_edge']} lr tried: extend the grid" if e["at_edge"] else ""
            body.append([label, name, short_value(e["lr"]), _f(e["val_acc_mean"], ".2f"),
                         _f(e["test_acc_mean"], ".2f") + ("" if e["test_acc_std"] is None else
                                                          f" +- {e['test_acc_std']:.2f}"),
                         diff, _p(d.get("p_holm")) if d else "-", note])
    return ("tuned comparison: each strategy at its own best lr, chosen on validation accuracy\n"
            + text_table(head, body))
