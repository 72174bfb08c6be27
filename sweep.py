"""Sweeps: the cells of a grid, the map they draw, and the tuned comparison.

A grid is ((key, (value, ...)), ...) over Config fields; its cells are the product of the value
lists. The map has one row per cell and strategy (each variant of a strategy's knobs is a row):
the paired difference to standard in that cell. The tuned comparison gives each strategy its
best candidate, a cell of the tuned keys and one of its knob variants, chosen on validation
accuracy per group of cells that agree on the other keys; test accuracy is only reported. One
family of comparisons is declared per invocation, and Holm adjusts exactly that.
"""
from __future__ import annotations

import csv
import io
import itertools
import math
from dataclasses import dataclass, field, fields, replace

from config import ConfigError, cell_key, cell_label, check_config, grid_values, short_value
from records import Record, later
from strategies import RunName, knobs_of
from stats import (Paired, adjust, bigram_line, compare, final_acc, final_train_acc, final_val_acc, format_diff, holm,
                   identical_to, mean_or_none, mean_test_loss, memory_means, paired, run_name, std_or_none, summarize,
                   test_acc, test_samples, text_table, val_score, verdict)

ALPHA = 0.05
MARGIN = 0.25  # points of test accuracy: the equivalence margin, declared before the runs (RESULTS.md)
SWEEP_COLUMNS = ("strategy", "seeds", "diverged", "test_acc_mean", "test_acc_std", "val_acc_mean",
                 "diff_vs_standard", "ci_low", "ci_high", "p_value", "p_holm", "time_ratio",
                 "flops_ratio", "updates_ratio")


# --- the grid ------------------------------------------------------------------------------
def grid_cells(cfg):
    """(values, cell config) for every cell of cfg.grid, each checked like a command line;
    the cell config has no grid and has --dry-run applied."""
    cells = []
    for combo in itertools.product(*(vals for _, vals in cfg.grid)):
        values = grid_values(cfg.grid, combo)
        cell = replace(cfg, **values, grid=())
        try:
            check_config(cell)
        except ConfigError as e:
            raise ConfigError(f"cell {cell_label(values)}: {e}") from None
        cells.append((values, cell.effective()))
    return cells



def _order(v):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


# --- the records ----------------------------------------------------------------------------
@dataclass(frozen=True)
class MapRow(Record):
    """One cell and strategy of the map, on the selection (tuning) seeds; its grid values read as
    its own keys (row["lr"]) and are written beside the other columns."""
    values: dict
    strategy: RunName
    seeds: int
    diverged: int
    test_acc_mean: float | None
    test_acc_std: float | None
    val_acc_mean: float | None
    diff_vs_standard: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    p_holm: float | None
    time_ratio: float | None
    flops_ratio: float | None
    updates_ratio: float | None

    def __post_init__(self):
        object.__setattr__(self, "strategy", run_name(self.strategy))  # its text, read from a summary

    def __getitem__(self, key):
        return self.values[key] if key in self.values else super().__getitem__(key)

    def get(self, key, default=None):
        return self.values.get(key, super().get(key, default))

    def to_json(self):
        return {**self.values, **{k: v for k, v in super().to_json().items() if k != "values"}}


@dataclass(frozen=True)
class OtherMetric(Record):
    """The same runs scored by the other metric (final or early-stopped), beside the primary one."""
    metric: str
    test_acc_mean: float | None
    diff_vs_standard: Paired | None = None


