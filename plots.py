"""Figures: comparison_results.png (one experiment) and sweep_results.png (a sweep's map).

Every strategy keeps one colour and line style in every figure (`style`), whatever
subset of strategies a figure shows. Figures are built with the Figure API (no pyplot
state) and returned; results.py saves them.
"""
from __future__ import annotations

import warnings
import zlib
from contextlib import contextmanager

import matplotlib
import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure  # no pyplot: no global state, no backend switching
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from config import cell_key, cell_label, short_value
from strategies import CORE, STRATEGIES, RunName
from stats import final_acc, run_name, verdict

# the named strategies in a fixed order: each gets its own colour for good
_NAMED = list(dict.fromkeys([*CORE, "standard@flops", "standard@time", *STRATEGIES]))
# 30 colours, more than the named strategies, so that no two of them share one (autofreeze, the
# 21st, wrapped round to standard's blue with 20)
_PALETTE = [matplotlib.colormaps["tab10"](i) for i in range(10)] + \
           [matplotlib.colormaps["tab20"](i) for i in range(1, 20, 2)] + \
           [matplotlib.colormaps["tab20b"](i) for i in range(0, 20, 2)]
_DASHES = ["--", ":", "-."]


def style(name):
    """(colour, line style) of a strategy, the same in every figure. Names outside the table
    (alternating-25, ...) get a colour and a dashed style from a hash of the name (its text, or a RunName)."""
    name = str(name)
    if name in _NAMED:
        i = _NAMED.index(name)
        return _PALETTE[i % len(_PALETTE)], "-" if i < len(_PALETTE) else _DASHES[0]
    h = zlib.crc32(name.encode())
    return _PALETTE[h % len(_PALETTE)], _DASHES[(h // len(_PALETTE)) % len(_DASHES)]


def _by_strategy(runs):
    out = {}
    for r in runs:
        out.setdefault(r.name, []).append(r)
    return out


def _stack(runs, key, cumulative=False):
    """(max_epochs, n_runs) array, NaN-padded where a run stopped early."""
    n = max(len(r.history) for r in runs)
    a = np.full((n, len(runs)), np.nan)
    for j, r in enumerate(runs):
        v = np.asarray(r.history.column(key), dtype=float)
        a[:len(v), j] = np.cumsum(v) if cumulative else v
    return a


@contextmanager
def _quiet():
    """Silence numpy's RuntimeWarnings for all-NaN epochs (runs that stopped early)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _band(ax, x, a, name):
    color, ls = style(name)
    with _quiet():
        m, s = np.nanmean(a, 1), np.nanstd(a, 1)
    ax.plot(x, m, color=color, ls=ls, lw=1.6)
    if a.shape[1] > 1:
        ax.fill_between(x, m - s, m + s, color=color, alpha=0.2, lw=0)


def _mean_curve(ax, runs, xkey, scale, name):
    """Mean test accuracy against the mean cumulative `xkey` after each epoch (over seeds)."""
    color, ls = style(name)
    with _quiet():
        x = np.nanmean(_stack(runs, xkey, cumulative=True), 1) / scale
        y = np.nanmean(_stack(runs, "test_acc"), 1)
    ax.plot(x, y, ls=ls, marker="o", ms=3, color=color)


def _legend_label(name, runs):
    bad = sum(r.diverged for r in runs)
    return str(name) + (f" (diverged: {bad}/{len(runs)} seeds)" if bad else "")


def plot_comparison(runs, summary, path=None, title=""):
    """Eight panels over epochs, time and compute; returns the Figure (saved to `path` if given)."""
    groups = _by_strategy(runs)
    names = [n for n in (list(summary["strategies"]) or list(groups)) if n in groups]
    fig = Figure(figsize=(20, 9.5))
    axes = fig.subplots(2, 4)
    (a_trl, a_tel, a_acc, a_time), (a_wall, a_flops, a_final, a_diff) = axes
    for name in names:
        rs = [r for r in groups[name] if len(r.history)]
        epochs = np.arange(1, max(len(r.history) for r in rs) + 1)
        _band(a_trl, epochs, _stack(rs, "train_loss"), name)
        _band(a_tel, epochs, _stack(rs, "test_loss"), name)
        _band(a_acc, epochs, _stack(rs, "test_acc"), name)
        _mean_curve(a_wall, rs, "epoch_time_s", 1.0, name)
        _mean_curve(a_flops, rs, "train_flops", 1e12, name)
    _seconds_per_epoch(a_time, names, groups)
    _final_bars(a_final, names, groups)
    _paired_diffs(a_diff, names, summary)

    a_trl.set(title="Training loss", xlabel="epoch", ylabel="cross-entropy")
    a_tel.set(title="Test loss", xlabel="epoch", ylabel="cross-entropy")
    a_acc.set(title="Test accuracy", xlabel="epoch", ylabel="accuracy (%)")
    a_wall.set(title="Test accuracy vs training time (mean of seeds)",
               xlabel="cumulative training seconds (evaluation excluded)", ylabel="accuracy (%)")
    a_flops.set(title="Test accuracy vs training compute (mean of seeds)",
                xlabel="cumulative training TFLOPs (GEMMs, analytic)", ylabel="accuracy (%)")
    for ax in (a_trl, a_tel, a_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=style(n)[0], ls=style(n)[1], lw=2) for n in names]
    if names:  # a folder whose runs all failed still gets its (empty) figure
        fig.legend(handles, [_legend_label(n, groups[n]) for n in names], loc="lower center",
                   ncol=min(len(names), 5), frameon=False, fontsize=11)
    n_seeds = max((len(g) for g in groups.values()), default=0)
    fig.suptitle(f"{title}\nlines: mean over {n_seeds} seed{'s' * (n_seeds > 1)}"
                 + ("; bands: +-1 std" if n_seeds > 1 else ""), fontsize=13)
    return _laid_out(fig, path, rect=(0, 0.05 + 0.025 * ((len(names) - 1) // 5), 1, 0.93))


def _laid_out(fig, path=None, rect=None):
    """The figure laid out tightly (inside `rect` when given), saved to `path` if one is given."""
    fig.tight_layout(**({} if rect is None else {"rect": rect}))
    if path:
        fig.savefig(path, dpi=110)
    return fig


def _finals(runs):
    return [final_acc(r) for r in runs if not r.diverged]


def _seconds_per_epoch(ax, names, groups):
    per_run = [[np.mean(r.history.column("epoch_time_s")) for r in groups[n]] for n in names]
    ax.bar(range(len(names)), [np.mean(v) for v in per_run],
           yerr=[np.std(v) if len(v) > 1 else 0 for v in per_run],
           color=[style(n)[0] for n in names], capsize=3)
    ax.set_xticks(range(len(names)), [str(n) for n in names], rotation=35, ha="right", fontsize=9)
    ax.set(title="Training time per epoch", ylabel="seconds (mean +- std over seeds)")


def _final_bars(ax, names, groups):
    all_acc = [a for n in names for a in _finals(groups[n])]
    lo, hi = (min(all_acc), max(all_acc)) if all_acc else (0.0, 100.0)
    pad = max(1.0, 0.15 * (hi - lo))
    for i, n in enumerate(names):
        acc = _finals(groups[n])
        if acc:
            ax.bar(i, np.mean(acc), color=style(n)[0], alpha=0.6)
            ax.plot(np.full(len(acc), i), acc, "k.", ms=5)
        bad = sum(r.diverged for r in groups[n])
        if bad:
            ax.text(i, lo - 1.5 * pad, f"diverged\n{bad}/{len(groups[n])}", ha="center", va="bottom",
                    color="firebrick", fontsize=9)
    ax.set_ylim(lo - 2 * pad, hi + pad)
    ax.set_xticks(range(len(names)), [str(n) for n in names], rotation=35, ha="right", fontsize=9)
    ax.set(title="Final test accuracy (bars: mean, dots: seeds)", ylabel="accuracy (%)")


def _paired_diffs(ax, names, summary):
    ref = summary["reference"]
    shown = [n for n in names if n != ref]
    any_ci = False
    for i, n in enumerate(shown):
        d = summary["strategies"][n]["diff_vs_standard"]
        if d["mean"] is None:
            ax.text(i, 0, "no pairs" if not summary["strategies"][n]["diverged"] else "diverged",
                    ha="center", va="bottom", color="firebrick", fontsize=9)
            continue
        if d["ci95_low"] is not None:
            any_ci = True
            err = [[d["mean"] - d["ci95_low"]], [d["ci95_high"] - d["mean"]]]
        else:
            err = None
        ax.errorbar(i, d["mean"], yerr=err, fmt="o", ms=7, color=style(n)[0], capsize=4)
    ax.axhline(0, color="k", lw=1)
    ax.set_xticks(range(len(shown)), [str(n) for n in shown], rotation=35, ha="right", fontsize=9)
    ax.set_xlim(-0.6, len(shown) - 0.4)
    ax.set(title=f"Paired difference to {ref}" + (" (95% t-interval)" if any_ci else
                                                   " (1 seed: no interval)"),
           ylabel="final accuracy difference (points)")


# --- the sweep's map ------------------------------------------------------------------------
def plot_sweep(summary, path=None, title=""):
    """Left: paired difference to standard per cell (rows) and strategy (columns) on the tuning
    seeds; Holm-significant cells marked only when the map itself is the declared family. Right:
    the tuned comparison, each strategy at its own best setting of the tuned keys."""
    keys, ref, alpha = summary["grid_keys"], summary["reference"], summary["alpha"]
    rows = summary["rows"]
    cells = list(dict.fromkeys(tuple(r[k] for k in keys) for r in rows))
    names = [n for n in dict.fromkeys(r.strategy for r in rows) if n != run_name(ref)]
    diff = np.full((len(cells), len(names)), np.nan)
    text = [["" for _ in names] for _ in cells]
    ref_acc = {}
    for r in rows:
        c = cells.index(tuple(r[k] for k in keys))
        if r.strategy == run_name(ref):
            ref_acc[c] = r["test_acc_mean"]
            continue
        j = names.index(r.strategy)
        if r["diff_vs_standard"] is None:
            text[c][j] = "diverged" if r["diverged"] else "-"
            continue
        diff[c, j] = r["diff_vs_standard"]
        sig = r["p_holm"] is not None and r["p_holm"] < alpha
        text[c][j] = f"{r['diff_vs_standard']:+.2f}{'*' if sig else ''}"
    tuned_rows = sum(len(g["strategies"]) - 1 for g in summary["tuned"] or [])  # 3-line labels each
    fig = Figure(figsize=(10 + 2.2 * len(names), 2.2 + max(0.5 * max(len(cells), 4), 0.45 * tuned_rows)))
    a_map, a_tuned = fig.subplots(1, 2, gridspec_kw={"width_ratios": [max(len(names), 1) * 1.2, 3.0]})
    if not names:
        a_map.text(0.5, 0.5, f"only {ref} ran: nothing to compare", ha="center", va="center")
    lim = max(0.5, float(np.nanmax(np.abs(diff)))) if np.isfinite(diff).any() else 1.0
    im = a_map.imshow(diff, cmap="RdBu", norm=TwoSlopeNorm(0, -lim, lim), aspect="auto")
    for c in range(len(cells)):
        for j in range(len(names)):
            a_map.text(j, c, text[c][j], ha="center", va="center", fontsize=9,
                       color="white" if np.isfinite(diff[c, j]) and abs(diff[c, j]) > 0.6 * lim else "black")
    labels = [", ".join(f"{k}={short_value(v)}" for k, v in zip(keys, cell))
              + (f"  ({ref} {ref_acc[i]:.1f}%)" if ref_acc.get(i) is not None else "")
              for i, cell in enumerate(cells)]
    a_map.set_yticks(range(len(cells)), labels, fontsize=9)
    a_map.set_xticks(range(len(names)), [str(n) for n in names], rotation=20, ha="right", fontsize=9)
    tests = sum(r["p_value"] is not None for r in rows)
    if summary["tuned"] is not None:  # the map only chose the settings: the family is the tuned table
        note = "exploratory (tuning seeds): no p-values adjusted, nothing marked"
    elif tests:
        note = f"* Holm-adjusted p < {alpha} over the family of {summary['family']['size']} comparisons"
    else:
        note = "no p-values: a test needs 2 or more seeds with some spread"
    metric = "Early-stopped" if summary.get("metric") == "early-stopped" else "Final"
    a_map.set_title(f"{metric} test accuracy minus {ref}'s, paired by seed (points)\n{note}", fontsize=10)
    fig.colorbar(im, ax=a_map, fraction=0.04, pad=0.02, label="points")
    _tuned_panel(a_tuned, summary)
    fig.suptitle(title, fontsize=12)
    return _laid_out(fig, path)


def _tuned_panel(ax, summary):
    ref = summary["reference"]
    if summary["tuned"] is None:
        ax.axis("off")
        ax.text(0.5, 0.5, "Tuned comparison not made:\n" + summary["tuned_note"].replace("; ", ";\n"),
                ha="center", va="center", wrap=True, fontsize=10)
        return
    y, labels = 0, []
    for g in summary["tuned"]:
        group = ", ".join(f"{k}={short_value(v)}" for k, v in g["group"].items())
        ref_e = g["strategies"].get(ref, {})
        for name, e in g["strategies"].items():
            if name == ref:
                continue
            d = e.get("diff_vs_standard")
            color = style(name)[0]
            if d and d["mean"] is not None:
                err = None if d["ci95_low"] is None else [[d["mean"] - d["ci95_low"]], [d["ci95_high"] - d["mean"]]]
                ax.errorbar(d["mean"], y, xerr=err, fmt="o", color=color, capsize=4)
                if d.get("p_holm") is not None and d["p_holm"] < summary["alpha"]:
                    ax.annotate("*", (d["mean"], y), xytext=(0, 4), textcoords="offset points",
                                ha="center", fontsize=12)
            edge = lambda e: f" ({e['at_edge']} of the grid)" if e.get("at_edge") else ""  # noqa: E731
            where = f"{group}: " if g["group"] else ""
            labels.append(f"{where}{name}{edge(e)}\n{_choice(e)}\nvs {ref}{edge(ref_e)}: {_choice(ref_e)}")
            y += 1
    ax.axvline(0, color="k", lw=1)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylim(len(labels) - 0.5, -0.5)  # first group on top, half a row of margin
    ax.grid(alpha=0.3, axis="x")
    keys = ", ".join(summary.get("tuned_keys") or ["lr"])
    seeds = summary.get("confirm_seeds")
    on = f"on {len(seeds)} fresh seeds" if seeds else "on the tuning seeds"
    ax.set(title=f"Tuned: each strategy at its best\n{keys} (chosen on validation),\ntested {on}",
           xlabel=f"test accuracy minus {ref}'s at its best\n(points, paired, 95% t-interval)")
    ax.title.set_fontsize(10)


def _choice(entry):
    """A tuned entry's chosen values, short: 'lr 0.003, weight_decay 0, lr_schedule cosine'."""
    choice = entry.get("choice") or ({"lr": entry["lr"]} if entry.get("lr") else {})
    return ", ".join(f"{k} {short_value(v)}" for k, v in choice.items()) or "-"


# --- accuracy against compute -----------------------------------------------------------------
def plot_accuracy_flops(summary, cells, path=None, title=""):
    """Test accuracy against training FLOPs on the confirmation seeds: each strategy at its tuned
    choice (mean and 95% t-interval over seeds, both axes from the runs), the equal-compute
    standard runs, and standard's own accuracy after each epoch (thin line) for context."""
    from stats import mean_ci, test_acc
    metric, ref = summary.get("metric", "final"), summary["reference"]
    seeds = set(summary.get("confirm_seeds") or summary.get("selection_seeds") or [])
    by_cell = {cell_key(v): runs for v, runs in cells}
    groups = summary["tuned"] or []
    fig = Figure(figsize=(10.5 * max(len(groups), 1), 5.5))
    axes = np.atleast_1d(fig.subplots(1, max(len(groups), 1)))
    for ax, g in zip(axes, groups):
        points = []
        ref_e = g["strategies"].get(ref) or {}
        ref_runs = by_cell.get(cell_key(ref_e.get("cell") or {}), [])
        for name, e in g["strategies"].items():
            if not e.get("cell"):
                continue
            variant = e.variant
            runs = [r for r in by_cell[cell_key(e.cell)] if r.name == variant and r.seed in seeds and not r.diverged]
            points.append(_point(ax, runs, name, metric, f"{name} ({cell_label(e['choice'])})", mean_ci, test_acc))
            matched_name = RunName.matched("flops", variant.strategy)
            matched = [r for r in ref_runs if r.name == matched_name and r.seed in seeds and not r.diverged]
            if matched:
                points.append(_point(ax, matched, name, metric, f"{ref} at {name}'s FLOPs", mean_ci, test_acc,
                                     marker="s", hollow=True))
        curve = [r for r in ref_runs if r.name == run_name(ref) and r.seed in seeds and not r.diverged]
        if curve:
            n = min(len(r.history) for r in curve)
            x = np.mean([np.cumsum(r.history.column("train_flops"))[:n] for r in curve], axis=0)
            y = np.mean([r.history.column("test_acc")[:n] for r in curve], axis=0)
            ax.plot(x, y, color=style(ref)[0], lw=0.8, alpha=0.5, label=f"{ref} after each epoch (mean)")
        _zoom(ax, [p for p in points if p])
        ax.grid(alpha=0.3)
        label = "early-stopped" if metric == "early-stopped" else "final"
        ax.set(xlabel="training FLOPs per run (GEMMs, forward and backward)", ylabel=f"{label} test accuracy (%)",
               title=", ".join(f"{k}={short_value(v)}" for k, v in g["group"].items()) or "tuned and confirmed")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside: points stay visible
    fig.suptitle(title, fontsize=12)
    return _laid_out(fig, path)


def _zoom(ax, points):
    """Frame the confirmed points (x, y with their intervals) with a margin, so the strategies'
    differences of a fraction of a point are readable; standard's curve shows only inside."""
    if not points:
        return
    x_lo, x_hi = min(p[0] for p in points), max(p[1] for p in points)
    y_lo, y_hi = min(p[2] for p in points), max(p[3] for p in points)
    dx, dy = max(x_hi - x_lo, 0.05 * x_hi), max(y_hi - y_lo, 0.5)
    ax.set_xlim(x_lo - 0.25 * dx, x_hi + 0.1 * dx)
    ax.set_ylim(y_lo - 0.15 * dy, y_hi + 0.15 * dy)


def _point(ax, runs, name, metric, label, mean_ci, test_acc, marker="o", hollow=False):
    """Draw one mean point with its 95% intervals on both axes; return its extent (x_lo, x_hi,
    y_lo, y_hi), or None without runs."""
    if not runs:
        return None
    x = [r.history.total("train_flops") for r in runs]
    accs = [test_acc(r, metric) for r in runs]
    mx, xlo, xhi = mean_ci(x)
    my, ylo, yhi = mean_ci(accs)
    color = style(name)[0]
    ax.errorbar(mx, my, yerr=None if ylo is None else [[my - ylo], [yhi - my]],
                xerr=None if xlo is None else [[mx - xlo], [xhi - mx]], fmt=marker, color=color,
                mfc="none" if hollow else color, capsize=3, label=label)
    return (xlo if xlo is not None else mx, xhi if xhi is not None else mx,
            ylo if ylo is not None else my, yhi if yhi is not None else my)


# --- the headline forest plot -----------------------------------------------------------------
def _verdict_colour(r):
    """A comparison's colour from its verdict (stats.verdict, from the Holm-adjusted tests): a raw
    interval that excludes 0 is not a verdict, so a comparison outside any declared family is grey
    whatever its interval."""
    if r.p_holm is None:
        return "0.6"
    v = verdict(r)
    return "C3" if v.startswith(("behind", "ahead")) else "C0" if v.startswith("equivalent") else "k"


def plot_forest(rows, path=None, title=""):
    """One row per paired comparison (mean and 95% interval, in points), grouped by section."""
    sections = list(dict.fromkeys(r.section for r in rows))
    fig = Figure(figsize=(10, 1.2 + 0.32 * (len(rows) + 1.5 * len(sections))))
    ax = fig.subplots()
    y, ticks, labels = 0, [], []
    for sec in sections:
        ax.text(0.0, y, sec, transform=ax.get_yaxis_transform(), ha="left", va="center",
                fontsize=9, fontweight="bold")
        y += 1
        for r in (r for r in rows if r.section == sec):
            d = r.diff
            if d.mean is not None:
                err = None if d.ci95_low is None else [[d.mean - d.ci95_low], [d.ci95_high - d.mean]]
                ax.errorbar(d.mean, y, xerr=err, fmt="o", color=_verdict_colour(d), capsize=3)
            ticks.append(y)
            labels.append(f"{r.label} (n={d.pairs})")
            y += 1
        y += 0.5
    ax.axvline(0, color="k", lw=1)
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.set_ylim(y - 0.5, -0.8)
    ax.grid(alpha=0.3, axis="x")
    ax.set_xlabel("difference in test accuracy (points)\nred: behind or ahead (Holm over its declared family); "
                  "blue: equivalent within the margin (TOST, Holm)\nblack: not shown different; "
                  "grey: outside any declared family (unadjusted)", fontsize=8)
    ax.set_title(title, fontsize=11)
    return _laid_out(fig, path)


def plot_gaps(rows, path=None, xlabel="", title="", margin=None, log_x=False):
    """Each strategy's paired difference to its reference (points, 95% interval) against a setting
    such as depth or epochs: one line per strategy, offset a little so that intervals do not
    overlap, with the equivalence band +-margin shaded."""
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    names = list(dict.fromkeys(r.strategy for r in rows))
    xs = sorted({r.x for r in rows})
    for i, name in enumerate(names):
        mine = sorted(((r.x, r.diff) for r in rows if r.strategy == name and r.diff.mean is not None), key=lambda t: t[0])
        if not mine:
            continue
        shift = (i - (len(names) - 1) / 2) * 0.04  # in decades when log_x, else in units of x
        x = [at * 10 ** shift if log_x else at + shift * (max(xs) - min(xs) or 1) for at, _ in mine]
        low = [d.mean - (d.ci95_low if d.ci95_low is not None else d.mean) for _, d in mine]
        high = [(d.ci95_high if d.ci95_high is not None else d.mean) - d.mean for _, d in mine]
        color, ls = style(name)
        ax.errorbar(x, [d.mean for _, d in mine], yerr=[low, high], color=color, ls=ls, marker="o",
                    capsize=3, lw=1.4, label=name)
    ax.axhline(0, color="k", lw=1)
    if margin:
        ax.axhspan(-margin, margin, color="0.85", zorder=0, label=f"equivalence margin +-{margin:g}")
    if log_x:
        ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("difference in test accuracy (points)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(title, fontsize=10)
    return _laid_out(fig, path)
