"""One training loop driven by a schedule of which units train, and how fast, at each step.

A unit is a hidden block or the head. A schedule maps (epoch, step) to a phase and one
learning-rate factor per unit (0 means frozen). Standard training, alternating halves,
FreezeOut, layer freezing, cyclic blocks and LayerOut are the same loop with different
schedule data; `train_standard`, `train_alternating` and `train_alternating_batch` are thin
presets over `train`. A run-wide learning-rate schedule (constant, cosine, linear, with
warmup) multiplies the schedule's factors.
"""
from __future__ import annotations

import math
import random
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from models import FIRST, SECOND

BOTH = (FIRST, SECOND)
# what train() records per epoch; results.py writes these as metrics.csv columns
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
                "epoch_time_s", "eval_time_s", "steps", "steps_first", "steps_second", "param_updates",
                "train_flops", "diverged")
VALIDATION_KEYS = ("val_loss", "val_acc")  # None without a validation split, absent in older runs
PRECISIONS = ("fp32", "bf16", "tf32")
LR_SCHEDULES = ("constant", "cosine", "linear")


@dataclass(frozen=True)
class RunShape:
    """What a schedule may know about the run it drives."""
    units: int                # hidden blocks + head; the head is unit units - 1
    halves: tuple             # halves[u]: FIRST or SECOND, the half unit u belongs to
    steps_per_epoch: int
    total_steps: int          # the step at which the run ends (a matched budget may end it early)
    seed: int = 0

    @property
    def hidden(self):
        return self.units - 1


def _on(trainable_units, run):
    return tuple(1.0 if u in trainable_units else 0.0 for u in range(run.units))


@dataclass(frozen=True)
class Schedule:
    """Alternation of halves: phase p = t // every, with t counting epochs or batches (`unit`);
    phase p trains the halves in phases[p % len(phases)]."""
    phases: tuple = (BOTH,)
    every: int = 1
    unit: str = "epoch"  # "epoch" or "batch"
    eval_frozen = False   # frozen units keep train-mode BatchNorm and dropout

    def __post_init__(self):
        if self.unit not in ("epoch", "batch") or self.every < 1:
            raise ValueError(f"bad schedule: every={self.every}, unit={self.unit!r}")

    def phase(self, epoch, step):
        """Phase index at (0-based) `epoch` and global batch `step`."""
        return (epoch if self.unit == "epoch" else step) // self.every

    def trainable(self, phase):
        return self.phases[phase % len(self.phases)]

    def at(self, epoch, step, run):
        """(phase, per-unit lr factors) at `epoch` and global `step`."""
        p = self.phase(epoch, step)
        on = self.trainable(p)
        return p, _on({u for u in range(run.units) if run.halves[u] in on}, run)


@dataclass(frozen=True)
class FreezeOut:
    """FreezeOut (Brock et al. 2017): hidden block i trains until fraction
    t_i = s(t0 + (1 - t0) i / L) of the run (L hidden blocks, s(x) = x^3 when cubic), its lr
    cosine-annealed from alpha_i = 1/t_i (scaled) to 0 at t_i; frozen blocks run in eval mode.
    The head is never frozen: its lr anneals from 1 to 0 over the whole run."""
    t0: float = 0.8
    cubic: bool = True
    scale_lr: bool = True
    eval_frozen = True

    def stop_fraction(self, unit, run):
        if unit == run.hidden:
            return 1.0
        x = self.t0 + (1 - self.t0) * unit / run.hidden
        return x ** 3 if self.cubic else x

    def at(self, epoch, step, run):
        factors = []
        for u in range(run.units):
            t_i = self.stop_fraction(u, run)
            end = t_i * run.total_steps
            alpha = 1.0 / t_i if self.scale_lr else 1.0
            factors.append(0.0 if step >= end else alpha * 0.5 * (1 + math.cos(math.pi * step / end)))
        return sum(f == 0.0 for f in factors), tuple(factors)


