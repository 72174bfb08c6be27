import pytest

from config import Config, expand_strategies, known_strategy, strategy
from models import FIRST, SECOND
from training_loop import BOTH, STANDARD, Schedule, alternating


def _pattern(schedule, epochs=3, steps_per_epoch=4):
    out, step = [], 0
    for epoch in range(epochs):
        row = []
        for _ in range(steps_per_epoch):
            row.append(schedule.trainable(schedule.phase(epoch, step)))
            step += 1
        out.append(row)
    return out


F, S = (FIRST,), (SECOND,)


def test_standard_trains_both_every_step():
    assert _pattern(STANDARD) == [[BOTH] * 4] * 3


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
    # standard-reset-batch: same groups every step, but a new phase (hence a reset) each batch
    s = strategy("standard-reset-batch", Config())
    assert s.reset_optimizer and s.schedule.phase(0, 5) == 5 and s.schedule.trainable(5) == BOTH


def test_bad_schedule_rejected():
    with pytest.raises(ValueError):
        Schedule(every=0)
    with pytest.raises(ValueError):
        Schedule(unit="step")


def test_strategy_names():
    assert expand_strategies("core") == ("standard", "alternating-epoch", "alternating-batch")
    assert "gan-style" in expand_strategies("all") and "alternating-k" in expand_strategies("all")
    assert expand_strategies("standard,core") == ("standard", "alternating-epoch", "alternating-batch")
    assert strategy("alternating-k", Config(switch_every=7)).schedule == alternating(7, "batch")
    assert strategy("alternating-25", Config()).schedule == alternating(25, "batch")
    assert known_strategy("standard@flops") and not known_strategy("standard@bananas")
    assert not known_strategy("alternating") and not known_strategy("nope")
