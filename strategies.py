"""Named strategies: a schedule plus optimizer options, registered under a name, with knobs.

    from dataclasses import dataclass
    from schedules import Schedule, on
    from strategies import register

    @register("head-last", description="the head trains only in the second half of the run")
    @dataclass(frozen=True)
    class HeadLast(Schedule):
        late: float = 0.5                   # a knob: head-last[late=0.3]
        def factors(self, epoch, step, run, state):
            late = step >= self.late * run.total_steps
            return on(range(run.units if late else run.hidden), run)

A name may set knobs, the schedule's own fields: `freezeout[t0=0.5,cubic=false]`; `|` gives
variants, `freezeout[t0=0.5|0.8]` is two strategies. A run's name is a `RunName`: a strategy,
or standard stopped at another strategy's budget (`standard@flops=freezeout[t0=0.5]`).

Each strategy knows where its schedule's code comes from: built-ins declare a `version`, any
other schedule is fingerprinted by the content of the file that defines it. `spec(name)` is what
a run records, and a stored run whose spec differs from what would run now is never reused.
"""
from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace

import schedules as S
from models import FIRST, SECOND
from plugins import code_origin, did_you_mean, import_plugin, note_registration, record
from schedules import Schedule


class StrategyError(ValueError):
    """A strategy name, knob or plugin that cannot work; its message is one line."""


@dataclass(frozen=True)
class Strategy:
    """How one named strategy trains: a schedule plus optimizer options."""
    schedule: Schedule
    reset_optimizer: bool = False        # re-create the optimizer at every phase change
    freeze_bn_stats: bool | None = None  # None: follow Config.freeze_bn_stats
    description: str = field(default="", compare=False)


STRATEGIES: dict[str, Strategy] = {}
_ALTERNATING_K = re.compile(r"alternating-(\d+)")  # alternating-25: alternating-k[every=25]
CORE = ("standard", "alternating-epoch", "alternating-batch")


def _kind(hint):
    """(base type, None allowed) for the knob types a name can spell; None for other fields."""
    args = typing.get_args(hint)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0], True) if len(rest) == 1 and rest[0] in (bool, int, float, str) else None
    return (hint, False) if hint in (bool, int, float, str) else None


def register(name, schedule=None, *, reset_optimizer=False, freeze_bn_stats=None, description=""):
    """Register strategy `name`: register("mine", Mine()), or @register("mine") on a Schedule
    class (registered with its default knobs). Returns what it was given, so it decorates."""
    if not re.fullmatch(r"[a-z][a-z0-9-]*", name) or name.endswith("-") or _ALTERNATING_K.fullmatch(name):
        raise StrategyError(f"strategy name {name!r}: use lower-case letters, digits and '-', starting "
                            f"with a letter (alternating-<number> is reserved)")

    def add(obj):
        sched = obj() if isinstance(obj, type) else obj
        if not isinstance(sched, Schedule):
            raise StrategyError(f"register({name!r}, ...) needs a schedules.Schedule, got {type(sched).__name__}")
        clash = [f.name for f in fields(sched) if hasattr(Schedule, f.name)] if is_dataclass(sched) else []
        if clash:
            raise StrategyError(f"register({name!r}, ...): knob {clash[0]!r} would hide Schedule.{clash[0]}; "
                                f"give the field another name")
        hints = typing.get_type_hints(type(sched)) if is_dataclass(sched) else {}
        odd = [f for f in (fields(sched) if is_dataclass(sched) else ()) if f.metadata.get("knob", True)
               and _kind(hints.get(f.name)) is None]
        if odd:
            raise StrategyError(f"register({name!r}, ...): field {odd[0].name!r} ({hints.get(odd[0].name)}) cannot be a "
                                f"knob (bool, int, float, str, or one of those or None); if it is not one, declare it "
                                f"with field(..., metadata={{'knob': False}})")
        try:
            S.measures_of(sched, f"strategy {name!r}")
        except S.MeasureError as e:
            raise StrategyError(str(e)) from None
        if name in STRATEGIES and code_origin(type(STRATEGIES[name].schedule)) != code_origin(type(sched)):
            raise StrategyError(f"strategy {name!r} is already registered (by "
                                f"{code_origin(type(STRATEGIES[name].schedule))['where']}); choose another name")
        STRATEGIES[name] = Strategy(sched, reset_optimizer, freeze_bn_stats,
                                    description or (type(sched).__doc__ or "").strip().split("\n")[0])
        note_registration("strategy", name, type(sched))
        return obj

    return add if schedule is None else add(schedule)