@dataclass(frozen=True)
class LayerFreezing:
    """MosaicML Composer's LayerFreezing: at each epoch end, with p the fraction of training
    done, frac = freeze_level (p - freeze_start) / (1 - freeze_start) when p > freeze_start, and
    the first floor(frac (N - 1)) blocks freeze (N units: blocks and head). Optimizer state is
    kept; frozen blocks' BatchNorm and dropout keep running."""
    freeze_start: float = 0.5
    freeze_level: float = 1.0
    eval_frozen = False

    def frozen_blocks(self, epoch, run):
        epochs = run.total_steps / run.steps_per_epoch
        p = epoch / epochs  # after `epoch` epochs, when the next one starts
        if p <= self.freeze_start:
            return 0
        frac = self.freeze_level * (p - self.freeze_start) / (1 - self.freeze_start)
        return min(run.hidden, math.floor(frac * (run.units - 1)))

    def at(self, epoch, step, run):
        k = self.frozen_blocks(epoch, run)
        return k, _on(set(range(k, run.units)), run)


@dataclass(frozen=True)
class CyclicBlocks:
    """Block coordinate descent as in BAdam (Luo et al. 2024): every hidden block and the head is
    its own group, one group trains for K steps, in ascending, descending or random order (a
    fresh permutation per round, drawn from the run's seed). K defaults to BAdam's
    max(n / (B D), 50) steps: an epoch's steps over the D groups, at least 50."""
    every: int | None = None
    order: str = "ascending"
    eval_frozen = False

    def __post_init__(self):
        if self.order not in ("ascending", "descending", "random"):
            raise ValueError(f"bad order {self.order!r}: ascending, descending or random")

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

    def at(self, epoch, step, run):
        return step // self.steps_per_block(run), _on({self.active(step, run)}, run)


@dataclass(frozen=True)
class LayerOut:
    """LayerOut (Goutam et al. 2020), as the paper describes it: at each epoch every hidden
    block freezes with probability p_i = p_max (i + 1) / L (deeper blocks more often), drawn
    from the run's seed and the epoch; the head always trains; one persistent optimizer."""
    p_max: float = 0.5
    eval_frozen = False

    def freeze_probability(self, unit, run):
        return self.p_max * (unit + 1) / run.hidden

    def frozen(self, epoch, run):
        draws = np.random.default_rng([run.seed, epoch, 0x1A7E]).random(run.hidden)
        return frozenset(u for u in range(run.hidden) if draws[u] < self.freeze_probability(u, run))

    def at(self, epoch, step, run):
        return epoch, _on(set(range(run.units)) - self.frozen(epoch, run), run)


STANDARD = Schedule()


def alternating(every=1, unit="epoch"):
    """First half for `every` units, then the second half, and so on."""
    return Schedule(phases=((FIRST,), (SECOND,)), every=every, unit=unit)


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
        flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "")
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
    """(mean cross-entropy, accuracy in %) over `loader`, with one host sync."""
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
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        n += y.numel()
    model.train(was_training)
    return loss_sum.item() / n, 100.0 * correct.item() / n


