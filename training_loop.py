"""One training loop driven by a schedule of which parameter group trains at each step.

Standard training, alternation every k epochs and alternation every k batches
are the same loop with different `Schedule` data; `train_standard`,
`train_alternating` and `train_alternating_batch` are thin presets over `train`.
"""
from __future__ import annotations

import math
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from models import FIRST, SECOND

BOTH = (FIRST, SECOND)
# what train() records per epoch; results.py writes these as metrics.csv columns
HISTORY_KEYS = ("epoch", "train_loss", "val_loss", "val_acc", "test_loss", "test_acc", "epoch_time_s",
                "eval_time_s", "steps", "steps_first", "steps_second", "param_updates", "train_flops",
                "diverged")
VALIDATION_KEYS = ("val_loss", "val_acc")  # None without a validation split, absent in older runs
PRECISIONS = ("fp32", "bf16", "tf32")


@dataclass(frozen=True)
class Schedule:
    """Phase p = t // every, with t counting epochs or batches (`unit`);
    phase p trains the groups in phases[p % len(phases)]."""
    phases: tuple = (BOTH,)
    every: int = 1
    unit: str = "epoch"  # "epoch" or "batch"

    def __post_init__(self):
        if self.unit not in ("epoch", "batch") or self.every < 1:
            raise ValueError(f"bad schedule: every={self.every}, unit={self.unit!r}")

    def phase(self, epoch, step):
        """Phase index at (0-based) `epoch` and global batch `step`."""
        return (epoch if self.unit == "epoch" else step) // self.every

    def trainable(self, phase):
        return self.phases[phase % len(self.phases)]


STANDARD = Schedule()


def alternating(every=1, unit="epoch"):
    """First half for `every` units, then the second half, and so on."""
    return Schedule(phases=((FIRST,), (SECOND,)), every=every, unit=unit)


