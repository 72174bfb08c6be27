"""Bring your own schedule: plugins from outside the repository, in workers and SLURM jobs; knobs;
checks on what a schedule returns; never a stale run when a schedule's code changes."""
import json
import math
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import experiments
from conftest import ROOT, run_cli

TINY = ["--dataset", "synthetic", "--train-size", "256", "--test-size", "128", "--batch-size", "64",
        "--epochs", "2", "--no-progress"]
EXAMPLE = ROOT / "examples" / "late_freeze.py"


def _plugin(folder, body, name="mine.py"):
    """A plugin file outside the repository."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


HEAD_LAST = """
    from dataclasses import dataclass
    from schedules import Schedule, on
    from strategies import register

    @register("head-last")
    @dataclass(frozen=True)
    class HeadLast(Schedule):
        late: float = 0.5
        def factors(self, epoch, step, run, state):
            late = step >= self.late * run.total_steps
            return on(range(run.units if late else run.hidden), run)
"""


def _cli(args, cwd=ROOT, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "experiments.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def test_the_example_plugin_runs_through_the_cli_with_two_workers(tmp_path):
    """The documented example, from another folder, in worker processes: every run saved, the
    knob variants are strategies of their own, and config.json records the plugin and its hash."""
    out = tmp_path / "out"
    p = _cli(TINY + ["--seeds", "2", "--plugin", str(EXAMPLE), "--strategies", "standard,late-freeze[after=0.5|0.75]",
                     "--workers", "2", "--out", str(out)], cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    runs = sorted(f.name for f in (out / "runs").glob("*.json"))
    assert runs == sorted(f"{n}__seed{s}.json" for n in ("late-freeze", "late-freeze[after=0.75]", "standard")
                          for s in (0, 1))
    cfg = json.loads((out / "config.json").read_text())
    (plugin,) = cfg["plugins"]
    import hashlib
    assert plugin["path"] == str(EXAMPLE) and plugin["strategies"] == ["late-freeze"]
    assert plugin["sha256"] == hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()[:16]
    run = json.loads((out / "runs" / "late-freeze[after=0.75]__seed1.json").read_text())
    assert run["spec"]["knobs"] == {"after": 0.75} and run["spec"]["code"]["kind"] == "plugin"
    assert run["spec"]["code"]["fingerprint"] == "sha256:" + plugin["sha256"]
    assert "failed" not in p.stdout


def test_the_example_plugin_through_the_library(tmp_path):
    """The same plugin from a script: Config(plugins=...) imports it before names are checked."""
    from config import Config
    runs, summary = experiments.run_experiment(Config(
        dataset="synthetic", train_size=256, test_size=128, batch_size=64, epochs=2, seeds=1, progress=False,
        plugins=(str(EXAMPLE),), strategies="standard,late-freeze", out=str(tmp_path / "lib")), log=lambda m: None)
    late = next(r for r in runs if r.name == "late-freeze")
    assert late.history.column("steps_first") == [4, 0]  # 4 steps per epoch: block 1 trains in epoch 1 only
    assert "late-freeze" in summary["strategies"]


def test_the_plugin_layering_needs_no_project_edit():
    """The example is under 20 lines and reaches the suite through its public modules only."""
    text = EXAMPLE.read_text()
    assert len(text.splitlines()) <= 20
    assert "from schedules import" in text and "from strategies import register" in text


def test_a_plugin_that_registers_under_main_gets_a_clear_error(tmp_path, capsys):
    plugin = _plugin(tmp_path, HEAD_LAST.replace('    @register("head-last")\n', "") + """
    if __name__ == "__main__":
        register("head-last", HeadLast())
""")
    code, _, err = run_cli(TINY + ["--plugin", str(plugin), "--strategies", "head-last", "--out",
                                   str(tmp_path / "o")], capsys)
    assert code == 2 and err.count("\n") == 1 and "KeyError" not in err
    assert "registered no strategy" in err and "if __name__ ==" in err


def test_a_strategy_registered_by_the_running_script_is_refused_for_workers(tmp_path):
    """Workers and SLURM jobs import plugins, never the script: say so before anything starts."""
    script = _plugin(tmp_path, f"""
    import sys
    sys.path.insert(0, {str(ROOT)!r})
    """ + HEAD_LAST.replace('    @register("head-last")\n', "") + """
    if __name__ == "__main__":
        import experiments
        register("head-last", HeadLast())
        sys.exit(experiments.main(sys.argv[1:]))