@dataclass(frozen=True)
class TunedEntry(Record):
    """A strategy's tuned choice in one group, and how it does on the reported seeds; `choice` is
    None (and `note` says why) when no candidate was eligible."""
    choice: dict | None
    lr: float | None = None
    cell: dict | None = None
    variant: RunName | None = None
    knobs: dict = field(default_factory=dict)
    edges: dict = field(default_factory=dict)
    at_edge: str | None = None
    val_acc_mean: float | None = None
    selected_on: list = field(default_factory=list)
    candidates: int = 0
    train_flops_mean: float | None = None
    test_acc_mean: float | None = None
    test_acc_std: float | None = None
    train_acc_mean: float | None = None
    train_test_gap: float | None = None  # mean over seeds of last-epoch train minus final test accuracy
    seeds: list = field(default_factory=list)
    diverged: int = 0
    confirmed: bool = False
    other_metric: OtherMetric | None = None
    diff_vs_standard: Paired | None = None
    diff_vs_matched: Paired | None = None
    matched_acc_mean: float | None = None
    matched_run: RunName | None = None
    note: str | None = None
    ties: list | None = later()         # other candidates with the very same validation score (the tie-break chose)
    to_target: dict | None = later()    # when its test metric first reached tuned standard's final mean (see time_to_target)
    memory: dict | None = later()       # mean peaks over the reported seeds: process or device, trainable, optimizer bytes
    test_loss_mean: float | None = later()  # mean final test loss in nats per scored item (text: per character)
    identical: bool | None = later()    # True: on every reported seed, the very run the reference made

    def __post_init__(self):
        for k in ("variant", "matched_run"):  # their text, read from a summary
            if getattr(self, k) is not None:
                object.__setattr__(self, k, run_name(getattr(self, k)))


@dataclass(frozen=True)
class TunedGroup(Record):
    group: dict
    strategies: dict  # name -> TunedEntry


@dataclass(frozen=True)
class Family(Record):
    """The comparisons an invocation declares as its answer: Holm adjusts exactly these (and,
    apart, their equivalence tests)."""
    name: str
    size: int
    members: list
    tests: int
    tost_tests: int = 0


@dataclass(frozen=True)
class SweepSummary(Record):
    """sweep_summary.json: the map, the tuned comparison and its declared family."""
    grid_keys: list
    reference: str
    alpha: float
    margin: float | None
    metric: str
    tuned_keys: list
    selection_seeds: list | None
    confirm_seeds: list | None
    rows: list
    tuned: list | None
    tuned_note: str | None
    family: Family
    dataset: str | None = None
    runs_saved: int | None = None
    runs_planned: int | None = None
    complete: bool | None = None
    bigram_bits: float | None = later()  # text: a bigram model's test bits per character, beside the runs'


def _paired_of(blob):
    return None if blob is None else Paired(**blob)


def _entry_of(blob):
    """A TunedEntry from its JSON values."""
    b = dict(blob)
    om = b.get("other_metric")
    if om is not None:
        b["other_metric"] = OtherMetric(om["metric"], om["test_acc_mean"], _paired_of(om.get("diff_vs_standard")))
    for k in ("diff_vs_standard", "diff_vs_matched"):
        b[k] = _paired_of(b.get(k))
    known = {f.name for f in fields(TunedEntry)}  # an older summary's retired fields (lrs) are not read
    return TunedEntry(**{k: v for k, v in b.items() if k in known})


def _summary_of(cls, blob):
    """SweepSummary.of_json: the records of a sweep_summary.json's values (results.read_sweep_summary)."""
    b = dict(blob)
    keys = b["grid_keys"]
    b["rows"] = [MapRow({k: r[k] for k in keys}, **{k: v for k, v in r.items() if k not in keys}) for r in b["rows"]]
    if b.get("tuned") is not None:
        b["tuned"] = [TunedGroup(g["group"], {n: _entry_of(e) for n, e in g["strategies"].items()}) for g in b["tuned"]]
    b["family"] = Family(**b["family"])
    b.setdefault("margin", None)  # summaries written before equivalence tests
    return cls(**b)


SweepSummary.of_json = classmethod(_summary_of)


