"""Training speed of the suite against the usual DataLoader pipeline, measured side by side.

    python benchmark.py                  # CPU or the best device, every precision, median of 3
    python benchmark.py --device cuda --json bench.json
    python benchmark.py --pack 1,4,16 --split 4      # also the pack engine, and runs/hour end to end

Every figure is a median over repeats, on CIFAR-shaped synthetic data with the
default model at batch 128. Speedups and fractions are ratios of figures taken
in this one run, so they hold up on a noisy shared machine better than seconds do.
A run, for runs per hour, is the classic 15-epoch run with evaluation after every epoch.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from data import TensorLoader, make_synthetic
from models import SimpleNN
from training_loop import STANDARD, Stopwatch, alternating, evaluate_model, fast_bf16, pick_device, \
    precision_context, train

STRATEGIES = {"standard": (STANDARD, 1), "alternating-epoch": (alternating(1, "epoch"), 2),
              "alternating-batch": (alternating(1, "batch"), 1)}


RUN_EPOCHS = 15  # a run, for runs per hour: the classic 15 epochs, each followed by evaluation


def precisions_for(device, emulated_bf16=False):
    """The precisions worth timing: bf16 only where it is native (training_loop.fast_bf16), unless
    asked for anyway; elsewhere it is emulated, several times slower, and nobody would use it."""
    bf16 = ("bf16",) if fast_bf16(device) or emulated_bf16 else ()
    return ("fp32", "tf32", *bf16) if torch.device(device).type == "cuda" else ("fp32", *bf16)


def matmul_gflops(device, precision="fp32", n=2048, repeats=5):
    """GFLOP/s of one large square matmul in `precision`: the machine's practical GEMM ceiling."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    watch, times = Stopwatch(device), []
    with precision_context("tf32" if precision == "tf32" else "fp32", device):
        for _ in range(repeats + 2):
            watch.start()
            for _ in range(4):
                a @ b
            times.append(watch.stop() / 4)
    return 2 * n ** 3 / statistics.median(times[2:]) / 1e9


class SuiteRun:
    """One strategy's model and loader, timed an epoch (alternating-epoch: a pair) at a time."""

    def __init__(self, name, ds, device, batch_size, compile_model=False, precision="fp32"):
        self.schedule, self.per_repeat = STRATEGIES[name]
        self.device, self.precision = device, precision
        torch.manual_seed(0)
        self.model = SimpleNN().to(device)
        if compile_model:
            self.model = torch.compile(self.model)
        self.loader = TensorLoader(ds.x_train, ds.y_train, batch_size, shuffle=True)
        self.test = TensorLoader(ds.x_test[:batch_size], ds.y_test[:batch_size], batch_size)
        n = 20 * batch_size
        warm = TensorLoader(ds.x_train[:n], ds.y_train[:n], batch_size, shuffle=True)
        train(self.model, warm, self.test, self.schedule, num_epochs=2, device=device,
              precision=precision)  # allocations, compile

    def epoch(self):
        """(training seconds, analytic FLOPs) per epoch, timed by train() itself (evaluation excluded)."""
        h = train(self.model, self.loader, self.test, self.schedule, num_epochs=self.per_repeat,
                  device=self.device, precision=self.precision)
        return sum(h["epoch_time_s"]) / self.per_repeat, sum(h["train_flops"]) / self.per_repeat


class PackRun:
    """The pack engine: R standard runs (seeds 0..R-1) as one pack, one epoch with evaluation on
    the test set per call; per-run seconds are the pack's divided by R, as the runs record them."""

    def __init__(self, R, ds, device, batch_size, precision="fp32"):
        from pack import fit_pack
        from strategies import RunName
        from config import Config
        from training_loop import TrainSpec
        self.R, self.ds, self.device, self.batch_size, self.fit_pack = R, ds, device, batch_size, fit_pack
        self.spec = TrainSpec.of(Config(precision=precision, epochs=1), RunName.parse("standard"))
        self.test = TensorLoader(ds.x_test, ds.y_test, 1000)
        self._one(TensorLoader(ds.x_train[:20 * batch_size], ds.y_train[:20 * batch_size], batch_size,
                               shuffle=True))  # allocations

    def _one(self, loader_of=None):
        from dataclasses import replace as _replace
        models, gens, loaders = [], [], []
        for seed in range(self.R):
            torch.manual_seed(seed)
            models.append(SimpleNN())
            gens.append(torch.Generator(self.device).manual_seed(seed))
            loaders.append(loader_of or TensorLoader(self.ds.x_train, self.ds.y_train, self.batch_size, shuffle=True,
                                                     seed=seed))
        specs = [_replace(self.spec, seed=s) for s in range(self.R)]
        return self.fit_pack(models, loaders if loader_of is None else [loader_of] * self.R, self.test, specs,
                             device=self.device, generators=gens)

    def epoch(self):
        """(training seconds, analytic FLOPs, evaluation seconds) per run and epoch."""
        h = self._one()[0].history
        return h["epoch_time_s"][0], h["train_flops"][0], h["eval_time_s"][0]


