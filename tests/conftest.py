import signal
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data import TensorLoader, make_synthetic  # noqa: E402


_HISTORY_DEFAULTS = {"train_loss": 0.0, "train_acc": None, "val_loss": None, "val_acc": None, "test_loss": 0.0,
                     "test_acc": 0.0, "epoch_time_s": 0.0, "eval_time_s": 0.0, "steps": 0, "steps_first": 0,
                     "steps_second": 0, "param_updates": 0, "train_flops": 0, "diverged": False}


def run_blob(strategy, seed, history, **fields):
    """A run file's values for a test: `history` gives some columns, the others take neutral values."""
    n = len(next(iter(history.values())))
    full = {"epoch": list(range(1, n + 1)), **{k: [v] * n for k, v in _HISTORY_DEFAULTS.items()}, **history}
    return {"suite": "alternating-freeze-results/1", "strategy": strategy, "seed": seed, "history": full, **fields}


def as_run(strategy, seed, history, **fields):
    """A records.Run for a test, from some history columns; a name need not be a registered strategy."""
    from records import EarlyStop, History, Memory, Run
    from strategies import RunName, StrategyError, StrategyName
    try:
        name = RunName.parse(strategy)
    except StrategyError:
        name = RunName(StrategyName(strategy))
    blob = run_blob(strategy, seed, history)
    if "memory" in fields and isinstance(fields["memory"], dict):
        fields["memory"] = Memory(**fields["memory"])
    if isinstance(fields.get("early_stopped"), dict):
        fields["early_stopped"] = EarlyStop(**fields["early_stopped"])
    return Run(name, seed, History.of_columns(blob["history"]), **fields)


def pytest_configure(config):
    """With --device cpu (the default) hide any GPU, so that tests which go through --device auto
    (the CLI's default) also run on the CPU, in this process and in the ones it starts."""
    import os
    if config.getoption("--device") == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    # how long a SLURM launcher waits for the run file of a job that ended (60 s allows for NFS);
    # the test cluster writes to local disk, where the file is there when the job ends
    os.environ.setdefault("ALTFREEZE_SLURM_GRACE_S", "5")
    # under pytest-xdist (a process per core) each test process, and every process its tests start,
    # gets its share of the cores: 2 test processes on 2 cores with 2 torch threads each ran the
    # suite slower than one process did. Tests that need a thread count set it themselves.
    n = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if n > 1:
        share = max(1, len(os.sched_getaffinity(0)) // n)
        os.environ["OMP_NUM_THREADS"] = str(share)
        torch.set_num_threads(share)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (pytest.ini runs 2 processes) every test on the real SLURM cluster goes to
    one process, so that one cluster serves them all, one test after another; the other process
    meanwhile runs the rest. tryfirst: xdist reads the group marks in its own hook, which otherwise
    ran before this one, and then each process started a cluster on the same ports."""
    import pytest as _pytest
    for item in items:
        if "slurm" in getattr(item, "fixturenames", ()):
            item.add_marker(_pytest.mark.xdist_group("slurm"))
    # longest first: the SLURM group (about 11 minutes on its process) and the other slow tests start
    # at once, not where the file order puts them (the SLURM group started minutes in, and the
    # other process then sat idle at the end); stable, so the order within each kind is the files'
    items.sort(key=lambda item: ("slurm" not in getattr(item, "fixturenames", ()),
                                 item.get_closest_marker("slow") is None))


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu",
                     help="device for the device-dependent tests (those using the `device` fixture), "
                          "e.g. --device cuda on a GPU machine")


@pytest.fixture(scope="session")
def device(request):
    """The device the device-dependent tests run on: cpu unless pytest --device says otherwise."""
    name = request.config.getoption("--device")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.fail(f"--device {name} was asked for, but CUDA is not available")
    return torch.device(name)


def sigint_as_at_a_terminal():
    """Popen preexec_fn: the child gets Ctrl-C's default action back. A background shell job
    (`nohup ... &`, as a CI runner may start the tests) ignores SIGINT, and a child inherits
    that, so a test of Ctrl-C would otherwise test nothing."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def checkpoint_epochs(path):
    """Epochs saved in a run's checkpoint, 0 while it is missing or half-written. Memory-mapped: a
    poll costs about 1 ms instead of reading the whole file (20 ms for the classic model), which
    slowed the very run a test was watching."""
    try:
        return len(torch.load(path, weights_only=False, mmap=True)["history"]["epoch"])
    except Exception:
        return 0


def kill_at_epoch(proc, ckpt, epochs=2, timeout_s=120):
    """SIGKILL `proc` as soon as its run's checkpoint holds `epochs` epochs (polling every 10 ms,
    failing if the process ends first or nothing comes within timeout_s); the epochs saved then."""
    t0 = time.time()
    while checkpoint_epochs(ckpt) < epochs:
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() - t0 < timeout_s, "no checkpoint in time"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return checkpoint_epochs(ckpt)


class UnitRecorder:
    """A loader around `inner` that keeps a copy of every unit's parameters before each step (entry
    t: the state after t steps) and, in each training step, what `record(model)` says (a forward
    pre-hook sees it after the loop has set that step's frozen units)."""

    def __init__(self, model, inner, record):
        self.model, self.inner, self.states, self.records = model, inner, [], []
        model.register_forward_pre_hook(lambda m, args: self.records.append(record(m)) if m.training else None)

    def __len__(self):
        return len(self.inner)

    def snap(self):
        self.states.append([torch.cat([p.detach().flatten().clone() for p in u.parameters()])
                            for u in self.model.units()])

    def __iter__(self):
        for batch in self.inner:
            self.snap()
            yield batch


def run_cli(args, capsys):
    """Exit code, stdout and stderr of experiments.main(args), argparse exits included."""
    import experiments
    try:
        code = experiments.main(args)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="session")
