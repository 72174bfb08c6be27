"""Runs that survive being killed: epoch-end snapshots resume bit for bit."""
import io
import json
import subprocess
import sys

import pytest
import torch

from config import Config
from conftest import ROOT, kill_at_epoch
from data import TensorLoader
from strategies import RunName
from training_loop import TrainSpec, fit

TIMING = {"epoch_time_s", "eval_time_s"}


def _copy(snapshot):
    buf = io.BytesIO()
    torch.save(snapshot, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


@pytest.mark.parametrize("name, schedule", [
    ("standard", "constant"), ("alternating-epoch", "constant"), ("alternating-batch", "constant"),
    ("alternating-7", "constant"), ("alternating-epoch-reset", "constant"),
    ("alternating-batch-bnfixed", "constant"), ("gan-style", "constant"), ("standard", "cosine"),
    ("freezeout", "constant"), ("layer-freezing", "linear"), ("cyclic-blocks-random", "cosine"),
    ("cyclic-blocks-reset", "constant"), ("layerout", "cosine"), ("autofreeze[percentile=75]", "cosine"),
    ("freezeout[t0=0.5,cubic=false]", "linear")])
def test_resuming_from_a_snapshot_gives_the_uninterrupted_history(tiny, name, schedule, device, make_model):
    spec = TrainSpec.of(Config(lr_schedule=schedule, warmup_epochs=1, weight_decay=1e-4, epochs=4), RunName.parse(name))

    def fresh(seed):
        torch.manual_seed(seed)
        return make_model(), TensorLoader(tiny.x_train, tiny.y_train, 64, shuffle=True, seed=seed)

    test = TensorLoader(tiny.x_test, tiny.y_test, 128)
    model, loader = fresh(0)
    snaps = []
    run = fit(model, loader, test, spec, device=device, on_epoch_end=lambda s: snaps.append(_copy(s)))
    full, state = run.history, run.schedule_state
    assert len(snaps) == 4 and [len(s["history"]["epoch"]) for s in snaps] == [1, 2, 3, 4]
    # a different initialisation, data order and RNG state: the snapshot must restore all of them
    other, other_loader = fresh(123)
    again = fit(other, other_loader, test, spec, device=device, resume=snaps[1])
    resumed, resumed_state = again.history, again.schedule_state
    for k in full:
        if k not in TIMING:
            assert resumed[k] == full[k], k
    assert resumed_state == state  # a closed-loop schedule's state too
    for (n, p), q in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(p, q), n


def test_a_snapshot_kept_in_memory_stays_at_its_epoch(tiny, device, make_model):
    """on_epoch_end's snapshot is a value: kept as it is (no copy, no file), it still holds its own
    epoch's history and weights after the run goes on, and resumes from there. Before, it held
    the live history and tensors, so a kept snapshot 'resumed' at the run's end and trained nothing."""
    from models import FreezableMLP
    from pack import fit_pack
    spec = TrainSpec.of(Config(epochs=3), RunName.parse("alternating-epoch"))
    test = TensorLoader(tiny.x_test, tiny.y_test, 128)
    torch.manual_seed(0)
    model, snaps = make_model(), []
    full = fit(model, TensorLoader(tiny.x_train, tiny.y_train, 64, shuffle=True, seed=0), test, spec, device=device,
               on_epoch_end=snaps.append).history
    assert [len(s["history"]["epoch"]) for s in snaps] == [1, 2, 3]
    assert not all(torch.equal(a, b) for a, b in zip(snaps[0]["model"].values(), model.state_dict().values()))
    torch.manual_seed(1)
    again = fit(make_model(), TensorLoader(tiny.x_train, tiny.y_train, 64, shuffle=True, seed=1), test, spec,
                device=device, resume=snaps[0]).history
    assert again["train_loss"] == full["train_loss"] and again["steps"] == full["steps"]
    torch.manual_seed(0)
    packed = {}
    fit_pack([FreezableMLP(tiny.input_size, (32, 32), 10, 0.0)], [TensorLoader(tiny.x_train, tiny.y_train, 64,
             shuffle=True, seed=0)], test, [spec], device=device, on_epoch_end=lambda i, s: packed.setdefault(i, []).append(s))
    assert [len(s["history"]["epoch"]) for s in packed[0]] == [1, 2, 3]


def _cli(out, epochs=5, extra=()):
    return [sys.executable, "experiments.py", "--dataset", "synthetic", "--train-size", "3000",
            "--test-size", "256", "--batch-size", "64", "--epochs", str(epochs), "--seeds", "1",
            "--strategies", "standard", "--no-progress", "--out", str(out), *extra]


@pytest.mark.parametrize("name, extra", [
    # cosine with a validation split: what a constant-lr run restores, and its lr schedule and split too
    ("standard", ("--lr-schedule", "cosine", "--val-size", "256")),
    # closed loop: autofreeze decides from gradient norms at epoch ends, so its state crosses the kill
    ("autofreeze[percentile=90]", ("--strategies", "autofreeze[percentile=90]", "--val-size", "256"))],
    ids=["cosine", "closed-loop"])
def test_sigkill_after_epoch_2_then_rerun_resumes_and_matches(tmp_path, name, extra):
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(out, extra=extra), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = out / "checkpoints" / f"{name}__seed0.pt"
    k = kill_at_epoch(proc, ckpt)
    assert 2 <= k < 5 and not (out / "runs" / f"{name}__seed0.json").exists()

    rerun = subprocess.run(_cli(out, extra=extra), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resumed {name} seed 0 from epoch {k}" in rerun.stdout
    assert not ckpt.exists() and not list(ckpt.parent.iterdir())  # deleted once the run is saved

    fresh = subprocess.run(_cli(tmp_path / "fresh", extra=extra), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr
    a, b = (json.loads((d / "runs" / f"{name}__seed0.json").read_text()) for d in (out, tmp_path / "fresh"))
    for key in a["history"]:
        if key not in TIMING:
            assert a["history"][key] == b["history"][key], key  # bit-identical losses and accuracies
    assert a.get("schedule_state") == b.get("schedule_state")
    if name.startswith("autofreeze"):
        assert a["schedule_state"]["frozen"] >= 1  # it did decide something, on both sides of the kill
