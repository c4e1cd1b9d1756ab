"""OpenMP wait policy: the embedded model's 25-step image with the workbench's default (passive waits)
against torch's own default (busy waits), while one other busy process shares the CPU.

Each case runs in a fresh child process (the policy is read once, when torch loads OpenMP), with
``OMP_WAIT_POLICY`` unset in its environment:

    default  ``import workbench`` before torch: the workbench sets OMP_WAIT_POLICY=PASSIVE
    without  ``import torch`` first, as a plain script would: OpenMP keeps busy waits

A third child spins in a Python loop the whole time (the "other busy process"). Each case loads the
model, makes one warm-up image, then times ``--repeats`` recorded 25-step images and reports the best.

    python benchmarks/omp_wait.py [--repeats 3] [--steps 25] [--threads N]

Prints both times and the ratio (without / default). ``--threads`` sets torch's thread count in both
children (default: torch's own choice, one per core).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time, warnings
mode, steps, repeats, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if mode == "without":
    import torch  # before workbench: OpenMP starts with its own (busy) wait policy
    warnings.simplefilter("ignore", RuntimeWarning)  # the workbench's note that it came too late
import workbench
import torch
import os
if threads:
    torch.set_num_threads(threads)
from workbench import generate, load_pipeline
pipe = load_pipeline("toy", device="cpu")
prompt = "a red circle left of a blue square"
generate(pipe, prompt, seed=0, steps=steps, progress=False)  # warm-up
times = []
for i in range(repeats):
    t = time.perf_counter()
    generate(pipe, prompt, seed=i, steps=steps, progress=False)
    times.append(time.perf_counter() - t)
print(json.dumps({"mode": mode, "policy": os.environ.get("OMP_WAIT_POLICY"), "best": min(times),
                  "times": times, "threads": torch.get_num_threads()}))
"""

SPIN = "import time\nend = time.monotonic() + float(__import__('sys').argv[1])\nwhile time.monotonic() < end: pass\n"


def run_case(mode: str, steps: int, repeats: int, threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(steps), str(repeats), str(threads)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _runs(result: dict) -> str:
    return ", ".join(f"{t:.2f}" for t in result["times"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--threads", type=int, default=0, help="torch threads in the children (0: torch's choice)"
    )
    a = ap.parse_args()
    spinner = subprocess.Popen([sys.executable, "-c", SPIN, "3600"])
    try:
        time.sleep(0.5)
        results = {mode: run_case(mode, a.steps, a.repeats, a.threads) for mode in ("default", "without")}
    finally:
        spinner.terminate()
        spinner.wait()
    d, w = results["default"], results["without"]
    print(
        f"embedded model, {a.steps} steps, {d['threads']} torch threads, one busy process beside it "
        f"({os.cpu_count()} cores):"
    )
    print(f"  import workbench first (OMP_WAIT_POLICY={d['policy']}): {d['best']:.2f} s  (runs {_runs(d)})")
    print(f"  import torch first (OMP_WAIT_POLICY unset, busy waits): {w['best']:.2f} s  (runs {_runs(w)})")
    print(f"ratio without / with the workbench's default: {w['best'] / d['best']:.1f}x")


if __name__ == "__main__":
    main()