def split_runs_per_hour(runs, repeats=1, train_size=50_000, epochs=2):
    """Runs per hour end to end in fresh processes (start-up and data included), the classic model
    on synthetic CIFAR-shaped data: `runs` runs of `epochs` epochs with evaluation, by the single
    engine on 2 workers x 1 thread (the best split of a 2-core CPU) and by one pack of all of them
    on every thread, alternately; scaled to 15-epoch runs."""
    import subprocess
    import tempfile
    from pathlib import Path
    root = Path(__file__).resolve().parent
    common = ["--dataset", "synthetic", "--train-size", str(train_size), "--test-size", "10000",
              "--epochs", str(epochs), "--seeds", str(max(1, runs // 2)), "--strategies", "standard,alternating-batch",
              "--no-progress"]
    variants = {"single, 2 workers x 1 thread": ["--workers", "2", "--threads", "1"],
                f"pack of {runs}, one process": ["--engine", "pack", "--pack", str(runs)]}
    seconds = {k: [] for k in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for label, extra in variants.items():
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "experiments.py", *common, *extra, "--out",
                                str(Path(tmp, f"{r}-{len(seconds[label])}-{extra[-1]}"))],
                               cwd=root, check=True, capture_output=True)
                seconds[label].append(time.perf_counter() - t0)
    n = 2 * max(1, runs // 2)
    per_hour = {k: 3600 * n / (statistics.median(v) * RUN_EPOCHS / epochs) for k, v in seconds.items()}
    return {"runs": n, "epochs": epochs, "train_size": train_size, "seconds": seconds, "runs_per_hour": per_hour}


class UInt8Images(torch.utils.data.Dataset):
    """The common way: uint8 HWC images, ToTensor and Normalize on every sample."""

    def __init__(self, images, labels):
        from torchvision import transforms
        self.images, self.labels = images, labels
        self.transform = transforms.Compose([
            transforms.ToTensor(), transforms.Normalize((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(self.images[i]), int(self.labels[i])


class ReferenceRun:
    """DataLoader(shuffle, num_workers=2) over per-sample ToTensor+Normalize, loss.item() every step."""

    def __init__(self, device, batch_size, n_train, n_test, workers=2):
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (n_train + n_test, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, n_train + n_test)
        self.loader = torch.utils.data.DataLoader(UInt8Images(images[:n_train], labels[:n_train]),
                                                  batch_size=batch_size, shuffle=True, num_workers=workers)
        self.test = torch.utils.data.DataLoader(UInt8Images(images[n_train:], labels[n_train:]),
                                                batch_size=1000, num_workers=workers)
        self.device = device
        torch.manual_seed(0)
        self.model = SimpleNN().to(device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)

    def epoch(self):
        self.model.train()
        t0 = time.perf_counter()
        for x, y in self.loader:
            x, y = x.to(self.device), y.to(self.device)
            loss = F.cross_entropy(self.model(x), y)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            loss.item()  # the usual per-step logging sync
        return time.perf_counter() - t0

    def evaluate(self):
        """Seconds for the usual evaluation loop over the test set."""
        t0 = time.perf_counter()
        evaluate_model(self.model, self.test, self.device)
        return time.perf_counter() - t0


def eval_seconds(ds, device, repeats, precision="fp32"):
    model = SimpleNN().to(device)
    loader = TensorLoader(ds.x_test, ds.y_test, 1000)
    evaluate_model(model, loader, device, precision)
    watch, times = Stopwatch(device), []
    for _ in range(repeats):
        watch.start()
        evaluate_model(model, loader, device, precision)
        times.append(watch.stop())
    return statistics.median(times)


def run(args):
    """Time every pipeline in interleaved rounds (one epoch each per round), so that drift in
    the machine's speed hits them all alike; report medians over rounds."""
    device = pick_device(args.device)
    precisions = [p for p in precisions_for(device, args.emulated_bf16) if p in args.precisions]
    ds = make_synthetic(args.train_size, args.test_size, seed=0, device=device)
    pipelines = {(f"suite {n}", p): SuiteRun(n, ds, device, args.batch_size, precision=p)
                 for p in precisions for n in STRATEGIES}
    if args.compile:
        pipelines["suite standard, torch.compile", "fp32"] = SuiteRun("standard", ds, device,
                                                                       args.batch_size, True)
    for R in args.pack:
        for p in precisions:
            pipelines[f"pack engine, {R} runs", p] = PackRun(R, ds, device, args.batch_size, p)
    if not args.skip_reference:
        pipelines["reference DataLoader", "fp32"] = ReferenceRun(device, args.batch_size, args.train_size,
                                                                 args.test_size, args.workers)
    times = {k: [] for k in pipelines}
    flops, peaks, pack_evals = {}, {p: [] for p in precisions}, {}
    for _ in range(args.repeats):
        for p in precisions:
            peaks[p].append(matmul_gflops(device, p))  # the ceiling drifts with the machine too
        for key, pipe in pipelines.items():
            if isinstance(pipe, SuiteRun):
                sec, flops[key] = pipe.epoch()
            elif isinstance(pipe, PackRun):
                sec, flops[key], ev = pipe.epoch()
                pack_evals.setdefault(key, []).append(ev)
            else:
                sec = pipe.epoch()
            times[key].append(sec)
    peak = {p: statistics.median(v) for p, v in peaks.items()}
    evals = {p: eval_seconds(ds, device, args.repeats, p) for p in precisions}
    ref_key = ("reference DataLoader", "fp32")
    if ref_key in pipelines:
        evals["reference"] = statistics.median(pipelines[ref_key].evaluate() for _ in range(args.repeats))
    std_flops = flops["suite standard", "fp32"]
    ref = statistics.median(times[ref_key]) if ref_key in times else None
    rows = []
    for (name, p), t in times.items():
        sec = statistics.median(t)
        gflops = flops.get((name, p), std_flops) / sec / 1e9  # the reference does standard's GEMMs
        ev = statistics.median(pack_evals[name, p]) if (name, p) in pack_evals else \
            evals["reference" if name == ref_key[0] else p]
        rows.append({"pipeline": name, "precision": p, "s_per_epoch": sec, "s_per_epoch_all": t,
                     "samples_per_s": args.train_size / sec, "gflops": gflops,
                     "fraction_of_matmul": gflops / peak[p], "eval_s": ev,
                     "speedup_vs_reference": ref / sec if ref else None,
                     "runs_per_hour": 3600 / (RUN_EPOCHS * (sec + ev))})
    by = {(r["pipeline"], r["precision"]): r for r in rows}
    std = by["suite standard", "fp32"]["s_per_epoch"]
    targets = {"fp32_fraction_of_matmul": by["suite standard", "fp32"]["fraction_of_matmul"]}
    if ("suite standard", "bf16") in by:
        targets["bf16_over_fp32_epoch"] = by["suite standard", "bf16"]["s_per_epoch"] / std
        if ref:
            targets["bf16_speedup_vs_reference"] = by["suite standard", "bf16"]["speedup_vs_reference"]
    for R in args.pack:
        for p in precisions:
            targets[f"pack_{R}_{p}_over_single"] = by["suite standard", p]["s_per_epoch"] / \
                by[f"pack engine, {R} runs", p]["s_per_epoch"]
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "train_size": args.train_size, "test_size": args.test_size, "batch_size": args.batch_size,
        "repeats": args.repeats, "matmul_gflops": peak, "matmul_gflops_all": peaks, "pipelines": rows,
        "eval_s": evals, "eval_fraction_of_epoch": evals["fp32"] / std,
        "alternating_batch_over_standard": by["suite alternating-batch", "fp32"]["s_per_epoch"] / std,
        "targets": targets,
    }


SWEEP_ARGS = ["--dataset", "synthetic", "--train-size", "20000", "--test-size", "10000", "--epochs", "15",
              "--seeds", "2", "--strategies", "core", "--precision", "bf16", "--no-progress"]


def sweep_runs_per_hour(baseline, extra_args=(), repeats=1):
    """Runs per hour of a small sweep (SWEEP_ARGS: 6 classic 15-epoch runs, evaluation included,
    under each code's default worker and thread split), timed end to end in fresh processes:
    this tree against the code of git commit `baseline`, alternately."""
    import subprocess
    import tarfile
    import tempfile
    from pathlib import Path
    root = Path(__file__).resolve().parent
    runs = 2 * 3
    out = {"args": SWEEP_ARGS + list(extra_args), "baseline": baseline, "runs": runs,
           "seconds": {"this tree": [], baseline: []}}
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp, "code.tar")
        subprocess.run(["git", "-C", str(root), "archive", "-o", str(archive), baseline], check=True)
        with tarfile.open(archive) as t:
            t.extractall(Path(tmp, "baseline"), filter="data")
        trees = {"this tree": root, baseline: Path(tmp, "baseline")}
        for r in range(repeats):
            for label, tree in trees.items():
                folder = Path(tmp, f"out-{r}-{label.replace(' ', '_')}")
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "experiments.py", *out["args"], "--out", str(folder)],
                               cwd=tree, check=True, capture_output=True)
                out["seconds"][label].append(time.perf_counter() - t0)
    sec = {k: statistics.median(v) for k, v in out["seconds"].items()}
    out["runs_per_hour"] = {k: 3600 * runs / v for k, v in sec.items()}
    out["speedup"] = sec[baseline] / sec["this tree"]
    return out


def median_ms(device, step, prepare=lambda: None, repeats=30, warmup=3):
    """Median milliseconds of `step()` over `repeats` calls after `warmup`, with `prepare()`
    run untimed before each call."""
    watch, times = Stopwatch(device), []
    for _ in range(repeats + warmup):
        prepare()
        watch.start()
        step()
        times.append(watch.stop())
    return 1000 * statistics.median(times[warmup:])


def optimizer_step_ms(device, repeats=30):
    """Milliseconds per Adam step over all SimpleNN parameters: per-tensor, foreach, fused."""
    out = {}
    for label, kw in (("for-loop", {"foreach": False}), ("foreach", {"foreach": True}),
                      ("fused", {"fused": True})):
        model = SimpleNN().to(device)
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, **kw)
        out[label] = median_ms(device, opt.step, repeats=repeats)
    return out


def subnormal_adam_ms(device, repeats=30):
    """Milliseconds per fused Adam step when every other weight, its gradient and its first
    moment are subnormal floats (as in the lr 3e-3, weight decay 5e-4 runs), with the CPU's
    flush-to-zero off and on. Subnormal arithmetic takes a slow microcode path on x86."""
    out = {}
    for flush in (False, True):
        if flush and not torch.set_flush_denormal(True):
            break  # this CPU has no flush-to-zero switch: nothing to compare
        torch.set_flush_denormal(False)
        model = SimpleNN().to(device)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=5e-4, fused=True)
        weights = [p for p in model.parameters() if p.dim() == 2]

        def prepare():  # written with flush-to-zero off, or the writes themselves would flush
            torch.set_flush_denormal(False)
            with torch.no_grad():
                for p in weights:
                    p.grad = torch.randn_like(p)
                    p.grad[:, ::2] = 1e-39
                    p[:, ::2] = 1e-39
                    if p in opt.state:
                        opt.state[p]["exp_avg"][:, ::2] = 1e-39
            torch.set_flush_denormal(flush)

        out["flush-to-zero " + ("on" if flush else "off")] = median_ms(device, opt.step, prepare, repeats)
        torch.set_flush_denormal(False)
    return out


