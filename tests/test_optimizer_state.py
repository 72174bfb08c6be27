"""One optimizer persists across switches; resets happen only when asked for."""
import pytest
import torch

from models import FIRST, SECOND, SimpleNN
from schedules import TwoTimescale, alternating
from training_loop import _Optimizers, make_optimizer, train


@pytest.fixture
def built(monkeypatch):
    """Every optimizer set that train() builds, in order."""
    made = []
    orig = _Optimizers.build

    def spy(self):
        orig(self)
        made.append(self.opt)

    monkeypatch.setattr(_Optimizers, "build", spy)
    return made


def _adam_steps(opt, params):
    return [int(opt.state[p]["step"]) if p in opt.state else 0 for p in params]


def test_state_survives_frozen_periods(tiny, loaders, built, make_model):
    """One optimizer for the run; each half's Adam step count equals its own steps."""
    made = built
    train_loader, test_loader = loaders
    model = make_model()
    h = train(model, train_loader, test_loader, alternating(1, "epoch"), num_epochs=3)
    assert len(made) == 1  # built once, never re-created
    opt = made[0]
    n = len(train_loader)
    assert h["steps_first"] == [n, 0, n] and h["steps_second"] == [0, n, 0]
    assert set(_adam_steps(opt, model.group_params(FIRST))) == {2 * n}
    assert set(_adam_steps(opt, model.group_params(SECOND))) == {n}


def test_moments_unchanged_while_frozen(tiny, make_model):
    model = make_model()
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


def test_reset_option_recreates_adam_at_each_switch(tiny, loaders, built, make_model):
    made = built
    train_loader, test_loader = loaders
    model = make_model()
    train(model, train_loader, test_loader, alternating(1, "epoch"), num_epochs=3, reset_optimizer=True)
    assert len(made) == 3  # initial + one per switch
    last = made[-1]
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


def test_gan_style_with_equal_rates_equals_alternating_batch(tiny, loaders, make_model):
    """GAN-style is alternating-batch whose halves train at their own multiples of the lr; with
    equal rates it is the same computation, bit for bit (Adam's state is per parameter, so one
    optimizer with per-unit rates is what one optimizer per half was)."""
    train_loader, test_loader = loaders
    results = []
    for schedule in (alternating(1, "batch"), TwoTimescale(second_lr=1.0)):
        torch.manual_seed(0)
        train_loader.generator.manual_seed(0)
        model = make_model()
        h = train(model, train_loader, test_loader, schedule, num_epochs=2)
        results.append((h["train_loss"], h["test_acc"], model.fc1.weight.clone()))
    assert results[0][0] == results[1][0] and results[0][1] == results[1][1]
    assert torch.equal(results[0][2], results[1][2])


def test_gan_style_gives_the_second_half_its_multiple_of_the_lr(monkeypatch, tiny, loaders, make_model):
    import training_loop
    seen = []
    orig = training_loop._Optimizers.set_lr
    monkeypatch.setattr(training_loop._Optimizers, "set_lr", lambda self, lrs: (seen.append(lrs), orig(self, lrs))[1])
    train(make_model(), *loaders, TwoTimescale(first_lr=1.0, second_lr=4.0), num_epochs=1,
          learning_rate=1e-3)
    assert seen[0] == (1e-3, 0.0, 0.0) and seen[1] == (0.0, 4e-3, 4e-3)  # units: fc1 block, fc2 block, head
