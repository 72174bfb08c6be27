"""Paired multi-seed statistics: mean, spread, t-intervals on per-seed differences.

A run is a records.Run: its name (a RunName), seed and history of typed epochs. Seed s means
the same initial weights and data order for every strategy, so differences to standard are
taken per seed (paired).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import numpy as np

from records import EarlyStop, Memory, Record, later, to_json  # noqa: F401 (later, to_json: re-exported)
from results import folder_config, load_runs  # noqa: F401 (re-exported: the readers of a folder)
from strategies import RunName, load_plugins


class _LazyScipyStats:
    """scipy.stats, imported on first use: it costs every worker process 0.6 s to load."""

    def __getattr__(self, name):
        from scipy import stats
        return getattr(stats, name)


sps = _LazyScipyStats()


@dataclass(frozen=True)
class Paired(Record):
    """A paired comparison a - b: mean and 95% t-interval (points), the paired t-test's p-value,
    the pairs it used and the seeds divergence cost it; with a margin, the TOST p-value; and,
    once a declared family adjusts them, both p-values after Holm."""
    mean: float | None
    ci95_low: float | None
    ci95_high: float | None
    p_value: float | None
    pairs: int
    margin: float | None = None
    p_tost: float | None = None
    dropped: int = 0
    p_holm: float | None = None
    p_tost_holm: float | None = None


@dataclass(frozen=True)
class Labelled(Record):
    """A paired comparison with the section and label a table or the forest plot shows it under."""
    section: str
    label: str
    diff: Paired


@dataclass(frozen=True)
class Gap(Record):
    """One strategy's paired difference to its reference at one setting `x` of a trend (a depth, an
    epoch budget), from the declared family named `family`."""
    strategy: str
    x: float
    family: str
    diff: Paired


@dataclass(frozen=True)
class Interaction(Record):
    """The difference of one strategy's gaps at `end` and at `start` (difference_of_gaps)."""
    strategy: str
    start: float
    end: float
    diff: Paired


def t_quantile_975(df):
    """t_{0.975} for df degrees of freedom: the half-width factor of a two-sided 95% interval."""
    if df < 1:
        raise ValueError("need at least 1 degree of freedom")
    return float(sps.t.ppf(0.975, df))


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


def counts(accs, n):
    """Accuracies in % of n test images -> the integer numbers of correct images."""
    return np.rint(np.asarray(accs, dtype=float) * n / 100.0).astype(np.int64)


def paired(a, b, n=None, margin=None):
    """Paired comparison of a against b (same seeds, same order): the mean of a - b with its
    95% t-interval and the two-sided paired t-test's p-value (None with fewer than 2 pairs, or
    when every pair differs by the same amount, where the test is undefined); with `margin`
    (points), also the equivalence test's p-value (TOST: is the mean within +-margin?).

    With n (test images), a and b are accuracies in % and the tests run on the integer counts of
    correct images, so that differences of the same number of images are exactly tied (float
    percentages differ in the 15th digit, which would give a spurious, tiny p-value)."""
    if n:
        d = counts(a, n) - counts(b, n)
        scale = 100.0 / n
    else:
        d, scale = np.asarray(a, dtype=float) - np.asarray(b, dtype=float), 1.0
    m, lo, hi = mean_ci(d)
    p = None
    if len(d) >= 2 and np.ptp(d) > 0:  # without spread the t statistic is undefined: no p-value
        p = float(sps.ttest_1samp(d, 0.0).pvalue)
    pct = lambda x: None if x is None else float(x) * scale  # noqa: E731
    return Paired(pct(m), pct(lo), pct(hi), p, len(d), margin,
                  None if margin is None else tost(d, margin / scale))


def difference_of_gaps(a, b):
    """The interaction test of a trend: b's paired gap minus a's (two comparisons on independent runs,
    say one strategy minus standard at depth 2 and at depth 4), with Welch's 95% interval and
    two-sided p-value, from each gap's mean, 95% t-interval and pairs (which give its standard
    error exactly); None where either lacks an interval."""
    if a is None or b is None or a.ci95_low is None or b.ci95_low is None:
        return None
    se = [(d.ci95_high - d.ci95_low) / 2 / t_quantile_975(d.pairs - 1) for d in (a, b)]
    diff = b.mean - a.mean
    s = math.sqrt(se[0] ** 2 + se[1] ** 2)
    df = s ** 4 / sum(x ** 4 / (d.pairs - 1) for x, d in zip(se, (a, b)))
    half = float(sps.t.ppf(0.975, df)) * s
    return Paired(diff, diff - half, diff + half, float(2 * sps.t.sf(abs(diff) / s, df)) if s else None,
                  min(a.pairs, b.pairs))


