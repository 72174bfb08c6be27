import math

import pytest
import torch

from data import TensorLoader
from models import SimpleNN
from training_loop import STANDARD, alternating, evaluate_model, train, train_alternating, \
    train_alternating_batch, train_standard


def test_presets_accept_plain_lists_of_batches(tiny):
    batches = [(tiny.x_train[i:i + 64], tiny.y_train[i:i + 64]) for i in range(0, 512, 64)]
    test = [(tiny.x_test, tiny.y_test)]
    for fn in (train_standard, train_alternating, train_alternating_batch):
        h = fn(SimpleNN(), batches, test, num_epochs=2, learning_rate=1e-3, device="cpu")
        assert h["epoch"] == [1, 2]
        assert all(math.isfinite(v) for v in h["train_loss"] + h["test_loss"])


def test_presets_accept_a_torch_dataloader(tiny, make_model):
    from torch.utils.data import DataLoader, TensorDataset
    dl = DataLoader(TensorDataset(tiny.x_train, tiny.y_train), batch_size=64, shuffle=True)
    h = train_standard(make_model(), dl, DataLoader(TensorDataset(tiny.x_test, tiny.y_test), 128),
                       num_epochs=1)
    assert h["steps"] == [8]


def test_history_counts(tiny, loaders, device, make_model):
    train_loader, test_loader = loaders
    model = make_model()
    n = len(train_loader)
    h = train(model, train_loader, test_loader, alternating(1, "batch"), num_epochs=2, device=device)
    assert h["steps"] == [n, n]
    assert [a + b for a, b in zip(h["steps_first"], h["steps_second"])] == [n, n]
    first = sum(p.numel() for p in model.get_first_half_params())
    second = sum(p.numel() for p in model.get_second_half_params())
    assert sum(h["param_updates"]) == sum(h["steps_first"]) * first + sum(h["steps_second"]) * second
    per_sample_first = model.train_flops_per_sample((0,))
    per_sample_second = model.train_flops_per_sample((1,))
    # 512 samples, 8 batches of 64, alternating from the first half: 4 steps each per epoch
    assert h["train_flops"][0] == 4 * 64 * per_sample_first + 4 * 64 * per_sample_second
    assert all(t > 0 for t in h["epoch_time_s"] + h["eval_time_s"])
    assert h["diverged"] == [False, False]


def test_train_loss_is_the_sample_weighted_mean(tiny, make_model):
    """The device-side accumulation gives the same number as averaging per-step losses."""
    torch.manual_seed(0)
    model = make_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [(tiny.x_train[i:i + 100], tiny.y_train[i:i + 100]) for i in range(0, 500, 100)]
    batches.append((tiny.x_train[500:512], tiny.y_train[500:512]))  # a short last batch
    torch.manual_seed(1)
    h = train(model, batches, [(tiny.x_test, tiny.y_test)], STANDARD, num_epochs=1, learning_rate=0.0)
    # lr 0: weights fixed, so recompute each batch's loss with the same dropout stream
    model.load_state_dict(state)
    model.train()
    torch.manual_seed(1)
    losses = [torch.nn.functional.cross_entropy(model(x), y).item() * len(y) for x, y in batches]
    assert h["train_loss"][0] == pytest.approx(sum(losses) / 512, rel=1e-5)


def test_evaluate_model(tiny, make_model):
    model = make_model()
    loss, acc = evaluate_model(model, TensorLoader(tiny.x_test, tiny.y_test, 100))
    model.eval()
    with torch.no_grad():
        logits = model(tiny.x_test)
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(logits, tiny.y_test).item(), rel=1e-5)
    assert acc == pytest.approx(100 * (logits.argmax(1) == tiny.y_test).float().mean().item())
    assert model.training is False  # restored to what it was


def test_nan_loss_marks_divergence_and_stops(tiny):
    bad_x = tiny.x_train[:64].clone()
    bad_x[0, 0] = float("nan")
    batches = [(bad_x, tiny.y_train[:64])]
    h = train(SimpleNN(), batches, [(tiny.x_test, tiny.y_test)], num_epochs=5)
    assert h["diverged"] == [True] and h["epoch"] == [1]


def test_flop_budget_stops_early(tiny, loaders, make_model):
    train_loader, test_loader = loaders
    model = make_model()
    per_step = model.train_flops_per_sample((0, 1)) * 64
    h = train(model, train_loader, test_loader, num_epochs=5, max_flops=10.5 * per_step)
    assert sum(h["steps"]) == 10 and sum(h["train_flops"]) <= 10.5 * per_step
    assert h["epoch"] == [1, 2] and h["steps"] == [8, 2]


def test_bad_optimizer_name(tiny, loaders):
    with pytest.raises(ValueError):
        train(SimpleNN(), *loaders, num_epochs=1, optimizer="lbfgs")
