"""The schedule API: which units train at each step, and how fast.

A unit is a hidden block or the head (`FreezableMLP.units()`, the head last). A schedule is a
small frozen dataclass whose fields are its knobs (`freezeout[t0=0.5]` sets one on the command
line). It has one required method,

    factors(epoch, step, run, state) -> one learning-rate factor per unit (0: frozen)

and optional ones, all with defaults here:

- `phase(epoch, step, run, factors)`: a `reset_optimizer` strategy re-creates its optimizer
  when the phase changes; by default the phase is the set of trainable units.
- `eval_frozen` (class attribute): frozen units run in eval mode (BatchNorm's running
  statistics, no dropout), as FreezeOut's do. Default off.
- The closed loop: `start(run) -> state` and `observe(state, obs, run) -> state`. A schedule that
  overrides `observe` gets an `Observation` at every epoch end (losses and accuracies of training
  and validation, never of the test set; with `observes`, per-unit measures: `obs["grad_norm"]`),
  and `factors` sees the state it returned. The state goes into every checkpoint, so it must be
  plain data (numbers, tuples, lists, dicts). One epoch numbering: `factors` gets the 0-based
  epoch in progress; `obs.epochs_done` counts the epochs finished, which is the epoch the next
  `factors` call gets.
- Measures (`observes = ("relative_weight_change", ...)`): functions of a unit's parameters now,
  their values at the last observation and the gradients it was trained with since, registered
  with `@measure(name, grads=..., last=...)`; a plugin registers its own the same way. The loop
  sums gradients on the device after each backward pass (no host sync per step), and only for
  the measures a schedule asks for; each is computed once per epoch.
- `version` (class attribute): bump it whenever a built-in schedule's factors change, so that
  runs made with the old code are never reused (tests/test_golden.py holds it to that).

Everything here is a pure function of (knobs, epoch, step, run shape, seed, state), so a
resumed run computes what an uninterrupted one does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from models import FIRST, SECOND  # the halves
from plugins import did_you_mean

BOTH = (FIRST, SECOND)


class MeasureError(ValueError):
    """An unknown measure, or one registered twice; its message is one line."""


@dataclass(frozen=True)
class Measure:
    """fn(unit: UnitView) -> a number (or None), for every unit at every epoch end."""
    fn: object
    grads: bool = False  # needs the gradients summed over the steps the unit trained since the last observation
    last: bool = False   # needs the unit's parameters at the last observation


MEASURES: dict[str, Measure] = {}


def measure(name, *, grads=False, last=False):
    """Register fn(unit) -> number as the measure `name`, for schedules that list it in `observes`."""
    def add(fn):
        if name in MEASURES and MEASURES[name].fn.__module__ != fn.__module__:
            raise MeasureError(f"measure {name!r} is already registered (in {MEASURES[name].fn.__module__})")
        MEASURES[name] = Measure(fn, grads, last)
        return fn
    return add


def measures_of(schedule, who=None):
    """{name: Measure} of what `schedule` observes; an unknown name is a one-line MeasureError."""
    out = {}
    for name in schedule.observes:
        if name not in MEASURES:
            raise MeasureError(f"{who or type(schedule).__name__} observes {name!r}, which is not a measure"
                               + did_you_mean(name, MEASURES)
                               + f"; measures: {', '.join(MEASURES)} (register one with schedules.measure)")
        out[name] = MEASURES[name]
    return out


@dataclass(frozen=True)
class UnitView:
    """One unit as a measure sees it, on its device: `params` now, `last` at the last observation
    (with last=True), `grad_sum` over the `steps` it trained since then (with grads=True)."""
    params: list
    last: list | None = None
    grad_sum: list | None = None
    steps: int = 0


def norm(tensors):
    """The L2 norm of a list of tensors as one vector (in float64)."""
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors))


@measure("grad_norm", grads=True)
def grad_norm(u):
    """The L2 norm of the unit's mean gradient over the steps it trained (None: it did not train)."""
    return norm(u.grad_sum) / u.steps if u.steps else None


@measure("weight_change", last=True)
def weight_change(u):
    """||W - W_last||: how far its parameters moved since the last observation."""
    return math.sqrt(sum(float((p.detach().double() - q.double()).pow(2).sum()) for p, q in zip(u.params, u.last)))


@measure("weight_norm")
def weight_norm(u):
    """||W||."""
    return norm([p.detach() for p in u.params])


@measure("relative_weight_change", last=True)
def relative_weight_change(u):
    """||W - W_last|| / ||W_last||: the change relative to where the parameters stood."""
    ref = norm(u.last)
    return weight_change(u) / ref if ref else None