# --- the map -------------------------------------------------------------------------------
def summarize_sweep(cells, keys, reference="standard", target_frac=0.95, metric="final", tune=(),
                    selection_seeds=None, confirm_seeds=None, margin=MARGIN):
    """cells: [(values, runs)] -> SweepSummary.

    Rows are per cell and strategy, on the selection (tuning) seeds. The declared family is what
    Holm adjusts, and nothing else is adjusted: with confirmation seeds, every strategy against
    the reference in each confirmed group plus every equal-compute comparison with a matched
    run; with tuning alone, the tuned comparisons; with neither, the map's rows."""
    cells = sorted(cells, key=lambda c: [_order(c[0][k]) for k in keys])
    sel = None if selection_seeds is None else set(selection_seeds)
    rows = []
    for values, runs in cells:
        runs = [r for r in runs if sel is None or r.seed in sel]
        s = summarize(runs, reference, target_frac, metric)
        for name, st in s.strategies.items():
            d = st.diff_vs_standard
            rows.append(MapRow(dict(values), name, len(st.seeds), st.diverged, st.final_acc_mean, st.final_acc_std,
                               st.val_acc_mean, d.mean, d.ci95_low, d.ci95_high, d.p_value, None, st.time_ratio,
                               st.flops_ratio, st.updates_ratio))
    tuned, note = tuned_comparison(cells, keys, reference, tune, metric, selection_seeds, confirm_seeds, margin)
    if tuned is not None and confirm_seeds is not None:
        tuned = _equal_compute(tuned, cells, reference, metric, confirm_seeds, margin)
    rows, tuned, family = declare_family(rows, tuned, reference, confirmed=confirm_seeds is not None)
    return SweepSummary(list(keys), reference, ALPHA, margin, metric, tune_keys(tune, keys),
                        None if sel is None else sorted(sel), None if confirm_seeds is None else sorted(confirm_seeds),
                        rows, tuned, note, family)


def _equal_compute(tuned, cells, reference, metric, seeds, margin=MARGIN):
    """The tuned groups with, for each confirmed strategy that has matched runs (standard@flops=<it>,
    in the reference's chosen cell), the paired difference strategy - matched standard on the
    fresh seeds."""
    by_cell = {cell_key(v): runs for v, runs in cells}
    out = []
    for g in tuned:
        ref = g.strategies.get(reference)
        if ref is None or not ref.cell:
            out.append(g)
            continue
        runs = by_cell[cell_key(ref.cell)]
        entries = dict(g.strategies)
        for name, e in g.strategies.items():
            if name == reference or not e.cell:
                continue
            matched_name = RunName.matched("flops", e.variant.strategy)
            theirs = [r for r in runs if r.seed in seeds and r.name == matched_name]
            ours = [r for r in by_cell[cell_key(e.cell)] if r.seed in seeds and r.name == e.variant]
            row = compare(ours, e.variant, theirs, matched_name, margin, metric)
            if row.diff.pairs:
                entries[name] = replace(e, diff_vs_matched=row.diff, matched_acc_mean=row.b_mean,
                                        matched_run=matched_name)
        out.append(replace(g, strategies=entries))
    return out


def declare_family(rows, tuned, reference, confirmed):
    """Name the family of comparisons this invocation reports as its answer and Holm-adjust
    exactly those (the family's size counts comparisons without a p-value too; the equivalence
    tests apart, over the same members); return (rows, tuned, Family) with the adjusted values."""
    if tuned is None:
        keys = rows_keys(rows)
        members = [i for i, r in enumerate(rows) if r.strategy != run_name(reference)]
        p = holm([rows[i].p_value for i in members], m=len(members))
        rows = list(rows)
        for i, q in zip(members, p):
            rows[i] = replace(rows[i], p_holm=q)
        labels = [f"{cell_label({k: rows[i][k] for k in keys})}: {rows[i].strategy} vs {reference}" for i in members]
        return rows, None, Family("every strategy against the reference in every cell of the map", len(members),
                                  labels, sum(rows[i].p_value is not None for i in members))
    slots = []  # (group index, strategy, field, label)
    for gi, g in enumerate(tuned):
        label = cell_label(g.group) or "all cells"
        for name, e in g.strategies.items():
            for key, what in (("diff_vs_standard", f"{name} vs {reference}"),
                              ("diff_vs_matched", f"{name} vs {reference} at its FLOPs")):
                if getattr(e, key) is not None and (confirmed or key == "diff_vs_standard"):
                    slots.append((gi, name, key, f"{label}: {what}"))
    adjusted = adjust([getattr(tuned[gi].strategies[n], k) for gi, n, k, _ in slots])
    groups = [dict(g.strategies) for g in tuned]
    for (gi, n, k, _), d in zip(slots, adjusted):
        groups[gi][n] = replace(groups[gi][n], **{k: d})
    tuned = [replace(g, strategies=s) for g, s in zip(tuned, groups)]
    name = ("confirmed tuned comparisons and equal-compute comparisons, on fresh seeds" if confirmed
            else "tuned comparisons, on the seeds they were selected on")
    return rows, tuned, Family(name, len(slots), [label for *_, label in slots],
                               sum(d.p_value is not None for d in adjusted), sum(d.p_tost is not None for d in adjusted))