def pick_device(name="auto"):
    """'auto' means CUDA if available, then MPS, else CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def make_optimizer(name, param_groups, lr, weight_decay=0.0, momentum=0.9, device="cpu"):
    """Adam (default), AdamW or SGD with momentum, over explicit parameter groups.

    Fused kernels on CPU and CUDA (one pass over each tensor; on this 2-core CPU
    Adam's step drops from 3.5 ms with foreach to 0.9 ms). Optimizers skip
    parameters whose .grad is None, which is what keeps frozen parameters untouched.
    """
    fast = {"fused": True} if torch.device(device).type in ("cpu", "cuda") else {"foreach": True}
    if name == "adam":
        return torch.optim.Adam(param_groups, lr=lr, weight_decay=weight_decay, **fast)
    if name == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay or 1e-2, **fast)
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               **fast)
    raise ValueError(f"unknown optimizer {name!r} (choose adam, adamw or sgd)")


class Stopwatch:
    """Wall time of a region: CUDA events on a GPU, perf_counter elsewhere."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"

    def start(self):
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t0 = time.perf_counter()

    def stop(self):
        """Seconds since start(); synchronises once."""
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            end.synchronize()
            return self._start.elapsed_time(end) / 1000.0
        return time.perf_counter() - self._t0


@contextmanager
def precision_context(precision="fp32", device="cpu"):
    """The numerics of a forward pass. fp32: plain float32. bf16: autocast to bfloat16 (weights,
    gradients and optimizer state stay float32; on CPUs with avx512_bf16 and on GPUs the GEMMs
    run about 2-4x faster). tf32: float32 storage with TF32 tensor-core matmuls (CUDA only)."""
    device = torch.device(device)
    if precision == "fp32":
        yield
    elif precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    elif precision == "tf32":
        if device.type != "cuda":
            raise ValueError("precision tf32 needs a CUDA device")
        old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
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
    """The optimizer(s) of a run: one over both groups, or one per group (GAN style)."""

    def __init__(self, model, name, lrs, separate, weight_decay, device):
        self.args = (model, name, lrs, separate, weight_decay, device)
        self.build()

    def build(self):
        model, name, lrs, separate, wd, device = self.args
        groups = [{"params": model.group_params(g), "lr": lrs[g]} for g in BOTH]
        if separate:
            self.opts = {g: make_optimizer(name, [groups[g]], lrs[g], wd, device=device) for g in BOTH}
        else:
            self.opts = {BOTH: make_optimizer(name, groups, lrs[FIRST], wd, device=device)}

    def step(self, trainable):
        for key, opt in self.opts.items():
            if key == BOTH or key in trainable:
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
          separate_optimizers=False, reset_optimizer=False, freeze_bn_stats=False,
          max_flops=None, max_seconds=None, precision="fp32", val_loader=None,
          resume=None, on_epoch_end=None, progress=False, desc=None):
    """Train `model` following `schedule`; return a per-epoch history (dict of lists).

    - One optimizer persists across switches, so a group's Adam moments survive its
      frozen periods; `reset_optimizer=True` re-creates it at every phase change
      (the earlier public version's behaviour, kept so its effect can be measured).
    - `separate_optimizers` keeps one optimizer per group, `group_lrs` a learning
      rate per group (two-timescale).
    - `freeze_bn_stats` also fixes the frozen group's BatchNorm running statistics.
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
    flops_per_sample = {g: model.train_flops_per_sample(g) for g in set(schedule.phases)}
    params_of = {g: sum(p.numel() for grp in g for p in model.group_params(grp))
                 for g in set(schedule.phases)}
    history = {k: [] for k in HISTORY_KEYS}
    # where the run stands between epochs; with the snapshot's states this is all a resume needs
    at = {"step": 0, "phase": None, "total_flops": 0, "total_seconds": 0.0}
    if resume is not None:
        model.load_state_dict(resume["model"])
        opts.load_state_dict(resume["optimizers"])
        train_loader.load_state_dict(resume["loader"])
        set_rng_state(resume["rng"], device)
        at, history = dict(resume["at"]), {k: list(resume["history"][k]) for k in HISTORY_KEYS}
    trainable = BOTH if at["phase"] is None else schedule.trainable(at["phase"])
    model.set_trainable(trainable, freeze_bn_stats)
    watch = Stopwatch(device)
    out_of_budget = False
    epochs = tqdm(range(len(history["epoch"]), num_epochs), desc=desc, disable=not progress, leave=False)
    for epoch in epochs:
        loss_sum = torch.zeros((), device=device)
        n = steps = steps_first = steps_second = updates = flops = 0
        watch.start()
        epoch_t0 = time.perf_counter()
        for x, y in train_loader:
            new_phase = schedule.phase(epoch, at["step"])
            if new_phase != at["phase"]:
                trainable = schedule.trainable(new_phase)
                model.set_trainable(trainable, freeze_bn_stats)
                if reset_optimizer and at["phase"] is not None:
                    opts.build()  # fresh Adam: moments and step counts start from zero
                at["phase"] = new_phase
            step_flops = flops_per_sample[trainable] * y.shape[0]
            if max_flops is not None and at["total_flops"] + flops + step_flops > max_flops:
                out_of_budget = True
                break
            if max_seconds is not None and at["total_seconds"] + time.perf_counter() - epoch_t0 > max_seconds:
                out_of_budget = True
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with precision_context(precision, device):
                loss = F.cross_entropy(model(x), y)
            model.zero_grad(set_to_none=True)  # frozen params keep grad=None: optimizers skip them
            loss.backward()
            opts.step(trainable)
            loss_sum += loss.detach() * y.shape[0]
            n += y.shape[0]
            at["step"] += 1
            steps += 1
            steps_first += FIRST in trainable
            steps_second += SECOND in trainable
            updates += params_of[trainable]
            flops += step_flops
        train_loss = loss_sum.item() / max(n, 1)  # the epoch's one host sync
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
        for k, v in zip(HISTORY_KEYS, (epoch + 1, train_loss, val_loss, val_acc, test_loss, test_acc,
                                       seconds, eval_seconds, steps, steps_first, steps_second, updates,
                                       flops, diverged)):
            history[k].append(v)
        epochs.set_postfix(loss=f"{train_loss:.3f}", acc=f"{test_acc:.2f}")
        if diverged or out_of_budget:
            break
        if on_epoch_end is not None:
            on_epoch_end({"model": model.state_dict(), "optimizers": opts.state_dict(),
                          "loader": train_loader.state_dict(), "rng": rng_state(device), "at": dict(at),
                          "history": history})
    model.set_trainable(BOTH)
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