def profile_table(ds, device, steps=30, batch_size=128, precision="fp32"):
    """torch.profiler's top operators (by input shape) over `steps` standard training steps."""
    from torch.profiler import ProfilerActivity, profile
    model = SimpleNN().to(device)
    n = steps * batch_size
    loader = TensorLoader(ds.x_train[:n], ds.y_train[:n], batch_size, shuffle=True)
    test = TensorLoader(ds.x_test[:batch_size], ds.y_test[:batch_size], batch_size)
    train(model, loader, test, num_epochs=1, device=device, precision=precision)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        train(model, loader, test, num_epochs=1, device=device, precision=precision)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages(group_by_input_shape=True).table(
        sort_by=key, row_limit=14, max_name_column_width=28, max_shapes_column_width=48)


# --- the cnn and gpt workloads ------------------------------------------------------------------
WORKLOAD_DATA = {"cnn": "45,000 CIFAR-shaped images", "gpt": "8,192 windows of 64 characters"}


def workload_data(kind, device, n_images=45_000):
    """Synthetic data of each workload's shape: CIFAR-shaped images, or random characters."""
    from data import Dataset
    if kind == "gpt":
        g = torch.Generator().manual_seed(0)
        # 85 symbols: the vocabulary of the Shakespeare corpus's training split
        tokens = lambda n: torch.randint(85, (n,), generator=g).to(device)  # noqa: E731
        return Dataset(tokens(600_000), None, tokens(70_000), None, [chr(32 + i) for i in range(85)], "random text",
                       kind="text")
    return make_synthetic(n_images, 10_000, seed=0, device=device)