def tost(d, margin):
    """p-value of the two one-sided t-tests (Schuirmann) that the mean of the paired differences d
    lies inside (-margin, +margin): the larger of the two one-sided p-values. Differences without
    spread are exact: 0 when inside the margin, 1 when not; fewer than 2 pairs give None."""
    d = np.asarray(d, dtype=float)
    if len(d) < 2:
        return None
    if np.ptp(d) == 0:
        return 0.0 if abs(d[0]) < margin else 1.0
    above = sps.ttest_1samp(d, -margin, alternative="greater").pvalue
    below = sps.ttest_1samp(d, margin, alternative="less").pvalue
    return float(max(above, below))


def verdict(d, alpha=0.05):
    """What a paired comparison in a declared family shows, from its Holm-adjusted p-values:
    'behind' or 'ahead' where the difference test passes, 'equivalent within +-m' where TOST
    passes, 'not shown different' where neither does."""
    if not d or d.get("mean") is None:
        return "-"
    diff = d.get("p_holm") is not None and d["p_holm"] < alpha
    same = d.get("p_tost_holm") is not None and d["p_tost_holm"] < alpha
    margin = f"+-{d['margin']:g}" if d.get("margin") is not None else ""
    if diff:
        return ("behind" if d["mean"] < 0 else "ahead") + (f", within {margin}" if same else "")
    return f"equivalent within {margin}" if same else "not shown different"


def run_name(name):
    """A RunName from a RunName or its text (a name given on the command line)."""
    return name if isinstance(name, RunName) else RunName.parse(name)


def test_samples(runs):
    """The number of test images the runs were scored on (one number), or None if unknown."""
    ns = {r.test_samples for r in runs}
    return ns.pop() if len(ns) == 1 else None


def holm(p_values, m=None):
    """Holm's step-down adjustment of a family of p-values: reject where the adjusted value is
    below alpha and the family-wise error stays <= alpha. None entries (no test possible) get
    None; `m`, the family's size, defaults to the number of p-values, and a declared family
    passes its full size, so that comparisons without a p-value still count in it."""
    idx = sorted((i for i, p in enumerate(p_values) if p is not None), key=lambda i: p_values[i])
    m = len(idx) if m is None else m
    out, running = [None] * len(p_values), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


def std_or_none(values):
    values = list(values)
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def mean_or_none(values):
    values = list(values)
    return float(np.mean(values)) if len(values) else None


METRICS = ("final", "early-stopped")


def final_acc(run):
    return run.final.test_acc


def final_train_acc(run):
    """Training accuracy over the last epoch (train mode: dropout on, weights moving), or None for
    runs saved before it was recorded."""
    return run.final.train_acc


def final_val_acc(run):
    """Validation accuracy after the last epoch, or None without a validation split."""
    return run.final.val_acc


def early_stopped(history):
    """The EarlyStop at the first epoch of best validation accuracy of a History, or None without a
    validation split: the test accuracy an early-stopped run would report."""
    vals = history.column("val_acc")
    if not vals or any(v is None or not math.isfinite(v) for v in vals):
        return None
    i = max(range(len(vals)), key=lambda k: (vals[k], -k))
    e = history.epochs[i]
    return EarlyStop(e.epoch, e.val_acc, e.test_acc)


def test_acc(run, metric="final"):
    """The test accuracy a table reports: after the last epoch, or at the best validation epoch
    (None without a validation split)."""
    if metric == "final":
        return final_acc(run)
    es = run.early_stopped or early_stopped(run.history)
    return None if es is None else es.test_acc


def val_score(run, metric="final"):
    """What selection ranks a run by: final validation accuracy, or the best one (early-stopped)."""
    if metric == "final":
        return final_val_acc(run)
    es = run.early_stopped or early_stopped(run.history)
    return None if es is None else es.val_acc