""", "script.py")
    args = [sys.executable, str(script), *TINY, "--strategies", "standard,head-last", "--out", str(tmp_path / "o")]
    p = subprocess.run(args + ["--workers", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "KeyError" not in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert "registered by the script being run (__main__)" in p.stderr and "--plugin FILE.py" in p.stderr
    p = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)  # in this process: fine
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("plugin, expected", [
    ("nosuchfile.py", "--plugin nosuchfile.py: no such file"),
    ("no_such_module_here", "--plugin no_such_module_here failed to import: ModuleNotFoundError"),
])
def test_a_plugin_that_cannot_be_imported_is_one_line(plugin, expected, tmp_path, capsys):
    code, _, err = run_cli(TINY + ["--plugin", plugin, "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and expected in err and err.count("\n") == 1


def test_a_broken_plugin_is_one_line(tmp_path, capsys):
    plugin = _plugin(tmp_path, "import this_module_does_not_exist\n", "broken.py")
    code, _, err = run_cli(TINY + ["--plugin", str(plugin), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "failed to import: ModuleNotFoundError" in err and err.count("\n") == 1


def test_a_name_no_plugin_defines_gets_a_near_miss(tmp_path, capsys):
    plugin = _plugin(tmp_path, HEAD_LAST)
    code, _, err = run_cli(TINY + ["--plugin", str(plugin), "--strategies", "head-lats", "--out",
                                   str(tmp_path / "o")], capsys)
    assert code == 2 and "unknown strategy 'head-lats' (did you mean head-last?)" in err


@pytest.mark.parametrize("name, expected", [
    ("freezeout[t0=0.5]", None), ("freezeout[t0=0.5,cubic=false]", None), ("cyclic-blocks[every=25]", None),
    ("freezeout[t1=0.5]", "freezeout has no knob 't1' (did you mean t0?); its knobs: t0, cubic, scale_lr"),
    ("freezeout[cubic=maybe]", "cubic must be true or false, got 'maybe'"),
    ("cyclic-blocks[every=2.5]", "every must be a whole number or none, got '2.5'"),
    ("layerout[p_max=nan]", "p_max must be a finite number, got 'nan'"),
    ("freezeout[t0]", "'t0' is not KNOB=VALUE"),
    ("standard[x=1]", "standard has no knob 'x'; it has no knobs"),
    ("layer-freezing[freeze_start=1.2]", "freeze_start must be in [0, 1)"),
])
def test_knobs_are_parsed_against_the_schedules_fields(name, expected):
    from strategies import StrategyError, StrategyName
    if expected is None:
        s = StrategyName.parse(name)
        assert str(s) == name and s.schedule() == StrategyName.parse(str(s)).schedule()
        return
    with pytest.raises(StrategyError) as e:
        StrategyName.parse(name)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_knobs_at_their_default_name_the_plain_strategy():
    from strategies import StrategyName, expand
    assert str(StrategyName.parse("freezeout[t0=0.8,cubic=true]")) == "freezeout"
    assert [str(n) for n in expand("freezeout[t0=0.5|0.8],gan-style[second_lr=2|4]")] == [
        "freezeout[t0=0.5]", "freezeout", "gan-style[second_lr=2]", "gan-style"]


def test_list_strategies_shows_every_knob_with_its_default(capsys):
    with pytest.raises(SystemExit):
        experiments.parse_args(["--plugin", str(EXAMPLE), "--list-strategies"])
    out = capsys.readouterr().out
    assert "t0=0.8, cubic=true, scale_lr=true" in out and "percentile=50, every=1" in out
    assert "late-freeze" in out and "after=0.5" in out


# --- a changed schedule never reuses a run --------------------------------------------------
def test_a_changed_plugin_refuses_its_saved_runs_and_says_why(tmp_path):
    plugin, out = _plugin(tmp_path / "plugins", HEAD_LAST), tmp_path / "out"
    args = TINY + ["--seeds", "1", "--plugin", str(plugin), "--strategies", "standard,head-last", "--out", str(out)]
    assert _cli(args).returncode == 0
    again = _cli(args)
    assert again.returncode == 0 and "2 already in" in again.stdout
    plugin.write_text(plugin.read_text().replace("late: float = 0.5", "late: float = 0.25"))
    changed = _cli(args)
    assert changed.returncode == 1, changed.stdout + changed.stderr
    assert "1 stored run made by other code than would run now were refused" in changed.stdout
    assert "head-last seed 0 in" in changed.stdout and "its schedule's code changed" in changed.stdout
    assert str(plugin) in changed.stdout and "--discard-stale" in changed.stdout
    assert "1 already in" in changed.stdout  # standard's run is reused, the stale one neither reused nor trained
    before = (out / "runs" / "head-last__seed0.json").read_bytes()
    assert json.loads(before)["spec"]["code"]["fingerprint"] != _fingerprint(plugin)
    fresh = _cli(args + ["--overwrite"])
    assert fresh.returncode == 0 and "already in" not in fresh.stdout


def _fingerprint(path):
    import hashlib
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def test_a_stale_strategy_is_refused_alone_and_discard_stale_removes_only_its_runs(tmp_path):
    """Two seeds of standard and of a plugin strategy; the plugin changes: standard's runs are
    reused, the plugin's are refused one by one; --discard-stale deletes exactly those two files
    (listing them) and trains them again, and standard's run files are untouched bytes."""
    plugin, out = _plugin(tmp_path / "plugins", HEAD_LAST), tmp_path / "out"
    args = TINY + ["--seeds", "2", "--plugin", str(plugin), "--strategies", "standard,head-last", "--out", str(out)]
    assert _cli(args).returncode == 0
    standard = {f.name: f.read_bytes() for f in (out / "runs").glob("standard__*.json")}
    plugin.write_text(plugin.read_text() + "\n# edited\n")
    refused = _cli(args)
    assert refused.returncode == 1 and "2 stored runs made by other code" in refused.stdout
    assert "2 already in" in refused.stdout and "standard  2/2" in refused.stdout.replace("  ", "  ")
    discarded = _cli(args + ["--discard-stale"])
    assert discarded.returncode == 0, discarded.stdout + discarded.stderr
    assert discarded.stdout.count("discarded head-last seed") == 2 and "discarded standard" not in discarded.stdout
    assert {f.name: f.read_bytes() for f in (out / "runs").glob("standard__*.json")} == standard
    for seed in (0, 1):
        run = json.loads((out / "runs" / f"head-last__seed{seed}.json").read_text())
        assert run["spec"]["code"]["fingerprint"] == _fingerprint(plugin)