class _Optimizers:
    """The optimizer(s) of a run: one over every unit, or one per half (GAN style). Each unit is
    its own parameter group, so that a schedule can give each its own learning rate."""

    def __init__(self, model, name, lrs, separate, weight_decay, device):
        self.args = (model, name, lrs, separate, weight_decay, device)
        self.build()

    def build(self):
        model, name, lrs, separate, wd, device = self.args
        groups = [{"params": list(m.parameters()), "lr": lrs[model.half_of(u)], "unit": u}
                  for u, m in enumerate(model.units())]
        self.base = [g["lr"] for g in groups]
        if separate:
            self.opts = {h: make_optimizer(name, [g for g in groups if model.half_of(g["unit"]) == h],
                                           lrs[h], wd, device=device) for h in BOTH}
        else:
            self.opts = {BOTH: make_optimizer(name, groups, lrs[FIRST], wd, device=device)}

    def set_lr(self, multiplier, factors):
        """Each unit's lr: its base lr x the run-wide multiplier x the schedule's factor."""
        for opt in self.opts.values():
            for g in opt.param_groups:
                g["lr"] = self.base[g["unit"]] * multiplier * factors[g["unit"]]

    def step(self, halves):
        for key, opt in self.opts.items():
            if key == BOTH or key in halves:
                opt.step()

    def state_dict(self):
        return [opt.state_dict() for opt in self.opts.values()]

    def load_state_dict(self, states):
        for opt, state in zip(self.opts.values(), states):
            opt.load_state_dict(state)


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