class WorkloadRun:
    """One workload at its default size, standard or with its first half frozen (a frozen prefix:
    no backward below the second half), timed an epoch at a time; FLOPs as the run counts them."""

    def __init__(self, kind, data, device, precision, frozen_prefix=False):
        from config import Config
        from runs import build_model, loaders
        from schedules import Phases
        from models import SECOND
        self.cfg = Config(workload=kind, dataset="text" if kind == "gpt" else "synthetic", precision=precision,
                          epochs=1, **({"optimizer": "sgd", "lr": 0.1, "label_smoothing": 0.1} if kind == "cnn" else {}))
        torch.manual_seed(0)
        self.model = build_model(self.cfg, data).to(device)
        self.loader, self.test, _ = loaders(self.cfg, data, 0)
        self.schedule = Phases(phases=((SECOND,),)) if frozen_prefix else STANDARD
        self.device = device
        if kind == "gpt":  # warm-up on a few batches: allocations, oneDNN's kernels for these shapes
            warm = type(self.loader)(data.x_train, self.loader.context, self.loader.batch_size, True, 0, windows=512)
        else:
            warm = TensorLoader(data.x_train[:512], data.y_train[:512], self.loader.batch_size, True, 0, True)
        self.epoch(warm)

    def epoch(self, loader=None):
        """(training seconds, FLOPs, evaluation seconds) of one epoch."""
        from training_loop import fit, TrainSpec
        spec = TrainSpec(self.cfg, self.schedule)
        h = fit(self.model, loader or self.loader, self.test, spec, device=self.device).history
        return h["epoch_time_s"][0], h["train_flops"][0], h["eval_time_s"][0]