def rows_keys(rows):
    """The grid keys of the map's rows."""
    return list(rows[0].values) if rows else []


def tune_keys(tune, keys):
    """The grid keys to tune: --tune's, or lr when lr is gridded."""
    tune = list(tune) or (["lr"] if "lr" in keys else [])
    bad = [k for k in tune if k not in keys]
    if bad:
        raise ConfigError(f"--tune {bad[0]}: only grid keys can be tuned; add --grid {bad[0]}=V1,V2,...")
    return tune


def tuned_comparison(cells, keys, reference="standard", tune=(), metric="final", selection_seeds=None,
                     confirm_seeds=None, margin=None):
    """(groups, note). Per group of cells that agree on the untuned keys, each strategy gets the
    candidate, a cell (its tuned keys' values) and one of the strategy's knob variants, with the
    best mean validation score over the seeds that every candidate has for it (among
    `selection_seeds`); a candidate where one of those seeds diverged is not eligible. Test
    accuracy is only reported: on `confirm_seeds` when given (fresh seeds run after the choice:
    unbiased), else on the selection seeds (biased upward). Differences to the reference are
    paired by seed, each strategy at its own choice."""
    tune = tune_keys(tune, keys)
    cells = sorted(cells, key=lambda c: [_order(c[0][k]) for k in keys])  # ties: the first in grid order
    variants = _variants_by_strategy(cells)
    if not tune and not any(len(v) > 1 for v in variants.values()):
        return None, "the tuned comparison needs a tuned grid key (--grid lr=... or --tune KEY) or variants of a strategy's knobs"
    has_val = any(final_val_acc(r) is not None for _, runs in cells for r in runs)
    if not has_val:
        return None, ("the tuned comparison needs a validation split (--val-size N): settings "
                      "are chosen on validation data only, never on the test set")
    groups = {}
    for values, runs in cells:
        rest = tuple((k, values[k]) for k in keys if k not in tune)
        groups.setdefault(rest, []).append((values, runs))
    out = []
    for rest, members in groups.items():
        choices = {n: _best_candidate(vs, members, tune, metric, selection_seeds) for n, vs in variants.items()}
        # what each choice scores on the reported seeds: accuracies by seed, the other metric's too
        report = {}
        for name, c in choices.items():
            if c is None:
                continue
            pool = c["runs"] if confirm_seeds is None else {
                r.seed: r for r in c["all_runs"] if r.seed in confirm_seeds}
            good = {s: r for s, r in pool.items() if not r.diverged}
            report[name] = ({s: test_acc(r, metric) for s, r in good.items()},
                            {s: r for s, r in good.items()},
                            {s: test_acc(r, _other(metric)) for s, r in good.items()}, test_samples(good.values()),
                            set(pool))
        entries = {}
        for name, c in choices.items():
            if c is None:
                entries[name] = TunedEntry(None, note="no eligible candidate (diverged, or no common seed)")
                continue
            accs, good_runs, other, n_a, planned = report[name]
            train = {s: final_train_acc(r) for s, r in good_runs.items() if final_train_acc(r) is not None}
            diff = other_diff = None
            if reference in report and name != reference:
                ref_accs, _, ref_other, n_ref, ref_planned = report[reference]
                n = n_ref if n_ref == n_a else None  # integer counts only on one test-set size
                common = sorted(set(accs) & set(ref_accs))
                # a seed that diverged on either side is not a pair: counted, and shown, as dropped
                diff = replace(paired([accs[s] for s in common], [ref_accs[s] for s in common], n, margin),
                               dropped=len(planned | ref_planned) - len(common))
                common = [s for s in common if other[s] is not None and ref_other[s] is not None]
                # reported beside the primary metric, unadjusted: not a member of the family
                other_diff = paired([other[s] for s in common], [ref_other[s] for s in common], n)
            entries[name] = TunedEntry(
                c["choice"], lr=c["choice"].get("lr"), cell=c["cell"], variant=c["variant"], knobs=c["knobs"],
                edges=c["edges"], at_edge=" and ".join(f"{e} {k}" for k, e in c["edges"].items() if e) or None,
                val_acc_mean=c["val"], selected_on=c["seeds"], candidates=c["candidates"],
                # on the seeds reported: the fresh ones when confirmed (the tuning seeds' FLOPs only chose
                # which strategies get matched runs), so random and adaptive schedules show what they did there
                train_flops_mean=mean_or_none(r.history.total("train_flops") for r in good_runs.values()),
                test_acc_mean=mean_or_none(accs.values()), test_acc_std=std_or_none(accs.values()),
                train_acc_mean=mean_or_none(train.values()),
                train_test_gap=mean_or_none(train[s] - final_acc(good_runs[s]) for s in train),
                seeds=sorted(accs), diverged=len(planned) - len(accs), confirmed=confirm_seeds is not None,
                other_metric=OtherMetric(_other(metric), mean_or_none(v for v in other.values() if v is not None),
                                         other_diff),
                diff_vs_standard=diff, ties=c["ties"] or None,
                memory=_memory(good_runs.values()), test_loss_mean=mean_test_loss(good_runs.values()),
                identical=identical_to(good_runs, report[reference][1]) if reference in report and name != reference
                else None)
        out.append(TunedGroup(dict(rest), _with_time_to_target(entries, report, reference)))
    return out, None


