"""The pack engine's host time per step, where the model is too small for arithmetic to matter:
a stand-in for a GPU whose steps are launch-bound (the H200 trained 15 classic runs as one pack
far slower than its FLOPs allow, docs/usage.md). 15 members of 5 strategies, 1x4x4 inputs, two
hidden blocks of 8, batch 128, hash dropout, one CPU thread (--device cuda: on the GPU itself). With --compare, another checkout
(say a git worktree of an older commit) is timed in the same run, interleaved, and both print
their final train losses, which must be equal where the change is host-side only.

    python scripts/pack_host_time.py --compare /tmp/old --repeats 7
"""
import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import sys, time, torch
torch.set_num_threads(1)
from config import Config
from data import TensorLoader, make_synthetic
from models import FreezableMLP
from pack import fit_pack
from strategies import RunName
from training_loop import TrainSpec
steps, optimizer, device = int(sys.argv[1]), sys.argv[2], sys.argv[3]
data = make_synthetic(128 * steps, 256, seed=0, device=device, shape=(1, 4, 4))
names = ["standard", "alternating-batch", "freezeout", "layer-freezing", "alternating-epoch"] * 3
specs = [TrainSpec.of(Config(epochs=1, lr=1e-3, optimizer=optimizer), RunName.parse(n), seed=k)
         for k, n in enumerate(names)]
def once():
    models, gens = [], []
    for s in specs:
        torch.manual_seed(s.seed)
        models.append(FreezableMLP(data.input_size, (8, 8), 10, 0.2, split=1))
        gens.append(torch.Generator().set_state(torch.get_rng_state()))
    loaders = [TensorLoader(data.x_train, data.y_train, 128, shuffle=True, seed=s.seed) for s in specs]
    t = time.perf_counter()
    out = fit_pack(models, loaders, TensorLoader(data.x_test, data.y_test, 256), specs, device=device,
                   generators=gens, rng="hash")
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t, [f.history["train_loss"][-1] for f in out]
once()  # warm-up
seconds, losses = min(once() for _ in range(3))
print(seconds / steps * 1e3, repr(losses))
"""


def measure(checkout, steps, optimizer, device):
    p = subprocess.run([sys.executable, "-c", CHILD, str(steps), optimizer, device], cwd=checkout, capture_output=True,
                       text=True, check=True)
    ms, losses = p.stdout.split(" ", 1)
    return float(ms), losses.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", metavar="PATH", help="another checkout to time beside this one (default: none)")
    ap.add_argument("--repeats", type=int, default=5, help="processes per checkout, interleaved (default: 5)")
    ap.add_argument("--steps", type=int, default=100, help="steps per epoch timed (default: 100)")
    ap.add_argument("--optimizer", default="adam", help="adam, adamw or sgd (default: adam)")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda to time the launch-bound case itself (default: cpu)")
    args = ap.parse_args()
    checkouts = {"this checkout": ROOT, **({f"--compare {args.compare}": Path(args.compare)} if args.compare else {})}
    times, losses = {k: [] for k in checkouts}, {}
    for _ in range(args.repeats):
        for name, path in checkouts.items():
            ms, loss = measure(path, args.steps, args.optimizer, args.device)
            times[name].append(ms)
            losses[name] = loss
    for name in checkouts:
        t = times[name]
        print(f"{name}: {statistics.median(t):.2f} ms per pack step (median of {len(t)} processes, each the best "
              f"of 3 one-epoch packs; range {min(t):.2f}-{max(t):.2f}); final train losses {losses[name][:60]}...")
    if args.compare:
        a, b = (statistics.median(times[k]) for k in checkouts)
        same = len(set(losses.values())) == 1
        print(f"ratio this / compare: {a / b:.2f}; final train losses of all 15 members "
              f"{'identical' if same else 'DIFFER'}")


if __name__ == "__main__":
    main()
