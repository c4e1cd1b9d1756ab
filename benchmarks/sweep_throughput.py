"""Sweep throughput: runs per minute on the embedded model (25 steps, default policy), in one process.

Measured in rounds (medians reported), each round these four, each a fresh sweep of the same spec into
its own folder:

1. the local executor with torch's own thread count (what ``workbench sweep`` does by default);
2. the local executor on 1 thread;
3. Ray (a local instance with 2 CPUs): 2 workers × 1 thread;
4. Ray: 1 worker × 1 thread.

Runs per minute count the sweep's run loop: from the moment the runs are planned to the last one saved
(every run is written to disk and indexed, as in any sweep). Model loading and Ray's start are timed
apart. Ray's per-run overhead is (time per run on Ray, 1 worker × 1 thread) / (time per run locally on
1 thread) - 1.

    python benchmarks/sweep_throughput.py [--runs 40] [--steps 25] [--rounds 3]

Goals: Ray 2 workers >= 1.5x the local executor's runs/min; Ray's per-run overhead <= 5%.

On a shared machine two workers gain only what the other work leaves free: before and after the sweeps
the benchmark times two plain generate loops (separate processes) against one, the ceiling for two
workers at that moment.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from workbench.sweeps.runner import SweepEvents, run_sweep

PROMPTS = ["a red circle left of a blue square", "a green triangle above a yellow square"]


PLAIN_LOOP = """
import sys, time, torch
torch.set_num_threads(1)
import workbench
pipe = workbench.load_pipeline("toy")
workbench.generate(pipe, "a red circle", seed=0, steps={steps}, guidance_scale=4.0, progress=False)
started = time.perf_counter()
for seed in range({runs}):
    workbench.generate(pipe, "{prompt}", seed=seed, steps={steps}, guidance_scale=4.0, progress=False)
print((time.perf_counter() - started) / {runs})
"""


def parallel_ceiling(steps: int, runs: int = 15) -> float:
    """How much faster two plain generate loops (separate processes, 1 thread each) get through runs
    than one, right now: the most two workers can gain on this machine while it is shared as it is."""
    code = PLAIN_LOOP.format(steps=steps, runs=runs, prompt=PROMPTS[0])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def start():
        return subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )

    alone = float(start().communicate()[0])
    pair = [float(p.communicate()[0]) for p in [start(), start()]]
    return 2 * alone / (sum(pair) / 2)


class LoopClock(SweepEvents):
    """When the run loop starts (runs planned) and when its last run ended."""

    def planned(self, sweep_id, total, skipped, estimate):
        self.start = time.perf_counter()

    def finished(self, worker, outcome, row):
        self.end = time.perf_counter()


def measure(label: str, spec: dict, root: Path, **options) -> dict:
    clock = LoopClock()
    began = time.perf_counter()
    out = Path(tempfile.mkdtemp(dir=root))
    result = run_sweep(spec, out, events=clock, progress=False, log=None, **options)
    if result.done != result.planned:
        raise RuntimeError(f"{label}: only {result.done} of {result.planned} runs finished")
    loop = clock.end - clock.start
    row = {
        "executor": label,
        "runs": result.done,
        "setup_s": clock.start - began,
        "loop_s": loop,
        "runs_per_min": 60 * result.done / loop,
        "s_per_run": loop / result.done,
    }
    print(
        f"  {label:<22} {row['runs']:>4} runs  setup {row['setup_s']:5.1f} s  loop {loop:6.1f} s  "
        f"{row['runs_per_min']:6.1f} runs/min  {1000 * row['s_per_run']:6.0f} ms/run",
        flush=True,
    )
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--runs", type=int, default=40, help="runs per sweep (rounded to the prompts × word orders)"
    )
    p.add_argument("--steps", type=int, default=25, help="denoising steps per run")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the four sweeps; medians are reported")
    a = p.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import ray

    seeds = max(1, a.runs // (2 * len(PROMPTS)))  # each prompt and its word-order swap
    spec = {
        "model": "toy",
        "prompts": PROMPTS,
        "word_orders": "relation",
        "seeds": list(range(seeds)),
        "steps": a.steps,
        "guidance_scales": [4.0],
    }
    threads = torch.get_num_threads()
    configs = {
        f"local ({threads} threads)": {},
        "local (1 thread)": {"threads": 1},
        "Ray 2 workers x 1": {"executor": "ray", "workers": 2, "threads": 1},
        "Ray 1 worker x 1": {"executor": "ray", "workers": 1, "threads": 1},
    }
    print(
        f"embedded model, {a.steps} steps, default policy; {os.cpu_count()} CPU cores; torch {torch.__version__}; "
        f"{a.rounds} rounds of {len(configs)} sweeps, alternating"
    )
    ceiling = parallel_ceiling(a.steps)
    print(
        f"two plain generate loops at once: {ceiling:.2f}x one loop's runs per minute (the ceiling for 2 workers now)"
    )
    started = time.perf_counter()
    # One Ray instance for the whole measurement, so every sweep runs beside the same idle Ray processes.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    print(f"ray.init: {time.perf_counter() - started:.1f} s", flush=True)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(a.rounds):
                print(f"round {r + 1}", flush=True)
                rows += [{**measure(k, spec, Path(tmp), **v), "round": r} for k, v in configs.items()]
    finally:
        ray.shutdown()
    per_run = {k: statistics.median(x["s_per_run"] for x in rows if x["executor"] == k) for k in configs}
    setup = {k: statistics.median(x["setup_s"] for x in rows if x["executor"] == k) for k in configs}
    names = list(configs)
    print("\nmedians over rounds:")
    for k in names:
        print(
            f"  {k:<22} {60 / per_run[k]:6.1f} runs/min  {1000 * per_run[k]:5.0f} ms/run  setup {setup[k]:4.1f} s"
        )
    local, local1, ray2, ray1 = (per_run[k] for k in names)
    print(f"Ray 2x1 / local ({threads} threads) runs per minute: {local / ray2:.2f}x (goal >= 1.5x)")
    print(f"Ray 2x1 / local (1 thread) runs per minute:   {local1 / ray2:.2f}x")
    print(f"Ray per-run overhead (1x1 vs local, 1 thread): {ray1 / local1 - 1:+.1%} (goal <= 5%)")
    ceiling_after = parallel_ceiling(a.steps)
    print(f"two plain generate loops at once, after: {ceiling_after:.2f}x one loop's runs per minute")
    for k in names[2:]:
        ratios = [
            x["s_per_run"] / y["s_per_run"]
            for x in rows
            for y in rows
            if x["executor"] == k and y["executor"] == "local (1 thread)" and x["round"] == y["round"]
        ]
        print(f"  {k} / local (1 thread) time per run, by round: {', '.join(f'{q:.2f}' for q in ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
