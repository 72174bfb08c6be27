"""The GPU path, checked where a CPU can check it: device lists for workers, set_device, device
names validated where the run executes, one-line errors, timing that waits for queued work."""
import os

import pytest
import torch

import launchers
from config import Config, ConfigError, check_config


def test_workers_get_distinct_gpus_and_set_their_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert launchers.worker_devices("auto", 4) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert launchers.worker_devices("cuda:1", 2) == ["cuda:1", "cuda:1"]  # a named GPU: all on it
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(d))

    class Tasks:
        def get(self, timeout):
            return None  # the sentinel: exit at once
    launchers._worker(Tasks(), None, 1, "cuda:1", os.getpid())
    assert calls == ["cuda:1"]


def test_slurm_submits_cuda_from_a_host_without_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a login node without a GPU
    check_config(Config(launcher="slurm", device="cuda", precision="tf32"))  # the node decides
    with pytest.raises(ConfigError, match="CUDA is not available on this machine"):
        check_config(Config(launcher="local", device="cuda"))
    with pytest.raises(ConfigError, match="unknown --device 'gpu'"):
        check_config(Config(launcher="slurm", device="gpu"))


def test_a_gpu_index_beyond_the_machine_is_one_line(monkeypatch, capsys):
    import experiments
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert experiments.main(["--dataset", "synthetic", "--device", "cuda:5", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "cuda:5" in err and "2 CUDA device(s), cuda:0 to cuda:1" in err and err.count("\n") == 1


def test_stopwatch_waits_for_queued_work(monkeypatch):
    import training_loop
    synced = []
    monkeypatch.setattr(torch, "mps", type("M", (), {"synchronize": staticmethod(lambda: synced.append(1))}))
    w = training_loop.Stopwatch("mps")
    w.start()
    assert w.stop() >= 0 and synced == [1, 1]  # before the start and before the stop