def _memory(runs):
    peak, trainable, optimizer = memory_means(runs)
    return None if peak is None and trainable is None else {"peak_bytes": peak, "trainable_bytes": trainable,
                                                            "optimizer_bytes": optimizer}


def time_to_target(runs, target):
    """{"target", "steps_mean", "flops_mean", "reached", "of"}: over the runs that reach `target` (test
    accuracy after an epoch), the mean steps and training FLOPs until the first epoch that does, and
    how many of the runs reach it at all (AlgoPerf's time to target, in steps and FLOPs)."""
    steps, flops = [], []
    for r in runs:
        hit = next((i for i, e in enumerate(r.history) if e.test_acc >= target), None)
        if hit is not None:
            steps.append(sum(e.steps for e in r.history.epochs[:hit + 1]))
            flops.append(sum(e.train_flops for e in r.history.epochs[:hit + 1]))
    return {"target": target, "steps_mean": mean_or_none(s for s in steps if s is not None),
            "flops_mean": mean_or_none(flops), "reached": len(flops), "of": len(runs)}


def _with_time_to_target(entries, report, reference):
    """Each entry with its time to tuned standard's final mean test accuracy on the reported seeds."""
    ref = entries.get(reference)
    if ref is None or ref.test_acc_mean is None:
        return entries
    return {n: e if n not in report else replace(e, to_target=time_to_target(report[n][1].values(), ref.test_acc_mean))
            for n, e in entries.items()}


def _variants_by_strategy(cells):
    """{strategy: [(variant's RunName, StrategyName)]} over every run (matched-budget runs are not
    candidates), each strategy's variants in the order of their knob values, whatever order the
    runs come in, so that ties are broken the same way every time."""
    out = {}
    for _, runs in cells:
        for r in runs:
            if r.name.budget is None:
                out.setdefault(r.name.family, {})[r.name] = r.name.strategy
    order = lambda item: [_order(v) for _, v in sorted(_all_knobs(item[1]).items())]  # noqa: E731
    return {k: sorted(v.items(), key=order) for k, v in out.items()}


def _all_knobs(name):
    return {k: d for k, (_, d) in knobs_of(name.schedule()).items()}


def _other(metric):
    return "early-stopped" if metric == "final" else "final"


