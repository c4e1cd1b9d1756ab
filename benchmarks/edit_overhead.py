"""Cost of an edited call: time(edited call) / time(plain call), both recorded with the same policy.

Measured in one process, alternating the calls and taking medians (a second plain call, timed the
same way, prints the noise floor beside the ratios), on the embedded toy model and on
SDXL-, SD3- and Flux-architecture pipelines with random weights (``benchmarks/architectures.py``: depth
reduced to fit two CPU cores). Edits: a reweight of one word on every layer and step, an ablation, a
prompt switch at the middle step, and a replace of the aligned words from a source run given beforehand
(the source's own generation is not counted).

    python benchmarks/edit_overhead.py [--repeats 3] [--steps 4] [--only toy SDXL SD3 Flux]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from timing import interleaved, with_floor  # noqa: E402

from workbench import Edit, RecordingPolicy, Request, generate, load_pipeline  # noqa: E402

PROMPT = "a red circle left of a blue square"
SWAP = "a blue square left of a red circle"


def edits_for(pipe, steps: int) -> dict:
    return {
        "reweight 'red' ×2": [Edit.reweight("red", 2.0)],
        "ablate 'red'": [Edit.ablate("red")],
        f"switch at step {steps // 2}": [Edit.switch(SWAP, steps // 2)],
        "replace aligned words": [Edit.replace(SWAP)],
    }


def measure(pipe, request: Request, repeats: int) -> dict[str, float]:
    """Median time of the plain call and of each edited call, in seconds."""
    policy = RecordingPolicy()
    full = RecordingPolicy(heads="all", dtype="float32")
    source = generate(pipe, request.replace(prompt=SWAP), policy=full, progress=False)
    plain = lambda: generate(pipe, request, policy=policy, progress=False)  # noqa: E731
    calls = with_floor(plain, {})
    for name, edits in edits_for(pipe, request.steps).items():
        calls[name] = lambda e=edits: generate(
            pipe, request, edits=e, sources=[source], policy=policy, progress=False
        )
    return interleaved(calls, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="steps of the random-weight architectures")
    parser.add_argument("--only", nargs="+", default=None, help="toy SDXL SD3 Flux")
    args = parser.parse_args()
    import architectures

    wanted = set(args.only or ["toy", "SDXL", "SD3", "Flux"])
    with tempfile.TemporaryDirectory() as tmp:
        cases = []
        if "toy" in wanted:
            cases.append(("toy (32x32, 25 steps)", load_pipeline("toy"), Request(PROMPT, seed=0, steps=25)))
        for name, build in (
            ("SDXL", architectures.sdxl),
            ("SD3", architectures.sd3),
            ("Flux", architectures.flux),
        ):
            if name in wanted:
                pipe = load_pipeline(build(Path(tmp) / name), device="cpu")
                cases.append(
                    (
                        f"{name} (256x256, {args.steps} steps)",
                        pipe,
                        Request(PROMPT, seed=0, steps=args.steps, height=256, width=256),
                    )
                )
        for label, pipe, request in cases:
            pipe.set_progress_bar_config(disable=True)
            times = measure(pipe, request, args.repeats)
            plain = times.pop("plain")
            shown = "  ".join(f"{name}: {t / plain:.3f}" for name, t in times.items())
            print(f"{label:<26} plain {plain:7.3f} s  edited/plain  {shown}", flush=True)
        print(
            f"torch threads {torch.get_num_threads()} · OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
        )


if __name__ == "__main__":
    main()
