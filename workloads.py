"""The workload API: a model family and the task it learns, registered like a schedule.

    from workloads import Workload, register_workload
    from models import UnitStack

    @register_workload("tiny-convnet", description="two conv stages and a linear head")
    class TinyConvNet(Workload):
        settings = {"hidden_size": 32}                 # the shared settings it reads, its defaults
        def build(self, s, data):
            c, w = data.shape[0], s["hidden_size"]
            stage = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o),
                                               nn.ReLU(), nn.MaxPool2d(2))
            head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w, len(data.classes)))
            return UnitStack([stage(c, w), stage(w, w), head], first_half=1)

A workload builds its network (a models.FreezableNet: ordered units, the head last, and the half
each unit belongs to) from its settings and the data; it names the kind of data it learns from;
its loss is cross-entropy over the last dimension (an image's class, or each next character),
and the scored metric is the count of correct predictions (test images, or test characters),
with the test loss beside it. Its FLOPs are measured per unit (flops.py). Its settings are the
shared settings of config.py (--depth, --hidden-size, --dropout, --split, --heads, --context,
--augment, --label-smoothing, and --train-size, which for text is the windows per epoch): each
workload lists those it reads, with its own defaults, and a model setting it does not read is
refused. Its code enters every run's identity the
way a schedule's does: a built-in's `version`, or the sha256 of a plugin's file.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from models import CharTransformer, FreezableMLP, ResNet
from plugins import code_origin, did_you_mean, note_registration

DATA_KINDS = ("images", "text")


class WorkloadError(ValueError):
    """A workload that cannot work with these settings or data; its message is one line."""


class Workload:
    """A model family and its task. Subclasses set `settings` (the shared settings it reads, with
    its defaults), `data` ("images" or "text") and define `build(settings, data)`."""
    data = "images"
    settings: dict = {}
    version = 1
    pack = False         # whether the pack engine (pack.py, built for the MLP) can train it

    def build(self, s, data):
        raise NotImplementedError(f"{type(self).__name__} must define build(settings, data)")

    def check(self, s):
        """Raise WorkloadError where the settings cannot build this network."""

    def loss(self, logits, y, s):
        """The training loss: cross-entropy over the last dimension, with the label smoothing set."""
        return F.cross_entropy(logits.flatten(0, -2), y.flatten(), label_smoothing=s.get("label_smoothing") or 0.0)

    def example_shape(self, s, data):
        """The shape of a batch of two inputs, for measuring FLOPs."""
        return (2, s["context"]) if data.kind == "text" else (2, *data.shape)

    def describe(self, s):
        """A few words for figure titles."""
        return type(self).__name__


WORKLOADS: dict[str, Workload] = {}
DESCRIPTIONS: dict[str, str] = {}


def register_workload(name, workload=None, *, description=""):
    """Register workload `name`: register_workload("mine", Mine()), or @register_workload("mine") on
    a Workload class. Returns what it was given, so it decorates."""
    import re
    if not re.fullmatch(r"[a-z][a-z0-9-]*", name) or name.endswith("-"):
        raise WorkloadError(f"workload name {name!r}: use lower-case letters, digits and '-', starting with a letter")

    def add(obj):
        w = obj() if isinstance(obj, type) else obj
        if not isinstance(w, Workload):
            raise WorkloadError(f"register_workload({name!r}, ...) needs a workloads.Workload, got {type(w).__name__}")
        if w.data not in DATA_KINDS:
            raise WorkloadError(f"workload {name!r}: data must be one of {', '.join(DATA_KINDS)}, got {w.data!r}")
        unknown = sorted(set(w.settings) - set(SHARED))
        if unknown:
            raise WorkloadError(f"workload {name!r} reads {unknown[0]!r}, which is not a shared model setting "
                                f"({', '.join(SHARED)})")
        if name in WORKLOADS and code_origin(type(WORKLOADS[name])) != code_origin(type(w)):
            raise WorkloadError(f"workload {name!r} is already registered (by "
                                f"{code_origin(type(WORKLOADS[name]))['where']}); choose another name")
        WORKLOADS[name] = w
        DESCRIPTIONS[name] = description or (type(w).__doc__ or "").strip().split("\n")[0]
        note_registration("workload", name, type(w))
        return obj

    return add if workload is None else add(workload)


def lookup(name):
    if name in WORKLOADS:
        return WORKLOADS[name]
    raise WorkloadError(f"unknown workload {name!r}{did_you_mean(name, WORKLOADS)}; see --list-workloads (a network of your own: "
                        f"--plugin FILE.py)")


def spec(name):
    """What a run records about its workload: its name, class and where its code comes from."""
    w = lookup(name)
    origin = code_origin(type(w))
    return {"workload": name, "class": type(w).__name__, "code": origin}


def identity(spec_):
    return (spec_["class"], spec_["code"]["kind"] == "builtin", spec_["code"]["fingerprint"])


LEGACY = {"workload": "mlp", "class": "MLP", "code": {"kind": "builtin", "where": "built in", "fingerprint": "MLP v1"}}


# the shared model settings a workload may read (declared, with their parsers and help, in config.py)
SHARED = ("depth", "hidden_size", "dropout", "split", "heads", "context", "augment", "label_smoothing", "train_size")


# --- the built-in workloads ---------------------------------------------------------------------
class MLP(Workload):
    """Linear-BatchNorm-ReLU-Dropout blocks and a linear head (the classic 3072-512-512-10 on CIFAR-10)."""
    settings = {"depth": 2, "hidden_size": 512, "dropout": 0.3, "split": None}
    pack = True

    def first_half(self, s):
        return s["split"] if s["split"] is not None else max(1, s["depth"] // 2)

    def check(self, s):
        if not 1 <= self.first_half(s) <= s["depth"]:
            raise WorkloadError(f"--split must be between 1 and --depth ({s['depth']}), got {s['split']}: the first "
                                f"half holds blocks 1..split, the second half the rest and the head")

    def build(self, s, data):
        return FreezableMLP(data.input_size, (s["hidden_size"],) * s["depth"], len(data.classes), s["dropout"],
                            split=self.first_half(s))

    def describe(self, s):
        return "MLP" if (s["depth"], s["hidden_size"]) == (2, 512) else f"{s['depth']} x {s['hidden_size']} MLP"


class CNN(Workload):
    """A small ResNet: conv stem, 3 stages of `depth` residual blocks (width, 2x, 4x channels), pool, linear head."""
    settings = {"depth": 1, "hidden_size": 16, "dropout": 0.0, "split": None, "augment": True, "label_smoothing": 0.0}

    def check(self, s):
        blocks = 3 * s["depth"]
        if s["split"] is not None and not 0 <= s["split"] <= blocks:
            raise WorkloadError(f"--split must be between 0 and the {blocks} residual blocks, got {s['split']}")

    def build(self, s, data):
        if len(data.shape) != 3:
            raise WorkloadError(f"workload cnn needs images (channels, height, width), got inputs of shape {data.shape}")
        model = ResNet(data.shape[0], len(data.classes), s["hidden_size"], s["depth"], s["split"], s["dropout"])
        return model.to(memory_format=torch.channels_last)  # 20% faster on this CPU (ARCHITECTURE.md)

    def describe(self, s):
        w = s["hidden_size"]
        return f"ResNet-{6 * s['depth'] + 2} ({w}-{2 * w}-{4 * w})"


class GPT(Workload):
    """A character-level decoder-only transformer in nanoGPT's shape (embeddings, pre-LN blocks, head)."""
    data = "text"
    settings = {"depth": 4, "hidden_size": 128, "heads": 4, "context": 64, "dropout": 0.0, "split": None,
                "train_size": 8192}  # windows per epoch: 15 epochs are 7.9M characters, 4 minutes on 2 cores

    def check(self, s):
        if s["hidden_size"] % s["heads"]:
            raise WorkloadError(f"--hidden-size {s['hidden_size']} must be a multiple of --heads {s['heads']}")
        if s["split"] is not None and not 0 <= s["split"] <= s["depth"]:
            raise WorkloadError(f"--split must be between 0 and --depth ({s['depth']} blocks), got {s['split']}")

    def build(self, s, data):
        return CharTransformer(len(data.classes), s["context"], s["hidden_size"], s["depth"], s["heads"],
                               s["dropout"], s["split"])

    def describe(self, s):
        return f"char transformer {s['depth']} x {s['hidden_size']}, context {s['context']}"


register_workload("mlp", MLP(), description="Linear-BatchNorm-ReLU-Dropout blocks and a linear head (the classic MLP)")
register_workload("cnn", CNN(), description="small ResNet: conv stem, 3 stages of residual blocks, pool, linear head")
register_workload("gpt", GPT(), description="character-level decoder-only transformer, nanoGPT's shape")
BUILTIN = tuple(WORKLOADS)


def bits(nats):
    return nats / math.log(2)