def workloads_report(args):
    """Per workload and precision: standard and frozen-prefix epochs in interleaved rounds, with
    the matmul ceiling of the row's precision, and runs per hour of 15 epochs with evaluation."""
    device = pick_device(args.device)
    precisions = [p for p in precisions_for(device, args.emulated_bf16) if p in args.precisions]
    pipes = {}
    for kind in args.workloads:
        data = workload_data(kind, device)
        for p in precisions:
            for frozen in (False, True):
                pipes[kind, p, frozen] = WorkloadRun(kind, data, device, p, frozen)
    times, evals, flops, peaks = {k: [] for k in pipes}, {k: [] for k in pipes}, {}, {p: [] for p in precisions}
    for _ in range(args.repeats):
        for p in precisions:
            peaks[p].append(matmul_gflops(device, p))
        for key, pipe in pipes.items():
            sec, flops[key], ev = pipe.epoch()
            times[key].append(sec)
            evals[key].append(ev)
    peak = {p: statistics.median(v) for p, v in peaks.items()}
    rows = []
    for (kind, p, frozen), t in times.items():
        sec, ev = statistics.median(t), statistics.median(evals[kind, p, frozen])
        std = statistics.median(times[kind, p, False])
        rows.append({"workload": kind, "precision": p, "frozen_prefix": frozen, "s_per_epoch": sec, "s_per_epoch_all": t,
                     "eval_s": ev, "gflops": flops[kind, p, frozen] / sec / 1e9,
                     "fraction_of_matmul": flops[kind, p, frozen] / sec / 1e9 / peak[p],
                     "flops_ratio": flops[kind, p, frozen] / flops[kind, p, False], "time_ratio": sec / std,
                     "runs_per_hour": 3600 / (RUN_EPOCHS * (sec + ev))})
    return {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "repeats": args.repeats, "matmul_gflops": peak, "rows": rows}