# --- the built-in strategies --------------------------------------------------------------------
register("standard", S.AllUnits(), description="every layer, every step")
register("alternating-epoch", S.alternating(1, "epoch"), description="halves switch every epoch")
register("alternating-batch", S.alternating(1, "batch"), description="halves switch every batch")
register("alternating-k", S.alternating(10, "batch"), description="halves switch every `every` batches")
register("alternating-epoch-reset", S.alternating(1, "epoch"), reset_optimizer=True,
         description="earlier version: new Adam at each switch")
register("alternating-batch-reset", S.alternating(1, "batch"), reset_optimizer=True,
         description="earlier version: new Adam at each switch")
register("standard-reset-epoch", S.Phases(unit="epoch"), reset_optimizer=True,
         description="standard, new Adam every epoch")
register("standard-reset-batch", S.Phases(unit="batch"), reset_optimizer=True,
         description="standard, new Adam every batch")
register("alternating-epoch-bnfixed", S.alternating(1, "epoch"), freeze_bn_stats=True,
         description="frozen half's BN stats fixed")
register("alternating-batch-bnfixed", S.alternating(1, "batch"), freeze_bn_stats=True,
         description="frozen half's BN stats fixed")
register("gan-style", S.TwoTimescale(), description="halves alternate every batch, second at 4x the lr")
# published freezing methods, adapted to this MLP and to Adam (see ARCHITECTURE.md)
register("freezeout", S.FreezeOut(), description="blocks stop in turn, each lr cosine to 0 (Brock 2017)")
register("layer-freezing", S.LayerFreezing(), description="first blocks freeze late in training (Composer)")
register("cyclic-blocks", S.CyclicBlocks(), description="one unit at a time, ascending (BAdam)")
register("cyclic-blocks-descending", S.CyclicBlocks(order="descending"),
         description="one unit at a time, descending (BAdam)")
register("cyclic-blocks-random", S.CyclicBlocks(order="random"),
         description="one unit at a time, random order per round (BAdam)")
register("cyclic-blocks-reset", S.CyclicBlocks(), reset_optimizer=True,
         description="cyclic blocks, Adam state cleared at each switch (BAdam)")
register("layerout", S.LayerOut(), description="blocks freeze at random each epoch (Goutam 2020)")
register("autofreeze", S.AutoFreeze(), description="leading blocks freeze once their gradient settles (Liu 2021)")
register("lisa", S.LISA(), description="embeddings and head always, gamma random middle units every K steps (Pan 2024)")
register("gradual-unfreezing", S.GradualUnfreezing(), description="head first, one more unit every k epochs (ULMFiT)")
BUILTIN = tuple(STRATEGIES)  # `all`: every built-in strategy (plugins are named one by one)


# --- names with knobs ---------------------------------------------------------------------------
def knobs_of(schedule):
    """{knob: (type, default)} of a schedule: its dataclass fields that a name can set."""
    hints = typing.get_type_hints(type(schedule))
    out = {}
    for f in fields(schedule):
        kind = _kind(hints.get(f.name))
        if kind is not None and f.metadata.get("knob", True):
            out[f.name] = (kind, getattr(schedule, f.name))
    return out


def format_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    return format(v, "g") if isinstance(v, float) else str(v)


