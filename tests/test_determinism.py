import torch

from data import TensorLoader
from training_loop import alternating, train

TIMING = {"epoch_time_s", "eval_time_s"}


def _run(tiny, make_model, seed, schedule):
    model = make_model(seed)
    loader = TensorLoader(tiny.x_train, tiny.y_train, 64, shuffle=True, seed=seed)
    h = train(model, loader, TensorLoader(tiny.x_test, tiny.y_test, 128), schedule, num_epochs=2)
    return {k: v for k, v in h.items() if k not in TIMING}, model


def test_same_seed_same_history(tiny, make_model):
    a, ma = _run(tiny, make_model, 3, alternating(1, "batch"))
    b, mb = _run(tiny, make_model, 3, alternating(1, "batch"))
    assert a == b
    assert all(torch.equal(p, q) for p, q in zip(ma.state_dict().values(), mb.state_dict().values()))


def test_different_seed_different_history(tiny, make_model):
    a, _ = _run(tiny, make_model, 3, alternating(1, "batch"))
    b, _ = _run(tiny, make_model, 4, alternating(1, "batch"))
    assert a["train_loss"] != b["train_loss"]


def test_loader_order_depends_only_on_seed(tiny, make_model):
    l1 = TensorLoader(tiny.x_train, tiny.y_train, 64, shuffle=True, seed=5)
    l2 = TensorLoader(tiny.x_train, tiny.y_train, 64, shuffle=True, seed=5)
    for _ in range(2):  # two epochs: fresh permutation each, identical across loaders
        e1 = torch.cat([y for _, y in l1])
        e2 = torch.cat([y for _, y in l2])
        assert torch.equal(e1, e2)
    assert sorted(e1.tolist()) == sorted(tiny.y_train.tolist())  # a permutation: every sample once
