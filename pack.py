"""The pack engine: R runs of one cell trained as one batched model.

Every member keeps what it has alone: its initial weights (each built from its own seed exactly
as the reference engine builds them), its data order (its own shuffling generator), its dropout
stream, its schedule, lr schedule, optimizer state and budget (training_loop.Member), its
history and its checkpoint. What they share is the step: the parameters of all members live in
one (R, P) tensor, every Linear is a batched matmul over the members, and BatchNorm, dropout, the
loss and the optimizer act per member.

Freezing is masking: a member's frozen units still get gradients computed (the pack's step
is one program for everyone), but their parameters, BatchNorm buffers and optimizer moments are
written back unchanged (torch.where with the old value), so they stay bit-for-bit as they were.
The FLOP column still counts what the member's method needs (its own frozen sets), not what
the pack computed.

Dropout is each member's own stream. On the CPU it is a torch.Generator per member that starts
where the reference engine's global generator stands after building that member's model, so
each member draws the reference's masks. On CUDA it is a counter-based hash of (seed, the
member's step, layer, element): one short kernel sequence for the whole pack, no generator state
to save, and the same masks whatever else is in the pack (the reference's GPU dropout is a fused
kernel with a stream of its own, so GPU runs of the two engines differ in their masks anyway).
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from schedules import measures_of
from training_loop import Member, MemoryPeaks, precision_context, run_members, unit_flops

ENGINE = "pack/2"  # 2: the hash dropout key counts a member's own steps (1 counted every stepping member's)
BETAS, EPS, MOMENTUM = (0.9, 0.999), 1e-8, 0.9  # torch's Adam and AdamW defaults; SGD momentum 0.9
BN_EPS, BN_MOMENTUM = 1e-5, 0.1


class Layout:
    """The parameters of one FreezableMLP in order: their state_dict names, shapes and units."""

    def __init__(self, model):
        self.names, self.shapes, self.units = [], [], []
        for u, module in enumerate(model.units()):
            for name, p in module.named_parameters():
                self.names.append(f"blocks.{u}.{name}" if u < len(model.blocks) else f"head.{name}")
                self.shapes.append(tuple(p.shape))
                self.units.append(u)
        self.unit_count = len(model.units())
        self.of_unit = [[n for n, v in zip(self.names, self.units) if v == u] for u in range(self.unit_count)]


def hash_keep_masks(seeds, steps, layer, batch, width, keep):
    """(R, batch, width) keep-masks scaled by 1/keep, from a counter-based hash (lowbias32, two
    multiply-xorshift rounds) of each member's (seed, step), the layer and the element: a pure
    function, so nothing is saved and a resumed member draws what it would have drawn."""
    R = seeds.shape[0]
    idx = torch.arange(batch * width, device=seeds.device, dtype=torch.int64).view(1, batch, width)
    key = ((seeds * 0x9E3779B1) ^ (steps * 0x85EBCA77) ^ (layer * 0xC2B2AE3D)) & 0xFFFFFFFF
    x = (key.view(R, 1, 1) ^ ((idx * 0x27D4EB2F) & 0xFFFFFFFF)) & 0xFFFFFFFF
    for mult in (0x7FEB352D, 0x846CA68B):
        x = ((x ^ (x >> 16)) * mult) & 0xFFFFFFFF
    bits = (x ^ (x >> 16)) >> 1  # 31 random bits
    return (bits < int(keep * 2 ** 31)).float() / keep


class PackStep:
    """The stepper of training_loop.run_members for a pack of R members (see the module doc).
    Each parameter of the MLP is one (R, *shape) tensor; the optimizer updates, with one fused
    call per group of equal learning rates, exactly the (member, unit) pairs that train this step,
    so nothing else is touched."""

    def __init__(self, models, specs, loaders, device, generators=None, rng=None):
        self.R, self.specs, self.loaders, self.device = len(models), specs, loaders, torch.device(device)
        self.rng = rng or ("hash" if self.device.type == "cuda" else "torch")  # see the module's docstring
        shared = {(s.settings.optimizer, s.settings.weight_decay, s.settings.precision) for s in specs}
        if len(shared) > 1:
            raise ValueError(f"a pack shares one optimizer, weight decay and precision; got {sorted(shared)}")
        first = models[0]
        self.layout = Layout(first)
        self.depth, self.p_drop = len(first.blocks), first.blocks[0][3].p if first.blocks else 0.0
        states = [m.state_dict() for m in models]
        stack = lambda name: torch.stack([st[name] for st in states]).to(self.device)  # noqa: E731
        # Linear weights are kept as (R, in, out), the layout the batched matmul reads and its
        # gradient comes in: with (R, out, in), every step would copy each gradient into place
        self.params = {n: _to_pack(n, stack(n)).contiguous().requires_grad_(True) for n in self.layout.names}
        self.bn_mean = [stack(f"blocks.{i}.1.running_mean") for i in range(self.depth)]
        self.bn_var = [stack(f"blocks.{i}.1.running_var") for i in range(self.depth)]
        self.bn_count = [stack(f"blocks.{i}.1.num_batches_tracked") for i in range(self.depth)]
        self.m = {n: torch.zeros_like(p, requires_grad=False) for n, p in self.params.items()}
        self.v = {n: torch.zeros_like(p, requires_grad=False) for n, p in self.params.items()}
        self.steps = {n: torch.zeros(self.R, device=self.device) for n in self.layout.names}  # per member
        self.gens = generators or [torch.Generator().manual_seed(s.seed) for s in specs]
        self.seeds = torch.tensor([s.seed for s in specs], dtype=torch.int64, device=self.device)
        self.counters = torch.zeros(self.R, dtype=torch.int64, device=self.device)  # hash dropout: steps taken
        self._mask_cache, self._stepped = {}, set()  # _stepped: (member, unit) pairs with a step (host side)
        self._grads, self._views = None, {}  # the gradients, zeroed in place each step, and views into them
        self.meters = [None] * self.R
        self.bytes = [MemoryPeaks([list(m.parameters()) for m in first.units()]) for _ in range(self.R)]
        # the pack keeps every member's moments for every parameter: a member's state bytes never change
        self.state_bytes = sum(t[0].numel() * t[0].element_size() for d in (self.m, self.v, self.steps)
                               for t in d.values())
        for i, s in enumerate(specs):
            measures = measures_of(s.schedule, s.name) if s.schedule.closed_loop() else {}
            if measures:
                self.meters[i] = _PackMeter(self, i, measures)

    # --- the data ----------------------------------------------------------------------------
    def batches(self, live):
        """Each step's {member: batch size}; every member draws its own permutation of the data."""
        self.live = live
        self.loss_sum = torch.zeros(self.R, device=self.device)
        self.correct = torch.zeros(self.R, device=self.device, dtype=torch.long)
        self.counts = [0] * self.R  # scored images per member (host side: no sync)
        x, size = self.loaders[live[0]].x, self.loaders[live[0]].batch_size
        n = len(x)
        perms = torch.zeros(self.R, n, dtype=torch.long)  # members that do not train this epoch: rows 0..
        for i in live:
            perms[i] = torch.randperm(n, generator=self.loaders[i].generator)
        perms = perms.to(x.device)  # once per epoch: inside it, nothing goes to or from the host
        end = n - 1 if n % size == 1 else n  # as TensorLoader: a last batch of one is dropped
        for start in range(0, end, size):
            self.idx = perms[:, start:start + size]
            yield {i: self.idx.shape[1] for i in live}

    # --- one step ------------------------------------------------------------------------------
    def _masks(self, plans):
        """(active, trainable, eval_mode, bn_update) on the device for these plans, and eval_mode on
        the host; kept while the plans' frozen sets stay the same, so most steps upload nothing."""
        key = tuple((i, p.trainable) for i, p in plans.items())
        if key not in self._mask_cache:
            R, U = self.R, self.layout.unit_count
            active, trainable = torch.zeros(R, dtype=torch.bool), torch.zeros(R, U, dtype=torch.bool)
            for i, p in plans.items():
                active[i] = True
                trainable[i, list(p.trainable)] = True
            eval_mode = torch.zeros(R, U, dtype=torch.bool)
            for i in plans:
                if self.specs[i].schedule.eval_frozen:
                    eval_mode[i] = ~trainable[i]
            freeze_bn = torch.tensor([s.freeze_bn_stats for s in self.specs])
            bn_update = active[:, None] & ~eval_mode & (trainable | ~freeze_bn[:, None])
            if len(self._mask_cache) > 256:
                self._mask_cache.clear()
            self._mask_cache[key] = (*(t.to(self.device) for t in (active, trainable, eval_mode, bn_update)),
                                     eval_mode.tolist())
        return self._mask_cache[key]

    def step(self, plans):
        R, dev = self.R, self.device
        active, trainable, eval_mode, bn_update, eval_host = self._masks(plans)
        x_all, y_all = self.loaders[self.live[0]].x, self.loaders[self.live[0]].y
        idx = self.idx.flatten()  # each member's own batch; members not stepping take rows that are ignored
        x = x_all.index_select(0, idx).view(R, self.idx.shape[1], -1).to(dev, non_blocking=True)
        y = y_all.index_select(0, idx).view(R, self.idx.shape[1]).to(dev, non_blocking=True)
        masks = self._dropout_masks(plans, eval_host, x.shape[1], active, eval_mode)
        spec = self.specs[next(iter(plans))]
        any_eval = any(any(row) for row in eval_host)
        with precision_context(spec.settings.precision, dev):
            logits = self.forward(x, train=True, eval_mode=eval_mode if any_eval else None, bn_update=bn_update,
                                  masks=masks)
            losses = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none").view(R, -1).mean(1)
        if self._grads is not None:
            torch._foreach_zero_(self._grads)  # in place: the views the optimizer step keeps stay valid
        (losses * active).sum().backward()
        grads = [p.grad for p in self.params.values()]
        if self._grads is None or any(g is not h for g, h in zip(grads, self._grads)):
            self._grads, self._views = grads, {}  # the first step (autograd made the gradients)
        for i in plans:
            if self.meters[i]:
                self.meters[i].add(plans[i].trainable)
        self._optimizer_step(plans, spec)
        for i, plan in plans.items():
            self.bytes[i].after_step(plan, lambda: self.state_bytes)
        with torch.no_grad():
            self.loss_sum += (losses.detach() * y.shape[1]) * active
            self.correct += ((logits.detach().argmax(-1) == y).sum(1)) * active
        for i in plans:
            self.counts[i] += y.shape[1]
        self.counters += active  # each stepping member's own step count (the hash dropout's key), once a step

    def forward(self, x, train, eval_mode=None, bn_update=None, masks=None):
        """Logits (R, B, classes) of every member for its inputs x (R, B, D)."""
        w = self.params
        h = x.flatten(2)
        for i in range(self.depth):
            h = torch.baddbmm(w[f"blocks.{i}.0.bias"].unsqueeze(1), h, w[f"blocks.{i}.0.weight"])
            h = self._batchnorm(h.float(), i, train, None if eval_mode is None else eval_mode[:, i],
                                None if bn_update is None else bn_update[:, i])
            h = torch.relu(h)
            if train and masks is not None and masks[i] is not None:
                h = h * masks[i]
        return torch.baddbmm(w["head.bias"].unsqueeze(1), h, w["head.weight"])

    def _batchnorm(self, h, i, train, eval_mode, update):
        """BatchNorm1d per member: batch statistics in training (running ones for members whose unit
        runs in eval mode), the running statistics updated where `update` says."""
        gamma = self.params[f"blocks.{i}.1.weight"].unsqueeze(1)
        beta = self.params[f"blocks.{i}.1.bias"].unsqueeze(1)
        rm, rv = self.bn_mean[i], self.bn_var[i]
        if not train:
            return (h - rm.unsqueeze(1)) / torch.sqrt(rv.unsqueeze(1) + BN_EPS) * gamma + beta
        mean, var = h.mean(1), h.var(1, unbiased=False)
        out = (h - mean.unsqueeze(1)) / torch.sqrt(var.unsqueeze(1) + BN_EPS) * gamma + beta
        if eval_mode is not None:  # some member's unit runs in eval mode (FreezeOut's frozen blocks)
            running = (h - rm.unsqueeze(1)) / torch.sqrt(rv.unsqueeze(1) + BN_EPS) * gamma + beta
            out = torch.where(eval_mode.view(-1, 1, 1), running, out)
        with torch.no_grad():
            n = h.shape[1]
            u = update.view(-1, 1)
            rm.copy_(torch.where(u, rm * (1 - BN_MOMENTUM) + BN_MOMENTUM * mean.detach(), rm))
            rv.copy_(torch.where(u, rv * (1 - BN_MOMENTUM) + BN_MOMENTUM * var.detach() * n / max(n - 1, 1), rv))
            self.bn_count[i].add_(update.long())
        return out

    def _dropout_masks(self, plans, eval_host, batch, active, eval_mode):
        """Per hidden block, (R, B, H) scaled keep-masks, or None without dropout. A member that does
        not step this time, or whose unit runs in eval mode, draws nothing (as alone)."""
        if not self.p_drop:
            return [None] * self.depth
        keep = 1 - self.p_drop
        masks = []
        for i in range(self.depth):
            width = self.layout.shapes[self.layout.names.index(f"blocks.{i}.0.weight")][0]
            if self.rng == "hash":
                m = hash_keep_masks(self.seeds, self.counters, i, batch, width, keep)
                off = (~active | eval_mode[:, i]).view(-1, 1, 1)
                masks.append(torch.where(off, torch.ones_like(m), m))
                continue
            m = torch.ones(self.R, batch, width, device=self.device)
            for r in plans:
                if not eval_host[r][i]:
                    m[r] = torch.empty(batch, width, device=self.device).bernoulli_(
                        keep, generator=self.gens[r]).div_(keep)
            masks.append(m)
        return masks

    def _optimizer_step(self, plans, spec):
        """Adam, AdamW or SGD with momentum for exactly the (member, unit) pairs that train this
        step, one fused call per group of equal learning rates; what does not train is not touched,
        so its parameters and moments stay bit-for-bit as they were."""
        sgd, groups = spec.settings.optimizer == "sgd", {}
        for r, plan in plans.items():
            if plan.reset:  # a fresh optimizer for this member: moments and step counts from zero
                with torch.no_grad():
                    torch._foreach_zero_([t[r] for d in (self.m, self.v, self.steps) for t in d.values()])
                self._stepped.difference_update({(r, u) for u in range(self.layout.unit_count)})
            for u in sorted(plan.trainable):
                first = sgd and (r, u) not in self._stepped  # SGD's momentum buffer starts from the gradient
                groups.setdefault((plan.lrs[u], first), []).extend(self._unit_views(r, u))
                self._stepped.add((r, u))
        with torch.no_grad():
            for (lr, first), items in groups.items():
                params, grads, ms, vs, steps = map(list, zip(*items))
                torch._foreach_add_(steps, 1)
                if sgd:
                    torch._fused_sgd_(params, grads, ms, weight_decay=spec.settings.weight_decay, momentum=MOMENTUM,
                                      lr=lr, dampening=0.0, nesterov=False, maximize=False, is_first_step=first)
                    continue
                fused = torch._fused_adamw_ if spec.settings.optimizer == "adamw" else torch._fused_adam_
                fused(params, grads, ms, vs, [], steps, amsgrad=False, lr=lr, beta1=BETAS[0], beta2=BETAS[1],
                      weight_decay=spec.settings.weight_decay, eps=EPS, maximize=False, grad_scale=None, found_inf=None)

    def _unit_views(self, r, u):
        """Member r's (parameter, gradient, first moment or momentum, second moment, step count)
        views for each parameter of unit u, made once: the tensors they view live for the whole run,
        so a step builds lists, not views (host time is what a small model's step costs on a GPU)."""
        key = (r, u)
        if key not in self._views:
            self._views[key] = [(self.params[n].detach()[r], self.params[n].grad[r], self.m[n][r], self.v[n][r],
                                 self.steps[n][r]) for n in self.layout.of_unit[u]]
        return self._views[key]

    # --- the epoch's end ----------------------------------------------------------------------
    def epoch_totals(self):
        loss, correct = self.loss_sum.tolist(), self.correct.tolist()  # the epoch's one host sync
        return [(loss[i], correct[i], self.counts[i]) for i in self.live]

    def memory(self, i):
        return self.bytes[i].peaks()

    @torch.inference_mode()
    def evaluate(self, loader):
        """(loss, accuracy in %) of every live member on `loader` (the same data for all)."""
        loss_sum = torch.zeros(self.R, device=self.device)
        correct = torch.zeros(self.R, device=self.device, dtype=torch.long)
        n = 0
        precision = self.specs[self.live[0]].settings.precision
        for x, y in loader:
            x, y = x.to(self.device), y.to(self.device)
            xs = x.flatten(1).unsqueeze(0).expand(self.R, -1, -1)
            with precision_context(precision, self.device):
                logits = self.forward(xs, train=False)
            loss_sum += F.cross_entropy(logits.float().flatten(0, 1), y.repeat(self.R), reduction="none").view(
                self.R, -1).sum(1)
            correct += (logits.argmax(-1) == y).sum(1)
            n += y.numel()
        loss, acc = loss_sum.tolist(), correct.tolist()
        return [(loss[i] / n, 100.0 * acc[i] / n) for i in self.live]

    def measures(self, i):
        return self.meters[i].read() if self.meters[i] else {}

    # --- checkpoints ------------------------------------------------------------------------------
    def member_state_dict(self, i):
        """Member i's weights and BatchNorm buffers as FreezableMLP's state_dict: a checkpoint that
        any engine can read, and the single run's names."""
        out = {n: _from_pack(n, t.detach()[i]).clone().cpu() for n, t in self.params.items()}
        for b in range(self.depth):
            out[f"blocks.{b}.1.running_mean"] = self.bn_mean[b][i].clone().cpu()
            out[f"blocks.{b}.1.running_var"] = self.bn_var[b][i].clone().cpu()
            out[f"blocks.{b}.1.num_batches_tracked"] = self.bn_count[b][i].clone().cpu()
        return out

    def snapshot(self, i):
        return {"model": self.member_state_dict(i), "engine": ENGINE,
                "optimizers": {"m": {n: t[i].cpu().clone() for n, t in self.m.items()},
                               "v": {n: t[i].cpu().clone() for n, t in self.v.items()},
                               "steps": {n: t[i].cpu().clone() for n, t in self.steps.items()}},
                "loader": self.loaders[i].state_dict(),
                "rng": {"dropout": self.gens[i].get_state(), "counter": int(self.counters[i])}}

    def restore(self, i, snap):
        with torch.no_grad():
            for n, p in self.params.items():
                p[i].copy_(_to_pack(n, snap["model"][n]))
                self.m[n][i].copy_(snap["optimizers"]["m"][n])
                self.v[n][i].copy_(snap["optimizers"]["v"][n])
                self.steps[n][i].copy_(snap["optimizers"]["steps"][n])
            self._stepped.update((i, u) for u, names in enumerate(self.layout.of_unit)
                                 if any(float(snap["optimizers"]["steps"][n]) > 0 for n in names))
            for b in range(self.depth):
                self.bn_mean[b][i].copy_(snap["model"][f"blocks.{b}.1.running_mean"])
                self.bn_var[b][i].copy_(snap["model"][f"blocks.{b}.1.running_var"])
                self.bn_count[b][i].copy_(snap["model"][f"blocks.{b}.1.num_batches_tracked"])
        self.loaders[i].load_state_dict(snap["loader"])
        self.gens[i].set_state(snap["rng"]["dropout"])
        self.counters[i] = snap["rng"].get("counter", 0)
        if self.meters[i]:
            self.meters[i].reset()

    def finish(self):
        pass


