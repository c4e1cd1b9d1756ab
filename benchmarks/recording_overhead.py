"""Recording overhead: time(recorded, default policy) / time(unhooked stock call), and recorded bytes.

Measured in one process, alternating the two calls and taking medians, on
(a) the tiny test pipeline and the embedded toy model, (b) a Stable Diffusion 1.5-architecture pipeline
with random weights (its public UNet/VAE/CLIP-L configs; nothing is downloaded) at 256x256, and (c)
SDXL-, SD3- and Flux-architecture pipelines with random weights at 256x256, depth reduced to fit two
CPU cores (see benchmarks/architectures.py for what was reduced), for a few steps.

    python benchmarks/recording_overhead.py [--sd-steps 3] [--repeats 3] [--skip-sd] [--skip-families]

The small models are timed at least 21 times each (a call takes a tenth of a second; medians of 9 moved
by about 1% from one run of the script to the next). Every ratio is printed beside its noise floor (the
plain call timed against itself in the same run); a ratio no further from 1 than the floor is marked as
inside the noise. Goals: <= 1.05 on the tiny pipeline and the embedded model at 25 steps, <= 1.02 at SD
scale; recorded bytes equal to the policy's own estimate.
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

from workbench import RecordingPolicy, Request, generate, load_pipeline  # noqa: E402
from workbench.core.adapters import adapter_for  # noqa: E402
from workbench.core.policy import estimate_bytes  # noqa: E402

PROMPT = "a painting of a red circle left of a blue square"


def sd15_pipeline(root: Path):
    """SD 1.5's architecture (UNet 860M, VAE 84M, CLIP ViT-L/14 text encoder) with random weights."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from tiny import build_tokenizer, save_pipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(build_tokenizer(root / "tok", max_length=77))
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768,
        attention_head_dim=8,
        layers_per_block=2,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    )
    sched = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1
    )
    folder = save_pipeline(
        root / "sd15", vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched
    )
    return load_pipeline(folder, device="cpu", dtype="float32")


def measure(pipe, *, steps: int, size: int, repeats: int) -> dict:
    """Plain stock call and recorded call (default policy) interleaved: medians, their ratio, the noise
    floor (the plain call against itself), and the recorded bytes against the policy's estimate."""
    policy = RecordingPolicy()
    pipe.set_progress_bar_config(disable=True)
    adapter = adapter_for(pipe)
    request = Request(PROMPT, seed=0, steps=steps, height=size, width=size).for_model(adapter)

    def unhooked():
        pipe(
            prompt=PROMPT,
            num_inference_steps=steps,
            height=size,
            width=size,
            generator=torch.Generator().manual_seed(0),
            output_type="pil",
            **adapter.call_arguments(request),
        )

    def recorded():
        return generate(pipe, request, policy=policy, progress=False)

    run = recorded()  # the weights hash is computed once per pipeline
    seconds, floor, ratio = ratios(interleaved(with_floor(unhooked, {"recorded": recorded}), repeats))
    iterations = run.steps_done  # loop iterations: PNDM's loop has one more than steps
    text_keys = int((run.tokens.kind != "cut").sum())  # the key positions the denoiser's context has
    est = estimate_bytes(policy, adapter.layers(), adapter.latent_hw(size, size), text_keys, iterations)
    return {
        "unhooked_s": seconds,
        "ratio": ratio["recorded"],
        "floor": floor,
        "bytes": run.attention.nbytes(),
        "estimate": est,
    }


def report(name: str, m: dict) -> None:
    print(
        f"{name:<28} plain {m['unhooked_s']:7.3f} s  recorded/plain {said(m['ratio'], m['floor']):<24} "
        f"noise floor {m['floor']:.3f}  bytes {m['bytes']:,} ({100 * m['bytes'] / m['estimate']:.1f}% of the estimate)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd-steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-sd", action="store_true")
    parser.add_argument("--skip-families", action="store_true", help="leave out SDXL, SD3 and Flux")
    parser.add_argument(
        "--only", nargs="+", default=None, help="measure only these: tiny toy sd SDXL SD3 Flux"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        from tiny import build_pipeline_folder

        # Small models: one thread, where OpenMP scheduling jitter does not swamp a 10 ms step.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)

        def wanted(name: str) -> bool:
            return args.only is None or name in args.only

        print(setting(), "(the small models; the architectures below run on the default threads)", flush=True)
        if wanted("tiny"):
            tiny = load_pipeline(build_pipeline_folder(Path(tmp) / "tiny"), device="cpu", dtype="float32")
            report("tiny (16x16, 25 steps)", measure(tiny, steps=25, size=16, repeats=max(args.repeats, 21)))
        if wanted("toy"):
            toy = load_pipeline("toy", device="cpu", dtype="float32")
            report(
                "embedded toy (32x32, 25 st)", measure(toy, steps=25, size=32, repeats=max(args.repeats, 21))
            )
        torch.set_num_threads(threads)
        print(setting(), flush=True)
        if not args.skip_sd and wanted("sd"):
            sd = sd15_pipeline(Path(tmp))
            report(
                f"SD1.5 arch (256x256, {args.sd_steps} st)",
                measure(sd, steps=args.sd_steps, size=256, repeats=args.repeats),
            )
            del sd
        if not args.skip_families:
            import architectures

            for name, build in (
                ("SDXL", architectures.sdxl),
                ("SD3", architectures.sd3),
                ("Flux", architectures.flux),
            ):
                if not wanted(name):
                    continue
                pipe = load_pipeline(build(Path(tmp) / name), device="cpu", dtype="float32")
                label = f"{name} arch (256x256, {args.sd_steps} st)"
                report(label, measure(pipe, steps=args.sd_steps, size=256, repeats=args.repeats))
                del pipe


if __name__ == "__main__":
    main()