def _parse_value(text, kind, where):
    base, nullable = kind
    t = text.strip()
    if nullable and t.lower() == "none":
        return None
    try:
        if base is bool:
            if t.lower() in ("true", "1", "yes", "on"):
                return True
            if t.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if base is int:
            v = float(t)
            if not v.is_integer():
                raise ValueError
            return int(v)
        if base is float:
            v = float(t)
            if v != v or v in (float("inf"), float("-inf")):
                raise ValueError
            return v
        return t
    except ValueError:
        want = {bool: "true or false", int: "a whole number", float: "a finite number", str: "text"}[base]
        raise StrategyError(f"{where} must be {want}{' or none' if nullable else ''}, got {text!r}") from None


@dataclass(frozen=True)
class StrategyName:
    """A registered strategy and the knobs it overrides (in field order, only those that differ
    from the registered schedule's), e.g. freezeout[t0=0.5]."""
    base: str
    knobs: tuple = ()  # ((knob, value), ...)

    def __repr__(self):
        return f"StrategyName({str(self)!r})"

    def __str__(self):
        if not self.knobs:
            return self.base
        if self.base == "alternating-k" and len(self.knobs) == 1 and self.knobs[0][0] == "every":
            return f"alternating-{self.knobs[0][1]}"  # the name such runs always had
        return f"{self.base}[{','.join(f'{k}={format_value(v)}' for k, v in self.knobs)}]"

    @classmethod
    def parse(cls, text):
        """The one parser of a strategy's name: 'freezeout', 'freezeout[t0=0.5,cubic=false]',
        'alternating-25' (= alternating-k[every=25]); unknown names and knobs are one-line errors."""
        text = str(text).strip()
        m = re.fullmatch(r"([^\[\]]+?)(?:\[(.*)\])?", text)
        if not m:
            raise StrategyError(f"strategy {text!r} is not NAME or NAME[KNOB=VALUE,...]")
        base, inner = m.group(1).strip(), m.group(2)
        k = _ALTERNATING_K.fullmatch(base)
        if k and inner is None:
            base, inner = "alternating-k", f"every={k.group(1)}"
        strategy = lookup(base)
        knobs = knobs_of(strategy.schedule)
        given = {}
        for part in (p for p in (inner or "").split(",") if p.strip()):
            key, sep, value = part.partition("=")
            key = key.strip().replace("-", "_")
            if not sep:
                raise StrategyError(f"{text}: {part.strip()!r} is not KNOB=VALUE")
            if key not in knobs:
                raise StrategyError(f"{text}: {base} has no knob {key!r}{did_you_mean(key, knobs)}; "
                                    + (f"its knobs: {', '.join(knobs)}" if knobs else "it has no knobs"))
            given[key] = _parse_value(value, knobs[key][0], f"{text}: {key}")
        try:
            replace(strategy.schedule, **given)  # the schedule checks its own values
        except (ValueError, TypeError) as e:
            raise StrategyError(f"{text}: {e}") from None
        return cls(base, tuple((n, given[n]) for n in knobs if n in given and given[n] != knobs[n][1]))

    def schedule(self):
        return replace(lookup(self.base).schedule, **dict(self.knobs))

    def strategy(self):
        s = lookup(self.base)
        return replace(s, schedule=self.schedule())


LEGACY_MATCH = StrategyName("alternating-batch")  # the run named plain standard@flops is matched to it
STANDARD = StrategyName("standard")


