import pytest

from models import FIRST, SECOND
from schedules import BOTH, Phases, alternating
from strategies import RunName, StrategyError, StrategyName, expand


def _pattern(schedule, epochs=3, steps_per_epoch=4):
    out, step = [], 0
    for epoch in range(epochs):
        row = []
        for _ in range(steps_per_epoch):
            row.append(schedule.trainable(schedule.index(epoch, step)))
            step += 1
        out.append(row)
    return out


F, S = (FIRST,), (SECOND,)


def test_standard_phases_train_both_every_step():
    assert _pattern(Phases()) == [[BOTH] * 4] * 3


def test_alternating_every_epoch_starts_with_first_half():
    assert _pattern(alternating(1, "epoch")) == [[F] * 4, [S] * 4, [F] * 4]


def test_alternating_every_two_epochs():
    assert _pattern(alternating(2, "epoch")) == [[F] * 4, [F] * 4, [S] * 4]


def test_alternating_every_batch_continues_across_epochs():
    # 3 batches per epoch: the alternation does not restart at an epoch boundary
    assert _pattern(alternating(1, "batch"), epochs=2, steps_per_epoch=3) == [[F, S, F], [S, F, S]]


def test_alternating_every_k_batches():
    assert _pattern(alternating(3, "batch"), epochs=1, steps_per_epoch=7) == [[F, F, F, S, S, S, F]]


def test_phase_changes_drive_standard_resets():
    # standard-reset-batch: same units every step, but a new phase (hence a reset) each batch
    s = StrategyName.parse("standard-reset-batch").strategy()
    assert s.reset_optimizer and s.schedule.phase(0, 5, None, None) == 5 and s.schedule.trainable(5) == BOTH


def test_bad_schedule_rejected():
    with pytest.raises(ValueError):
        Phases(every=0)
    with pytest.raises(ValueError):
        Phases(unit="step")


def test_strategy_names():
    names = lambda spec: [str(n) for n in expand(spec)]  # noqa: E731
    assert names("core") == ["standard", "alternating-epoch", "alternating-batch"]
    assert "gan-style" in names("all") and "alternating-k" in names("all") and "autofreeze" in names("all")
    assert names("standard,core") == ["standard", "alternating-epoch", "alternating-batch"]
    assert StrategyName.parse("alternating-k[every=7]").schedule() == alternating(7, "batch")
    assert StrategyName.parse("alternating-25").schedule() == alternating(25, "batch")
    assert str(StrategyName.parse("alternating-k[every=25]")) == "alternating-25"  # the name such runs had
    assert str(RunName.parse("standard@flops")) == "standard@flops"
    for bad in ("standard@bananas", "alternating", "nope"):
        with pytest.raises(StrategyError):
            RunName.parse(bad)
