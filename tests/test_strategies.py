"""The published freezing methods as schedules: each one's defining behaviour, the FLOP model
for any frozen set, and the run-wide lr schedules."""
import math

import numpy as np
import pytest
import torch

from config import Config
from conftest import UnitRecorder
from data import TensorLoader
from models import FreezableMLP
from schedules import CyclicBlocks, FreezeOut, LayerFreezing, LayerOut, RunShape
from strategies import RunName, StrategyName
from training_loop import lr_multiplier, train

N, BATCH, IN = 320, 32, 20  # 10 steps per epoch


class Recorder(UnitRecorder):
    """Every unit's parameters before each step, and each unit's train/eval mode in each step."""

    def __init__(self, model, x, y):
        super().__init__(model, TensorLoader(x, y, BATCH, shuffle=True, seed=0),
                         lambda m: [u.training for u in m.units()])
        self.modes = self.records


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, IN, generator=g), torch.randint(0, 4, (N,), generator=g)


def _train(schedule, epochs=4, depth=3, seed=0, lr_log=None, **kw):
    torch.manual_seed(seed)
    model = FreezableMLP(IN, (16,) * depth, 4, 0.1, split=1)
    x, y = _data()
    loader = Recorder(model, x, y)
    test = TensorLoader(x[:64], y[:64], 64)
    hist = train(model, loader, test, schedule, num_epochs=epochs, learning_rate=1e-2, seed=seed, **kw)
    loader.snap()
    changed = [[not torch.equal(a, b) for a, b in zip(s0, s1)] for s0, s1 in zip(loader.states, loader.states[1:])]
    return hist, changed, loader


def _run(units=4, spe=10, total=40, seed=0):
    return RunShape(units, (0,) + (1,) * (units - 1), spe, total, seed)


