"""comparison_results.png: curves as mean with a std band across seeds, costs, and paired differences."""
from __future__ import annotations

import warnings
from contextlib import contextmanager

import matplotlib
import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global state, no backend switching

from stats import final_acc, run_diverged


def _by_strategy(runs):
    out = {}
    for r in runs:
        out.setdefault(r["strategy"], []).append(r)
    return out


def _stack(runs, key, cumulative=False):
    """(max_epochs, n_runs) array, NaN-padded where a run stopped early."""
    n = max(len(r["history"][key]) for r in runs)
    a = np.full((n, len(runs)), np.nan)
    for j, r in enumerate(runs):
        v = np.asarray(r["history"][key], dtype=float)
        a[:len(v), j] = np.cumsum(v) if cumulative else v
    return a


def _band(ax, x, a, color, label):
    with _quiet():
        m, s = np.nanmean(a, 1), np.nanstd(a, 1)
    ax.plot(x, m, color=color, label=label, lw=1.6)
    if a.shape[1] > 1:
        ax.fill_between(x, m - s, m + s, color=color, alpha=0.2, lw=0)


@contextmanager
def _quiet():
    """Silence numpy's RuntimeWarnings for all-NaN epochs (runs that stopped early)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def plot_comparison(runs, summary, path=None, title=""):
    """Eight panels; saves to `path` when given and returns the Figure."""
    groups = _by_strategy(runs)
    names = list(summary["strategies"]) or list(groups)
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    colors = {n: cmap(i) for i, n in enumerate(names)}
    fig = Figure(figsize=(20, 9.5))
    axes = fig.subplots(2, 4)
    (a_trl, a_tel, a_acc, a_time), (a_wall, a_flops, a_final, a_diff) = axes
    for name in names:
        rs = [r for r in groups[name] if len(r["history"]["epoch"])]
        c = colors[name]
        epochs = np.arange(1, max(len(r["history"]["epoch"]) for r in rs) + 1)
        _band(a_trl, epochs, _stack(rs, "train_loss"), c, name)
        _band(a_tel, epochs, _stack(rs, "test_loss"), c, name)
        _band(a_acc, epochs, _stack(rs, "test_acc"), c, name)
        with _quiet():
            wall = np.nanmean(_stack(rs, "epoch_time_s", cumulative=True), 1)
            acc = np.nanmean(_stack(rs, "test_acc"), 1)
        a_wall.plot(wall, acc, "-o", ms=3, color=c, label=name)
    _seconds_per_epoch(a_time, names, groups, colors)
    _final_vs_flops(a_flops, names, groups, colors)
    _final_bars(a_final, names, groups, colors)
    _paired_diffs(a_diff, names, summary, colors)

    a_trl.set(title="Training loss", xlabel="epoch", ylabel="cross-entropy")
    a_tel.set(title="Test loss", xlabel="epoch", ylabel="cross-entropy")
    a_acc.set(title="Test accuracy", xlabel="epoch", ylabel="accuracy (%)")
    a_wall.set(title="Test accuracy vs training time (mean of seeds)",
               xlabel="cumulative training seconds (evaluation excluded)", ylabel="accuracy (%)")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    handles, labels = a_trl.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(names), 6), frameon=False,
               fontsize=11)
    n_seeds = max(len(g) for g in groups.values())
    fig.suptitle(f"{title}\nlines: mean over {n_seeds} seed{'s' * (n_seeds > 1)}"
                 + ("; bands: +-1 std" if n_seeds > 1 else ""), fontsize=13)
    fig.tight_layout(rect=(0, 0.05 + 0.025 * ((len(names) - 1) // 6), 1, 0.95))
    if path:
        fig.savefig(path, dpi=110)
    return fig


def _finals(runs):
    return [final_acc(r) for r in runs if not run_diverged(r)]


def _seconds_per_epoch(ax, names, groups, colors):
    per_run = [[np.mean(r["history"]["epoch_time_s"]) for r in groups[n]] for n in names]
    ax.bar(range(len(names)), [np.mean(v) for v in per_run],
           yerr=[np.std(v) if len(v) > 1 else 0 for v in per_run],
           color=[colors[n] for n in names], capsize=3)
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=9)
    ax.set(title="Training time per epoch", ylabel="seconds (mean +- std over seeds)")


def _final_vs_flops(ax, names, groups, colors):
    for n in names:
        ok = [r for r in groups[n] if not run_diverged(r)]
        if not ok:
            continue
        pf = [sum(r["history"]["train_flops"]) / 1e12 for r in ok]
        acc = _finals(ok)
        ax.errorbar(np.mean(pf), np.mean(acc), yerr=np.std(acc) if len(acc) > 1 else None,
                    fmt="o", ms=7, color=colors[n], capsize=3)
    ax.set(title="Final accuracy vs training compute", xlabel="training TFLOPs (GEMMs, analytic)",
           ylabel="final test accuracy (%)")


def _final_bars(ax, names, groups, colors):
    for i, n in enumerate(names):
        acc = _finals(groups[n])
        if acc:
            ax.bar(i, np.mean(acc), color=colors[n], alpha=0.6)
            ax.plot(np.full(len(acc), i), acc, "k.", ms=5)
    all_acc = [a for n in names for a in _finals(groups[n])]
    if all_acc:
        lo, hi = min(all_acc), max(all_acc)
        pad = max(1.0, 0.15 * (hi - lo))
        ax.set_ylim(lo - 2 * pad, hi + pad)
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=9)
    ax.set(title="Final test accuracy (bars: mean, dots: seeds)", ylabel="accuracy (%)")


def _paired_diffs(ax, names, summary, colors):
    ref = summary["reference"]
    shown = [n for n in names if n != ref]
    any_ci = False
    for i, n in enumerate(shown):
        d = summary["strategies"][n]["diff_vs_standard"]
        if d["mean"] is None:
            continue
        if d["ci95_low"] is not None:
            any_ci = True
            err = [[d["mean"] - d["ci95_low"]], [d["ci95_high"] - d["mean"]]]
        else:
            err = None
        ax.errorbar(i, d["mean"], yerr=err, fmt="o", ms=7, color=colors[n], capsize=4)
    ax.axhline(0, color="k", lw=1)
    ax.set_xticks(range(len(shown)), shown, rotation=35, ha="right", fontsize=9)
    ax.set_xlim(-0.6, len(shown) - 0.4)
    ax.set(title=f"Paired difference to {ref}" + (" (95% t-interval)" if any_ci else
                                                   " (1 seed: no interval)"),
           ylabel="final accuracy difference (points)")
