"""The pack engine: R runs as one batched model, each member what it would be alone."""
import csv
import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import experiments
from config import Config
from conftest import ROOT, checkpoint_epochs
from data import TensorLoader, make_synthetic
from models import FreezableMLP
from pack import PackStep, fit_pack
from strategies import RunName
from training_loop import TrainSpec, fit

TIMING = {"epoch_time_s", "eval_time_s"}
NAMES = ["standard", "alternating-batch", "alternating-epoch", "freezeout", "layer-freezing",
         "cyclic-blocks[every=5]", "layerout", "gan-style", "autofreeze", "alternating-epoch-bnfixed"]


@pytest.fixture(scope="module")
def data(device):
    """50 steps of 64 per epoch, on the test device (pytest --device cuda: the GPU)."""
    return make_synthetic(3200, 256, seed=0, device=device)


def _dropout(data):
    """0.3 on the CPU, where a pack member draws the reference engine's masks; 0 on a GPU, where
    the two engines' dropout streams differ by design (pack.py), so only the rest can be compared."""
    return 0.3 if data.x_train.device.type == "cpu" else 0.0


def _member(data, seed, width=64):
    """A model built from its seed as the reference engine builds it, and the dropout generator
    standing where the reference's global one does after that."""
    torch.manual_seed(seed)
    model = FreezableMLP(data.input_size, (width,) * 3, 10, _dropout(data), split=1)
    gen = torch.Generator()
    gen.set_state(torch.get_rng_state())
    return model, gen


def _specs(names, epochs=1, **kw):
    cfg = Config(epochs=epochs, **{"lr": 2e-3, **{k: v for k, v in kw.items() if k in Config.__dataclass_fields__}})
    run = {k: v for k, v in kw.items() if k not in Config.__dataclass_fields__}
    return [TrainSpec.of(cfg, RunName.parse(n), seed=k, **run) for k, n in enumerate(names)]


def _pack(data, specs, snaps=None, **kw):
    members = [_member(data, s.seed) for s in specs]
    loaders = [TensorLoader(data.x_train, data.y_train, 64, shuffle=True, seed=s.seed) for s in specs]
    out = fit_pack([m for m, _ in members], loaders, TensorLoader(data.x_test, data.y_test, 256), specs,
                   device=data.x_train.device, generators=[g for _, g in members],
                   on_epoch_end=(lambda i, s: snaps.setdefault(i, []).append(s)) if snaps is not None else None, **kw)
    return [(f.history, f.schedule_state) for f in out]


def _single(data, spec):
    model, _ = _member(data, spec.seed)
    run = fit(model, TensorLoader(data.x_train, data.y_train, 64, shuffle=True, seed=spec.seed),
              TensorLoader(data.x_test, data.y_test, 256), spec, device=data.x_train.device)
    return model, run.history, run.schedule_state


def test_each_member_starts_from_its_own_weights_and_data_order(data):
    specs = _specs(NAMES[:4])
    members = [_member(data, s.seed) for s in specs]
    loaders = [TensorLoader(data.x_train, data.y_train, 64, shuffle=True, seed=s.seed) for s in specs]
    step = PackStep([m for m, _ in members], specs, loaders, data.x_train.device, [g for _, g in members])
    for i, (model, _) in enumerate(members):
        assert all(torch.equal(a, step.member_state_dict(i)[k]) for k, a in model.state_dict().items())
    next(step.batches([0, 1, 2, 3]))
    for i in range(4):
        alone = TensorLoader(data.x_train, data.y_train, 64, shuffle=True, seed=specs[i].seed)
        first = torch.randperm(len(data.y_train), generator=alone.generator)[:64]
        assert torch.equal(step.idx[i].cpu(), first)


def test_each_member_trains_its_own_frozen_sets_with_the_flops_of_its_run_alone(data):
    specs = _specs(NAMES, epochs=2)
    packed = _pack(data, specs)
    for spec, (history, state) in zip(specs, packed):
        _, alone, alone_state = _single(data, spec)
        for k in ("steps", "steps_first", "steps_second", "param_updates", "train_flops", "epoch"):
            assert history[k] == alone[k], (spec.name, k)
        if spec.name.startswith("autofreeze"):  # closed loop: the same measurements, the same decisions
            assert state["frozen"] == alone_state["frozen"]