def epochs_to(run, target):
    """First epoch whose test accuracy reaches `target`, or None."""
    return next((e.epoch for e in run.history if e.test_acc >= target), None)


def _costs(runs):
    """Means over runs of: seconds per epoch, total training FLOPs, total parameter updates."""
    return tuple(mean_or_none([agg(r.history.column(key)) for r in runs]) for key, agg in
                 (("epoch_time_s", np.mean), ("train_flops", sum), ("param_updates", sum)))


@dataclass(frozen=True)
class StrategySummary(Record):
    """One strategy of an experiment's folder, over its seeds."""
    seeds: list
    diverged: int
    epochs: float | None
    final_acc_mean: float | None
    final_acc_std: float | None
    val_acc_mean: float | None
    diff_vs_standard: Paired
    epoch_time_s: float | None
    time_ratio: float | None
    train_flops: float | None
    flops_ratio: float | None
    param_updates: float | None
    updates_ratio: float | None
    epochs_to_target: float | None
    reached_target: int
    test_loss_mean: float | None = later()    # nats per scored item (text: per character)
    peak_memory_bytes: float | None = later()  # mean over seeds: the process's peak (device memory on CUDA)
    trainable_bytes: float | None = later()    # mean over seeds of the peak bytes of trainable parameters
    optimizer_bytes: float | None = later()    # and of optimizer state
    identical: bool | None = later()  # True: on every seed, the very run the reference made (see same_computation)


@dataclass(frozen=True)
class Summary(Record):
    """An experiment's folder (summary.json): every strategy against the reference, paired by seed."""
    reference: RunName
    target_acc: float | None
    target_frac: float
    metric: str
    strategies: dict = field(default_factory=dict)  # name -> StrategySummary, in first-seen order
    dataset: str | None = None
    runs_planned: int | None = None
    runs_saved: int | None = None
    complete: bool | None = None
    bigram_bits: float | None = later()  # text: a bigram model's test bits per character, beside the runs'


SAME_KEYS = ("train_loss", "test_loss", "test_acc", "param_updates", "train_flops")


def same_computation(a, b):
    """Whether two runs computed the same thing, epoch by epoch: equal losses, test accuracy,
    parameter updates and FLOPs (a schedule that froze nothing on this network is standard)."""
    return (len(a.history) == len(b.history) > 0
            and all(getattr(x, k) == getattr(y, k) for x, y in zip(a.history, b.history) for k in SAME_KEYS))


def identical_to(runs, ref):
    """True when runs and ref share a seed and every shared seed's runs are the same computation;
    None otherwise (absent from JSON)."""
    common = [s for s in runs if s in ref]
    return True if common and all(same_computation(runs[s], ref[s]) for s in common) else None


def memory_means(runs):
    """(peak process or device bytes, trainable parameter bytes, optimizer state bytes), each the
    mean over the runs that recorded it (None for runs saved before runs recorded memory)."""
    mem = [r.memory or Memory() for r in runs]
    return tuple(mean_or_none(v for v in values if v is not None) for values in
                 ([m.peak for m in mem], [m.trainable_param_bytes for m in mem], [m.optimizer_state_bytes for m in mem]))