@measure("grad_to_weight", grads=True)
def grad_to_weight(u):
    """||mean gradient|| / ||W||."""
    g, w = grad_norm(u), weight_norm(u)
    return g / w if g is not None and w else None


@dataclass(frozen=True)
class RunShape:
    """What a schedule may know about the run it drives."""
    units: int                # hidden blocks + head; the head is unit units - 1
    halves: tuple             # halves[u]: FIRST or SECOND, the half unit u belongs to
    steps_per_epoch: int | None
    total_steps: int | None   # the step at which the run ends (a matched budget may end it early)
    seed: int = 0

    @property
    def hidden(self):
        return self.units - 1


@dataclass(frozen=True)
class Observation:
    """What a closed-loop schedule sees after an epoch: training and validation figures only
    (selection stays honest: no test metric is ever passed in), and the measures it observes, per
    unit: obs["relative_weight_change"][u]."""
    epochs_done: int            # epochs finished: the 0-based epoch the next factors() call gets
    steps_done: int             # steps finished
    train_loss: float
    train_acc: float
    val_loss: float | None      # None without a validation split
    val_acc: float | None
    measures: dict = field(default_factory=dict)  # name -> (value per unit, ...)

    def __getitem__(self, name):
        if name not in self.measures:
            raise MeasureError(f"this observation has no measure {name!r}: list it in the schedule's observes "
                               f"(it has {', '.join(self.measures) or 'none'})")
        return self.measures[name]

    epoch = property(lambda self: self.epochs_done)  # the names of earlier versions
    step = property(lambda self: self.steps_done)
    grad_norm = property(lambda self: self.measures.get("grad_norm"))
    weight_change = property(lambda self: self.measures.get("weight_change"))


class Schedule:
    """Base class of every schedule; subclass it as a frozen dataclass and define `factors`."""
    eval_frozen = False   # frozen units keep train-mode BatchNorm and dropout
    observes = ()         # the measures a closed-loop schedule asks for, by name (see MEASURES)
    version = 1

    def factors(self, epoch, step, run, state):
        raise NotImplementedError(f"{type(self).__name__} must define factors(epoch, step, run, state)")

    def phase(self, epoch, step, run, factors):
        return frozenset(u for u, f in enumerate(factors) if f > 0)

    def start(self, run):
        return None

    def observe(self, state, obs, run):
        return state

    @classmethod
    def closed_loop(cls):
        return cls.observe is not Schedule.observe

    def at(self, epoch, step, run, state=None):
        """(phase, factors) at (0-based) `epoch` and global `step`."""
        factors = tuple(self.factors(epoch, step, run, state))
        return self.phase(epoch, step, run, factors), factors


def on(trainable, run, factor=1.0):
    """Factors that train exactly the units in `trainable`, at `factor`."""
    return tuple(factor if u in trainable else 0.0 for u in range(run.units))


# --- built-in schedules -------------------------------------------------------------------------
@dataclass(frozen=True)
class AllUnits(Schedule):
    """Every unit, every step: standard training."""

    def factors(self, epoch, step, run, state):
        return on(range(run.units), run)


@dataclass(frozen=True)
class Phases(Schedule):
    """Alternation of halves: phase p = t // every, with t counting epochs or batches (`unit`);
    phase p trains the halves in phases[p % len(phases)]."""
    phases: tuple = field(default=(BOTH,), metadata={"knob": False})  # not settable from a name
    every: int = 1
    unit: str = "epoch"  # "epoch" or "batch"

    def __post_init__(self):
        if self.unit not in ("epoch", "batch") or self.every < 1:
            raise ValueError(f"bad schedule: every must be at least 1 and unit epoch or batch, got "
                             f"every={self.every}, unit={self.unit!r}")

    def index(self, epoch, step):
        return (epoch if self.unit == "epoch" else step) // self.every

    def trainable(self, index):
        return self.phases[index % len(self.phases)]

    def phase(self, epoch, step, run, factors):
        return self.index(epoch, step)

    def factors(self, epoch, step, run, state):
        halves = self.trainable(self.index(epoch, step))
        return on({u for u in range(run.units) if run.halves[u] in halves}, run)


def alternating(every=1, unit="epoch"):
    """First half for `every` epochs or batches, then the second half, and so on."""
    return Phases(phases=((FIRST,), (SECOND,)), every=every, unit=unit)