# --- FreezeOut -----------------------------------------------------------------------------------
def test_freezeout_stop_fractions_and_cosine_lr():
    run, f = _run(), FreezeOut()
    t = [f.stop_fraction(u, run) for u in range(4)]
    assert t == pytest.approx([0.8 ** 3, (0.8 + 0.2 / 3) ** 3, (0.8 + 0.4 / 3) ** 3, 1.0])
    for step in (0, 5, 17, 20, 30, 39):
        _, factors = f.at(step // 10, step, run)
        for u in range(4):
            end = t[u] * 40
            want = 0.0 if step >= end else (1 / t[u]) * 0.5 * (1 + math.cos(math.pi * step / end))
            assert factors[u] == pytest.approx(want), (step, u)


def test_freezeout_block_stops_changing_after_its_fraction_of_steps():
    _, changed, loader = _train(FreezeOut(), epochs=4)  # 40 steps; block i stops at t_i * 40
    run = _run(units=4, total=40)
    for u in range(3):
        stop = math.ceil(FreezeOut().stop_fraction(u, run) * 40)
        assert all(c[u] for c in changed[:stop]), u        # trains (lr > 0) up to its stop
        assert not any(c[u] for c in changed[stop:]), u    # then never changes again
        assert all(not modes[u] for modes in loader.modes[stop:])  # and runs in eval mode
    assert all(c[3] for c in changed[:-1])  # the head trains to the end (last step: lr ~ 0)


# --- layer freezing ------------------------------------------------------------------------------
def test_layer_freezing_freezes_the_first_blocks_by_epoch():
    epochs = 10
    run = _run(units=4, spe=10, total=10 * epochs)
    lf = LayerFreezing()  # start 0.5, level 1: frac = (p - 0.5) / 0.5, floor(frac * 3) blocks
    assert [lf.frozen_blocks(e, run) for e in range(epochs)] == [0, 0, 0, 0, 0, 0, 0, 1, 1, 2]
    _, changed, loader = _train(lf, epochs=epochs)
    for e in range(epochs):
        k = lf.frozen_blocks(e, run)
        steps = changed[10 * e:10 * e + 10]
        assert all(not c[u] for c in steps for u in range(k)) and all(c[u] for c in steps for u in range(k, 4))
        assert all(all(m) for m in loader.modes[10 * e:10 * e + 10])  # BatchNorm and dropout keep running


# --- cyclic blocks -------------------------------------------------------------------------------
@pytest.mark.parametrize("order, expected", [("ascending", [0, 1, 2, 3, 0, 1, 2, 3]),
                                             ("descending", [3, 2, 1, 0, 3, 2, 1, 0])])
def test_cyclic_blocks_change_exactly_one_unit_per_step_in_order(order, expected):
    _, changed, _ = _train(CyclicBlocks(every=5, order=order), epochs=4)
    assert all(sum(c) == 1 for c in changed)
    active = [c.index(True) for c in changed]
    assert active == [u for u in expected for _ in range(5)]


def test_cyclic_blocks_random_order_is_a_fresh_permutation_per_round_from_the_seed():
    run = _run(units=4, spe=10, total=400, seed=3)
    cb = CyclicBlocks(every=5, order="random")
    rounds = [[cb.active(5 * (4 * r + i), run) for i in range(4)] for r in range(6)]
    assert all(sorted(r) == [0, 1, 2, 3] for r in rounds) and len({tuple(r) for r in rounds}) > 1
    again = [[cb.active(5 * (4 * r + i), run) for i in range(4)] for r in range(6)]
    assert rounds == again
    other = _run(units=4, spe=10, total=400, seed=4)
    assert rounds != [[cb.active(5 * (4 * r + i), other) for i in range(4)] for r in range(6)]


def test_cyclic_blocks_default_k_is_badams_rule():
    assert CyclicBlocks().steps_per_block(_run(units=3, spe=352)) == 118  # ceil(352 / 3)
    assert CyclicBlocks().steps_per_block(_run(units=3, spe=90)) == 50


def test_cyclic_blocks_reset_clears_adam_state_at_each_switch():
    from training_loop import TrainSpec
    cfg = Config()
    assert TrainSpec.of(cfg, RunName.parse("cyclic-blocks-reset")).reset_optimizer
    assert not TrainSpec.of(cfg, RunName.parse("cyclic-blocks")).reset_optimizer


# --- LayerOut --------------------------------------------------------------------------------------
def test_layerout_frozen_sets_come_from_the_seed_and_the_epoch():
    run, lo = _run(units=4, seed=7), LayerOut()
    sets = [lo.frozen(e, run) for e in range(30)]
    assert sets == [lo.frozen(e, _run(units=4, seed=7)) for e in range(30)]
    assert sets != [lo.frozen(e, _run(units=4, seed=8)) for e in range(30)]
    rng = np.random.default_rng([7, 5, 0x1A7E]).random(3)
    assert sets[5] == {u for u in range(3) if rng[u] < 0.5 * (u + 1) / 3}
    assert all(3 not in s for s in sets)  # the head always trains
    _, changed, _ = _train(lo, epochs=6, seed=7)
    for e in range(6):
        for c in changed[10 * e:10 * e + 10]:
            assert {u for u in range(4) if not c[u]} == lo.frozen(e, _run(units=4, seed=7))


# --- the FLOP model and lr schedules ---------------------------------------------------------------
def test_flop_model_with_a_frozen_middle_block():
    m = FreezableMLP(30, (20, 10, 8), 4, split=1)
    mac = [30 * 20, 20 * 10, 10 * 8, 8 * 4]
    # block 1 frozen: no weight gradient there, but its input gradient is needed (block 0 trains)
    want = sum(2 * x for x in mac) + 2 * (mac[0] + mac[2] + mac[3]) + 2 * (mac[1] + mac[2] + mac[3])
    assert m.unit_train_flops(frozenset({0, 2, 3})) == want
    # only the head trains: everything below it skips both backward GEMMs
    assert m.unit_train_flops(frozenset({3})) == sum(2 * x for x in mac) + 2 * mac[3]
    from torch.utils.flop_counter import FlopCounterMode
    m.set_trainable_units(frozenset({0, 2, 3}))
    with FlopCounterMode(display=False) as counter:
        m(torch.randn(4, 30)).sum().backward()
    assert counter.get_total_flops() / 4 == want


def test_lr_schedule_values_at_given_steps():
    assert lr_multiplier("constant", 57, 100) == 1.0
    assert lr_multiplier("cosine", 0, 100) == 1.0
    assert lr_multiplier("cosine", 50, 100) == pytest.approx(0.5)
    assert lr_multiplier("cosine", 100, 100) == pytest.approx(0.0)
    assert lr_multiplier("linear", 25, 100) == pytest.approx(0.75)
    # 10 warmup steps: 1/10 ... 10/10, then the decay runs over the remaining 90
    assert [lr_multiplier("cosine", s, 100, 10) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_multiplier("cosine", 55, 100, 10) == pytest.approx(0.5)
    assert lr_multiplier("linear", 100, 100, 10) == pytest.approx(0.0)


def test_the_lr_each_step_uses_is_schedule_times_strategy_factor(monkeypatch):
    import training_loop
    seen = []
    orig = training_loop._Optimizers.set_lr
    monkeypatch.setattr(training_loop._Optimizers, "set_lr", lambda self, lrs: (seen.append(lrs), orig(self, lrs))[1])
    _train(FreezeOut(), epochs=2, lr_schedule="cosine")
    run = _run(units=4, total=20)
    for step, lrs in enumerate(seen):
        want = [1e-2 * lr_multiplier("cosine", step, 20) * f for f in FreezeOut().at(step // 10, step, run)[1]]
        assert lrs == pytest.approx(want)


def test_named_strategies_use_these_schedules():
    assert isinstance(StrategyName.parse("freezeout").schedule(), FreezeOut)
    assert isinstance(StrategyName.parse("layer-freezing").schedule(), LayerFreezing)
    assert StrategyName.parse("cyclic-blocks-random").schedule().order == "random"
    assert isinstance(StrategyName.parse("layerout").schedule(), LayerOut)
    assert StrategyName.parse("freezeout[t0=0.5,cubic=false]").schedule() == FreezeOut(t0=0.5, cubic=False)


def test_steps_within_a_flops_budget():
    from runs import steps_within
    # 10 samples per epoch in batches of 4: 4, 4, 2 -> 40, 40, 20 FLOPs at 10 per sample
    assert steps_within(100, 10, 10, 4) == 3
    assert steps_within(99, 10, 10, 4) == 2
    assert steps_within(180, 10, 10, 4) == 5   # one epoch (100) + 40 + 40
    assert steps_within(39, 10, 10, 4) == 0


def test_matched_run_stops_within_one_step_and_fits_its_schedule(tmp_path):
    """standard@flops=alternating-epoch under a cosine: it trains exactly the standard steps that
    fit in alternating's FLOPs, and its schedule ends there (total_steps = those steps)."""
    import json

    import experiments
    from models import FreezableMLP
    from runs import steps_within
    args = ["--dataset", "synthetic", "--train-size", "640", "--test-size", "128", "--batch-size", "64",
            "--epochs", "3", "--seeds", "1", "--strategies", "alternating-epoch", "--lr-schedule", "cosine",
            "--match-budget", "flops", "--match-to", "alternating-epoch", "--no-progress",
            "--out", str(tmp_path)]
    assert experiments.main(args) == 0
    ref = json.loads((tmp_path / "runs" / "alternating-epoch__seed0.json").read_text())["history"]
    matched = json.loads((tmp_path / "runs" / "standard_at_flops=alternating-epoch__seed0.json").read_text())["history"]
    budget = sum(ref["train_flops"])
    per_sample = FreezableMLP(3072, (512, 512), 10).unit_train_flops(frozenset({0, 1, 2}))
    steps = steps_within(budget, per_sample, 640, 64)
    assert sum(matched["steps"]) == steps and sum(matched["train_flops"]) <= budget
    assert budget - sum(matched["train_flops"]) < 64 * per_sample  # within one step


def test_the_matched_run_is_given_its_fitted_schedule(monkeypatch, tmp_path):
    import experiments
    import runs
    seen = {}
    real = runs.fit

    def spy(model, train_loader, test_loader, spec, **kw):
        if spec.max_flops is not None:
            seen.update(total_steps=spec.total_steps, lr_schedule=spec.settings.lr_schedule)
        return real(model, train_loader, test_loader, spec, **kw)
    monkeypatch.setattr(runs, "fit", spy)
    args = ["--dataset", "synthetic", "--train-size", "640", "--test-size", "128", "--batch-size", "64",
            "--epochs", "3", "--seeds", "1", "--strategies", "alternating-batch", "--lr-schedule", "cosine",
            "--match-budget", "flops", "--no-progress", "--out", str(tmp_path)]
    assert experiments.main(args) == 0
    assert seen["lr_schedule"] == "cosine" and 0 < seen["total_steps"] < 3 * 10
