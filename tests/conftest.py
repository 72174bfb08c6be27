import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data import TensorLoader, make_synthetic  # noqa: E402


@pytest.fixture(scope="session")
def tiny():
    """A small synthetic CIFAR-shaped dataset: 512 train, 256 test images."""
    return make_synthetic(512, 256, seed=0)


@pytest.fixture
def loaders(tiny):
    return (TensorLoader(tiny.x_train, tiny.y_train, 64, shuffle=True, seed=0),
            TensorLoader(tiny.x_test, tiny.y_test, 128))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