@dataclass(frozen=True)
class TwoTimescale(Phases):
    """GAN-style: the halves alternate every batch, each at its own multiple of the lr (the
    two-timescale rule, Heusel et al. 2017: the second half 4x the first)."""
    phases: tuple = field(default=((FIRST,), (SECOND,)), metadata={"knob": False})
    unit: str = "batch"
    first_lr: float = 1.0
    second_lr: float = 4.0

    def __post_init__(self):
        super().__post_init__()
        if not (self.first_lr > 0 and self.second_lr > 0):
            raise ValueError("first_lr and second_lr must be positive")

    def factors(self, epoch, step, run, state):
        halves = self.trainable(self.index(epoch, step))
        rate = (self.first_lr, self.second_lr)
        return tuple(rate[run.halves[u]] if run.halves[u] in halves else 0.0 for u in range(run.units))


@dataclass(frozen=True)
class FreezeOut(Schedule):
    """FreezeOut (Brock et al. 2017): hidden block i trains until fraction
    t_i = s(t0 + (1 - t0) i / L) of the run (L hidden blocks, s(x) = x^3 when cubic), its lr
    cosine-annealed from alpha_i = 1/t_i (scaled) to 0 at t_i; frozen blocks run in eval mode.
    The head is never frozen: its lr anneals from 1 to 0 over the whole run."""
    t0: float = 0.8
    cubic: bool = True
    scale_lr: bool = True
    eval_frozen = True

    def __post_init__(self):
        if not 0 < self.t0 <= 1:
            raise ValueError(f"t0 must be in (0, 1], got {self.t0}")

    def stop_fraction(self, unit, run):
        if unit == run.hidden:
            return 1.0
        x = self.t0 + (1 - self.t0) * unit / run.hidden
        return x ** 3 if self.cubic else x

    def factors(self, epoch, step, run, state):
        out = []
        for u in range(run.units):
            t_i = self.stop_fraction(u, run)
            end = t_i * run.total_steps
            alpha = 1.0 / t_i if self.scale_lr else 1.0
            out.append(0.0 if step >= end else alpha * 0.5 * (1 + math.cos(math.pi * step / end)))
        return tuple(out)


@dataclass(frozen=True)
class LayerFreezing(Schedule):
    """MosaicML Composer's LayerFreezing: at each epoch end, with p the fraction of training
    done, frac = freeze_level (p - freeze_start) / (1 - freeze_start) when p > freeze_start, and
    the first floor(frac (N - 1)) blocks freeze (N units: blocks and head). Optimizer state is
    kept; frozen blocks' BatchNorm and dropout keep running."""
    freeze_start: float = 0.5
    freeze_level: float = 1.0

    def __post_init__(self):
        if not 0 <= self.freeze_start < 1 or not 0 <= self.freeze_level <= 1:
            raise ValueError(f"freeze_start must be in [0, 1) and freeze_level in [0, 1], got "
                             f"{self.freeze_start} and {self.freeze_level}")

    def frozen_blocks(self, epoch, run):
        epochs = run.total_steps / run.steps_per_epoch
        p = epoch / epochs  # after `epoch` epochs, when the next one starts
        if p <= self.freeze_start:
            return 0
        frac = self.freeze_level * (p - self.freeze_start) / (1 - self.freeze_start)
        return min(run.hidden, math.floor(frac * (run.units - 1)))

    def factors(self, epoch, step, run, state):
        return on(set(range(self.frozen_blocks(epoch, run), run.units)), run)


@dataclass(frozen=True)
class CyclicBlocks(Schedule):
    """Block coordinate descent as in BAdam (Luo et al. 2024): every hidden block and the head is
    its own group, one group trains for K steps, in ascending, descending or random order (a
    fresh permutation per round, drawn from the run's seed). K defaults to BAdam's
    max(n / (B D), 50) steps: an epoch's steps over the D groups, at least 50."""
    every: int | None = None
    order: str = "ascending"

    def __post_init__(self):
        if self.order not in ("ascending", "descending", "random"):
            raise ValueError(f"bad order {self.order!r}: ascending, descending or random")
        if self.every is not None and self.every < 1:
            raise ValueError(f"every must be at least 1 (or none for BAdam's rule), got {self.every}")

    def steps_per_block(self, run):
        return self.every or max(math.ceil(run.steps_per_epoch / run.units), 50)

    def active(self, step, run):
        slot = step // self.steps_per_block(run)
        rnd, pos = divmod(slot, run.units)
        if self.order == "ascending":
            return pos
        if self.order == "descending":
            return run.units - 1 - pos
        return int(np.random.default_rng([run.seed, rnd, 0xB10C]).permutation(run.units)[pos])

    def phase(self, epoch, step, run, factors):
        return step // self.steps_per_block(run)  # a new block each slot (random order may repeat one)

    def factors(self, epoch, step, run, state):
        return on({self.active(step, run)}, run)