@dataclass(frozen=True)
class RunName:
    """What a run in a folder is: a strategy, or standard stopped at `reference`'s budget
    (`budget` "flops" or "time": standard@flops=freezeout). Its text names its files."""
    strategy: StrategyName
    budget: str | None = None
    reference: StrategyName | None = None

    def __repr__(self):
        return f"RunName({str(self)!r})"

    # a RunName is its text, made canonical by parse(): equal to it and hashed like it, so that
    # summary.strategies["freezeout"] finds the RunName key and a name compares with its text
    def __eq__(self, other):
        if isinstance(other, (RunName, str)):
            return str(self) == str(other)
        return NotImplemented

    def __hash__(self):
        return hash(str(self))

    def __str__(self):
        if self.budget is None:
            return str(self.strategy)
        if self.reference == LEGACY_MATCH:
            return f"standard@{self.budget}"
        return f"standard@{self.budget}={self.reference}"

    @classmethod
    def parse(cls, text):
        text = str(text).strip()
        if not text.startswith("standard@"):
            return cls(StrategyName.parse(text))
        kind, sep, ref = text[len("standard@"):].partition("=")
        if kind not in ("flops", "time"):
            raise StrategyError(f"{text!r}: a matched-budget run is standard@flops=STRATEGY or "
                                f"standard@time=STRATEGY")
        return cls(STANDARD, kind, StrategyName.parse(ref) if sep else LEGACY_MATCH)

    @classmethod
    def matched(cls, budget, reference):
        return cls(STANDARD, budget, reference)

    @property
    def family(self):
        """The registered strategy whose variants this run's strategy is (None: a matched run)."""
        return None if self.budget else self.strategy.base


def lookup(name):
    """The registered Strategy `name`, or a one-line error with the closest names."""
    if name in STRATEGIES:
        return STRATEGIES[name]
    raise StrategyError(f"unknown strategy {name!r}{did_you_mean(name, STRATEGIES)}; see "
                        f"--list-strategies (a strategy of your own: --plugin FILE.py)")


def expand(spec):
    """'core', 'all', a comma list or a tuple -> tuple of RunNames, in order, without repeats.
    Commas inside [...] separate knobs, and `|` inside them gives one variant per value."""
    parts = _split_top(spec) if isinstance(spec, str) else [str(s) for s in spec]
    names = []
    for p in parts:
        if p == "core":
            names += [RunName.parse(n) for n in CORE]
        elif p == "all":
            names += [RunName.parse(n) for n in BUILTIN]
        else:
            names += [RunName.parse(v) for v in _variants(p)]
    return tuple(dict.fromkeys(names))


