"""--compile: toggling requires_grad must not recompile at every switch."""
import shutil

import pytest
import torch

from data import TensorLoader
from training_loop import alternating, train


@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="inductor needs a C compiler")
def test_compiled_alternation_compiles_each_variant_once(tiny, make_model):
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    model = torch.compile(make_model())
    loader = TensorLoader(tiny.x_train, tiny.y_train, 64, shuffle=True)
    test = TensorLoader(tiny.x_test, tiny.y_test, 128)
    train(model, loader, test, alternating(1, "batch"), num_epochs=1)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs <= 3  # first half frozen, second half frozen, evaluation
    h = train(model, loader, test, alternating(1, "batch"), num_epochs=2)  # 16 more switches
    assert counters["stats"]["unique_graphs"] == graphs
    assert all(torch.isfinite(torch.tensor(h["train_loss"])))