@dataclass(frozen=True)
class LayerOut(Schedule):
    """LayerOut (Goutam et al. 2020), as the paper describes it: at each epoch every hidden
    block freezes with probability p_i = p_max (i + 1) / L (deeper blocks more often), drawn
    from the run's seed and the epoch; the head always trains; one persistent optimizer."""
    p_max: float = 0.5

    def __post_init__(self):
        if not 0 <= self.p_max <= 1:
            raise ValueError(f"p_max must be in [0, 1], got {self.p_max}")

    def freeze_probability(self, unit, run):
        return self.p_max * (unit + 1) / run.hidden

    def frozen(self, epoch, run):
        draws = np.random.default_rng([run.seed, epoch, 0x1A7E]).random(run.hidden)
        return frozenset(u for u in range(run.hidden) if draws[u] < self.freeze_probability(u, run))

    def factors(self, epoch, step, run, state):
        return on(set(range(run.units)) - self.frozen(epoch, run), run)


@dataclass(frozen=True)
class AutoFreeze(Schedule):
    """AutoFreeze (Liu et al. 2021), adapted: every `every` epochs, each trainable unit's gradient
    norm (of its mean gradient over the interval) is compared with the previous interval's; the
    relative change |G - G_prev| / G_prev of every trainable unit, head included, sets a
    threshold at its `percentile`; the leading trainable hidden blocks whose change falls below
    it freeze, up to the first that does not. Frozen blocks never thaw; the head never freezes."""
    percentile: float = 50.0
    every: int = 1
    observes = ("grad_norm",)

    def __post_init__(self):
        if not 0 <= self.percentile <= 100 or self.every < 1:
            raise ValueError(f"percentile must be in [0, 100] and every at least 1, got "
                             f"{self.percentile} and {self.every}")

    def start(self, run):
        return {"frozen": 0, "previous": None, "frozen_at": []}  # frozen_at[i]: epoch block i froze

    def observe(self, state, obs, run):
        if obs.epochs_done % self.every:
            return state
        now = obs["grad_norm"]
        prev, k = state["previous"], state["frozen"]
        state = {**state, "previous": list(now)}
        if prev is None:
            return state
        live = [u for u in range(k, run.units) if now[u] is not None and prev[u]]
        if not live:
            return state
        change = {u: abs(now[u] - prev[u]) / prev[u] for u in live}
        threshold = float(np.percentile([change[u] for u in live], self.percentile))
        while k < run.hidden and k in change and change[k] < threshold:
            k += 1
        return {**state, "frozen": k, "frozen_at": state["frozen_at"] + [obs.epochs_done] * (k - state["frozen"])}

    def factors(self, epoch, step, run, state):
        return on(set(range(state["frozen"], run.units)), run)


@dataclass(frozen=True)
class LISA(Schedule):
    """LISA (Pan et al. 2024), layerwise importance sampling: the first unit (the embeddings) and
    the head always train; of the N - 2 middle units, `gamma` chosen uniformly at random (without
    replacement) train for `every` steps, then a fresh draw, from (the run's seed, the period).
    With fewer middle units than gamma, all of them train. Optimizer state is kept across draws."""
    gamma: int = 2
    every: int = 20

    def __post_init__(self):
        if self.gamma < 1 or self.every < 1:
            raise ValueError(f"gamma and every must be at least 1, got {self.gamma} and {self.every}")

    def middle(self, step, run):
        """The middle units that train at `step`."""
        middle = list(range(1, run.units - 1))
        if len(middle) <= self.gamma:
            return frozenset(middle)
        draw = np.random.default_rng([run.seed, step // self.every, 0x115A]).choice(len(middle), self.gamma,
                                                                                     replace=False)
        return frozenset(middle[i] for i in draw)

    def phase(self, epoch, step, run, factors):
        return step // self.every

    def factors(self, epoch, step, run, state):
        return on({0, run.units - 1} | self.middle(step, run), run)


@dataclass(frozen=True)
class GradualUnfreezing(Schedule):
    """Gradual unfreezing (ULMFiT, Howard and Ruder 2018): epoch e trains the top
    1 + floor(e / every) units (the head first, then one more unit below it every `every` epochs),
    everything once all N are unfrozen: layer freezing reversed."""
    every: int = 1

    def __post_init__(self):
        if self.every < 1:
            raise ValueError(f"every must be at least 1, got {self.every}")

    def factors(self, epoch, step, run, state):
        top = min(run.units, 1 + epoch // self.every)
        return on(set(range(run.units - top, run.units)), run)
