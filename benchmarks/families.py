"""Recording overhead per model family, on the tiny random-weight pipelines the tests build.

For each family: the plain stock call and the recorded call (``generate``, default policy, every block
recorded) at the family's test size, 4 steps, one torch thread, medians of interleaved calls, with the
noise floor (the plain call against itself) beside the ratio.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/families.py [--repeats 9] [--only sd3 flux ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import interleaved, ratios, said, setting, with_floor  # noqa: E402

from workbench import Request, generate, load_pipeline  # noqa: E402
from workbench.core.adapters import adapter_for  # noqa: E402

PROMPT = "a red circle left of a blue square"


def families() -> dict:
    import tiny_families as f
    from tiny import build_pipeline_folder
    from tiny_cogview4 import build_cogview4_folder
    from tiny_flux2 import build_flux2_folder, build_flux2_klein_folder
    from tiny_qwen import build_qwenimage_folder
    from tiny_sana import build_sana_folder
    from tiny_zimage import build_z_image_folder

    # name: (builder, height, width, request fields): the tests' sizes, each family's own guidance
    return {
        "sd1": (lambda root: build_pipeline_folder(root / "sd1"), 16, 16, {}),
        "sdxl": (f.build_sdxl_folder, 64, 96, {}),
        "sd3": (f.build_sd3_folder, 32, 48, {}),
        "flux": (f.build_flux_folder, 32, 48, {}),
        "flux2-klein": (build_flux2_klein_folder, 32, 48, {}),
        "flux2": (build_flux2_folder, 32, 48, {}),
        "qwen-image": (build_qwenimage_folder, 32, 48, {}),
        "sana": (build_sana_folder, 32, 64, {}),
        "pixart-sigma": (f.build_pixart_sigma_folder, 32, 48, {}),
        "z-image": (build_z_image_folder, 32, 40, {}),
        "chroma": (f.build_chroma_folder, 32, 48, {}),
        "cogview4": (build_cogview4_folder, 32, 48, {}),
    }


def measure(pipe, request: Request, repeats: int, wrap=None, warmup: int = 1) -> tuple[float, float, float]:
    """(plain seconds, noise floor, recorded / plain); ``wrap`` turns each timed call into another
    (``gpu.py``: synchronised around it)."""
    wrap = wrap or (lambda fn: fn)
    plain, recorded = calls(pipe, request)
    timed = with_floor(wrap(plain), {"recorded": wrap(recorded)})
    seconds, floor, ratio = ratios(interleaved(timed, repeats, warmup=warmup))
    return seconds, floor, ratio["recorded"]


def calls(pipe, request: Request):
    """The two calls compared: (the plain stock call, the recorded call) for ``request``."""
    pipe.set_progress_bar_config(disable=True)
    request = request.for_model(adapter_for(pipe))
    args = adapter_for(pipe).call_arguments(request)

    def plain():
        pipe(
            prompt=request.prompt,
            num_inference_steps=request.steps,
            height=request.height,
            width=request.width,
            generator=torch.Generator().manual_seed(request.seed),
            output_type="pil",
            **args,
        )

    def recorded():
        generate(pipe, request, progress=False)

    return plain, recorded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--only", nargs="+", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(setting(), f"· {args.steps} steps · medians of {args.repeats} interleaved calls", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (build, height, width, fields) in families().items():
            if args.only and name not in args.only:
                continue
            pipe = load_pipeline(build(Path(tmp) / name), device="cpu", dtype="float32")
            request = Request(PROMPT, seed=0, steps=args.steps, height=height, width=width, **fields)
            seconds, floor, ratio = measure(pipe, request, args.repeats)
            print(
                f"{name:<13} {type(pipe).__name__:<24} plain {seconds * 1000:7.1f} ms  "
                f"recorded/plain {said(ratio, floor):<26} noise floor {floor:.3f}",
                flush=True,
            )
            del pipe


if __name__ == "__main__":
    main()
