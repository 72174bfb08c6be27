"""Freezing means frozen: parameters, optimizer state and (optionally) BatchNorm statistics."""
import pytest
import torch

from models import FIRST, SECOND, SimpleNN
from data import TensorLoader
from schedules import BOTH, Phases, alternating
from training_loop import make_optimizer, train


def _snapshot(tensors):
    return [t.detach().clone() for t in tensors]


def _bn_buffers(model, group):
    return [b for bn in model.group_batchnorms(group) for b in bn.buffers()]


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "adamw"])
@pytest.mark.parametrize("frozen", [FIRST, SECOND])
def test_frozen_group_is_bit_for_bit_unchanged(tiny, optimizer, frozen, make_model):
    """Train both halves for an epoch (so momentum, Adam moments and weight decay are live),
    then freeze one half for an epoch: its parameters must not move at all."""
    torch.manual_seed(0)
    model = make_model()
    loader = TensorLoader(tiny.x_train, tiny.y_train, 64, shuffle=True)
    test = TensorLoader(tiny.x_test, tiny.y_test, 256)
    other = SECOND if frozen == FIRST else FIRST
    schedule = Phases(phases=(BOTH, (other,)), every=1, unit="epoch")
    at_switch = {}

    class SnapshotAtEpoch1:
        """Loader wrapper that records both halves when epoch 1 (the frozen one) starts."""
        epoch = 0

        def __iter__(self):
            if self.epoch == 1:
                at_switch[frozen] = _snapshot(model.group_params(frozen))
                at_switch[other] = _snapshot(model.group_params(other))
            self.epoch += 1
            yield from loader

    train(model, SnapshotAtEpoch1(), test, schedule, num_epochs=2, optimizer=optimizer,
          weight_decay=0.01)
    assert all(torch.equal(a, b) for a, b in zip(at_switch[frozen], model.group_params(frozen)))
    assert any(not torch.equal(a, b) for a, b in zip(at_switch[other], model.group_params(other)))


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "adamw"])
def test_frozen_params_untouched_over_alternating_batches(tiny, optimizer, make_model):
    """Step-by-step: in every step, exactly the scheduled half changes."""
    torch.manual_seed(0)
    model = make_model()
    opt = make_optimizer(optimizer, [{"params": list(model.parameters())}], 1e-2, weight_decay=0.05)
    x, y = tiny.x_train[:64], tiny.y_train[:64]
    for step in range(6):
        active = (FIRST,) if step % 2 == 0 else (SECOND,)
        frozen = SECOND if active == (FIRST,) else FIRST
        model.set_trainable(active)
        before_frozen = _snapshot(model.group_params(frozen))
        before_active = _snapshot(model.group_params(active[0]))
        loss = torch.nn.functional.cross_entropy(model(x), y)
        model.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        assert all(torch.equal(a, b) for a, b in zip(before_frozen, model.group_params(frozen)))
        assert any(not torch.equal(a, b) for a, b in zip(before_active, model.group_params(active[0])))


def test_bn_stats_of_frozen_half_update_by_default_and_fix_with_option(tiny):
    x = tiny.x_train[:64]
    for fix in (False, True):
        torch.manual_seed(0)
        model = SimpleNN().to(x.device).train()
        model(x)  # make running stats non-trivial
        model.set_trainable((SECOND,), freeze_bn_stats=fix)
        before = _snapshot(_bn_buffers(model, FIRST))
        active_before = _snapshot(_bn_buffers(model, SECOND))
        model(x)  # one training-mode forward pass
        same = all(torch.equal(a, b) for a, b in zip(before, _bn_buffers(model, FIRST)))
        assert same == fix
        # the trained half's statistics always update
        assert not torch.equal(active_before[0], _bn_buffers(model, SECOND)[0])
        # fixing the statistics does not change the training-mode forward pass
        torch.manual_seed(1)
        model.set_trainable(BOTH)
        a = model(x)
        torch.manual_seed(1)
        model.set_trainable((SECOND,), freeze_bn_stats=True)
        b = model(x)
        assert torch.equal(a, b)


def test_frozen_bn_stats_stay_fixed_through_train(tiny, loaders, make_model):
    train_loader, test_loader = loaders
    torch.manual_seed(0)
    model = make_model()
    model(tiny.x_train[:64])
    before = _snapshot(_bn_buffers(model, FIRST))
    # a schedule that only ever trains the second half
    train(model, train_loader, test_loader, Phases(phases=((SECOND,),)), num_epochs=2,
          freeze_bn_stats=True)
    assert all(torch.equal(a, b) for a, b in zip(before, _bn_buffers(model, FIRST)))
    # after training every BatchNorm tracks statistics again
    assert all(bn.track_running_stats for g in BOTH for bn in model.group_batchnorms(g))


def test_alternating_epoch_trains_only_scheduled_half(tiny, loaders, make_model):
    train_loader, test_loader = loaders
    model = make_model()
    first0 = _snapshot(model.group_params(FIRST))
    second0 = _snapshot(model.group_params(SECOND))
    h = train(model, train_loader, test_loader, alternating(1, "epoch"), num_epochs=1)
    assert all(torch.equal(a, b) for a, b in zip(second0, model.group_params(SECOND)))
    assert not torch.equal(first0[0], model.group_params(FIRST)[0])
    assert h["steps_first"] == [len(train_loader)] and h["steps_second"] == [0]
