"""Writes fp32_reference.json: per-epoch histories of every strategy on tiny synthetic data.

Made once, with the code as it was before precision, validation, depth and checkpoints
were added (commit 94cde06), so that tests/test_precision.py can check that fp32 runs
are still bit-for-bit what they were. Do not regenerate it to make that test pass.

    python tests/data/make_fp32_reference.py
"""
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from experiments import main  # noqa: E402

ARGS = ["--dataset", "synthetic", "--train-size", "512", "--test-size", "256", "--batch-size", "64",
        "--epochs", "2", "--seeds", "2", "--strategies", "all", "--no-progress"]
TIMING = ("epoch_time_s", "eval_time_s")

if __name__ == "__main__":
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as out:
        assert main(ARGS + ["--out", out]) == 0
        runs = {}
        for f in sorted(Path(out, "runs").glob("*.json")):
            run = json.loads(f.read_text())
            runs[f"{run['strategy']}/{run['seed']}"] = {
                k: v for k, v in run["history"].items() if k not in TIMING}
    blob = {"args": ARGS, "threads": 2, "torch": torch.__version__, "runs": runs}
    Path(__file__).with_name("fp32_reference.json").write_text(json.dumps(blob, indent=1) + "\n")