def _knob_values(variants):
    """{variant: {knob: value}} for the knobs whose values differ between the variants."""
    full = {text: _all_knobs(name) for text, name in variants}
    varying = [k for k in (next(iter(full.values())) if full else {})
               if len({repr(v[k]) for v in full.values()}) > 1]
    return {text: {k: v[k] for k in varying} for text, v in full.items()}


def _edge(value, options):
    """'lowest' or 'highest' when a numeric choice is at an end of what was tried; 0 at the low end
    (no weight decay, no warmup) is a floor, not an edge: nothing lies below it."""
    options = sorted(set(options), key=_order)
    if len(options) < 2 or not all(_order(o)[0] == 0 for o in options):
        return None
    if value == options[0] and value != 0:
        return "lowest"
    return "highest" if value == options[-1] else None


def _best_candidate(variants, members, tune, metric, selection_seeds):
    """{"choice", "cell", "variant", "knobs", "edges", "val", "seeds", "runs", "all_runs",
    "candidates"} of a strategy's best candidate (a cell and a knob variant) in a group, or None.
    Every candidate is scored on the same seeds: those all of them have."""
    knobs = _knob_values(variants)
    mine = [(values, text, [r for r in runs if r.name == text])
            for values, runs in members for text, _ in variants]
    mine = [c for c in mine if c[2]]
    if not mine:
        return None
    common = set.intersection(*({r.seed for r in rs} for _, _, rs in mine))
    if selection_seeds is not None:
        common &= set(selection_seeds)
    if not common:
        return None
    scores = {}
    for i, (values, text, rs) in enumerate(mine):
        by_seed = {r.seed: r for r in rs if r.seed in common}
        vals = [val_score(r, metric) for r in by_seed.values()]
        if not any(r.diverged for r in by_seed.values()) and None not in vals:
            scores[i] = (sum(vals) / len(vals), by_seed)
    if not scores:
        return None
    best = max(scores, key=lambda i: (scores[i][0], -i))  # ties: the first candidate in grid order
    tied = [i for i in scores if i != best and scores[i][0] == scores[best][0]]
    values, text, rs = mine[best]
    choice = {**{k: values[k] for k in tune}, **knobs[text]}
    edges = {k: _edge(values[k], [v[k] for v, _, _ in mine]) for k in tune}
    edges.update({k: _edge(knobs[text][k], [knobs[t][k] for _, t, _ in mine]) for k in knobs[text]})
    return {"choice": choice, "cell": values, "variant": text, "knobs": knobs[text], "edges": edges,
            "val": scores[best][0], "seeds": sorted(common), "runs": scores[best][1], "all_runs": rs,
            "candidates": len(mine),
            "ties": [{**{k: mine[i][0][k] for k in tune}, **knobs[mine[i][1]]} for i in tied]}


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
    """The map, the tuned comparison and the equal-compute table as plain-text tables, with the
    declared family that Holm adjusted."""
    keys, ref, fam = summary["grid_keys"], summary["reference"], summary["family"]
    in_family = summary["tuned"] is None
    acc = "early-stopped acc (%)" if summary.get("metric") == "early-stopped" else "test acc (%)"
    head = [*keys, "strategy", "seeds", acc, f"diff vs {ref} [95% CI]", "p", *(["p (Holm)", ""] if in_family else [])]
    body = []
    for r in summary["rows"]:
        a = _f(r.test_acc_mean, ".2f") + ("" if r.test_acc_std is None else f" +- {r.test_acc_std:.2f}")
        diff = "(reference)" if r.strategy == run_name(ref) else format_diff(
            Paired(r.diff_vs_standard, r.ci_low, r.ci_high, r.p_value, r.seeds))
        seeds = f"{r.seeds - r.diverged}/{r.seeds}"
        sig = "*" if r.p_holm is not None and r.p_holm < summary.alpha else ""
        body.append([*(short_value(r.values[k]) for k in keys), r.strategy, seeds, a, diff, _p(r.p_value),
                     *([_p(r.p_holm), sig] if in_family else [])])
    sel = summary.get("selection_seeds")
    parts = [("map" + (f" (seeds {_seeds(sel)})" if sel else "") + ("" if in_family else
              ": exploratory, p-values unadjusted and not part of the family")), text_table(head, body)]
    if summary["tuned"] is None:
        parts.append(f"tuned comparison: not made; {summary['tuned_note']}")
    else:
        parts.append(format_tuned(summary))
    tost = (f"; each is also an equivalence test (TOST, margin +-{summary['margin']:g} points, "
            f"--margin): {fam.get('tost_tests', 0)} with a p-value, Holm over all {fam['size']} of them as a family "
            f"of their own" if summary.get("margin") is not None and summary["tuned"] is not None else "")
    parts.append(f"family ({fam['name']}): {fam['size']} comparisons, {fam['tests']} with a p-value; "
                 f"Holm over all {fam['size']}; * adjusted p < {summary['alpha']}; paired t-tests on the "
                 f"counts of correct test images{tost}")
    return "\n".join(parts)


