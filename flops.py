"""Training FLOPs of any network, per unit, measured once per network shape.

`measure(model, example)` runs each unit alone on the input it receives in a real forward pass,
under `torch.utils.flop_counter.FlopCounterMode`, and records per sample:

- `forward`: the unit's forward FLOPs;
- `weights`: its backward FLOPs when its own parameters train and nothing below it does (the
  weight gradients, and whatever backward work they need);
- `inputs`: its backward FLOPs when it is frozen but something below it trains (the gradient
  passed on to its input);
- `both`: its backward FLOPs when both are needed (for a Linear or a convolution,
  weights + inputs; attention's backward serves both, so there it is less than the sum).

A step that trains the units in `trainable` then costs `NetFlops.train(trainable)`: every
unit's forward, plus its backward by what it needs. Below the lowest trainable unit there is no
backward at all; a frozen unit with a trainable unit below it pays only its input gradient.
The counter counts matrix products, convolutions and attention (elementwise work, normalisation
and the optimizer are not counted); causal attention is counted in full, as PyTorch's formula
does. For the MLP this equals `FreezableMLP.unit_train_flops`, the analytic count
(tests/test_workloads.py).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten


def _sdpa_forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# the CPU's fused attention kernels, which torch's counter has no formula for (it counts the CUDA ones)
CPU_ATTENTION = {aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_forward,
                 aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward}


class FlopError(ValueError):
    """A network whose units cannot be measured one by one; its message is one line."""


@dataclass(frozen=True)
class UnitFlops:
    """One unit's FLOPs per sample (see the module docstring)."""
    forward: int
    weights: int
    inputs: int
    both: int


@dataclass(frozen=True)
class NetFlops:
    """Every unit's FLOPs per sample, in the network's unit order."""
    units: tuple

    def train(self, trainable):
        """FLOPs per sample of one training step (forward and backward) when `trainable` train."""
        total, below = 0, False
        for u, f in enumerate(self.units):
            total += f.forward
            if u in trainable:
                total += f.both if below else f.weights
            elif below:
                total += f.inputs
            below = below or u in trainable
        return total

    def forward(self):
        """FLOPs per sample of one forward pass (evaluation)."""
        return sum(f.forward for f in self.units)


def _count(fn):
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        fn()
    return counter.get_total_flops()


def _inputs_of(model, example):
    """The input each unit receives in one forward pass of `example` (each unit must be called once)."""
    seen, hooks = {}, []
    for u, module in enumerate(model.units()):
        def grab(module, args, u=u):
            if u in seen or len(args) != 1 or not torch.is_tensor(args[0]):
                raise FlopError(f"unit {u} ({type(module).__name__}) must be called once per forward pass with one "
                                f"tensor: FLOPs are measured unit by unit on the input it receives")
            seen[u] = args[0].detach().clone()
        hooks.append(module.register_forward_pre_hook(grab))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    missing = [u for u in range(len(model.units())) if u not in seen]
    if missing:
        raise FlopError(f"units {missing} were not called in the forward pass: every unit must be")
    return [seen[u] for u in range(len(seen))]


def _backward(unit, x, train_weights, need_input):
    """Forward and backward FLOPs of `unit` on input x (the forward excluded by the caller)."""
    params = list(unit.parameters())
    for p in params:
        p.requires_grad_(train_weights)
    x = x.detach().requires_grad_(need_input)
    if not (train_weights and params) and not need_input:
        return 0
    out = unit(x)
    return _count(lambda: out.float().sum().backward())


def measure_units(model, example):
    """NetFlops of `model` on `example`, a batch of inputs (any batch size; counts are per sample).
    The model is copied to the CPU and run in eval mode, so nothing of the real one changes (not
    its weights, buffers or random number streams)."""
    net = copy.deepcopy(model).cpu().eval()
    example = example.cpu()
    n = example.shape[0]
    inputs = _inputs_of(net, example)
    out = []
    for u, (unit, x) in enumerate(zip(net.units(), inputs)):
        with torch.no_grad():
            fwd = _count(lambda: unit(x))
        grad = x.is_floating_point()  # token ids carry no gradient: the embeddings' inputs need none
        weights = _backward(unit, x, True, False)
        inputs_ = _backward(unit, x, False, True) if grad and u > 0 else 0
        both = _backward(unit, x, True, True) if grad and u > 0 else weights
        out.append(UnitFlops(*(v // n if v % n == 0 else v / n for v in (fwd, weights, inputs_, both))))
    return NetFlops(tuple(out))


_CACHE = {}


def measure(model, example_shape, example_dtype=torch.float32):
    """NetFlops of `model` for inputs of `example_shape` (a batch, say (2, 3, 32, 32)), measured once
    per network shape (its class and the names and shapes of its parameters) and input shape."""
    model = getattr(model, "_orig_mod", model)  # a torch.compile'd module: measure the module itself
    key = (type(model).__qualname__, tuple((n, tuple(p.shape)) for n, p in model.named_parameters()),
           tuple(example_shape), example_dtype)
    if key not in _CACHE:
        _CACHE[key] = measure_units(model, torch.zeros(example_shape, dtype=example_dtype))
    return _CACHE[key]