def summarize(runs, reference="standard", target_frac=0.95, metric="final"):
    """A Summary of every strategy in `runs`, in the order they first appear. `metric` picks the
    test accuracy reported: final, or early-stopped (at the best validation epoch). Paired tests
    run on integer counts of correct test images."""
    reference = run_name(reference)
    by_strategy = {}
    for r in runs:
        by_strategy.setdefault(r.name, {})[r.seed] = r
    ok = lambda rs: {s: r for s, r in rs.items() if not r.diverged}  # noqa: E731
    acc = lambda r: test_acc(r, metric)  # noqa: E731
    n = test_samples(runs)
    ref = ok(by_strategy.get(reference, {}))
    ref_acc = mean_or_none([final_acc(r) for r in ref.values()])
    target = None if ref_acc is None else target_frac * ref_acc
    ref_time, ref_flops, ref_updates = _costs(ref.values())
    ratio = lambda a, b: None if a is None or not b else a / b  # noqa: E731

    out = {}
    for name, seeds in by_strategy.items():
        good = {s: r for s, r in ok(seeds).items() if acc(r) is not None}
        accs = [acc(r) for r in good.values()]
        common = [] if name == reference else [s for s in good if s in ref and acc(ref[s]) is not None]
        diff = paired([acc(good[s]) for s in common], [acc(ref[s]) for s in common], n)
        reached = [epochs_to(r, target) for r in good.values()] if target is not None else []
        hit = [e for e in reached if e is not None]
        epoch_time, flops, updates = _costs(good.values())
        out[name] = StrategySummary(
            seeds=sorted(seeds), diverged=len(seeds) - len(ok(seeds)),
            epochs=mean_or_none([len(r.history) for r in good.values()]),
            final_acc_mean=mean_or_none(accs), final_acc_std=std_or_none(accs),
            val_acc_mean=mean_or_none([val_score(r, metric) for r in good.values() if val_score(r, metric) is not None]),
            diff_vs_standard=diff, epoch_time_s=epoch_time, time_ratio=ratio(epoch_time, ref_time),
            train_flops=flops, flops_ratio=ratio(flops, ref_flops), param_updates=updates,
            updates_ratio=ratio(updates, ref_updates), epochs_to_target=mean_or_none(hit), reached_target=len(hit),
            test_loss_mean=mean_test_loss(good.values()), **dict(zip(("peak_memory_bytes", "trainable_bytes", "optimizer_bytes"),
                                  memory_means(good.values()))),
            identical=None if name == reference else identical_to(good, ref))
    return Summary(reference, target, target_frac, metric, out)


def _recent(runs):
    """Whether the runs were saved since runs record their workload and memory: only they get the
    fields added then, so the summaries of older folders are rewritten byte for byte as they were."""
    return any(r.memory is not None for r in runs)


def mean_test_loss(runs):
    """Mean final test loss (nats per scored item) over the runs; None for runs saved before runs
    recorded memory (see _recent)."""
    runs = list(runs)
    return mean_or_none(r.final.test_loss for r in runs) if _recent(runs) else None


def bigram_line(bits):
    """The line a text workload's tables end with: the bigram baseline, in test bits per character."""
    return f"a bigram model (add-one smoothing, fitted on the training text): {bits:.3f} test bits/char"


def _mb(x):
    return "-" if x is None else f"{x / 2 ** 20:.1f}"


def _fmt(x, spec=".2f", none="-"):
    return none if x is None else format(x, spec)


def format_table(summary):
    """The summary as a plain-text table, ready to paste into a paper or a README."""
    target = summary["target_acc"]
    acc_label = "early-stopped acc (%)" if summary.get("metric") == "early-stopped" else "final acc (%)"
    head = ["strategy", "seeds", acc_label, f"diff vs {summary['reference']} [95% CI]", "s/epoch",
            "time x", "FLOPs x", "updates x", f"epochs to {_fmt(target, '.1f')}%"]
    text = summary.get("bigram_bits") is not None  # characters are scored: the test loss in bits beside accuracy
    memory = any(s.get("peak_memory_bytes") is not None for s in summary["strategies"].values())
    if text:
        head.insert(3, "test bits/char")
    if memory:
        head += ["peak MB", "trainable MB", "optimizer MB"]
    rows = []
    for name, s in summary["strategies"].items():
        d = s["diff_vs_standard"]
        if name == summary["reference"]:
            diff = "(reference)"
        elif s.get("identical"):
            diff = f"identical to {summary['reference']}"
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
        if text:
            rows[-1].insert(3, _fmt(None if s.get("test_loss_mean") is None else s["test_loss_mean"] / math.log(2),
                                    ".3f"))
        if memory:
            rows[-1] += [_mb(s.get("peak_memory_bytes")), _mb(s.get("trainable_bytes")), _mb(s.get("optimizer_bytes"))]
    table = text_table(head, rows)
    if any(s.get("identical") for s in summary["strategies"].values()):
        table += (f"\nidentical to {summary['reference']}: on every seed the same losses, accuracy, updates and "
                  f"FLOPs each epoch, so its schedule froze nothing on this network")
    if text:
        table += "\n" + bigram_line(summary["bigram_bits"])
    return table


def text_table(head, rows):
    """Left-aligned columns two spaces apart under a dashed rule: pastes into a paper or a README."""
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])


