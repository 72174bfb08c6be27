"""A plugin workload: a small ConvNet that declares its units (two conv stages, then the head).

    python experiments.py --plugin examples/tiny_convnet.py --workload tiny-convnet --dataset synthetic
"""
from torch import nn

from models import UnitStack
from workloads import Workload, register_workload


def stage(c_in, c_out):
    """conv3x3-BN-ReLU, then halve the resolution: one unit."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.MaxPool2d(2))


@register_workload("tiny-convnet", description="two conv stages and a linear head, each a unit")
class TinyConvNet(Workload):
    settings = {"hidden_size": 16}  # the shared settings it reads (--hidden-size), with its default

    def build(self, s, data):
        c, w = data.shape[0], s["hidden_size"]
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * w, len(data.classes)))
        return UnitStack([stage(c, w), stage(w, 2 * w), head], first_half=1)  # halves: stage 1 | the rest