def _seeds(seeds):
    seeds = list(seeds)
    return (f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 1
            else ",".join(map(str, seeds)))


def format_tuned(summary):
    ref, alpha = summary["reference"], summary["alpha"]
    margin = summary.get("margin")
    confirmed = summary.get("confirm_seeds") is not None
    other = "early-stopped" if summary.get("metric", "final") == "final" else "final"
    tost = [f"TOST +-{margin:g} p (Holm)", "verdict"] if margin is not None else []
    head = ["group", "strategy", "choice (on validation)", "val acc (%)", "test acc (%)", "train acc (%)",
            "train-test gap", "pairs",
            f"diff vs {ref} [95% CI]", "p", "p (Holm)", *tost, f"{other}: diff [95% CI]", "note"]
    entries = [e for g in summary["tuned"] for e in g["strategies"].values()]
    extra = any(e.get("to_target") for e in entries)  # the columns of summaries made since they exist
    memory = any(e.get("memory") for e in entries)
    chars = summary.get("bigram_bits") is not None  # characters are scored: the test loss in bits per character
    loss = any(e.get("test_loss_mean") is not None for e in entries)
    if loss:
        head.insert(head.index("train acc (%)"), "test bits/char" if chars else "test loss")
    if extra:
        head[head.index("pairs"):head.index("pairs")] = ["FLOPs x", f"to {ref}'s final: steps, FLOPs x (seeds)"]
    if memory:
        head[-1:-1] = ["peak MB", "trainable MB", "optimizer MB"]
    body, matched = [], []
    star = lambda d: "*" if d and d.get("p_holm") is not None and d["p_holm"] < alpha else ""  # noqa: E731
    for g in summary["tuned"]:
        label = cell_label(g["group"]) or "all cells"
        for name, e in g["strategies"].items():
            if e.get("choice") is None:
                body.append([label, name, *["-"] * (len(head) - 3), e["note"]])
                continue
            d = e.get("diff_vs_standard")
            diff = "(reference)" if name == ref else format_diff(d) + star(d)
            note = "; ".join(n for n in (f"at the {e['at_edge']} tried: extend the grid" if e["at_edge"] else "",
                                         f"identical to {ref} on every seed: froze nothing here"
                                         if e.get("identical") else "") if n)
            choice = cell_label(e["choice"]) + (f" (tied with {'; '.join(cell_label(c) for c in e['ties'])}: the first "
                                                f"in grid and knob order)" if e.get("ties") else "")
            row = [label, name, choice, _f(e["val_acc_mean"], ".2f"),
                   _f(e["test_acc_mean"], ".2f") + ("" if e["test_acc_std"] is None else f" +- {e['test_acc_std']:.2f}"),
                   *([_loss(e.get("test_loss_mean"), chars)] if loss else []),
                   _f(e.get("train_acc_mean"), ".2f"), _f(e.get("train_test_gap"), ".2f"),
                   _pairs(d, e), diff, _p(d["p_value"]) if d else "-", _p(d.get("p_holm")) if d else "-",
                   *(_tost(d, alpha) if tost else []),
                   "(reference)" if name == ref else format_diff(e["other_metric"].get("diff_vs_standard")), note]
            if extra:
                std = g["strategies"].get(ref) or {}
                row[7 + loss:7 + loss] = [_ratio(e.get("train_flops_mean"), std.get("train_flops_mean")),
                            _to_target(e.get("to_target"), std.get("train_flops_mean"))]
            if memory:
                m = e.get("memory") or {}
                row[-1:-1] = [_mib(m.get("peak_bytes")), _mib(m.get("trainable_bytes")), _mib(m.get("optimizer_bytes"))]
            body.append(row)
            m = e.get("diff_vs_matched")
            if m:
                matched.append([label, name, e.get("matched_run", f"{ref}@flops={name}"),
                                _f(e["matched_acc_mean"], ".2f"), _pairs(m, {}), format_diff(m) + star(m),
                                _p(m["p_value"]), _p(m.get("p_holm")), *(_tost(m, alpha) if tost else [])])
    sel = summary.get("selection_seeds")
    where = (f"test accuracy on fresh seeds {_seeds(summary['confirm_seeds'])}, run after the choice"
             if confirmed else "test accuracy on the seeds the choice was made on (biased upward; "
             "--confirm-seeds N runs fresh ones)")
    knobs = sorted({k for g in summary["tuned"] for e in g["strategies"].values() for k in (e.get("knobs") or {})})
    what = ", ".join(summary["tuned_keys"] + ([f"knobs ({', '.join(knobs)})"] if knobs else []))
    text = (f"tuned comparison: each strategy at its own best {what}, chosen on "
            f"mean {'best ' if summary.get('metric') == 'early-stopped' else 'final '}validation accuracy "
            f"over the seeds every candidate has"
            + (f" (of {_seeds(sel)})" if sel else "") + f"; {where}; train acc is the last epoch's "
            "accuracy on the training batches as they were trained (dropout on), the gap train minus test "
            "by seed" + ("; test loss is the final epoch's mean cross-entropy on the test set"
                         + (" in bits per character" if chars else " (nats)") if loss else "")
            + ("; memory, the means over those seeds of each run's peaks: the worker process's resident set "
               "(device memory on CUDA), the bytes of the largest set of parameters that trains at once, and "
               "the optimizer's state" if memory else "")
            + "\n" + text_table(head, body))
    if chars:
        text += "\n" + bigram_line(summary["bigram_bits"])
    if matched:
        text += ("\nequal compute: each strategy against a standard run (standard's tuned settings, its lr "
                 "schedule fitted) stopped at the strategy's training FLOPs, same fresh seeds\n"
                 + text_table(["group", "strategy", "matched run", "matched acc (%)", "pairs",
                               "strategy minus matched [95% CI]", "p", "p (Holm)", *tost], matched))
    return text