def _to_pack(name, t):
    """A Linear weight (..., out, in) as the pack keeps it, (..., in, out); anything else as it is."""
    return t.transpose(-1, -2) if name.endswith("0.weight") or name == "head.weight" else t


def _from_pack(name, t):
    return t.transpose(-1, -2) if name.endswith("0.weight") or name == "head.weight" else t


class _PackMeter:
    """UnitMeter for one member of a pack: its slices of the pack's gradients and weights."""

    def __init__(self, step, i, measures):
        from training_loop import UnitMeter
        units = step.layout.units
        params = [[step.params[n].detach()[i] for n, v in zip(step.layout.names, units) if v == u]
                  for u in range(step.layout.unit_count)]
        self.step, self.i, self.meter = step, i, UnitMeter(params, measures)

    def reset(self):
        self.meter.reset()

    def add(self, trainable):
        s = self.step
        self.meter.add(trainable, [[views[1] for views in s._unit_views(self.i, u)] for u in range(s.layout.unit_count)])

    def read(self):
        return self.meter.read()

def fit_pack(models, train_loaders, test_loader, specs, *, device, val_loader=None, resumes=None,
             on_epoch_end=None, on_finish=None, generators=None, rng=None, progress=False, desc=None):
    """Train R models of one shape (each built from its own seed) as one pack, each with its own
    loader (its own shuffling generator), spec and, where given, snapshot to resume from; return
    [training_loop.Fitted] per member. on_epoch_end(i, snapshot) as in run_members; on_finish(i, fitted)."""
    device = torch.device(device)
    per_sample = unit_flops(models[0], train_loaders[0]).train
    members = [Member.of(models[0], train_loaders[0], s, per_sample, (resumes or [None] * len(models))[i])
               for i, s in enumerate(specs)]
    stepper = PackStep(models, specs, train_loaders, device, generators, rng)
    for i, snap in enumerate(resumes or []):
        if snap is not None:
            stepper.restore(i, snap)
    finish = None if on_finish is None else (lambda i: on_finish(i, members[i].fitted()))
    run_members(stepper, members, test_loader, val_loader, device=device, on_epoch_end=on_epoch_end,
                on_finish=finish, progress=progress, desc=desc)
    return [m.fitted() for m in members]