def format_diff(d):
    """'+1.23 [+0.45, +2.01]' from a paired() result; '-' without pairs, no interval with one."""
    if d is None or d["mean"] is None:
        return "-"
    return f"{d['mean']:+.2f}" + ("" if d["ci95_low"] is None else
                                  f" [{d['ci95_low']:+.2f}, {d['ci95_high']:+.2f}]")


def compare_folders(runs_a, runs_b, reference="standard"):
    """Per strategy, on the seeds both folders ran: final accuracy in A and in B, the paired
    difference A - B, and each folder's own difference to `reference` on those seeds (does the
    comparison between strategies come out the same in both?)."""
    reference = run_name(reference)
    a = {r.key: r for r in runs_a if not r.diverged}
    b = {r.key: r for r in runs_b if not r.diverged}
    out = {}
    names = sorted({s for s, _ in a}, key=lambda n: (n != reference, str(n)))
    for name in names:
        seeds = sorted(s for n, s in a if n == name and (n, s) in b)
        if not seeds:
            continue
        acc_a = [final_acc(a[name, s]) for s in seeds]
        acc_b = [final_acc(b[name, s]) for s in seeds]
        both = [s for s in seeds if (reference, s) in a and (reference, s) in b]
        vs = (paired([final_acc(a[name, s]) for s in both], [final_acc(a[reference, s]) for s in both]),
              paired([final_acc(b[name, s]) for s in both], [final_acc(b[reference, s]) for s in both])
              ) if name != reference and both else (None, None)
        out[name] = FolderComparison(seeds, mean_or_none(acc_a), mean_or_none(acc_b), paired(acc_a, acc_b), *vs)
    return out


@dataclass(frozen=True)
class FolderComparison(Record):
    """One strategy in two folders, on the seeds both ran: A's and B's mean, A - B, and each
    folder's own difference to the reference on those seeds (None for the reference)."""
    seeds: list
    a_mean: float | None
    b_mean: float | None
    a_minus_b: Paired
    a_vs_reference: Paired | None = None
    b_vs_reference: Paired | None = None


def equal_flops(runs, reference="standard"):
    """Per strategy: its final accuracy minus the reference's accuracy at the strategy's training
    FLOPs, paired by seed: an approximation from runs already made. The reference's accuracy is
    interpolated linearly between the two epochs whose cumulative FLOPs bracket the budget (not
    rounded down to the last whole epoch); budgets beyond the reference's run are left out. It is
    a fair stand-in for a run stopped at that budget only with a constant learning rate; with a
    decaying schedule the real matched runs (--match-budget flops) are the comparison."""
    reference = run_name(reference)
    by = {}
    for r in runs:
        if not r.diverged:
            by.setdefault(r.name, {})[r.seed] = r
    ref = by.get(reference, {})
    out = {}
    for name, seeds in by.items():
        if name == reference or name.budget is not None:
            continue
        mine, theirs, epochs, beyond = [], [], [], []
        for s, r in seeds.items():
            if s not in ref:
                continue
            budget = r.history.total("train_flops")
            at = _interpolate(ref[s].history, budget)
            if at is None:
                beyond.append(s)  # the reference's run is too short to say: left out, and said so
                continue
            mine.append(final_acc(r))
            theirs.append(at[1])
            epochs.append(round(at[0], 2))
        d = paired(mine, theirs)
        out[name] = EqualFlops(**{f.name: getattr(d, f.name) for f in fields(d)}, reference_epochs=epochs,
                               left_out=sorted(beyond))
    return out


@dataclass(frozen=True)
class EqualFlops(Paired):
    """A strategy's final accuracy minus the reference's, interpolated at the strategy's FLOPs, with
    the reference's (fractional) epoch there for each seed and the seeds left out because their
    budget lies beyond the reference's whole run."""
    reference_epochs: list = field(default_factory=list)
    left_out: list = field(default_factory=list)


def _interpolate(history, budget):
    """(fractional epoch, test accuracy) of a run at `budget` cumulative training FLOPs, linear
    between the bracketing epochs (from 0 FLOPs only if the budget ends inside epoch 1: None)."""
    cum = np.cumsum(history.column("train_flops"))
    acc = history.column("test_acc")
    e = int(np.searchsorted(cum, budget, side="right"))  # whole epochs within the budget
    if e == 0 or e > len(cum) or (e == len(cum) and budget > cum[-1]):
        return None
    if e == len(cum) or budget == cum[e - 1]:
        return float(e), acc[e - 1]
    frac = (budget - cum[e - 1]) / (cum[e] - cum[e - 1])
    return e + float(frac), acc[e - 1] + float(frac) * (acc[e] - acc[e - 1])


