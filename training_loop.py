"""One training loop driven by schedule data: which units train, and how fast, at each step.

A unit is a hidden block or the head. A schedule (schedules.py) maps (epoch, step) to one
learning-rate factor per unit (0 means frozen); a run-wide learning-rate schedule (constant,
cosine, linear, with warmup) multiplies them. `Member` holds everything about one run that is not
the model step: its schedule and closed-loop state, its budget, its bookkeeping and its history.
`run_members` is the loop; a stepper does the model step: `ModuleStep` trains one nn.Module (the
reference engine), `pack.PackStep` trains many runs as one batched model. `train()` is the loop
for one model, and `train_standard`, `train_alternating` and `train_alternating_batch` are thin
presets over it.
"""
from __future__ import annotations

import copy
import math
import random
import resource
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import flops as flop_count
from config import LR_SCHEDULES, PRECISIONS, Config  # noqa: F401 (PRECISIONS: re-exported)
from models import FIRST, SECOND
from records import HISTORY_KEYS, VALIDATION_KEYS, Epoch  # noqa: F401 (VALIDATION_KEYS: re-exported)
from schedules import BOTH, AllUnits, Observation, RunShape, Schedule, UnitView, alternating, measures_of
from workloads import lookup as workload_of

STANDARD = AllUnits()
ENGINE = "single/1"  # the reference engine; a change to what its step computes gets a new number


