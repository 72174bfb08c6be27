"""The freezable MLP: Linear-BatchNorm-ReLU-Dropout blocks split into two parameter groups.

`FreezableMLP` is the general network (any depth, widths and split point);
`SimpleNN` is the classic CIFAR-10 3072-512-512-10 instance with the freezing
API that users of the earlier public version know.
"""
from __future__ import annotations

import torch.nn as nn

FIRST, SECOND = 0, 1  # indices of the two parameter groups ("halves")


class FreezableMLP(nn.Module):
    """MLP whose hidden blocks [:split] form group 0 and blocks [split:] plus the head form group 1."""

    def __init__(self, input_size=3072, hidden_sizes=(512, 512), num_classes=10,
                 dropout_rate=0.3, split=1):
        super().__init__()
        if not 0 < split <= len(hidden_sizes):
            raise ValueError(f"split must be in 1..{len(hidden_sizes)}, got {split}")
        widths = [input_size, *hidden_sizes]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(w_in, w_out), nn.BatchNorm1d(w_out), nn.ReLU(),
                          nn.Dropout(dropout_rate))
            for w_in, w_out in zip(widths[:-1], widths[1:]))
        self.head = nn.Linear(widths[-1], num_classes)
        self.split = split
        self.reset_parameters()

    def reset_parameters(self):
        """Xavier-uniform weights and zero biases for every Linear layer."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = x.flatten(1)  # accepts (N, C, H, W) images or flat (N, D)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    # --- the two groups -------------------------------------------------------
    def group_modules(self, group):
        """Modules of group 0 (first half) or 1 (second half), in forward order."""
        if group == FIRST:
            return list(self.blocks[:self.split])
        return [*self.blocks[self.split:], self.head]

    def group_params(self, group):
        return [p for m in self.group_modules(group) for p in m.parameters()]

    def group_batchnorms(self, group):
        return [m for top in self.group_modules(group) for m in top.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    # --- units: every hidden block and the head ----------------------------------
    def units(self):
        """The freezable units in forward order: each hidden block, then the head (last)."""
        return [*self.blocks, self.head]

    def half_of(self, unit):
        """The half (FIRST or SECOND) that unit `unit` belongs to."""
        return FIRST if unit < self.split else SECOND

    def units_of(self, groups):
        """Indices of the units in the halves `groups`."""
        return frozenset(u for u in range(len(self.units())) if self.half_of(u) in groups)

    def set_trainable(self, groups, freeze_bn_stats=False):
        """Make exactly the halves `groups` trainable (see set_trainable_units)."""
        self.set_trainable_units(self.units_of(groups), freeze_bn_stats)

    def set_trainable_units(self, trainable, freeze_bn_stats=False, eval_frozen=False):
        """Make exactly the units in `trainable` trainable. With freeze_bn_stats, frozen units'
        BatchNorm layers still normalise with batch statistics but stop updating their running
        statistics (bit-for-bit unchanged buffers). With eval_frozen, frozen units run in eval
        mode (running statistics, no dropout), as FreezeOut's frozen layers do; a later
        model.train() undoes that, so the loop re-applies it after every evaluation."""
        for u, module in enumerate(self.units()):
            on = u in trainable
            for p in module.parameters():
                p.requires_grad_(on)
            for bn in (m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
                # In train mode a BN with track_running_stats=False uses batch
                # statistics and leaves running_mean/var/num_batches_tracked alone.
                bn.track_running_stats = on or not freeze_bn_stats
            if self.training:
                module.train(on or not eval_frozen)

    # --- the earlier public version's API --------------------------------------
    def get_first_half_params(self):
        return self.group_params(FIRST)

    def get_second_half_params(self):
        return self.group_params(SECOND)

    def _set_group(self, group, requires_grad):
        for p in self.group_params(group):
            p.requires_grad_(requires_grad)

    def freeze_first_half(self):
        self._set_group(FIRST, False)

    def unfreeze_first_half(self):
        self._set_group(FIRST, True)

    def freeze_second_half(self):
        self._set_group(SECOND, False)

    def unfreeze_second_half(self):
        self._set_group(SECOND, True)

    def unfreeze_all(self):
        self.set_trainable((FIRST, SECOND))

    def count_parameters(self, trainable_only=False):
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # --- analytic cost model ----------------------------------------------------
    def linear_layers(self):
        """(layer, unit) pairs in forward order."""
        return [(m, u) for u, top in enumerate(self.units()) for m in top.modules()
                if isinstance(m, nn.Linear)]

    def train_flops_per_sample(self, groups):
        """GEMM FLOPs of one forward+backward pass per sample when the halves `groups` train."""
        return self.unit_train_flops(self.units_of(groups))

    def unit_train_flops(self, trainable):
        """GEMM FLOPs of one forward+backward pass per sample when the units in `trainable` train.

        Forward costs 2*in*out per Linear. Backward adds the weight gradient (2*in*out) for
        trainable layers, and the input gradient (2*in*out) only where some trainable unit lies
        earlier in the network: everything below the lowest trainable unit skips it, so freezing
        fc1 skips its backward entirely. Elementwise work (BatchNorm, ReLU, Dropout, the
        optimizer) is not counted.
        """
        flops = 0
        for layer, u in self.linear_layers():
            macs = layer.in_features * layer.out_features
            flops += 2 * macs
            if u in trainable:
                flops += 2 * macs
            if any(v < u for v in trainable):
                flops += 2 * macs  # some earlier unit (its Linear or BatchNorm) trains
        return flops

    def eval_flops_per_sample(self):
        return sum(2 * m.in_features * m.out_features for m, _ in self.linear_layers())


class SimpleNN(FreezableMLP):
    """The classic CIFAR-10 MLP: 3072-512-512-10; first half fc1+bn1, second fc2+bn2+fc3."""

    def __init__(self, input_size=3072, hidden_size=512, num_classes=10, dropout_rate=0.3):
        super().__init__(input_size, (hidden_size, hidden_size), num_classes, dropout_rate, split=1)

    fc1 = property(lambda self: self.blocks[0][0])
    bn1 = property(lambda self: self.blocks[0][1])
    fc2 = property(lambda self: self.blocks[1][0])
    bn2 = property(lambda self: self.blocks[1][1])
    fc3 = property(lambda self: self.head)