def _loss(nats, chars):
    return "-" if nats is None else f"{nats / math.log(2):.3f}" if chars else f"{nats:.3f}"


def _ratio(a, b):
    return "-" if a is None or not b else f"{a / b:.2f}"


def _to_target(tt, ref_flops):
    """'3100 steps, 0.62 (9/10)': the mean steps and FLOPs (as a fraction of standard's whole run) to
    reach tuned standard's final mean, over the seeds that reach it; 'never (0/10)' where none does."""
    if not tt:
        return "-"
    reached = f"({tt['reached']}/{tt['of']})"
    if tt["flops_mean"] is None:
        return f"never {reached}"
    steps = "" if tt.get("steps_mean") is None else f"{tt['steps_mean']:.0f} steps, "
    return f"{steps}{_ratio(tt['flops_mean'], ref_flops)} {reached}"


def _mib(x):
    return "-" if x is None else f"{x / 2 ** 20:.1f}"


def _pairs(d, entry):
    """'10', or '9 (1 diverged)': the seeds a paired comparison used, and those divergence cost it."""
    if not d:
        return str(len(entry.get("seeds", []))) + (f" ({entry['diverged']} diverged)" if entry.get("diverged") else "")
    return f"{d['pairs']}" + (f" ({d['dropped']} diverged)" if d.get("dropped") else "")


def _tost(d, alpha):
    if not d:
        return ["-", "-"]
    return [_p(d.get("p_tost_holm")), verdict(d, alpha)]