def lr_multiplier(kind, step, total_steps, warmup_steps=0):
    """The run-wide lr factor at `step` (0-based): linear warmup from 1/warmup_steps to 1, then
    constant, or a cosine or linear decay that reaches 0 at total_steps, the end of the last step."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    q = min(1.0, (step - warmup_steps) / max(total_steps - warmup_steps, 1))
    if kind == "cosine":
        return 0.5 * (1 + math.cos(math.pi * q))
    if kind == "linear":
        return 1.0 - q
    raise ValueError(f"unknown lr schedule {kind!r} (choose {', '.join(LR_SCHEDULES)})")


def pick_device(name="auto"):
    """'auto' means CUDA if available, then MPS, else CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def fast_bf16(device):
    """Whether bf16 matmuls run natively on `device`: a CUDA GPU that supports bf16, or a CPU
    with AVX512-BF16 or AMX (Linux's /proc/cpuinfo flags); elsewhere bf16 is emulated and slow."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def make_optimizer(name, param_groups, lr, weight_decay=0.0, momentum=0.9, device="cpu"):
    """Adam (default; weight decay as L2, added to the gradient), AdamW (decoupled weight decay)
    or SGD with momentum, over explicit parameter groups.

    Fused kernels on CPU and CUDA (one pass over each tensor; on this 2-core CPU
    Adam's step drops from 3.5 ms with foreach to 0.9 ms). Optimizers skip
    parameters whose .grad is None, which is what keeps frozen parameters untouched.
    """
    fast = {"fused": True} if torch.device(device).type in ("cpu", "cuda") else {"foreach": True}
    if name == "adam":
        return torch.optim.Adam(param_groups, lr=lr, weight_decay=weight_decay, **fast)
    if name == "adamw":  # decoupled: w -= lr * wd * w, apart from the adaptive step
        return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay, **fast)
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               **fast)
    raise ValueError(f"unknown optimizer {name!r} (choose adam, adamw or sgd)")


class Stopwatch:
    """Wall time of a region on `device`: CUDA events recorded on that GPU's stream (not the
    current GPU's), MPS and CPU by perf_counter after a synchronisation, so queued work counts."""

    def __init__(self, device):
        self.device = torch.device(device)

    def start(self):
        if self.device.type == "cuda":
            with torch.cuda.device(self.device):
                self._start = torch.cuda.Event(enable_timing=True)
                self._start.record()
        else:
            synchronize(self.device)
            self._t0 = time.perf_counter()

    def stop(self):
        """Seconds since start(); synchronises once."""
        if self.device.type == "cuda":
            with torch.cuda.device(self.device):
                end = torch.cuda.Event(enable_timing=True)
                end.record()
                end.synchronize()
            return self._start.elapsed_time(end) / 1000.0
        synchronize(self.device)
        return time.perf_counter() - self._t0


def synchronize(device):
    """Wait for the work queued on `device` (GPUs run behind the host)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@contextmanager
def tf32_matmuls():
    """TF32 tensor-core matmuls (cuBLAS and cuDNN) for everything inside, forward and backward;
    the previous flags come back on exit. The flags only matter on CUDA."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def training_numerics(precision="fp32", device="cpu"):
    """What spans a whole training loop, backward passes included: TF32 matmuls for tf32
    (autocast, for bf16, wraps only each forward pass: see precision_context)."""
    if precision == "tf32":
        if torch.device(device).type != "cuda":
            raise ValueError("precision tf32 needs a CUDA device")
        return tf32_matmuls()
    return nullcontext()


@contextmanager
def precision_context(precision="fp32", device="cpu"):
    """The numerics of a forward pass. fp32: plain float32. bf16: autocast to bfloat16 (weights,
    gradients and optimizer state stay float32; on CPUs with avx512_bf16 and on GPUs the GEMMs
    run about 2-4x faster). tf32: float32 storage with TF32 tensor-core matmuls (CUDA only;
    train() keeps them on through the backward pass too, see training_numerics)."""
    device = torch.device(device)
    if precision == "fp32":
        yield
    elif precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    elif precision == "tf32":
        if device.type != "cuda":
            raise ValueError("precision tf32 needs a CUDA device")
        with tf32_matmuls():
            yield
    else:
        raise ValueError(f"unknown precision {precision!r} (choose {', '.join(PRECISIONS)})")


@torch.inference_mode()
def evaluate_model(model, loader, device=None, precision="fp32"):
    """(mean cross-entropy in nats, accuracy in %) over `loader`, with one host sync; predictions
    are over the logits' last dimension (an image's class, or every next character)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with precision_context(precision, device):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.flatten(0, -2).float(), y.flatten(), reduction="sum")
        correct += (logits.argmax(-1) == y).sum()
        n += y.numel()
    model.train(was_training)
    return loss_sum.item() / n, 100.0 * correct.item() / n


def rng_state(device="cpu"):
    """Every random number generator a run draws from (dropout uses torch's global one and, on
    a GPU, that GPU's own): only the run's device, so that a run resumes on any GPU, or on a
    node with fewer GPUs, with the same dropout stream."""
    device = torch.device(device)
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if device.type == "cuda":
        state["device"] = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        state["device"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state, device="cpu"):
    device = torch.device(device)
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "device" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["device"], device)
    elif "device" in state and device.type == "mps":
        torch.mps.set_rng_state(state["device"])


class Progress:
    """A progress bar on stderr when it is a terminal; nothing anywhere else (a log file, CI,
    SLURM's output, a notebook), where callers print one plain line per finished run instead."""

    def __init__(self, total=None, desc=None, enabled=True):
        self.shown = bool(enabled) and sys.stderr.isatty()
        self.bar = tqdm(total=total, desc=desc, leave=False, file=sys.stderr) if self.shown else None

    def update(self, n=1):
        if self.bar is not None:
            self.bar.update(n)

    def postfix(self, **values):
        if self.bar is not None:
            self.bar.set_postfix(**values)

    def write(self, line):
        """A line above the bar (or just the line, without one)."""
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class ScheduleError(ValueError):
    """A schedule returned factors the loop cannot use; its message is one line naming the
    strategy, epoch and step."""


def check_factors(factors, run, name, epoch, step):
    """`factors` as floats, after checking what the loop needs of them: one per unit, finite,
    not negative, and at least one above 0."""
    where = f"strategy {name}: factors(epoch={epoch}, step={step})"
    try:
        factors = tuple(float(f) for f in factors)
    except (TypeError, ValueError):
        raise ScheduleError(f"{where} returned {factors!r}, not a sequence of numbers") from None
    if len(factors) != run.units:
        raise ScheduleError(f"{where} returned {len(factors)} factors for {run.units} units (one per hidden "
                            f"block, then the head)")
    for u, f in enumerate(factors):
        if not math.isfinite(f):
            raise ScheduleError(f"{where} returned {f} for unit {u}: factors must be finite")
        if f < 0:
            raise ScheduleError(f"{where} returned {f:g} for unit {u}: factors multiply the learning rate, "
                                f"0 freezes a unit and a negative one is not allowed")
    if not any(f > 0 for f in factors):
        raise ScheduleError(f"{where} returned only zeros: at least one unit must train at every step")
    return factors


@dataclass(frozen=True)
class TrainSpec:
    """One run: the settings it trains with (a Config: epochs, lr, optimizer, weight decay, lr
    schedule, warmup, precision, the workload and its loss) and what its strategy and budget add."""
    settings: Config = field(default_factory=Config)
    schedule: Schedule = STANDARD
    seed: int = 0                    # schedules that draw (cyclic blocks in random order, LayerOut) use it
    reset_optimizer: bool = False    # re-create the optimizer at every phase change
    freeze_bn_stats: bool = False    # frozen units' BatchNorm running statistics stay fixed too
    total_steps: int | None = None   # where the lr schedule ends (a matched budget's steps); default all
    max_flops: float | None = None   # stop before a step would exceed this many training FLOPs
    max_seconds: float | None = None  # stop once this many training seconds are spent
    name: str = "run"                # how messages name the run's strategy

    @classmethod
    def of(cls, cfg, name, **run):
        """What a run of `name` (a strategies.RunName) trains with under `cfg`, its budget aside."""
        s = name.strategy.strategy()
        return cls(cfg, s.schedule, reset_optimizer=s.reset_optimizer, name=str(name),
                   freeze_bn_stats=cfg.freeze_bn_stats if s.freeze_bn_stats is None else s.freeze_bn_stats, **run)

    def loss(self):
        """The training loss (logits, targets) -> scalar of the run's workload."""
        w, s = workload_of(self.settings.workload), self.settings.model_settings()
        return lambda logits, y: w.loss(logits, y, s)


LEGACY_OPTIONS = {"num_epochs": "epochs", "learning_rate": "lr"}  # train()'s names in the earlier public API


def spec_from_options(schedule=STANDARD, **options):
    """A TrainSpec from train()'s keyword options: Config's settings (epochs, lr, optimizer, ...; the
    earlier API's num_epochs and learning_rate too) and TrainSpec's own fields (seed, ...)."""
    own = {f.name for f in fields(TrainSpec)} - {"settings", "schedule"}
    settings = {LEGACY_OPTIONS.get(k, k): v for k, v in options.items() if k not in own}
    return TrainSpec(Config(**settings), schedule, **{k: v for k, v in options.items() if k in own})


@dataclass(frozen=True)
class StepPlan:
    """One step of one run, as its schedule and budget decide it."""
    trainable: frozenset   # units with a factor above 0
    lrs: tuple             # per unit: lr x run-wide multiplier x factor
    reset: bool            # re-create the optimizer before this step
    halves: frozenset      # halves with a trainable unit
    flops: int             # training FLOPs of the step
    params: int            # scalar parameters it updates
    size: int              # batch size (images, or windows of text)


class Member:
    """One run inside a training loop: its schedule and closed-loop state, its budget, its
    counters and history; everything except the model step, which the engine's stepper does."""

    def __init__(self, spec, run, unit_sizes, flops_per_sample, resume=None):
        self.spec, self.run = spec, run
        self.sizes, self.flops_per_sample = unit_sizes, flops_per_sample  # trainable set -> FLOPs/sample
        self.warmup_steps = spec.settings.warmup_epochs * (run.steps_per_epoch or 0)
        self.costs = {}
        # where the run stands between epochs; with the stepper's states this is all a resume needs
        self.at = {"step": 0, "phase": None, "total_flops": 0, "total_seconds": 0.0,
                   "schedule_state": spec.schedule.start(run)}
        self.history = {k: [] for k in HISTORY_KEYS}
        if resume is not None:
            self.at = {"schedule_state": self.at["schedule_state"], **resume["at"]}
            self.history = {k: list(resume["history"].get(k, [])) for k in HISTORY_KEYS}
        self.live, self.lost = True, False
        self.new_epoch()

    @classmethod
    def of(cls, model, loader, spec, flops_per_sample, resume=None):
        """The member of a run of `spec` training `model` (its units, halves and parameter counts)
        on `loader` (its steps per epoch; None for an iterable without a length)."""
        units = model.units()
        per_epoch = len(loader) if hasattr(loader, "__len__") else None
        run = RunShape(len(units), model.halves(), per_epoch,
                       spec.total_steps or (per_epoch and spec.settings.epochs * per_epoch), spec.seed)
        return cls(spec, run, [sum(p.numel() for p in m.parameters()) for m in units], flops_per_sample, resume)

    @property
    def epochs_done(self):
        return len(self.history["epoch"])

    def new_epoch(self):
        self.steps = self.steps_first = self.steps_second = self.updates = self.flops = 0
        self.out_of_budget = False

    def cost(self, trainable):
        if trainable not in self.costs:
            self.costs[trainable] = (frozenset(self.run.halves[u] for u in trainable),
                                     self.flops_per_sample(trainable), sum(self.sizes[u] for u in trainable))
        return self.costs[trainable]

    def plan(self, epoch, size, elapsed=None):
        """The next step, or None once the budget allows no more (the run then ends this epoch)."""
        if self.out_of_budget:
            return None
        spec, at = self.spec, self.at
        raw = spec.schedule.factors(epoch, at["step"], self.run, at["schedule_state"])
        factors = check_factors(raw, self.run, spec.name, epoch, at["step"])
        phase = spec.schedule.phase(epoch, at["step"], self.run, factors)
        trainable = frozenset(u for u, f in enumerate(factors) if f > 0)
        halves, per_sample, params = self.cost(trainable)
        flops = per_sample * size
        if (spec.max_flops is not None and at["total_flops"] + self.flops + flops > spec.max_flops) or \
                (spec.max_seconds is not None and at["total_seconds"] + elapsed() > spec.max_seconds):
            self.out_of_budget = True
            return None
        reset = spec.reset_optimizer and at["phase"] is not None and phase != at["phase"]
        at["phase"] = phase
        mult = lr_multiplier(spec.settings.lr_schedule, at["step"], self.run.total_steps, self.warmup_steps)
        lrs = tuple(spec.settings.lr * mult * f for f in factors)
        return StepPlan(trainable, lrs, reset, halves, flops, params, size)

    def account(self, plan):
        self.at["step"] += 1
        self.steps += 1
        self.steps_first += FIRST in plan.halves
        self.steps_second += SECOND in plan.halves
        self.updates += plan.params
        self.flops += plan.flops

    def end_epoch(self, epoch, loss_sum, correct, count, seconds, val, test, eval_seconds):
        """Record the epoch (if it took a step). True when the run stands where it can go on
        from: it took a step, did not diverge and was not stopped by its budget (its last epoch
        included); `live` says whether another epoch follows."""
        self.at["total_flops"] += self.flops
        self.at["total_seconds"] += seconds
        if self.steps == 0:
            self.live = False
            return False
        train_loss, train_acc = loss_sum / max(count, 1), 100.0 * correct / max(count, 1)
        diverged = not all(math.isfinite(v) for v in (train_loss, test[0], val[0] if val[0] is not None else 0.0))
        row = Epoch(epoch + 1, train_loss, train_acc, *val, *test, seconds, eval_seconds, self.steps,
                         self.steps_first, self.steps_second, self.updates, self.flops, diverged)
        for k, v in asdict(row).items():
            self.history[k].append(v)
        keep = not (diverged or self.out_of_budget)
        self.live = keep and self.epochs_done < self.spec.settings.epochs
        return keep

    def note_memory(self, peaks):
        """Keep each memory figure at its peak over the run (a resumed run keeps its earlier peaks)."""
        old = self.at.get("memory", {})
        self.at["memory"] = {k: max(v, old.get(k, 0)) for k, v in peaks.items()}

    def observe(self, measures):
        """Hand a closed-loop schedule what the epoch showed (validation, never test)."""
        h = self.history
        obs = Observation(h["epoch"][-1], self.at["step"], h["train_loss"][-1], h["train_acc"][-1],
                          h["val_loss"][-1], h["val_acc"][-1], measures)
        self.at["schedule_state"] = self.spec.schedule.observe(self.at["schedule_state"], obs, self.run)

    def snapshot(self):
        """A copy: a snapshot kept in memory must not grow with the run it was taken from."""
        return copy.deepcopy({"at": self.at, "history": self.history})

    def fitted(self):
        return Fitted(self.history, self.at["schedule_state"], dict(self.at.get("memory", {})))


class _Optimizers:
    """The optimizer of a run: one over every unit, each unit its own parameter group, so that
    a schedule can give each its own learning rate. `build` again is a reset."""

    def __init__(self, model, spec, device):
        self.model, self.spec, self.device = model, spec, device
        self.build()

    def build(self):
        s = self.spec.settings
        groups = [{"params": list(m.parameters()), "lr": s.lr, "unit": u}
                  for u, m in enumerate(self.model.units())]
        self.opt = make_optimizer(s.optimizer, groups, s.lr, s.weight_decay,
                                  device=self.device)

    def set_lr(self, lrs):
        for g in self.opt.param_groups:
            g["lr"] = lrs[g["unit"]]

    def step(self):
        self.opt.step()

    def state_dict(self):
        return [self.opt.state_dict()]

    def load_state_dict(self, states):
        self.opt.load_state_dict(states[0])


class UnitMeter:
    """The measures a closed-loop schedule observes (schedules.MEASURES), per unit, between
    observations: gradients summed on the device after each backward pass (no host sync per step)
    and parameters kept from the last observation, each only where a measure needs it."""

    def __init__(self, unit_params, measures):
        self.params, self.measures = unit_params, measures  # [[tensor, ...] per unit], {name: Measure}
        self.grads = any(m.grads for m in measures.values())
        self.weights = any(m.last for m in measures.values())
        self.reset()

    def reset(self):
        if self.grads:
            self.sums = [[torch.zeros_like(p) for p in ps] for ps in self.params]
            self.counts = [0] * len(self.params)
        if self.weights:
            self.last = [[p.detach().clone() for p in ps] for ps in self.params]

    def add(self, trainable, grads):
        """After a backward pass: grads[u] are unit u's gradients (None where frozen)."""
        if not self.grads:
            return
        for u in trainable:
            torch._foreach_add_(self.sums[u], grads[u])
            self.counts[u] += 1

    def read(self):
        """{measure: (value per unit)} since the last read, then start over."""
        views = [UnitView(ps, self.last[u] if self.weights else None, self.sums[u] if self.grads else None,
                          self.counts[u] if self.grads else 0) for u, ps in enumerate(self.params)]
        out = {name: tuple(m.fn(v) for v in views) for name, m in self.measures.items()}
        self.reset()
        return out


class MemoryPeaks:
    """The bytes of trainable parameters and of optimizer state, at their peaks over a run: what
    BAdam and LISA set out to save. Measured after the first step of every new trainable set (state
    only grows while the set stays the same) and after every optimizer reset."""

    def __init__(self, unit_params):
        self.unit_bytes = [sum(p.numel() * p.element_size() for p in ps) for ps in unit_params]
        self.trainable_bytes = self.state_bytes = 0
        self.seen = None

    def after_step(self, plan, state_bytes):
        """After an optimizer step; state_bytes() counts the optimizer's state then."""
        if plan.trainable == self.seen and not plan.reset:
            return
        self.seen = plan.trainable
        self.trainable_bytes = max(self.trainable_bytes, sum(self.unit_bytes[u] for u in plan.trainable))
        self.state_bytes = max(self.state_bytes, state_bytes())

    def peaks(self):
        return {"trainable_param_bytes": self.trainable_bytes, "optimizer_state_bytes": self.state_bytes}


def optimizer_state_bytes(optimizer):
    """The bytes of every tensor an optimizer keeps (Adam's moments and step counts, SGD's momentum)."""
    return sum(v.numel() * v.element_size() for state in optimizer.state.values() for v in state.values()
               if torch.is_tensor(v))


def reset_peak_memory(device):
    """Start a new peak: CUDA's allocator statistics, or (Linux) the process's peak resident set."""
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM, the peak resident set size
    except OSError:
        pass


def peak_memory(device):
    """{"peak_device_bytes"}: max_memory_allocated on CUDA; {"peak_resident_bytes"}: the process's
    peak resident set since reset_peak_memory (VmHWM; the whole process, data included) elsewhere."""
    if torch.device(device).type == "cuda":
        return {"peak_device_bytes": int(torch.cuda.max_memory_allocated(device))}
    try:
        with open("/proc/self/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux and BSD: kB (macOS: bytes)
    return {"peak_resident_bytes": kb * 1024}


class ModuleStep:
    """The reference engine: one nn.Module trained in place. A frozen unit has requires_grad off,
    so autograd computes nothing for it and the optimizer skips it; evaluation is the module's."""

    def __init__(self, model, spec, loader, device):
        self.model, self.spec, self.loader, self.device = model, spec, loader, device
        self.opts = _Optimizers(model, spec, device)
        self.loss = spec.loss()
        measures = measures_of(spec.schedule, spec.name) if spec.schedule.closed_loop() else {}
        self.unit_params = [list(m.parameters()) for m in model.units()]
        self.meter = UnitMeter(self.unit_params, measures) if measures else None
        self.bytes = MemoryPeaks(self.unit_params)

    def restore(self, snapshot):
        self.model.load_state_dict(snapshot["model"])
        self.opts.load_state_dict(snapshot["optimizers"])
        self.loader.load_state_dict(snapshot["loader"])
        set_rng_state(snapshot["rng"], self.device)
        if self.meter:
            self.meter.reset()

    def snapshot(self, i=0):
        # copies (state_dict() holds the live tensors): a snapshot kept in memory resumes from its epoch
        return copy.deepcopy({"model": self.model.state_dict(), "optimizers": self.opts.state_dict(),
                              "loader": self.loader.state_dict(), "rng": rng_state(self.device), "engine": ENGINE})

    def batches(self, members):
        """Each step's {member: batch size}; the batch waits here for step()."""
        self.trainable = None  # evaluation put every unit back in train mode: apply the schedule again
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), device=self.device, dtype=torch.long)
        self.count = 0
        (member,) = members
        for x, y in self.loader:
            self.batch = (x, y)
            yield {member: y.shape[0]}

    def step(self, plans):
        ((_, plan),) = plans.items()
        model, spec = self.model, self.spec
        if plan.trainable != self.trainable:
            model.set_trainable_units(plan.trainable, spec.freeze_bn_stats, spec.schedule.eval_frozen)
            self.trainable = plan.trainable
        if plan.reset:
            self.opts.build()  # fresh Adam: moments and step counts start from zero
        self.opts.set_lr(plan.lrs)
        x, y = (t.to(self.device, non_blocking=True) for t in self.batch)
        with precision_context(spec.settings.precision, self.device):
            logits = model(x)
            loss = self.loss(logits, y)
        model.zero_grad(set_to_none=True)  # frozen params keep grad=None: optimizers skip them
        loss.backward()
        if self.meter:
            self.meter.add(plan.trainable, [[p.grad for p in ps] for ps in self.unit_params])
        self.opts.step()
        self.bytes.after_step(plan, lambda: optimizer_state_bytes(self.opts.opt))
        self.loss_sum += loss.detach() * y.numel()
        self.correct += (logits.detach().argmax(-1) == y).sum()  # in train mode: dropout on
        self.count += y.numel()

    def epoch_totals(self):
        """[(loss sum, correct, scored items)]: the epoch's one host sync."""
        return [(self.loss_sum.item(), self.correct.item(), self.count)]

    def memory(self, i=0):
        return self.bytes.peaks()

    def evaluate(self, loader):
        return [evaluate_model(self.model, loader, self.device, self.spec.settings.precision)]

    def measures(self, i):
        return self.meter.read() if self.meter else {}

    def finish(self):
        self.model.set_trainable(BOTH)
        self.model.train()


def run_members(stepper, members, test_loader, val_loader=None, *, device, on_epoch_end=None,
                on_finish=None, progress=False, desc=None):
    """The training loop, for one run or a pack: every epoch each live member plans its steps
    (schedule, budget), the stepper takes them, then each member is evaluated, recorded, shown to
    its schedule if that observes, and handed to on_epoch_end(i, snapshot) for its checkpoint (a
    False from it stops that member: its lease was lost). on_finish(i) follows a member's last
    epoch, so that a pack saves each run the moment it ends."""
    precision = members[0].spec.settings.precision
    num_epochs = max(m.spec.settings.epochs for m in members)
    start = min(m.epochs_done for m in members)
    watch, evals = Stopwatch(device), Stopwatch(device)
    bar = Progress(num_epochs - start, desc, progress)
    reset_peak_memory(device)
    with training_numerics(precision, device):  # tf32: forward and backward
        for epoch in range(start, num_epochs):
            # a member resumed from a later epoch waits for the others to reach it
            live = [i for i, m in enumerate(members) if m.live and m.epochs_done == epoch]
            if not any(m.live for m in members):
                break
            if not live:
                continue
            for i in live:
                members[i].new_epoch()
            watch.start()
            epoch_t0 = time.perf_counter()

            def elapsed():
                synchronize(device)  # host time runs ahead of a GPU: count the queued steps
                return time.perf_counter() - epoch_t0

            for sizes in stepper.batches(live):
                plans = {i: p for i, size in sizes.items() if (p := members[i].plan(epoch, size, elapsed))}
                if not plans:
                    break
                stepper.step(plans)
                for i, p in plans.items():
                    members[i].account(p)
            totals = stepper.epoch_totals()
            seconds = watch.stop() / len(live)  # a pack's steps are shared by its members
            stepped = [i for i in live if members[i].steps]
            evals.start()
            val = stepper.evaluate(val_loader) if val_loader is not None and stepped else None
            test = stepper.evaluate(test_loader) if stepped else None
            eval_seconds = evals.stop() / max(len(stepped), 1)
            for j, i in enumerate(live):
                m = members[i]
                if m.end_epoch(epoch, *totals[j], seconds, val[j] if val else (None, None),
                               test[j] if test else None, eval_seconds):
                    m.note_memory({**stepper.memory(i), **peak_memory(device)})
                    if m.spec.schedule.closed_loop():
                        m.observe(stepper.measures(i))
                    if on_epoch_end is not None and on_epoch_end(i, {**stepper.snapshot(i), **m.snapshot()}) is False:
                        m.live, m.lost = False, True  # its lease was taken over: no more, no save
                        continue
                if not m.live and not m.lost and on_finish is not None:
                    on_finish(i)
            bar.update()
            if len(members) == 1 and members[0].history["epoch"]:
                h = members[0].history
                bar.postfix(loss=f"{h['train_loss'][-1]:.3f}", acc=f"{h['test_acc'][-1]:.2f}")
    bar.close()
    stepper.finish()
    return [m.history for m in members]


def train(model, train_loader, test_loader, schedule=STANDARD, *, device=None, val_loader=None,
          resume=None, on_epoch_end=None, progress=False, desc=None, **options):
    """Train `model` (a models.FreezableNet) following `schedule`; return a per-epoch history (dict
    of lists).

    `options` are Config's settings (epochs, lr, optimizer, weight_decay, lr_schedule,
    warmup_epochs, precision, workload, label_smoothing, ...; the earlier public API's num_epochs
    and learning_rate too) and TrainSpec's own fields (seed, reset_optimizer, freeze_bn_stats,
    total_steps, max_flops, max_seconds, name):
    - One optimizer persists across switches, so a unit's Adam moments survive its frozen
      periods; `reset_optimizer=True` re-creates it at every phase change (the earlier public
      version's behaviour, kept so its effect can be measured).
    - `lr_schedule` (constant, cosine, linear) with `warmup_epochs` scales every unit's lr per
      step, on top of the schedule's own factors; it ends at `total_steps` (default: all epochs),
      which a matched-budget run sets to the steps its budget allows.
    - `max_flops` / `max_seconds` stop training once that budget would be exceeded.
    - `val_loader`, if given, is evaluated after every epoch (val_loss, val_acc); a closed-loop
      schedule sees it, never the test set.
    - `on_epoch_end(snapshot)` receives, after every epoch, everything needed to continue
      exactly (weights, BatchNorm buffers, optimizer state, every RNG, the loader's generator,
      the schedule's state, the history); `resume=snapshot` continues from it, bit for bit.
    - Training time excludes evaluation; losses stay on the device until the epoch ends.
    """
    return fit(model, train_loader, test_loader, spec_from_options(schedule, **options), device=device,
               val_loader=val_loader, resume=resume, on_epoch_end=on_epoch_end, progress=progress,
               desc=desc).history


@dataclass(frozen=True)
class Fitted:
    """What fit() returns: the history, the schedule's final state and the run's memory peaks."""
    history: dict
    schedule_state: object
    memory: dict


def unit_flops(model, loader):
    """flops.NetFlops of `model` for the batches `loader` yields, measured once per network shape,
    from the input shape that the suite's loaders (TensorLoader, WindowLoader) state."""
    return flop_count.measure(model, *loader.example)


class _FlopsAtFirstBatch:
    """The FLOPs of a loader that does not state its input's shape (a list of batches, a torch
    DataLoader): measured on the first batch the stepper holds, never by drawing one early."""

    def __init__(self, model, stepper):
        self.model, self.stepper, self.net = model, stepper, None

    def train(self, trainable):
        if self.net is None:
            x = self.stepper.batch[0]
            self.net = flop_count.measure(self.model, (2, *x.shape[1:]), x.dtype)
        return self.net.train(trainable)


def fit(model, train_loader, test_loader, spec, *, device=None, val_loader=None, resume=None,
        on_epoch_end=None, on_finish=None, progress=False, desc=None):
    """train() with a TrainSpec: returns Fitted(history, the schedule's final state, memory), and
    hands it to on_finish(fitted) too once the run ends (unless on_epoch_end stopped it: False)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).train()
    stepper = ModuleStep(model, spec, train_loader, device)
    flops = unit_flops(model, train_loader) if hasattr(train_loader, "example") else _FlopsAtFirstBatch(model, stepper)
    member = Member.of(model, train_loader, spec, flops.train, resume)
    if resume is not None:
        stepper.restore(resume)
    callback = None if on_epoch_end is None else (lambda i, snapshot: on_epoch_end(snapshot))
    finish = None if on_finish is None else (lambda i: on_finish(member.fitted()))
    run_members(stepper, [member], test_loader, val_loader, device=device, on_epoch_end=callback,
                on_finish=finish, progress=progress, desc=desc)
    return member.fitted()


def train_standard(model, train_loader, test_loader, num_epochs=15, learning_rate=1e-3,
                   device=None, **kwargs):
    """Every layer, every step."""
    return train(model, train_loader, test_loader, STANDARD, num_epochs=num_epochs,
                 learning_rate=learning_rate, device=device, **kwargs)


def train_alternating(model, train_loader, test_loader, num_epochs=15, learning_rate=1e-3,
                      device=None, switch_frequency=1, **kwargs):
    """First half for `switch_frequency` epochs, then the second half, and so on."""
    return train(model, train_loader, test_loader, alternating(switch_frequency, "epoch"),
                 num_epochs=num_epochs, learning_rate=learning_rate, device=device, **kwargs)


def train_alternating_batch(model, train_loader, test_loader, num_epochs=15, learning_rate=1e-3,
                            device=None, switch_frequency=1, **kwargs):
    """First half for `switch_frequency` batches, then the second half, and so on."""
    return train(model, train_loader, test_loader, alternating(switch_frequency, "batch"),
                 num_epochs=num_epochs, learning_rate=learning_rate, device=device, **kwargs)
