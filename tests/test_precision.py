"""Precision: bf16 trains and stays finite with fp32 master weights; fp32 is bit-for-bit what it was."""
import json

import pytest
import torch

import experiments
from config import Config, default_out
from data import torch_threads
from models import SimpleNN
from training_loop import precision_context, train

TIMING = {"epoch_time_s", "eval_time_s"}


def test_bf16_trains_finite_with_fp32_master_weights(loaders, device):
    model = SimpleNN()
    h = train(model, *loaders, num_epochs=2, precision="bf16", device=device)
    assert all(torch.isfinite(torch.tensor(h["train_loss"] + h["test_loss"])))
    assert h["test_acc"][-1] > 30  # it learns (10 classes: chance is 10%)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_autocast_runs_the_gemms_in_bf16(tiny, make_model):
    model = make_model()
    seen = []
    model.head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with precision_context("bf16", tiny.x_train.device.type):
        model(tiny.x_test[:8])
    model(tiny.x_test[:8])
    assert seen == [torch.bfloat16, torch.float32]


def test_bf16_differs_from_fp32_only_a_little(loaders):
    torch.manual_seed(0)
    a = train(SimpleNN(), *loaders, num_epochs=2)
    torch.manual_seed(0)
    b = train(SimpleNN(), *loaders, num_epochs=2, precision="bf16")
    assert a["train_loss"] != b["train_loss"]  # the numerics really changed
    assert b["train_loss"][-1] == pytest.approx(a["train_loss"][-1], rel=0.1)


def test_fp32_histories_are_unchanged_by_this_work(tmp_path):
    """Every strategy against the histories that the code before precision, validation, depth,
    checkpoints and the bf16 kernels (commit 94cde06) computes on this machine."""
    from fixtures.fp32_reference import ARGS, THREADS, histories, reference_histories
    ref = reference_histories()
    if ref is None:
        pytest.skip("needs the git history (commit 94cde06) to recompute the reference")
    with torch_threads(THREADS):
        assert experiments.main(ARGS + ["--device", "cpu", "--out", str(tmp_path)]) == 0
    runs = histories(tmp_path)
    assert set(runs) == set(ref) and len(runs) == 22
    for key, expected in ref.items():
        for column, values in expected.items():
            assert runs[key][column] == values, (key, column)


def test_precision_keys_the_results_folder(tmp_path, capsys):
    args = ["--dataset", "synthetic", "--train-size", "256", "--test-size", "128", "--batch-size", "64",
            "--epochs", "1", "--seeds", "1", "--strategies", "standard", "--no-progress",
            "--out", str(tmp_path)]
    assert experiments.main(args) == 0
    assert json.loads((tmp_path / "config.json").read_text())["settings"]["precision"] == "fp32"
    capsys.readouterr()
    assert experiments.main(args + ["--precision", "bf16"]) == 2
    assert "precision was 'fp32', now 'bf16'" in capsys.readouterr().err
    assert default_out(Config(precision="bf16")) != default_out(Config())


def test_tf32_trains_on_cuda(loaders, device):
    if device.type != "cuda":
        pytest.skip("tf32 is a CUDA format (run pytest --device cuda on a GPU machine)")
    before = torch.backends.cuda.matmul.allow_tf32
    h = train(SimpleNN(), *loaders, num_epochs=2, precision="tf32", device=device)
    assert all(torch.isfinite(torch.tensor(h["train_loss"])))
    assert torch.backends.cuda.matmul.allow_tf32 == before  # restored (containers may force it on)


def test_tf32_without_cuda_is_one_line(capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert experiments.main(["--dataset", "synthetic", "--precision", "tf32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs a CUDA GPU" in err and "Traceback" not in err



def test_tf32_context_spans_the_backward_pass():
    """The flags that decide TF32 matmuls are read when each kernel launches, backward ones too:
    read them from a backward hook inside the context train() wraps its loop in."""
    from training_loop import tf32_matmuls
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    seen = []
    model = SimpleNN(input_size=8)
    model.fc2.register_full_backward_hook(lambda *a: seen.append(
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)))
    with tf32_matmuls():
        model(torch.randn(4, 8)).sum().backward()
    assert seen == [(True, True)]
    # restored to what it was (a container may force it on: compare, do not assume False)
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_train_wraps_its_whole_loop_in_the_training_numerics(monkeypatch, loaders):
    import training_loop
    entered = []

    def spy(precision, device):
        entered.append(precision)
        return training_loop.nullcontext()
    monkeypatch.setattr(training_loop, "training_numerics", spy)
    training_loop.train(SimpleNN(), *loaders, num_epochs=1, precision="fp32", device="cpu")
    assert entered == ["fp32"]