def format_workloads(r):
    head = ["workload", "precision", "trains", "s/epoch", "eval s", "GFLOP/s", "of matmul", "FLOPs x", "time x",
            "runs/hour"]
    body = [[x["workload"], x["precision"], "second half only (frozen prefix)" if x["frozen_prefix"] else "all units",
             f"{x['s_per_epoch']:.2f}", f"{x['eval_s']:.2f}", f"{x['gflops']:.1f}", f"{100 * x['fraction_of_matmul']:.0f}%",
             f"{x['flops_ratio']:.2f}", f"{x['time_ratio']:.2f}", f"{x['runs_per_hour']:.0f}"] for x in r["rows"]]
    from stats import text_table
    return "\n".join([
        f"workloads at their default size on {r['device']} ({r['threads']} threads), torch {r['torch']}, median of "
        f"{r['repeats']} interleaved rounds; data: " + "; ".join(f"{k}: {v}" for k, v in WORKLOAD_DATA.items()
                                                            if any(x["workload"] == k for x in r["rows"])),
        "large matmul ceiling: " + ", ".join(f"{p} {g:.1f} GFLOP/s" for p, g in r["matmul_gflops"].items()),
        "GFLOP/s = the run's measured FLOPs (flops.py) per training second; FLOPs x and time x against the same "
        "workload's standard epoch; runs/hour: 15 epochs, each with evaluation", "", text_table(head, body)])


def profile_workload(kind, device, precision="fp32", steps=20):
    """torch.profiler's top operators over `steps` standard training steps of a workload."""
    from torch.profiler import ProfilerActivity, profile
    pipe = WorkloadRun(kind, workload_data(kind, device, n_images=steps * 128), device, precision)
    if kind == "gpt":
        pipe.loader.windows = steps * pipe.loader.batch_size
    pipe.test = type(pipe.test)(pipe.test.stream[:2000], pipe.test.context, 1000) if kind == "gpt" else \
        TensorLoader(pipe.test.x[:128], pipe.test.y[:128], 128)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        pipe.epoch()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=12, max_name_column_width=40)