def train(model, train_loader, test_loader, schedule=STANDARD, *, num_epochs=15,
          learning_rate=1e-3, device=None, optimizer="adam", weight_decay=0.0, group_lrs=None,
          lr_schedule="constant", warmup_epochs=0, total_steps=None, seed=0,
          separate_optimizers=False, reset_optimizer=False, freeze_bn_stats=False,
          max_flops=None, max_seconds=None, precision="fp32", val_loader=None,
          resume=None, on_epoch_end=None, progress=False, desc=None):
    """Train `model` following `schedule`; return a per-epoch history (dict of lists).

    - One optimizer persists across switches, so a unit's Adam moments survive its
      frozen periods; `reset_optimizer=True` re-creates it at every phase change
      (the earlier public version's behaviour, kept so its effect can be measured).
    - `separate_optimizers` keeps one optimizer per half, `group_lrs` a learning
      rate per half (two-timescale).
    - `lr_schedule` (constant, cosine, linear) with `warmup_epochs` scales every unit's lr per
      step, on top of the schedule's own factors; it ends at `total_steps` (default: all epochs),
      which a matched-budget run sets to the steps its budget allows.
    - `seed` feeds schedules that draw (cyclic blocks in random order, LayerOut).
    - `freeze_bn_stats` also fixes frozen units' BatchNorm running statistics.
    - `max_flops` / `max_seconds` stop training once that budget would be exceeded.
    - `precision`: fp32, bf16 (autocast, fp32 master weights) or tf32 (CUDA).
    - `val_loader`, if given, is evaluated after every epoch (val_loss, val_acc).
    - `on_epoch_end(snapshot)` receives, after every epoch, everything needed to continue
      exactly (weights, BatchNorm buffers, optimizer state, every RNG, the loader's
      generator, the history); `resume=snapshot` continues from it, bit for bit.
    - Training time excludes evaluation; losses stay on the device until the epoch ends.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).train()
    lrs = group_lrs or (learning_rate, learning_rate)
    opts = _Optimizers(model, optimizer, lrs, separate_optimizers, weight_decay, device)
    units = model.units()
    per_epoch = len(train_loader) if hasattr(train_loader, "__len__") else None  # None: any iterable
    run = RunShape(len(units), tuple(model.half_of(u) for u in range(len(units))), per_epoch,
                   total_steps or (per_epoch and num_epochs * per_epoch), seed)
    warmup_steps = warmup_epochs * (per_epoch or 0)
    size = [sum(p.numel() for p in m.parameters()) for m in units]
    costs = {}  # trainable set -> (halves, FLOPs per sample, parameters updated)

    def cost(trainable):
        if trainable not in costs:
            costs[trainable] = ({model.half_of(u) for u in trainable}, model.unit_train_flops(trainable),
                                sum(size[u] for u in trainable))
        return costs[trainable]

    history = {k: [] for k in HISTORY_KEYS}
    # where the run stands between epochs; with the snapshot's states this is all a resume needs
    at = {"step": 0, "phase": None, "total_flops": 0, "total_seconds": 0.0}
    if resume is not None:
        model.load_state_dict(resume["model"])
        opts.load_state_dict(resume["optimizers"])
        train_loader.load_state_dict(resume["loader"])
        set_rng_state(resume["rng"], device)
        at, history = dict(resume["at"]), {k: list(resume["history"].get(k, [])) for k in HISTORY_KEYS}
    watch = Stopwatch(device)
    out_of_budget = False
    epochs = tqdm(range(len(history["epoch"]), num_epochs), desc=desc, disable=not progress, leave=False)
    with training_numerics(precision, device):  # tf32: forward and backward
        for epoch in epochs:
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            n = steps = steps_first = steps_second = updates = flops = 0
            trainable = None  # evaluation put every unit back in train mode: apply the schedule again
            watch.start()
            epoch_t0 = time.perf_counter()
            for x, y in train_loader:
                phase, factors = schedule.at(epoch, at["step"], run)
                now = frozenset(u for u, f in enumerate(factors) if f > 0)
                if now != trainable:
                    model.set_trainable_units(now, freeze_bn_stats, schedule.eval_frozen)
                    trainable = now
                if phase != at["phase"]:
                    if reset_optimizer and at["phase"] is not None:
                        opts.build()  # fresh Adam: moments and step counts start from zero
                    at["phase"] = phase
                opts.set_lr(lr_multiplier(lr_schedule, at["step"], run.total_steps, warmup_steps), factors)
                halves, per_sample, params = cost(trainable)
                step_flops = per_sample * y.shape[0]
                if max_flops is not None and at["total_flops"] + flops + step_flops > max_flops:
                    out_of_budget = True
                    break
                if max_seconds is not None:
                    synchronize(device)  # host time runs ahead of a GPU: count the queued steps
                if max_seconds is not None and at["total_seconds"] + time.perf_counter() - epoch_t0 > max_seconds:
                    out_of_budget = True
                    break
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with precision_context(precision, device):
                    logits = model(x)
                    loss = F.cross_entropy(logits, y)
                model.zero_grad(set_to_none=True)  # frozen params keep grad=None: optimizers skip them
                loss.backward()
                opts.step(halves)
                loss_sum += loss.detach() * y.shape[0]
                correct += (logits.detach().argmax(1) == y).sum()  # in train mode: dropout on
                n += y.shape[0]
                at["step"] += 1
                steps += 1
                steps_first += FIRST in halves
                steps_second += SECOND in halves
                updates += params
                flops += step_flops
            train_loss = loss_sum.item() / max(n, 1)  # the epoch's host syncs
            train_acc = 100.0 * correct.item() / max(n, 1)
            seconds = watch.stop()
            at["total_flops"] += flops
            at["total_seconds"] += seconds
            if steps == 0:
                break
            eval_watch = Stopwatch(device)
            eval_watch.start()
            val_loss, val_acc = (evaluate_model(model, val_loader, device, precision)
                                 if val_loader is not None else (None, None))
            test_loss, test_acc = evaluate_model(model, test_loader, device, precision)
            eval_seconds = eval_watch.stop()
            diverged = not all(math.isfinite(v) for v in (train_loss, test_loss, val_loss or 0.0))
            for k, v in zip(HISTORY_KEYS, (epoch + 1, train_loss, train_acc, val_loss, val_acc, test_loss,
                                           test_acc, seconds, eval_seconds, steps, steps_first, steps_second,
                                           updates, flops, diverged)):
                history[k].append(v)
            epochs.set_postfix(loss=f"{train_loss:.3f}", acc=f"{test_acc:.2f}")
            if diverged or out_of_budget:
                break
            if on_epoch_end is not None:
                on_epoch_end({"model": model.state_dict(), "optimizers": opts.state_dict(),
                              "loader": train_loader.state_dict(), "rng": rng_state(device), "at": dict(at),
                              "history": history})
    model.set_trainable(BOTH)
    model.train()
    return history


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