def _split_top(text):
    """Split at commas outside brackets: 'a,b[x=1,y=2]' -> ['a', 'b[x=1,y=2]']."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return [p.strip() for p in [*out, cur] if p.strip()]


def _variants(text):
    """'freezeout[t0=0.5|0.8,cubic=true|false]' -> the four names of the product."""
    m = re.fullmatch(r"([^\[\]]+)\[(.*)\]", text)
    if not m or "|" not in m.group(2):
        return [text]
    pairs = [p.partition("=") for p in m.group(2).split(",") if p.strip()]
    options = [[f"{k.strip()}={v.strip()}" for v in vals.split("|")] for k, _, vals in pairs]
    import itertools
    return [f"{m.group(1)}[{','.join(c)}]" for c in itertools.product(*options)]


# --- what a run records about its strategy -------------------------------------------------------
def _strategy_spec(name):
    s = name.strategy()
    cls = type(s.schedule)
    origin = code_origin(cls)
    return {"strategy": str(name), "registered": name.base, "schedule": cls.__name__,
            "knobs": {k: getattr(s.schedule, k) for k in knobs_of(s.schedule)},
            "options": {"reset_optimizer": s.reset_optimizer, "freeze_bn_stats": s.freeze_bn_stats},
            "code": {"kind": origin["kind"], "where": origin["where"], "fingerprint": origin["fingerprint"]}}


def spec(name):
    """What a run of `name` (a RunName) records about what it computes: the strategy, its
    schedule's class and every knob, the optimizer options, and where the schedule's code comes
    from with its fingerprint; a matched run also its budget and its reference's spec. Two runs
    compute the same thing only if their specs have the same identity."""
    if name.budget:
        return {**_strategy_spec(STANDARD), "budget": name.budget, "reference": _strategy_spec(name.reference)}
    return _strategy_spec(name.strategy)


def identity(spec_):
    """The part of a spec that decides what a run computes (where a file lies does not)."""
    code = spec_["code"]
    own = (spec_["schedule"], tuple(sorted(spec_["knobs"].items())), tuple(sorted(spec_["options"].items())),
           code["kind"] == "builtin", code["fingerprint"])
    return own + ((spec_["budget"], identity(spec_["reference"])) if spec_.get("budget") else ())


def _legacy(s):
    """A strategy spec as the code before specs computed it: every built-in at version 1."""
    if s["code"]["kind"] != "builtin":
        return None
    return {**s, "code": {**s["code"], "fingerprint": f"{s['schedule']} v1"}}


def legacy_spec(name):
    """The spec of a run saved before runs recorded one: its strategy (and a matched run's
    reference) a built-in at version 1; None when a name is not a built-in."""
    s = spec(name)
    own = _legacy({k: v for k, v in s.items() if k not in ("budget", "reference")})
    if own is None:
        return None
    if not name.budget:
        return own
    ref = _legacy(s["reference"])
    return None if ref is None else {**own, "budget": s["budget"], "reference": ref}


def spec_difference(old, new):
    """One phrase saying what differs between two specs (old -> new)."""
    if old["schedule"] != new["schedule"]:
        return f"its schedule class changed ({old['schedule']} -> {new['schedule']})"
    if old["code"]["fingerprint"] != new["code"]["fingerprint"] or \
            (old["code"]["kind"] == "builtin") != (new["code"]["kind"] == "builtin"):
        where = (old["code"]["where"] if old["code"]["where"] == new["code"]["where"] else
                 f"{old['code']['where']} -> {new['code']['where']}")
        return f"its schedule's code changed ({where}: {old['code']['fingerprint']} -> {new['code']['fingerprint']})"
    for k in sorted(set(old["knobs"]) | set(new["knobs"])):
        if old["knobs"].get(k) != new["knobs"].get(k):
            return f"knob {k} was {old['knobs'].get(k)!r}, now {new['knobs'].get(k)!r}"
    for k in sorted(set(old["options"]) | set(new["options"])):
        if old["options"].get(k) != new["options"].get(k):
            return f"option {k} was {old['options'].get(k)!r}, now {new['options'].get(k)!r}"
    if old.get("budget") and new.get("budget"):
        return "its reference: " + spec_difference(old["reference"], new["reference"])
    return "its spec differs"


# --- plugins -------------------------------------------------------------------------------------
def load_plugins(plugins):
    """Import each plugin (a .py file or an importable module) once per process, before any name
    is resolved; return [{"plugin", "path", "sha256", "strategies", "workloads"}] for config.json."""
    return [_loaded(p) for p in plugins]


def _loaded(plugin):
    import_plugin(plugin)
    return record(plugin)


def check_portable(names, in_workers):
    """Strategies registered by the script being run exist only in its own process: workers and
    SLURM jobs import plugins, not the script. Say so before anything starts."""
    if not in_workers:
        return
    for n in names:
        base = n.strategy.base
        if base in STRATEGIES and code_origin(type(STRATEGIES[base].schedule))["kind"] == "script":
            raise StrategyError(f"strategy {base!r} is registered by the script being run (__main__), which "
                                f"worker processes and SLURM jobs do not run; move it into a file and "
                                f"pass --plugin FILE.py")


# --- the listing ---------------------------------------------------------------------------------
def table_rows():
    """[name, knobs with defaults, what it does] for every registered strategy."""
    rows = []
    for n, s in STRATEGIES.items():
        knobs = ", ".join(f"{k}={format_value(d)}" for k, (_, d) in knobs_of(s.schedule).items())
        rows.append([n, knobs or "-", s.description])
    return rows


def halves_of(units, split):
    """halves[u] for an MLP with `units` units whose first `split` blocks are the first half."""
    return tuple(FIRST if u < split else SECOND for u in range(units))