def tiny(device):
    """A small synthetic CIFAR-shaped dataset: 512 train, 256 test images, on the test device
    (so that pytest --device cuda exercises the GPU-resident loader)."""
    ds = make_synthetic(512, 256, seed=0)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        setattr(ds, name, getattr(ds, name).to(device))
    return ds


@pytest.fixture
def make_model(device):
    """The classic SimpleNN on the test device; make_model(seed) seeds torch first, so the model
    has the weights a run of that seed starts from."""
    from models import SimpleNN

    def make(seed=None):
        if seed is not None:
            torch.manual_seed(seed)
        return SimpleNN().to(device)
    return make


@pytest.fixture
def loaders(tiny):
    return (TensorLoader(tiny.x_train, tiny.y_train, 64, shuffle=True, seed=0),
            TensorLoader(tiny.x_test, tiny.y_test, 128))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture
def slurm(slurm_cluster):
    """The cluster, with its queue empty when a test starts and when it ends: a job that one test
    left running or held for requeue would otherwise take the node's cores from the next test's jobs
    (a job that never started once failed "the job made no checkpoint in time")."""
    conf, ours = slurm_cluster
    if ours:  # never cancel jobs on a cluster that SLURM_CONF points at
        _empty_the_queue()
    yield conf
    if ours:
        _empty_the_queue()


def _empty_the_queue(timeout=120):
    """Cancel every job on the test cluster and wait until none is listed."""
    import subprocess
    import time
    subprocess.run(["scancel", "--full", "--user", "root"], capture_output=True)
    t0 = time.time()
    while subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.strip():
        if time.time() - t0 > timeout:
            pytest.fail("the test cluster's queue did not empty after scancel")
        time.sleep(0.5)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real single-node SLURM cluster (tests/slurm_cluster.sh), or the one SLURM_CONF points at.
    Skipped where SLURM is not installed, unless REQUIRE_SLURM=1 (CI sets it: never a silent skip)."""
    import os
    import shutil
    import subprocess
    if os.environ.get("SLURM_CONF") and subprocess.run(["sinfo"], capture_output=True).returncode == 0:
        yield os.environ["SLURM_CONF"], False
        return
    if not shutil.which("slurmctld") or os.geteuid() != 0:
        if os.environ.get("REQUIRE_SLURM") == "1":
            pytest.fail("REQUIRE_SLURM=1 but slurm-wlm is not installed or this is not root")
        pytest.skip("SLURM (Debian's slurm-wlm and munge) is not installed here")
    folder = tmp_path_factory.mktemp("slurm")
    script = str(ROOT / "tests" / "slurm_cluster.sh")
    p = subprocess.run([script, "start", str(folder)], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        pytest.fail(f"could not start SLURM: {p.stderr.strip()}")
    os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
    try:
        yield os.environ["SLURM_CONF"], True
    finally:
        subprocess.run([script, "stop", str(folder)], capture_output=True)
        del os.environ["SLURM_CONF"]
