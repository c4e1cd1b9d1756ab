"""Recording overhead on a GPU: SD 1.5 at 512² in fp16 and the Flux.1 architecture in bf16, plain against
recorded, each ratio beside its noise floor (the plain call against itself), and the host waits of each.

Random weights of the published architectures (nothing is downloaded; see ``recording_overhead.py`` and
``architectures.py``); CUDA synchronised around every timed call, so each time is the call's whole work.
Recording is meant to add no host wait inside a step: attention and latents reach pinned CPU memory by
asynchronous copies and the call waits once, at its end. The last columns count the times one plain and
one recorded call made the host wait for the GPU (torch's sync debug mode); SD 1.5's stock PNDM scheduler
waits at every step by itself, so what recording adds is the difference.

    python benchmarks/gpu.py [--repeats 7] [--steps 20] [--flux-size 512]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from families import calls, measure  # noqa: E402
from timing import said, setting  # noqa: E402

from workbench import Request, load_pipeline  # noqa: E402

PROMPT = "a painting of a red circle left of a blue square"


def host_waits(call) -> int:
    """How many times ``call`` made the host wait for the GPU, as torch's sync debug mode tells them."""
    import warnings

    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def synced(fn):
    def call():
        torch.cuda.synchronize()
        fn()
        torch.cuda.synchronize()

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--flux-size", type=int, default=512)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a CUDA device")
    import architectures
    from recording_overhead import sd15_pipeline

    print(setting(), f"· {torch.cuda.get_device_name()} · {args.steps} steps", flush=True)
    print(
        f"{'case':<34} {'plain':>9}  {'recorded/plain':<25} {'noise floor':<12} host waits (plain, recorded)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        cases = [
            ("SD 1.5 arch, 512², fp16", lambda: sd15_pipeline(Path(tmp) / "sd"), 512, torch.float16),
            (
                "Flux.1 arch, bf16",
                lambda: architectures.flux(Path(tmp) / "flux"),
                args.flux_size,
                torch.bfloat16,
            ),
        ]
        for label, build, size, dtype in cases:
            made = build()  # a folder, or a pipeline loaded on the CPU
            if isinstance(made, (str, Path)):
                pipe = load_pipeline(made, device="cuda", dtype=dtype)
            else:
                pipe = made.to("cuda", dtype)
            del made
            request = Request(PROMPT, seed=0, steps=args.steps, height=size, width=size)
            seconds, floor, ratio = measure(pipe, request, args.repeats, wrap=synced, warmup=2)
            waits = [host_waits(call) for call in calls(pipe, request)]
            print(
                f"{label:<34} {seconds:8.3f}s  {said(ratio, floor):<25} {floor:<12.3f} {waits[0]}, {waits[1]}",
                flush=True,
            )
            del pipe
            gc.collect()
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