def format_report(r):
    head = ["pipeline", "precision", "s/epoch", "samples/s", "GFLOP/s", "of matmul", "vs reference",
            "runs/hour"]
    body = [[p["pipeline"], p["precision"], f"{p['s_per_epoch']:.2f}", f"{p['samples_per_s']:,.0f}",
             f"{p['gflops']:.1f}", f"{100 * p['fraction_of_matmul']:.0f}%",
             "-" if p["speedup_vs_reference"] is None else f"{p['speedup_vs_reference']:.2f}x",
             f"{p['runs_per_hour']:.0f}"] for p in r["pipelines"]]
    w = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    fmt = lambda row: "  ".join(c.ljust(w[i]) if i < 2 else c.rjust(w[i]) for i, c in enumerate(row))  # noqa: E731
    t = r["targets"]
    lines = [
        f"device {r['device']} ({r['device_name']}, {r['threads']} threads), torch {r['torch']}; "
        f"synthetic CIFAR-shaped {r['train_size']:,} train / {r['test_size']:,} test, "
        f"batch {r['batch_size']}, median of {r['repeats']} interleaved rounds",
        "large matmul ceiling (2048x2048, median of the rounds): " + ", ".join(
            f"{p} {g:.1f} GFLOP/s" for p, g in r["matmul_gflops"].items()),
        "GFLOP/s = analytic GEMM FLOPs per epoch / training seconds; 'of matmul' against the ceiling of "
        "the row's precision; runs/hour: 15 epochs, each with evaluation",
        "", fmt(head), fmt(["-" * x for x in w]), *map(fmt, body), "",
        f"evaluation of {r['test_size']:,} test images: " + ", ".join(
            f"{p} {s:.3f} s" for p, s in r["eval_s"].items()),
        f"alternating-batch / standard epoch time (fp32): {r['alternating_batch_over_standard']:.2f}",
        f"fp32 standard at {100 * t['fp32_fraction_of_matmul']:.0f}% of the fp32 matmul ceiling "
        f"(target >= 45%)",
    ]
    if "bf16_over_fp32_epoch" in t:
        lines.append(f"bf16 / fp32 standard epoch: {t['bf16_over_fp32_epoch']:.2f} (target <= 0.60)")
    for k, v in t.items():
        if k.startswith("pack_"):
            _, R, p, _, _ = k.split("_")
            lines.append(f"pack engine, {R} runs, {p}: {v:.2f}x the single engine's runs/hour (per-run "
                         f"training seconds, same threads)")
    if "bf16_skipped" in r:
        lines.append(r["bf16_skipped"])
    if "bf16_speedup_vs_reference" in t:
        lines.append(f"bf16 standard epoch vs the reference DataLoader pipeline: "
                     f"{t['bf16_speedup_vs_reference']:.2f}x (target >= 4x)")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs per figure (median)")
    p.add_argument("--train-size", type=int, default=50_000)
    p.add_argument("--test-size", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2, help="reference DataLoader's num_workers")
    p.add_argument("--compile", action="store_true", help="also time torch.compile on standard")
    p.add_argument("--precisions", default="fp32,bf16,tf32",
                   help="comma list; tf32 is timed on CUDA only")
    p.add_argument("--skip-reference", action="store_true", help="time the suite only")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    p.add_argument("--sweep-baseline", metavar="COMMIT",
                   help="also time a small bf16 sweep end to end (6 runs of 15 epochs, default worker "
                        "split) with this tree and with the code of COMMIT, for runs per hour")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads (default: torch's, the core count)")
    p.add_argument("--pack", default="", metavar="R1,R2,...",
                   help="also time the pack engine with these numbers of runs per pack")
    p.add_argument("--split", type=int, default=0, metavar="N",
                   help="also time N runs end to end: single engine on 2 workers x 1 thread against one pack")
    p.add_argument("--emulated-bf16", action="store_true",
                   help="time bf16 even where it is emulated (no avx512_bf16 or AMX): slow, and only for the record")
    p.add_argument("--profile", action="store_true",
                   help="instead: profile 30 standard steps and time Adam's implementations")
    p.add_argument("--workloads", default="", metavar="cnn,gpt",
                   help="instead: time these workloads at their default size, standard and with a frozen prefix "
                        "(with --profile: profile their steps)")
    args = p.parse_args(argv)
    args.precisions = [s.strip() for s in args.precisions.split(",") if s.strip()]
    args.pack = [int(x) for x in args.pack.split(",") if x.strip()]
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {args.device} asked for, but CUDA is not available; use --device cpu",
              file=sys.stderr)
        return 2
    if args.workloads:
        if args.profile:
            for kind in args.workloads:
                for p in (x for x in args.precisions if x in precisions_for(pick_device(args.device))):
                    print(f"{kind}, {p}:\n" + profile_workload(kind, pick_device(args.device), p))
            return 0
        report = workloads_report(args)
        print(format_workloads(report))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2)
                f.write("\n")
        return 0
    if args.profile:
        device = pick_device(args.device)
        ds = make_synthetic(30 * args.batch_size, args.batch_size, seed=0, device=device)
        for p in args.precisions:
            if p in precisions_for(device):
                print(f"{p}:\n" + profile_table(ds, device, batch_size=args.batch_size, precision=p))
        for label, ms in optimizer_step_ms(device).items():
            print(f"Adam step over all parameters, {label:<8}: {ms:.2f} ms")
        if device.type == "cpu":
            for label, ms in subnormal_adam_ms(device).items():
                print(f"fused Adam step, half the weights subnormal, {label}: {ms:.2f} ms "
                      f"({torch.get_num_threads()} threads; the switch is per thread)")
        return 0
    report = run(args)
    if "bf16" in args.precisions and "bf16" not in precisions_for(pick_device(args.device), args.emulated_bf16):
        report["bf16_skipped"] = ("bf16 not timed: this device has no native bf16 (training_loop.fast_bf16), so it "
                                  "would be emulated and several times slower; --emulated-bf16 times it anyway")
    print(format_report(report))
    if args.split:
        report["split"] = split_runs_per_hour(args.split)
        sp = report["split"]
        print(f"end to end, {sp['runs']} runs of {sp['epochs']} epochs ({sp['train_size']:,} images, evaluation "
              f"included), scaled to 15 epochs: " + ", ".join(f"{k} {v:.0f} runs/hour" for k, v in
                                                           sp["runs_per_hour"].items()))
    if args.sweep_baseline:
        report["sweep"] = sweep_runs_per_hour(args.sweep_baseline)
        sw = report["sweep"]
        print(f"sweep throughput (python experiments.py {' '.join(sw['args'])}, default split): "
              + ", ".join(f"{k} {v:.0f} runs/hour" for k, v in sw["runs_per_hour"].items())
              + f"; {sw['speedup']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=lambda v: None if isinstance(v, float) and
                      math.isnan(v) else v)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
