"""The networks: each trained by units, its freezable parts in forward order with the head last.

`FreezableNet` is what the training loop needs of any network: `units()` (the head last), the
half each unit belongs to (for the alternating strategies), and `set_trainable_units`, which
freezes by `requires_grad_` and, where asked, keeps BatchNorm statistics or runs frozen units in
eval mode. The built-in networks:

- `FreezableMLP` (workload mlp): Linear-BatchNorm-ReLU-Dropout blocks and a linear head;
  `SimpleNN` is the classic CIFAR-10 3072-512-512-10 instance with the earlier version's API.
- `ResNet` (workload cnn): a conv stem, three stages of residual blocks with BatchNorm, global
  average pooling and a linear head; units: the stem, each block, the head.
- `CharTransformer` (workload gpt): nanoGPT's shape, token and position embeddings, pre-LayerNorm
  blocks with causal self-attention, a final LayerNorm and a linear head; units: the embeddings,
  each block, the head.
- `UnitStack`: any list of modules applied in turn, for a network a plugin declares by its units.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

FIRST, SECOND = 0, 1  # indices of the two parameter groups ("halves")


def _batchnorms(module):
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class FreezableNet(nn.Module):
    """A network trained by units. Subclasses define `units()` (forward order, the head last) and
    set `first_half`, the number of leading units in the first half (the rest are the second)."""
    first_half = 1

    def units(self):
        raise NotImplementedError(f"{type(self).__name__} must define units(), the head last")

    def half_of(self, unit):
        """The half (FIRST or SECOND) that unit `unit` belongs to."""
        return FIRST if unit < self.first_half else SECOND

    def halves(self):
        return tuple(self.half_of(u) for u in range(len(self.units())))

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
            for bn in _batchnorms(module):
                # In train mode a BN with track_running_stats=False uses batch
                # statistics and leaves running_mean/var/num_batches_tracked alone.
                bn.track_running_stats = on or not freeze_bn_stats
            if self.training:
                module.train(on or not eval_frozen)

    # --- the halves as groups of modules ------------------------------------------------------
    def group_modules(self, group):
        """Units of group 0 (first half) or 1 (second half), in forward order."""
        return [m for u, m in enumerate(self.units()) if self.half_of(u) == group]

    def group_params(self, group):
        return [p for m in self.group_modules(group) for p in m.parameters()]

    def group_batchnorms(self, group):
        return [bn for top in self.group_modules(group) for bn in _batchnorms(top)]

    def count_parameters(self, trainable_only=False):
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


class FreezableMLP(FreezableNet):
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
        self.split = self.first_half = split
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

    def units(self):
        """The freezable units in forward order: each hidden block, then the head (last)."""
        return [*self.blocks, self.head]

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

    # --- analytic cost model (flops.py measures every network; this is its check) ---------------
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


# --- cnn: a small residual network ------------------------------------------------------------------
class ResidualBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the shortcut (a 1x1 conv and BN where the shape changes), ReLU."""

    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (nn.Sequential() if stride == 1 and c_in == c_out else
                         nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(FreezableNet):
    """A stem (conv3x3-BN-ReLU, `width` channels), three stages of `depth` residual blocks each
    (width, 2 width, 4 width channels; the first block of stages 2 and 3 halves the resolution),
    global average pooling, dropout and a linear head. Any image size and channel count. The
    first half is the stem and the first `split` blocks."""

    def __init__(self, in_channels=3, num_classes=10, width=16, depth=1, split=None, dropout_rate=0.0):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        blocks, c_in = [], width
        for stage in range(3):
            c_out = width * 2 ** stage
            for i in range(depth):
                blocks.append(ResidualBlock(c_in, c_out, 2 if stage and not i else 1))
                c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout_rate),
                                  nn.Linear(c_in, num_classes))
        split = len(blocks) // 2 if split is None else split
        if not 0 <= split < len(blocks) + 1:
            raise ValueError(f"split must be in 0..{len(blocks)} residual blocks, got {split}")
        self.first_half = 1 + split

    def forward(self, x):
        x = self.stem(x.contiguous(memory_format=torch.channels_last))  # the layout cnn's convs run fastest in
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def units(self):
        return [self.stem, *self.blocks, self.head]


# --- gpt: a character-level decoder-only transformer (nanoGPT's shape) ------------------------------
class Embeddings(nn.Module):
    """Token and position embeddings, summed, then dropout."""

    def __init__(self, vocab, context, width, dropout_rate):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.drop = nn.Dropout(dropout_rate)

    def forward(self, idx):
        pos = torch.arange(idx.shape[1], device=idx.device)
        return self.drop(self.wte(idx) + self.wpe(pos))


class CausalSelfAttention(nn.Module):
    def __init__(self, width, heads, dropout_rate):
        super().__init__()
        self.c_attn, self.c_proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.heads, self.p = heads, dropout_rate
        self.drop = nn.Dropout(dropout_rate)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in self.c_attn(x).split(C, 2))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.p if self.training else 0.0, is_causal=True)
        return self.drop(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm: x + attention(LN(x)), then x + MLP(LN(x)) with a 4x GELU MLP."""

    def __init__(self, width, heads, dropout_rate):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads, dropout_rate)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width),
                                 nn.Dropout(dropout_rate))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class LMHead(nn.Module):
    """The final LayerNorm and the linear map to next-token logits."""

    def __init__(self, width, vocab):
        super().__init__()
        self.ln_f, self.lm_head = nn.LayerNorm(width), nn.Linear(width, vocab, bias=False)

    def forward(self, x):
        return self.lm_head(self.ln_f(x))


class CharTransformer(FreezableNet):
    """nanoGPT's decoder-only transformer: (batch, context) token ids -> (batch, context, vocab)
    logits. Weights are not tied between the embeddings and the head, so each unit owns its own
    parameters. nanoGPT's initialisation: N(0, 0.02), residual projections scaled by
    1/sqrt(2 layers). The first half is the embeddings and the first `split` blocks."""

    def __init__(self, vocab, context=64, width=128, layers=4, heads=4, dropout_rate=0.0, split=None):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} must be a multiple of heads {heads}")
        self.context = context
        self.embeddings = Embeddings(vocab, context, width, dropout_rate)
        self.blocks = nn.ModuleList(TransformerBlock(width, heads, dropout_rate) for _ in range(layers))
        self.head = LMHead(width, vocab)
        split = layers // 2 if split is None else split
        if not 0 <= split <= layers:
            raise ValueError(f"split must be in 0..{layers} blocks, got {split}")
        self.first_half = 1 + split
        for name, m in self.named_modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                std = 0.02 / math.sqrt(2 * layers) if name.endswith("c_proj") or name.endswith("mlp.2") else 0.02
                nn.init.normal_(m.weight, 0.0, std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, idx):
        x = self.embeddings(idx)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def units(self):
        return [self.embeddings, *self.blocks, self.head]


class UnitStack(FreezableNet):
    """A network given as its units, applied one after another (the head last); the first
    `first_half` of them are the first half."""

    def __init__(self, units, first_half=None):
        super().__init__()
        self.stack = nn.ModuleList(units)
        self.first_half = max(1, len(units) // 2) if first_half is None else first_half

    def forward(self, x):
        for unit in self.stack:
            x = unit(x)
        return x

    def units(self):
        return list(self.stack)