def format_equal_flops(rows, reference="standard"):
    head = ["strategy", "seeds", f"{reference} epochs at its FLOPs",
            f"final acc minus {reference}'s there [95% CI]", "p", "p (Holm)", "left out"]
    body = []
    for n, d in rows.items():
        left = d.left_out
        body.append([n, str(d.pairs), ",".join(map(str, d.reference_epochs)), format_diff(d),
                     _fmt(d.p_value, ".2g"), _fmt(d.p_holm, ".2g"),
                     f"seeds {','.join(map(str, left))}: budget beyond {reference}'s run" if left else "-"])
    return text_table(head, body)


def family(runs, pairs, margin=0.25, alpha=0.05):
    """A declared family of paired comparisons inside one folder: for each (a, b) in `pairs`, a's
    final accuracy minus b's on the seeds both have (diverged runs counted, not silently paired),
    with Holm over the family's difference tests and, apart, over its equivalence tests (TOST
    at +-margin)."""
    return adjusted([compare(runs, a, runs, b, margin) for a, b in pairs])


def compare(runs_a, a, runs_b, b, margin=0.25, metric="final"):
    """Strategy a of runs_a against strategy b of runs_b (two folders, or one), paired by seed on
    the seeds where both ran without diverging; a seed either lost to divergence is counted."""
    a, b = run_name(a), run_name(b)
    good_a = {r.seed: r for r in runs_a if r.name == a and not r.diverged}
    good_b = {r.seed: r for r in runs_b if r.name == b and not r.diverged}
    seeds = {r.seed for r in runs_a if r.name == a} | {r.seed for r in runs_b if r.name == b}
    common = sorted(set(good_a) & set(good_b))
    n = test_samples([*good_a.values(), *good_b.values()])
    acc_a, acc_b = [test_acc(good_a[s], metric) for s in common], [test_acc(good_b[s], metric) for s in common]
    return FamilyRow(a, b, mean_or_none(acc_a), mean_or_none(acc_b),
                     replace(paired(acc_a, acc_b, n, margin), dropped=len(seeds) - len(common)))


def adjusted(rows):
    """FamilyRows of one declared family with Holm applied (see adjust)."""
    return [replace(r, diff=d) for r, d in zip(rows, adjust([r.diff for r in rows]))]


@dataclass(frozen=True)
class FamilyRow(Record):
    a: RunName
    b: RunName
    a_mean: float | None
    b_mean: float | None
    diff: Paired


def adjust(family):
    """The Paired comparisons of one declared family, each with its Holm-adjusted p-value and,
    apart (the equivalence tests are a family of their own), its Holm-adjusted TOST p-value; the
    family's size counts comparisons without a p-value too."""
    m = len(family)
    return [replace(d, p_holm=p, p_tost_holm=q) for d, p, q in
            zip(family, holm([d.p_value for d in family], m=m), holm([d.p_tost for d in family], m=m))]


def format_family(rows, alpha=0.05):
    margin = rows[0].diff.margin if rows else 0.25
    head = ["comparison", "seeds", "A acc (%)", "B acc (%)", "A - B [95% CI]", "p", "p (Holm)",
            f"TOST +-{margin:g} p (Holm)", "verdict"]
    body = [[f"{r.a} - {r.b}", f"{r.diff.pairs}" + (f" ({r.diff.dropped} diverged)" if r.diff.dropped else ""),
             _fmt(r.a_mean), _fmt(r.b_mean), format_diff(r.diff), _fmt(r.diff.p_value, ".2g"),
             _fmt(r.diff.p_holm, ".2g"), _fmt(r.diff.p_tost_holm, ".2g"), verdict(r.diff, alpha)] for r in rows]
    return (text_table(head, body) + f"\nfamily: these {len(rows)} comparisons (--family); Holm over "
            f"the {len(rows)} difference tests, and apart over the {len(rows)} equivalence tests; paired t-tests on "
            f"the counts of correct test images")


