"""Rerun every command the docs give for a committed results folder, and check that none trains.

    python scripts/rerun_commands.py --data-dir DIR --log OUT     # in a clone: it rewrites summaries

Reads the experiments.py and stats.py commands of RESULTS.md's code blocks and results/README.md's
table, and `python report.py`, keeps those whose --out (or folder) is committed, runs each from the
repository root with "$dir" set to DIR (the extracted CIFAR-10 JPEG copy), and writes each
command's output to OUT/NN.txt and every summary the commands rewrote to OUT/summaries/. It
fails if a command exits with an error or trains a run (prints a "final acc" line). Two such
OUT folders, made at two commits, are compared with `diff -r`.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commands():
    """Every documented command for a committed folder, in the order the docs give them."""
    found = []
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "RESULTS.md").read_text(), re.S)
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = " ".join(line.split())
            if line.startswith(("python experiments.py", "python stats.py")):
                found.append(line.split("#")[0].strip())
    for cell in re.findall(r"`(python (?:experiments|stats)\.py [^`]+)`", (ROOT / "results" / "README.md").read_text()):
        found.append(cell)
    keep = []
    for c in dict.fromkeys(found):
        args = shlex.split(c)
        out = args[args.index("--out") + 1] if "--out" in args else next(
            (a for a in args[2:] if a.startswith("results/")), None)
        folder = ROOT / out.rstrip("*") if out else None
        unfinished = folder is not None and (folder / "sweep.json").exists() and not (folder / "sweep_summary.json").exists()
        if folder is not None and folder.exists() and not unfinished and "..." not in c and "=*" not in c:
            keep.append(c)  # an unfinished sweep (no sweep_summary.json yet) would train: it resumes, not reruns
    return keep + ["python report.py --out /tmp/rerun-headline.png"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True, help="the extracted CIFAR-10 JPEG copy, as $dir")
    p.add_argument("--log", required=True, help="folder for each command's output and the summaries")
    a = p.parse_args()
    log = Path(a.log)
    (log / "summaries").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "dir": a.data_dir}
    bad = []
    for i, c in enumerate(commands()):
        cmd = c.replace('"$dir"', a.data_dir).replace("$dir", a.data_dir)
        r = subprocess.run([sys.executable, *shlex.split(cmd)[1:]], cwd=ROOT, env=env, capture_output=True, text=True)
        (log / f"{i:02d}.txt").write_text(f"$ {c}\n{r.stdout}")
        trained = [line for line in r.stdout.splitlines() if re.search(r" seed \d+ +final acc ", line)]
        status = "ok" if r.returncode == 0 and not trained else f"FAILED (exit {r.returncode}, {len(trained)} trained)"
        print(f"{i:02d} {status}: {c[:120]}", flush=True)
        if status != "ok":
            bad.append(c)
            (log / f"{i:02d}.err").write_text(r.stderr)
    for f in sorted((ROOT / "results").rglob("*summary.json")):
        dest = log / "summaries" / f.relative_to(ROOT / "results")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest)
    if bad:
        raise SystemExit(f"{len(bad)} command(s) failed or trained")


if __name__ == "__main__":
    main()