def test_a_changed_built_in_is_caught_too(tmp_path, monkeypatch, capsys):
    args = TINY + ["--seeds", "1", "--strategies", "freezeout", "--out", str(tmp_path)]
    assert run_cli(args, capsys)[0] == 0
    import schedules
    monkeypatch.setattr(schedules.FreezeOut, "version", 2)  # what a change to FreezeOut.factors must come with
    code, out, err = run_cli(args, capsys)
    assert code == 1 and "freezeout seed 0 in" in out and "FreezeOut v1 -> " in out


def test_a_changed_plugin_refuses_a_checkpoint_mid_run(tmp_path):
    plugin, out = _plugin(tmp_path / "plugins", HEAD_LAST), tmp_path / "out"
    args = ["--dataset", "synthetic", "--train-size", "6000", "--test-size", "256", "--batch-size", "64",
            "--epochs", "6", "--seeds", "1", "--no-progress", "--plugin", str(plugin), "--strategies", "head-last",
            "--out", str(out)]
    proc = subprocess.Popen([sys.executable, str(ROOT / "experiments.py"), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt, t0 = out / "checkpoints" / "head-last__seed0.pt", time.time()
    while not ckpt.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() - t0 < 120
        time.sleep(0.02)
    time.sleep(0.2)  # the file is renamed into place whole; let the write finish
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not (out / "runs" / "head-last__seed0.json").exists()
    plugin.write_text(plugin.read_text() + "\n# a changed file is changed code\n")
    p = _cli(args)
    assert p.returncode == 1 and "head-last seed 0 in" in p.stdout, p.stdout + p.stderr
    assert "its schedule's code changed" in p.stdout and "resumed" not in p.stdout
    assert ckpt.exists()  # refused, not moved aside or overwritten


# --- what a schedule returns is checked --------------------------------------------------------
@pytest.mark.parametrize("body, expected", [
    ("return (1.0,) * (run.units - 1)", "returned 2 factors for 3 units"),
    ("return (1.0, -0.5, 1.0)", "returned -0.5 for unit 1: factors multiply the learning rate"),
    ("return (1.0, float('nan'), 1.0)", "returned nan for unit 1: factors must be finite"),
    ("return (float('inf'), 1.0, 1.0)", "returned inf for unit 0: factors must be finite"),
    ("return (0.0,) * run.units", "returned only zeros: at least one unit must train"),
    ("return None", "returned None, not a sequence of numbers"),
])
def test_bad_factors_are_one_line_naming_strategy_epoch_and_step(body, expected, tmp_path, capsys):
    plugin = _plugin(tmp_path, f"""
    from dataclasses import dataclass
    from schedules import Schedule
    from strategies import register

    @register("bad-{abs(hash(body)) % 10**6}")
    @dataclass(frozen=True)
    class Bad(Schedule):
        def factors(self, epoch, step, run, state):
            if step < 5:
                return (1.0,) * run.units
            {body}
""", f"bad{abs(hash(body)) % 10**6}.py")
    name = f"bad-{abs(hash(body)) % 10**6}"
    code, _, err = run_cli(TINY + ["--plugin", str(plugin), "--seeds", "1", "--strategies", name, "--out",
                                   str(tmp_path / "o")], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"strategy {name}: factors(epoch=1, step=5)" in err and expected in err


# --- closed loop: autofreeze -------------------------------------------------------------------
def test_autofreeze_freezes_the_leading_blocks_by_its_rule_on_real_training(tiny):
    """Depth 4 on synthetic data: every observation's gradient norms are recorded; the frozen count
    after each decision must be what AutoFreeze's rule gives from them, never decrease, never
    reach the head, and frozen blocks must not change from then on."""
    import numpy as np

    from data import TensorLoader
    from models import FreezableMLP
    from schedules import AutoFreeze
    from training_loop import train
    seen, decided = [], []
    schedule = AutoFreeze(percentile=60)
    orig = AutoFreeze.observe

    def spy(self, state, obs, run):
        new = orig(self, state, obs, run)
        seen.append(obs)
        decided.append(new["frozen"])
        return new
    torch.manual_seed(0)
    model = FreezableMLP(3072, (64, 64, 64, 64), 10, 0.1, split=2).to(tiny.x_train.device)
    snaps = []
    loader = TensorLoader(tiny.x_train, tiny.y_train, 64, shuffle=True, seed=0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(AutoFreeze, "observe", spy)
        train(model, loader, TensorLoader(tiny.x_test, tiny.y_test, 128), schedule, num_epochs=8, learning_rate=3e-3,
              on_epoch_end=lambda s: snaps.append({k: v.clone() for k, v in s["model"].items()}))
    assert len(seen) == 8 and all(o.val_loss is None and not hasattr(o, "test_acc") for o in seen)
    frozen, previous = 0, None
    for obs, k in zip(seen, decided):
        now = obs.grad_norm
        if previous is not None:
            live = [u for u in range(frozen, 5) if now[u] is not None and previous[u]]
            change = {u: abs(now[u] - previous[u]) / previous[u] for u in live}
            threshold = np.percentile(list(change.values()), 60)
            while frozen < 4 and frozen in change and change[frozen] < threshold:
                frozen += 1
        previous = now
        assert k == frozen and all(g is None for g in now[:0])
    assert decided == sorted(decided) and decided[-1] < 5  # never thaws; the head never freezes
    assert 1 <= decided[-1] <= 4, decided  # it did freeze something on this run
    first = decided.index(decided[-1])  # the epoch after which the last freeze holds
    for e in range(first, len(snaps)):
        for u in range(decided[-1]):
            for name in (f"blocks.{u}.0.weight", f"blocks.{u}.0.bias"):
                assert torch.equal(snaps[e][name], snaps[first][name]), (e, u, name)


def test_unit_meter_gives_the_mean_gradients_norm_and_the_weight_change():
    """The closed loop's measurements against a direct computation on a tiny model."""
    from models import FreezableMLP
    from schedules import MEASURES
    from training_loop import UnitMeter
    torch.manual_seed(0)
    model = FreezableMLP(6, (5,), 3, 0.0)
    params = [list(m.parameters()) for m in model.units()]
    meter = UnitMeter(params, {k: MEASURES[k] for k in ("grad_norm", "weight_change")})
    grads = []
    for _ in range(3):
        g = [[torch.randn_like(p) for p in ps] for ps in params]
        grads.append(g)
        meter.add({0, 1}, g)
        with torch.no_grad():
            for ps in params:
                for p in ps:
                    p.add_(0.1)
    read = meter.read()
    grad_norm, change = read["grad_norm"], read["weight_change"]
    for u in range(2):
        mean = [sum(g[u][i] for g in grads) / 3 for i in range(len(params[u]))]
        assert grad_norm[u] == pytest.approx(math.sqrt(sum(float((m ** 2).sum()) for m in mean)), rel=1e-6)
        assert change[u] == pytest.approx(math.sqrt(sum(p.numel() for p in params[u]) * 0.09), rel=1e-5)
    assert meter.read()["grad_norm"] == (None, None)  # nothing trained since the last read


@pytest.mark.slow
def test_a_plugin_runs_in_a_real_slurm_job(slurm, tmp_path):
    plugin, out = _plugin(tmp_path / "plugins", HEAD_LAST), tmp_path / "out"
    p = _cli(TINY + ["--seeds", "1", "--plugin", str(plugin), "--strategies", "standard,head-last",
                     "--launcher", "slurm", "--out", str(out)], cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "submitted 2 runs as SLURM job array" in p.stdout
    run = json.loads((out / "runs" / "head-last__seed0.json").read_text())
    assert run["spec"]["code"]["kind"] == "plugin" and run["spec"]["code"]["where"] == str(plugin)
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())
    assert f"{out}::head-last::0" in jobs  # trained by its own SLURM job, which imported the plugin
    logs = "".join(f.read_text() for f in (out / "slurm").glob("*_log.*"))
    assert "Traceback" not in logs


# --- the open observation API ---------------------------------------------------------------------
SETTLE = ROOT / "examples" / "settle_freeze.py"


def test_a_plugin_measure_against_a_hand_computation():
    """A measure registered by a plugin (||W - W_last|| / ||W_last||, here under its own name) is
    computed per unit at the observation, from the parameters then and at the last observation."""
    from schedules import MEASURES, UnitView, measure
    from training_loop import UnitMeter

    @measure("test-relative-change", last=True)
    def rel(u):
        num = sum(float((p.detach() - q).pow(2).sum()) for p, q in zip(u.params, u.last)) ** 0.5
        return num / sum(float(q.pow(2).sum()) for q in u.last) ** 0.5

    torch.manual_seed(0)
    w = [torch.randn(4, 3), torch.randn(3)]
    meter = UnitMeter([w], {"test-relative-change": MEASURES["test-relative-change"],
                            "relative_weight_change": MEASURES["relative_weight_change"]})
    start = [t.clone() for t in w]
    w[0].add_(0.5)
    w[1].mul_(2.0)
    by_hand = math.sqrt(12 * 0.25 + float(start[1].pow(2).sum())) / math.sqrt(
        float(start[0].pow(2).sum() + start[1].pow(2).sum()))
    read = meter.read()
    assert read["test-relative-change"][0] == pytest.approx(by_hand, rel=1e-6)
    assert read["relative_weight_change"][0] == pytest.approx(by_hand, rel=1e-6)
    assert isinstance(UnitView([w]), UnitView)


def test_an_unknown_measure_is_refused_in_one_line():
    from dataclasses import dataclass
    from schedules import Schedule, on
    from strategies import StrategyError, register

    @dataclass(frozen=True)
    class Misspelt(Schedule):
        observes = ("relative_weight_chnage",)

        def observe(self, state, obs, run):
            return state

        def factors(self, epoch, step, run, state):
            return on(range(run.units), run)

    with pytest.raises(StrategyError) as e:
        register("misspelt", Misspelt())
    assert "not a measure (did you mean relative_weight_change" in str(e.value) and "\n" not in str(e.value)


def test_a_field_that_cannot_be_a_knob_is_refused_at_registration():
    from dataclasses import dataclass
    from schedules import Schedule, on
    from strategies import StrategyError, register

    @dataclass(frozen=True)
    class Listy(Schedule):
        blocks: list = None

        def factors(self, epoch, step, run, state):
            return on(range(run.units), run)

    with pytest.raises(StrategyError) as e:
        register("listy", Listy())
    assert "field 'blocks'" in str(e.value) and "cannot be a knob" in str(e.value)


def test_the_adaptive_example_plugin_with_two_workers(tmp_path):
    """examples/settle_freeze.py under --workers 2: it freezes the first unit once it settles, at the
    epoch its state records, and the first unit's parameters never move after that."""
    out = tmp_path / "out"
    p = _cli(TINY + ["--epochs", "6", "--seeds", "2", "--plugin", str(SETTLE), "--lr-schedule", "cosine",
                     "--strategies", "standard,settle-freeze[below=0.2]", "--workers", "2", "--out", str(out)],
             cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert len(EXAMPLE.parent.joinpath("settle_freeze.py").read_text().splitlines()) <= 25
    for seed in (0, 1):
        run = json.loads((out / "runs" / f"settle-freeze[below=0.2]__seed{seed}.json").read_text())
        frozen_at = run["schedule_state"]["frozen_at"]
        assert frozen_at is not None and 1 <= frozen_at < 6
        h = run["history"]
        std = json.loads((out / "runs" / f"standard__seed{seed}.json").read_text())["history"]
        assert h["train_flops"][frozen_at] < std["train_flops"][frozen_at]  # unit 0 no longer trains
        assert h["train_flops"][frozen_at - 1] == std["train_flops"][frozen_at - 1]


def test_a_plugin_joins_a_finished_protocol_and_only_its_own_runs_train(tmp_path, capsys):
    """docs/usage.md's recipe: a protocol's command rerun with --plugin and one more strategy
    reuses every run already in the folder; only the newcomer's tuning runs, its confirmation
    runs and its equal-FLOPs standard runs train, and the family grows by its two comparisons."""
    base = ["--dataset", "synthetic", "--train-size", "1024", "--test-size", "256", "--val-size", "256",
            "--batch-size", "64", "--epochs", "2", "--seeds", "0-1", "--grid", "lr=1e-3,3e-3", "--tune", "lr",
            "--confirm-seeds", "2", "--match-budget", "flops", "--no-progress", "--out", str(tmp_path / "p")]
    code, _, err = run_cli(base + ["--strategies", "standard,alternating-epoch"], capsys)
    assert code == 0, err
    before = {f: f.stat().st_mtime_ns for f in (tmp_path / "p").rglob("runs/*.json")}
    assert len(before) == 8 + 6  # 2 strategies x 2 lr x 2 seeds; then 2 x 2 fresh seeds and 2 matched runs
    code, out, err = run_cli(base + ["--plugin", str(EXAMPLE), "--strategies", "standard,alternating-epoch,late-freeze"],
                             capsys)
    assert code == 0, err
    assert "12 runs, 8 already in" in out and "confirmation: 4 runs to go" in out
    trained = [line.split()[0] for line in out.splitlines() if "final acc" in line]
    assert sorted(set(trained)) == ["late-freeze", "standard@flops=late-freeze"] and len(trained) == 8
    assert all(f.stat().st_mtime_ns == t for f, t in before.items())  # the committed runs: read, never rewritten
    family = json.loads((tmp_path / "p" / "sweep_summary.json").read_text())["family"]
    assert family["size"] == 4  # alternating-epoch and late-freeze, each against tuned and equal-FLOPs standard
