"""Recording overhead on a GPU: SD 1.5 at 512² in fp16 and the Flux.1 architecture, plain against
recorded, each ratio beside its noise floor (the plain call against itself).

Random weights of the published architectures (nothing is downloaded; see ``recording_overhead.py`` and
``architectures.py``); CUDA synchronised around every timed call, so each time is the call's whole work.
While recording, no step waits for the host: attention and latents reach pinned CPU memory by
asynchronous copies and the call waits once, at its end.

    python benchmarks/gpu.py [--repeats 7] [--steps 20] [--flux-size 512]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from families import measure  # noqa: E402
from timing import said, setting  # noqa: E402

from workbench import Request, load_pipeline  # noqa: E402

PROMPT = "a painting of a red circle left of a blue square"


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
    print(f"{'case':<34} {'plain':>9}  recorded/plain            noise floor")
    with tempfile.TemporaryDirectory() as tmp:
        cases = [
            ("SD 1.5 arch, 512², fp16", lambda: sd15_pipeline(Path(tmp) / "sd"), 512),
            ("Flux.1 arch, fp16", lambda: architectures.flux(Path(tmp) / "flux"), args.flux_size),
        ]
        for label, build, size in cases:
            made = build()
            folder = made if isinstance(made, (str, Path)) else None
            pipe = (
                load_pipeline(folder, device="cuda", dtype="float16")
                if folder
                else made.to("cuda", torch.float16)
            )
            request = Request(PROMPT, seed=0, steps=args.steps, height=size, width=size)
            seconds, floor, ratio = measure(pipe, request, args.repeats, wrap=synced, warmup=2)
            print(f"{label:<34} {seconds:8.3f}s  {said(ratio, floor):<25} {floor:.3f}", flush=True)
            del pipe
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