@pytest.mark.parametrize("optimizer, weight_decay", [("sgd", 1e-4), ("adam", 0.0), ("adamw", 0.05)])
def test_fp32_members_match_their_single_runs_after_50_steps(data, optimizer, weight_decay):
    """The stated tolerance. SGD (lr 0.01): the typical member's largest weight difference from its
    run alone is about 1e-7 (the batched matmul and BatchNorm round in other last bits), held here
    to a median below 1e-5; now and then a ReLU input at zero comes out on the other side, and that
    member's weights jump to about 1e-3 (seen in 1 member of 10 to 30, in either thread count), so
    each member is held to 1e-2. Adam and AdamW divide each gradient by its own size, so an element
    whose gradient is at rounding level (a Linear bias just before BatchNorm has a zero gradient in
    exact arithmetic) takes an lr-sized step of random sign in either engine: weights are not
    comparable element by element there. For every optimizer, each member's training loss is
    within 2e-3 (relative) of its run alone."""
    specs = _specs(NAMES, optimizer=optimizer, weight_decay=weight_decay,
                   lr=0.01 if optimizer == "sgd" else 2e-3)
    snaps = {}
    packed = _pack(data, specs, snaps)
    worst = []
    for i, spec in enumerate(specs):
        model, alone, _ = _single(data, spec)
        assert sum(alone["steps"]) == 50
        worst.append(max(float((a.float().cpu() - snaps[i][-1]["model"][k].float().cpu()).abs().max())
                         for k, a in model.state_dict().items() if "running" not in k))
        assert packed[i][0]["train_loss"][0] == pytest.approx(alone["train_loss"][0], rel=2e-3), spec.name
    if optimizer == "sgd":
        assert sorted(worst)[len(worst) // 2] < 1e-5 and max(worst) < 1e-2, worst


def test_a_frozen_member_stays_bit_for_bit_unchanged(data):
    """Alternating every epoch, with and without fixed BatchNorm statistics: over its frozen epoch a
    member's frozen half, its BatchNorm buffers (bnfixed) and its Adam moments do not change at
    all while the other members of the pack train."""
    specs = _specs(["alternating-epoch", "alternating-epoch-bnfixed", "standard"], epochs=2)
    snaps = {}
    _pack(data, specs, snaps)
    for i in (0, 1):
        after1, after2 = snaps[i][0], snaps[i][1]  # epoch 2 trains the second half only
        first = [k for k in after1["model"] if k.startswith("blocks.0.")]
        weights = [k for k in first if "running" not in k and "num_batches" not in k]
        assert all(torch.equal(after1["model"][k], after2["model"][k]) for k in weights)
        assert all(torch.equal(after1["optimizers"][m][k], after2["optimizers"][m][k])
                   for m in ("m", "v", "steps") for k in weights)
        buffers = [k for k in first if "running" in k or "num_batches" in k]
        assert all(torch.equal(after1["model"][k], after2["model"][k]) for k in buffers) == (i == 1)
        assert not torch.equal(after1["model"]["head.weight"], after2["model"]["head.weight"])


def test_members_with_other_budgets_stop_at_their_own_steps(data):
    per_step = FreezableMLP(data.input_size, (64,) * 3, 10).unit_train_flops(frozenset(range(4))) * 64
    specs = _specs(["standard"] * 3, epochs=3)
    specs = [specs[0], replace(specs[1], max_flops=17.5 * per_step), replace(specs[2], max_flops=70 * per_step)]
    packed = _pack(data, specs)
    assert [sum(h["steps"]) for h, _ in packed] == [150, 17, 70]
    assert [len(h["epoch"]) for h, _ in packed] == [3, 1, 2]


def test_a_diverging_member_does_not_stop_the_rest(data):
    specs = _specs(["standard", "gan-style[second_lr=1e35]", "alternating-batch"], epochs=3)
    packed = _pack(data, specs)
    assert packed[1][0]["diverged"][-1] and len(packed[1][0]["epoch"]) < 3
    for i in (0, 2):
        assert packed[i][0]["epoch"] == [1, 2, 3] and not any(packed[i][0]["diverged"])
        _, alone, _ = _single(data, specs[i])
        assert packed[i][0]["train_loss"] == pytest.approx(alone["train_loss"], rel=1e-2)  # as if alone


# --- through the command line: resume, workers, SLURM ------------------------------------------------
BASE = ["--dataset", "synthetic", "--train-size", "3000", "--test-size", "256", "--batch-size", "64",
        "--seeds", "2", "--strategies", "standard,alternating-batch,freezeout", "--engine", "pack",
        "--no-progress", "--threads", "1"]


def _metrics(out):
    with open(Path(out) / "metrics.csv") as f:
        return sorted(tuple((k, v) for k, v in r.items() if k not in TIMING) for r in csv.DictReader(f))


def test_a_killed_pack_resumes_every_member_bit_identical(tmp_path):
    args = [a if a != "3000" else "1536" for a in BASE] + ["--epochs", "4"]  # killed after epoch 2 of 4
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "experiments.py", *args, "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpts, t0 = out / "checkpoints", time.time()

    def epochs_saved():
        files = list(ckpts.glob("*.pt"))
        return min(checkpoint_epochs(f) for f in files) if len(files) == 6 else 0
    while epochs_saved() < 2:
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() - t0 < 180
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list((out / "runs").glob("*.json"))
    rerun = subprocess.run([sys.executable, "experiments.py", *args, "--out", str(out)], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.count("resumed ") == 6
    fresh = subprocess.run([sys.executable, "experiments.py", *args, "--out", str(tmp_path / "fresh")], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr
    assert _metrics(out) == _metrics(tmp_path / "fresh")
    run = json.loads(next((out / "runs").glob("freezeout*.json")).read_text())
    assert run["engine"] == "pack/2" and run["environment"]["pack_size"] == 6


def test_packs_on_two_workers_train_each_run_once_and_equal_one_worker(tmp_path):
    args = BASE + ["--epochs", "2", "--pack", "3"]
    assert experiments.main(args + ["--workers", "2", "--out", str(tmp_path / "w")]) == 0
    assert experiments.main(args + ["--out", str(tmp_path / "one")]) == 0
    assert _metrics(tmp_path / "w") == _metrics(tmp_path / "one") and len(_metrics(tmp_path / "w")) == 12
    runs = [json.loads(f.read_text()) for f in (tmp_path / "w" / "runs").glob("*.json")]
    assert len(runs) == 6 and {r["environment"]["pack_size"] for r in runs} == {3}
    assert len({r["environment"]["pid"] for r in runs}) == 2  # two packs, one per worker


def test_a_folder_holds_runs_of_one_engine(tmp_path, capsys):
    args = BASE + ["--epochs", "1", "--seeds", "1", "--out", str(tmp_path)]
    assert experiments.main(args) == 0
    capsys.readouterr()
    assert experiments.main([a if a != "pack" else "single" for a in args]) == 2
    assert "engine was 'pack', now 'single'" in capsys.readouterr().err


def test_time_matched_runs_need_the_single_engine(tmp_path, capsys):
    args = BASE + ["--epochs", "1", "--seeds", "1", "--match-budget", "time", "--out", str(tmp_path)]
    assert experiments.main(args) == 2
    err = capsys.readouterr().err
    assert "a time-matched run needs --engine single" in err and err.count("\n") == 1


@pytest.mark.slow
def test_a_pack_in_a_real_slurm_job_trains_each_run_once(slurm, tmp_path):
    args = BASE + ["--epochs", "2", "--pack", "3"]
    p = subprocess.run([sys.executable, "experiments.py", *args, "--launcher", "slurm", "--out", str(tmp_path / "s")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "submitted 6 runs as SLURM job array" in p.stdout and "of 2 packs" in p.stdout
    assert experiments.main(args + ["--out", str(tmp_path / "local")]) == 0
    assert _metrics(tmp_path / "s") == _metrics(tmp_path / "local")


def test_the_hash_dropout_is_each_members_own_whatever_the_pack_holds(data):
    """CUDA's dropout stream (tested here on the CPU): a member's masks depend on its seed and its
    steps only, not on the other members; about the keep fraction are kept; and a member resumed
    from its snapshot continues its own stream."""
    from pack import hash_keep_masks
    seeds, steps = torch.tensor([0, 1, 2]), torch.tensor([5, 5, 9])
    both = hash_keep_masks(seeds, steps, 1, 64, 128, 0.7)
    alone = hash_keep_masks(seeds[2:], steps[2:], 1, 64, 128, 0.7)
    assert torch.equal(both[2], alone[0]) and not torch.equal(both[0], both[1])
    assert abs(float((both > 0).float().mean()) - 0.7) < 0.01
    assert torch.allclose(torch.unique(both), torch.tensor([0.0, 1 / 0.7]))
    specs = _specs(["standard", "alternating-batch"], epochs=3)
    snaps = {}
    full = _pack(data, specs, snaps, rng="hash")
    resumed = _pack(data, specs, resumes=[snaps[0][0], snaps[1][0]], rng="hash")  # from epoch 1
    for (a, _), (b, _) in zip(full, resumed):
        assert a["train_loss"] == b["train_loss"] and a["test_acc"] == b["test_acc"]


def test_an_sgd_pack_resumed_from_its_snapshots_continues_bit_for_bit(data):
    """SGD's momentum buffer starts from the first gradient of each (member, unit); a resumed pack
    must know which units already stepped, or it would restart their momentum. Alternating-epoch's
    second half first trains in epoch 2, after the resume."""
    specs = _specs(["standard", "alternating-epoch"], epochs=3, optimizer="sgd", lr=0.01)
    snaps = {}
    full = _pack(data, specs, snaps)
    resumed = _pack(data, specs, resumes=[snaps[0][0], snaps[1][0]])  # from epoch 1
    for (a, _), (b, _) in zip(full, resumed):
        assert a["train_loss"] == b["train_loss"] and a["test_acc"] == b["test_acc"]


def test_with_hash_dropout_a_member_trains_the_same_whatever_else_the_pack_holds(data):
    """The hash masks are keyed by a member's own step count, so a member's run must not depend on
    how many others step beside it (on CUDA a pack's members are whichever runs the launcher
    grouped). Each member once alone, then all three in one pack: the same histories."""
    if not _dropout(data):
        pytest.skip("no dropout on this device's pack tests (see _dropout)")
    specs = _specs(["standard", "alternating-batch", "freezeout"], epochs=2)
    together = _pack(data, specs, rng="hash")
    for spec, (history, _) in zip(specs, together):
        (alone, _), = _pack(data, [spec], rng="hash")
        assert alone["train_loss"] == history["train_loss"], spec.name
        assert alone["test_acc"] == history["test_acc"], spec.name


def test_the_pack_size_on_cuda_fits_half_the_free_memory_with_the_workloads_defaults(monkeypatch):
    """The CUDA path of launchers.pack_size, on a CPU machine with CUDA's answers stood in: with
    --depth and --hidden-size left to the MLP's defaults (None on the config, 2 x 512) the size is
    half the free memory over a member's bound, at most 64 and at most the units there are."""
    import launchers
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = Config(engine="pack", device="auto")
    params = 3072 * 512 + 2 * 512 * 512 + 10 * 512
    member = 16 * params + 64 * max(cfg.batch_size, cfg.eval_batch_size) * 512 * 2
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (10 * member, 80 * 2**30))
    assert launchers.pack_size(cfg, 100) == 5
    assert launchers.pack_size(replace(cfg, depth=8, hidden_size=512), 100) < 5
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (2**40, 2**40))
    assert launchers.pack_size(cfg, 100) == 64 and launchers.pack_size(cfg, 3) == 3
    assert launchers.pack_size(replace(cfg, pack=7), 100) == 7
