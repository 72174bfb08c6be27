"""One optimizer persists across switches; resets happen only when asked for."""
import pytest
import torch

from models import FIRST, SECOND, SimpleNN
from training_loop import _Optimizers, alternating, make_optimizer, train


@pytest.fixture
def built(monkeypatch):
    """Every optimizer set that train() builds, in order."""
    made = []
    orig = _Optimizers.build

    def spy(self):
        orig(self)
        made.append(self.opts)

    monkeypatch.setattr(_Optimizers, "build", spy)
    return made


def _adam_steps(opt, params):
    return [int(opt.state[p]["step"]) if p in opt.state else 0 for p in params]


def test_state_survives_frozen_periods(tiny, loaders, built):
    """One optimizer for the run; each half's Adam step count equals its own steps."""
    made = built
    train_loader, test_loader = loaders
    model = SimpleNN().to(tiny.x_train.device)
    h = train(model, train_loader, test_loader, alternating(1, "epoch"), num_epochs=3)
    assert len(made) == 1  # built once, never re-created
    opt = next(iter(made[0].values()))
    n = len(train_loader)
    assert h["steps_first"] == [n, 0, n] and h["steps_second"] == [0, n, 0]
    assert set(_adam_steps(opt, model.group_params(FIRST))) == {2 * n}
    assert set(_adam_steps(opt, model.group_params(SECOND))) == {n}


def test_moments_unchanged_while_frozen(tiny):
    model = SimpleNN().to(tiny.x_train.device)
    opt = make_optimizer("adam", [{"params": list(model.parameters())}], 1e-3)
    x, y = tiny.x_train[:64], tiny.y_train[:64]

    def step(groups):
        model.set_trainable(groups)
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step((FIRST, SECOND))
    w = model.fc1.weight
    saved = {k: v.clone() for k, v in opt.state[w].items()}
    for _ in range(3):
        step((SECOND,))
    assert all(torch.equal(saved[k], opt.state[w][k]) for k in saved)


def test_reset_option_recreates_adam_at_each_switch(tiny, loaders, built):
    made = built
    train_loader, test_loader = loaders
    model = SimpleNN().to(tiny.x_train.device)
    train(model, train_loader, test_loader, alternating(1, "epoch"), num_epochs=3, reset_optimizer=True)
    assert len(made) == 3  # initial + one per switch
    last = next(iter(made[-1].values()))
    # the last optimizer saw only epoch 3 (first half): its state starts from zero there
    n = len(train_loader)
    assert set(_adam_steps(last, model.group_params(FIRST))) == {n}
    assert set(_adam_steps(last, model.group_params(SECOND))) == {0}


def test_reset_changes_results_and_persistence_is_default(tiny, loaders):
    train_loader, test_loader = loaders
    runs = {}
    for reset in (False, True):
        torch.manual_seed(0)
        train_loader.generator.manual_seed(0)
        h = train(SimpleNN(), train_loader, test_loader, alternating(1, "batch"), num_epochs=1,
                  reset_optimizer=reset)
        runs[reset] = h["train_loss"][0]
    assert runs[False] != runs[True]


def test_gan_style_with_equal_rates_equals_alternating_batch(tiny, loaders):
    """Adam keeps per-parameter state, so one Adam per half with equal learning rates is the
    same computation as one Adam over both halves: bit-for-bit identical histories."""
    train_loader, test_loader = loaders
    results = []
    for separate in (False, True):
        torch.manual_seed(0)
        train_loader.generator.manual_seed(0)
        model = SimpleNN().to(tiny.x_train.device)
        h = train(model, train_loader, test_loader, alternating(1, "batch"), num_epochs=2,
                  separate_optimizers=separate, group_lrs=(1e-3, 1e-3))
        results.append((h["train_loss"], h["test_acc"], model.fc1.weight.clone()))
    assert results[0][0] == results[1][0] and results[0][1] == results[1][1]
    assert torch.equal(results[0][2], results[1][2])