def format_comparison(rows, a="A", b="B", reference="standard"):
    ci = format_diff
    head = ["strategy", "seeds", f"{a} acc (%)", f"{b} acc (%)", f"{a} - {b} [95% CI]", "p",
            f"vs {reference} in {a}", f"vs {reference} in {b}"]
    reference = run_name(reference)
    body = [[n, ",".join(map(str, r.seeds)), _fmt(r.a_mean), _fmt(r.b_mean), ci(r.a_minus_b),
             _fmt(r.a_minus_b.p_value, ".2g"), ci(r.a_vs_reference) if n != reference else "(reference)",
             ci(r.b_vs_reference) if n != reference else "(reference)"] for n, r in rows.items()]
    return text_table(head, body)


def main(argv=None):
    """Re-read a results folder and print its table against any reference strategy, or compare
    it run by run with another folder (--against). Read-only."""
    import argparse
    p = argparse.ArgumentParser(description=main.__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("folders", nargs="+", metavar="folder",
                   help="--out folders of experiments.py (or cells of a sweep); one table each")
    p.add_argument("--reference", default="standard", help="paired differences are taken to this strategy")
    p.add_argument("--target-frac", type=float, default=0.95)
    p.add_argument("--against", metavar="FOLDER",
                   help="another results folder (e.g. the same experiment in another precision): "
                        "paired differences FOLDER_1 - FOLDER_2 per strategy, seed by seed")
    p.add_argument("--equal-flops", action="store_true",
                   help="approximate: compare each strategy with the reference's accuracy interpolated "
                        "between epochs at the same training FLOPs (only meaningful with a constant "
                        "lr; the exact comparison is --match-budget flops)")
    p.add_argument("--family", metavar="A:B[,A:B...]",
                   help="a declared family of paired comparisons A - B in each folder, with Holm over its "
                        "difference tests and over its equivalence tests (TOST at --margin)")
    p.add_argument("--margin", type=float, default=0.25, help="equivalence margin in points, for --family")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                   help="a plugin file whose strategies the folder's runs use (repeatable); a run of a strategy "
                        "that is not defined is left out, said in one line")
    a = p.parse_args(argv)
    load_plugins(a.plugin)
    if a.family:
        pairs = [tuple(x.split(":", 1)) for x in a.family.split(",") if x.strip()]
        for i, folder in enumerate(a.folders):
            print(("\n" if i else "") + folder)
            print(format_family(family(load_runs(folder), pairs, a.margin)))
        return
    if a.equal_flops and not a.against:  # one Holm family over every comparison printed
        configs = {f: folder_config(f) for f in a.folders}
        tables = {f: equal_flops(load_runs(f, configs[f]), a.reference) for f in a.folders}
        flat = [(f, n) for f, t in tables.items() for n in t]
        adjusted = adjust([tables[f][n] for f, n in flat])  # one family: the folders given
        for (f, n), d in zip(flat, adjusted):
            tables[f][n] = d
        rows = flat
        for i, (folder, t) in enumerate(tables.items()):
            print(("\n" if i else "") + folder)
            print(format_equal_flops(t, a.reference))
        print(f"\nHolm over the {len(rows)} comparisons above (the family is these folders). "
              f"APPROXIMATE: the reference's accuracy is interpolated between its epochs, which stands "
              f"for a run stopped there only with a constant learning rate; the matched runs of "
              f"experiments.py --match-budget flops are exact")
        for f in tables:
            schedule = configs[f].get("settings", {}).get("lr_schedule", "constant")
            if schedule != "constant":
                print(f"warning: {f} used lr schedule {schedule}: interpolation is not a matched run there")
        return
    for i, folder in enumerate(a.folders):
        runs = load_runs(folder)
        if len(a.folders) > 1:
            print(("\n" if i else "") + folder)
        if a.against:
            rows = compare_folders(runs, load_runs(a.against), a.reference)
            print(f"A = {folder}, B = {a.against}; final test accuracy, paired by strategy and seed")
            print(format_comparison(rows, reference=a.reference))
        else:
            ref = run_name(a.reference)
            order = sorted({r.name for r in runs}, key=lambda s: (s != ref, str(s)))
            runs.sort(key=lambda r: (order.index(r.name), r.seed))
            print(format_table(summarize(runs, reference=a.reference, target_frac=a.target_frac)))


if __name__ == "__main__":
    main()
