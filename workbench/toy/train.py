"""Train the embedded toy model: VAE first, then text encoder + UNet jointly. Resumable.

    OMP_WAIT_POLICY=PASSIVE python -m workbench.toy.train --minutes 85
    python -m workbench.toy.train --export          # latest checkpoint's EMA -> weights/
    python -m workbench.toy.train --tiny --out /tmp/x --ckpt-dir /tmp/c --log-dir /tmp/l

Phase 1 trains a small AutoencoderKL on world images (colour-weighted L1+L2), then fine-tunes the
decoder until reconstructions pass the colour checker, and sets the latent scaling factor from data.
Phase 2 trains CLIPTextModel + UNet2DConditionModel with v-prediction, min-SNR weighting, AdamW with
warmup + cosine decay (over the time budget), EMA, 10% empty captions for classifier-free guidance,
and an auxiliary attention-localisation loss: each object word's cross-attention map (every attn2
layer, every head) is pulled towards that object's mask (cross-entropy to the area-pooled,
normalised mask, on conditional samples only). The shipped model runs on stock processors.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline
from transformers import CLIPTokenizer

from workbench.analysis.aggregate import PRESETS, layer_grids
from workbench.analysis.scoring import binarize, iou
from workbench.core.adapters import MODEL_DEFAULTS_FILE
from workbench.core.attention import AttentionStore
from workbench.core.layers import CrossAttentionLayer, cross_attention_layers
from workbench.core.numerics import check_threads, machine_cores, torch_threads

from . import WEIGHTS_DIR
from .attention import ProbsSink, install, restore
from .checker import detect, score_spec
from .checkpoint import load_checkpoint, save_checkpoint
from .evaluate import IOU_RULE, IOU_THRESHOLD, MAPS
from .models import (
    ModelConfig,
    build_sample_scheduler,
    build_text_encoder,
    build_train_scheduler,
    build_unet,
    build_vae,
)
from .tokenizer import save_tokenizer, word_token_groups
from .world import Scene, sample_scene, training_batch

TOY_DIR = Path(__file__).resolve().parent


@dataclass
class TrainSchedule:
    """What every embedded model's training run shares: the seed, the autoencoder phase, the optimiser
    and its schedule, the time budget, checkpoints and logging (saved into training.json). A model's
    own config adds its loss settings and ``model``, and says its tiny model (``tiny_model``)."""

    seed: int = 0
    batch_size: int = 64
    vae_batch_size: int = 32
    vae_steps: int = 1000
    vae_lr: float = 2e-3
    vae_kl: float = 1e-6
    vae_decoder_steps: int = 1200  # at most; stops early once the colour check passes
    vae_check_every: int = 150
    vae_pass: float = 0.98
    lr: float = 8e-4
    weight_decay: float = 0.01
    warmup: int = 150
    min_lr_frac: float = 0.1
    minutes: float = 85.0  # wall-time budget for the whole run (both phases)
    steps: int = 1_000_000  # diffusion step cap
    cond_dropout: float = 0.1
    attn_weight: float = 0.1
    ema_decay: float = 0.999
    ckpt_every_s: float = 180.0
    log_every: int = 20
    p_single: float = 0.2
    tiny: bool = False

    @classmethod
    def tiny_model(cls):
        raise NotImplementedError

    @classmethod
    def tiny_config(cls):
        """A few steps of everything on the tiny model: a smoke run."""
        return cls(
            batch_size=4,
            vae_batch_size=4,
            vae_steps=3,
            vae_decoder_steps=2,
            vae_check_every=2,
            steps=3,
            warmup=1,
            ckpt_every_s=1e9,
            log_every=1,
            tiny=True,
            model=cls.tiny_model(),
        )


@dataclass
class TrainConfig(TrainSchedule):
    """Everything that decides the embedded UNet model's training run (saved into training.json)."""

    snr_gamma: float = 5.0
    model: ModelConfig = field(default_factory=ModelConfig)

    @classmethod
    def tiny_model(cls) -> ModelConfig:
        return ModelConfig.tiny()


class Logger:
    """Appends progress lines to a log file and echoes them to stdout."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path

    def __call__(self, msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        with self.path.open("a") as f:
            f.write(line + "\n")


def images_to_tensor(scenes: list[Scene], device: torch.device) -> torch.Tensor:
    """(B, 3, 32, 32) float in [-1, 1]."""
    arr = np.stack([s.image for s in scenes]).astype(np.float32) / 127.5 - 1.0  # (B, 32, 32, 3)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous().to(device)


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().byte()
    return x.permute(0, 2, 3, 1).cpu().numpy()


# ----------------------------------------------------------------------------- phase 1: VAE


def vae_color_check(vae, rng: np.random.Generator, device: torch.device, n: int = 128) -> float:
    """Fraction of reconstructions whose objects and relation the checker scores correct."""
    scenes = [sample_scene(rng, held_out=None) for _ in range(n)]
    with torch.no_grad():
        x = images_to_tensor(scenes, device)
        rec = vae.decode(vae.encode(x).latent_dist.sample()).sample  # (n, 3, 32, 32)
    ok = 0
    for img, s in zip(tensor_to_images(rec), scenes):
        r = score_spec(detect(img), s.spec)
        ok += bool(r["objects"]) and r["relation"] is not False
    return ok / n


def train_vae(vae, cfg: TrainConfig, rng: np.random.Generator, device: torch.device, log: Logger) -> dict:
    """Train the autoencoder, fine-tune its decoder until colours pass, set the scaling factor."""
    t0 = time.time()

    def run(params, steps: int, phase: str, check: bool) -> float:
        opt = torch.optim.AdamW(params, lr=cfg.vae_lr, weight_decay=0.0)
        score = float("nan")
        for step in range(1, steps + 1):
            scenes = training_batch(rng, cfg.vae_batch_size, p_single=cfg.p_single)
            x = images_to_tensor(scenes, device)  # (B, 3, 32, 32)
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample()).sample  # (B, 3, 32, 32)
            # coloured pixels are a small fraction of the image: weight them up so colours stay saturated
            weight = 1.0 + 4.0 * (x.min(1, keepdim=True).values < 0.9).float()  # (B, 1, 32, 32)
            err = rec - x
            loss = (weight * (err.abs() + err.square())).mean() + cfg.vae_kl * post.kl().mean()
            for g in opt.param_groups:
                g["lr"] = cfg.vae_lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % cfg.log_every == 0 or step == steps:
                log(f"{phase} step {step}/{steps} loss {loss.item():.4f} elapsed {time.time() - t0:.0f}s")
            if check and (step % cfg.vae_check_every == 0 or step == steps):
                score = vae_color_check(vae, rng, device)
                log(f"{phase} colour check: {score:.3f} of reconstructions pass")
                if score >= cfg.vae_pass:
                    break
        return score

    vae.train()
    run(list(vae.parameters()), cfg.vae_steps, "vae", check=False)
    score = vae_color_check(vae, rng, device)
    log(f"vae colour check after joint training: {score:.3f}")
    if score < cfg.vae_pass:
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
        params = [p for p in vae.parameters() if p.requires_grad]
        score = run(params, cfg.vae_decoder_steps, "vae-decoder", check=True)
    vae.requires_grad_(False)
    vae.eval()
    with torch.no_grad():
        x = images_to_tensor(training_batch(rng, 512), device)
        z = vae.encode(x).latent_dist.sample()  # (512, 4, 8, 8)
        scale = float(1.0 / z.std())
    vae.register_to_config(scaling_factor=scale)
    log(f"vae done: colour check {score:.3f}, scaling factor {scale:.4f}, {time.time() - t0:.0f}s")
    return {"vae_color_check": score, "scaling_factor": scale, "vae_seconds": time.time() - t0}


# ----------------------------------------------------------------------------- phase 2: diffusion


@dataclass
class Batch:
    """Tensors for one diffusion step."""

    latents: torch.Tensor  # (B, 4, 8, 8), scaled
    ids: torch.Tensor  # (B, T)
    token_obj: torch.Tensor  # (B, T) object index each token names (colour/shape/size words), -1 none
    masks: torch.Tensor  # (B, 2, 32, 32) float object masks (zeros for a missing second object)


def token_objects(tokenizer: CLIPTokenizer, scene: Scene, ids: list[int]) -> list[int]:
    """For each token position: the index of the object whose colour/shape/size word it is, else -1."""
    tokens = tokenizer.convert_ids_to_tokens(ids)
    groups = word_token_groups(tokens)
    n_words = len(scene.caption.split())
    if len(groups) != n_words:
        raise ValueError(f"caption {scene.caption!r}: {len(groups)} token groups for {n_words} words")
    out = [-1] * len(ids)
    for j, obj in enumerate(scene.objects):
        for word_index in obj.word_indices.values():
            for pos in groups[word_index]:
                out[pos] = j
    return out


def make_batch(
    scenes: list[Scene], tokenizer: CLIPTokenizer, vae, cfg: TrainConfig, rng: np.random.Generator, device
) -> Batch:
    """Encode images, tokenize captions (some dropped to ''), and map tokens to object masks."""
    drop = rng.random(len(scenes)) < cfg.cond_dropout
    captions = ["" if d else s.caption for s, d in zip(scenes, drop)]
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True)
    ids = ids.input_ids
    token_obj = [
        [-1] * len(row) if d else token_objects(tokenizer, s, row) for s, row, d in zip(scenes, ids, drop)
    ]
    masks = np.zeros((len(scenes), 2, 32, 32), dtype=np.float32)
    for i, s in enumerate(scenes):
        for j, obj in enumerate(s.objects):
            masks[i, j] = obj.mask
    with torch.no_grad():
        z = vae.encode(images_to_tensor(scenes, device)).latent_dist.sample()  # (B, 4, 8, 8)
    return Batch(
        latents=z * vae.config.scaling_factor,
        ids=torch.tensor(ids, device=device),
        token_obj=torch.tensor(token_obj, device=device),
        masks=torch.from_numpy(masks).to(device),
    )


def attention_loss(
    probs: dict[str, torch.Tensor], layers: list[CrossAttentionLayer], batch: Batch
) -> torch.Tensor:
    """Mean over layers of KL(normalised object mask || spatially normalised token map).

    Computed as cross-entropy minus the mask's entropy (a constant), averaged over heads and over
    every token of every object's colour/shape/size word in conditional samples.

    Args:
        probs: layer name -> (B, heads, queries, tokens), queries row-major over the layer's grid.
        layers: the denoiser's ``cross_attention_layers``; each layer's grid follows the latent's
            height and width (``batch.latents``), so non-square latents pool the masks correctly.
        batch: the masks (at image size) and which object each token names.
    """
    valid = (batch.token_obj >= 0).float()  # (B, T)
    if valid.sum() == 0:
        return torch.zeros((), device=batch.ids.device)
    obj = batch.token_obj.clamp(min=0)  # (B, T)
    by_name = {layer.name: layer for layer in layers}
    latent_hw = tuple(batch.latents.shape[-2:])
    losses = []
    for name, p in probs.items():  # (B, H, Q, T)
        if name not in by_name:
            raise ValueError(f"no cross-attention layer named {name!r}; layers are {sorted(by_name)}")
        rows, cols = by_name[name].grid(*latent_hw)
        if rows * cols != p.shape[2]:
            raise ValueError(
                f"layer {name} has {p.shape[2]} queries, but its grid for a {latent_hw[0]}x{latent_hw[1]} "
                f"latent is {rows}x{cols}"
            )
        pooled = F.adaptive_avg_pool2d(batch.masks, (rows, cols)).flatten(2)  # (B, 2, Q), row-major
        target = pooled / pooled.sum(-1, keepdim=True).clamp(min=1e-8)  # (B, 2, Q)
        target = torch.gather(target, 1, obj[..., None].expand(-1, -1, target.shape[-1]))  # (B, T, Q)
        pn = p / p.sum(2, keepdim=True).clamp(min=1e-12)  # (B, H, Q, T)
        ce = -(target.transpose(1, 2)[:, None] * torch.log(pn + 1e-8)).sum(2)  # (B, H, T)
        ent = -(target * torch.log(target + 1e-8)).sum(-1)  # (B, T)
        kl = ce.mean(1) - ent  # (B, T)
        losses.append((kl * valid).sum() / valid.sum())
    return torch.stack(losses).mean()


def snr_weights(scheduler, t: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma loss weights for the given timesteps."""
    ac = scheduler.alphas_cumprod.to(t.device)[t]  # (B,)
    snr = ac / (1 - ac)
    clipped = snr.clamp(max=gamma)
    return clipped / (snr + 1) if prediction_type == "v_prediction" else clipped / snr


def probe_word_maps(
    probs: dict[str, torch.Tensor],
    layers: list[CrossAttentionLayer],
    latent_hw: tuple[int, int],
    groups: list[list[int]],
    size: tuple[int, int],
) -> torch.Tensor:
    """One image's word maps by the evaluation's recipe (``MAPS``), from one UNet call's probabilities.

    Args:
        probs: layer name -> (heads, queries, tokens) of one image.
        layers: the denoiser's ``cross_attention_layers`` (they give each layer's grid).
        latent_hw: the latent's (height, width).
        groups: token positions of each word (sub-words are summed).
        size: output (H, W) in pixels.
    Returns:
        (words, H, W) float32.
    """
    by_name = {layer.name: layer for layer in layers}
    store = AttentionStore(
        probs={k: v[None] for k, v in probs.items()},  # (1 step, heads, queries, tokens)
        steps=[0],
        shapes={k: by_name[k].grid(*latent_hw) for k in probs},
        heads="all",
    )
    maps, _, _ = layer_grids(store, PRESETS[MAPS], size)  # (tokens, H, W)
    return torch.stack([maps[g].sum(0) for g in groups])  # (words, H, W)


def attention_iou_probe(unet, text_encoder, tokenizer, vae, device, n: int = 24, seed: int = 123) -> dict:
    """Cheap training-time probe: word-map IoU on noised ground-truth latents at t=500 (fixed scenes),
    with the evaluation's map recipe and threshold rule."""
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, held_out=False) for _ in range(n)]
    sink = ProbsSink(detach=True)
    originals = install(unet, sink)
    scores: dict[str, list[float]] = {"color": [], "shape": []}
    try:
        with torch.no_grad():
            z = vae.encode(images_to_tensor(scenes, device)).latent_dist.mean * vae.config.scaling_factor
            sched = build_train_scheduler(ModelConfig())
            gen = torch.Generator().manual_seed(seed)
            noise = torch.randn(z.shape, generator=gen).to(device)
            t = torch.full((n,), 500, device=device, dtype=torch.long)
            ids = tokenizer(
                [s.caption for s in scenes], padding="max_length", max_length=tokenizer.model_max_length
            ).input_ids
            text = text_encoder(torch.tensor(ids, device=device))[0]
            unet(sched.add_noise(z, noise, t), t, text)
        layers = cross_attention_layers(unet)
        latent_hw = tuple(z.shape[-2:])
        for i, s in enumerate(scenes):
            groups = word_token_groups(tokenizer.convert_ids_to_tokens(ids[i]))
            probs = {k: v[i].cpu() for k, v in sink.probs.items()}  # layer -> (heads, queries, tokens)
            maps = probe_word_maps(probs, layers, latent_hw, groups, s.image.shape[:2])
            for obj in s.objects:
                for role in ("color", "shape"):
                    mask = binarize(maps[obj.word_indices[role]], IOU_THRESHOLD, rule=IOU_RULE)
                    scores[role].append(iou(mask, obj.mask))
    finally:
        restore(unet, originals)
    return {k: float(np.mean(v)) for k, v in scores.items()}


def copy_params(dst: torch.nn.Module, src: torch.nn.Module) -> None:
    dst.load_state_dict(src.state_dict())


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, p in zip(ema.parameters(), model.parameters()):
            pe.lerp_(p, 1.0 - decay)


def export_pipeline(
    vae, text_encoder, unet, tokenizer, cfg: TrainConfig, out: Path, info: dict, tok_dir: Path
) -> Path:
    """Save a stock StableDiffusionPipeline (EMA weights, stock processors) to `out`, replacing it.

    The evaluation records and the model's generation defaults (``MODEL_DEFAULTS_FILE``) already in
    ``out`` are kept. The tokenizer folder holds the CLIP-format vocab.json + merges.txt (from tok_dir)
    rather than the tokenizer.json that transformers writes, so any CLIPTokenizer version reads the
    same files.
    """
    unet.set_default_attn_processor()
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=build_sample_scheduler(cfg.model),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    pipe.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(tmp / "tokenizer")
    shutil.copytree(tok_dir, tmp / "tokenizer")
    # what was measured on, or declared for, the model (its evaluation, its generation defaults) stays
    keep = [*out.glob("evaluation*.json"), *out.glob(MODEL_DEFAULTS_FILE)] if out.exists() else []
    for p in keep:
        shutil.copy2(p, tmp / p.name)
    (tmp / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def parse_args(
    argv: list[str] | None = None,
    *,
    description: str | None = __doc__,
    out: Path = WEIGHTS_DIR,
    home: Path = TOY_DIR,
) -> argparse.Namespace:
    """The command line as a namespace; ``--threads`` bounded by the machine's cores (one argparse error).

    ``out`` is the default weights folder, ``home`` the folder the default ``_ckpt`` and ``_logs`` go in
    (another embedded model's trainer passes its own)."""
    ap = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, default=None, help="wall-time budget for the whole run")
    ap.add_argument("--steps", type=int, default=None, help="cap on diffusion steps")
    ap.add_argument("--vae-steps", type=int, default=None, help="autoencoder training steps")
    ap.add_argument("--vae-decoder-steps", type=int, default=None, help="cap on decoder fine-tune steps")
    ap.add_argument("--tiny", action="store_true", help="tiny config smoke run")
    ap.add_argument("--export", action="store_true", help="only export the latest checkpoint's EMA")
    ap.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    ap.add_argument("--out", type=Path, default=out)
    ap.add_argument("--ckpt-dir", type=Path, default=home / "_ckpt")
    ap.add_argument("--log-dir", type=Path, default=home / "_logs")
    ap.add_argument(
        "--threads",
        type=int,
        default=min(2, machine_cores()),
        help="torch CPU threads, 1..the machine's cores (default: 2, or 1 on a one-core machine)",
    )
    args = ap.parse_args(argv)
    try:
        check_threads(args.threads, "--threads")
    except ValueError as err:
        ap.error(str(err))
    return args


def main(argv: list[str] | None = None) -> int:
    return train(parse_args(argv))


def train_config(args: argparse.Namespace, config: type[TrainSchedule] = TrainConfig) -> TrainSchedule:
    """The tiny or full ``config`` with the command line's overrides."""
    cfg = config.tiny_config() if args.tiny else config()
    for name in ("minutes", "steps", "vae_steps", "vae_decoder_steps"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    return cfg


@dataclass
class Training:
    """One training run's state: config, models, optimizer, the numpy stream, and ``meta`` (step, phase,
    seconds, results) that the checkpoint carries."""

    cfg: TrainConfig
    device: torch.device
    log: Logger
    rng: np.random.Generator
    ckpt_dir: Path
    tok_dir: Path
    tokenizer: CLIPTokenizer
    modules: dict[str, torch.nn.Module]  # vae, text, unet, ema_text, ema_unet
    params: list[torch.nn.Parameter]  # what the optimizer trains: UNet and text encoder
    opt: torch.optim.Optimizer
    meta: dict
    command: str

    @property
    def vae(self):
        return self.modules["vae"]

    def info(self) -> dict:
        """What ``training.json`` beside the exported weights says."""
        meta = self.meta
        return {
            "config": asdict(self.cfg),
            "command": self.command,
            "steps": meta["step"],
            "vae": meta.get("vae"),
            "wall_seconds": meta.get("vae", {}).get("vae_seconds", 0.0) + meta["diff_seconds"],
            "diffusion_seconds": meta["diff_seconds"],
            "probe": meta.get("probe"),
            "device": str(self.device),
            "torch": torch.__version__,
        }

    def checkpoint(self) -> None:
        self.meta["numpy_rng"] = self.rng.bit_generator.state
        save_checkpoint(self.ckpt_dir, self.modules, self.opt, self.meta)

    def export(self, out: Path) -> Path:
        """The EMA weights as a stock pipeline in ``out``."""
        m = self.modules
        return export_pipeline(
            m["vae"], m["ema_text"], m["ema_unet"], self.tokenizer, self.cfg, out, self.info(), self.tok_dir
        )


def set_up(args: argparse.Namespace, cfg: TrainConfig) -> Training:
    """Seed, tokenizer, fresh models and optimizer, then the checkpoint's state when there is one."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    log = Logger(args.log_dir / "train.log")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    tok_dir = args.ckpt_dir / "tokenizer"
    if args.fresh and args.ckpt_dir.exists():
        shutil.rmtree(args.ckpt_dir)
    if not (tok_dir / "vocab.json").exists():
        save_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    # built in this order from the one torch seed (the order decides the initial weights)
    modules = {
        "vae": build_vae(cfg.model).to(device),
        "text": build_text_encoder(cfg.model, tokenizer).to(device),
        "unet": build_unet(cfg.model).to(device),
        "ema_text": build_text_encoder(cfg.model, tokenizer).to(device),
        "ema_unet": build_unet(cfg.model).to(device),
    }
    params = list(modules["unet"].parameters()) + list(modules["text"].parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    command = " ".join([Path(sys.executable).name, "-m", "workbench.toy.train", *sys.argv[1:]])
    t = Training(cfg, device, log, rng, args.ckpt_dir, tok_dir, tokenizer, modules, params, opt, {}, command)
    t.meta = resume(t)
    return t


def resume(t: Training) -> dict:
    """The checkpoint's meta with its models, optimizer and numpy stream restored; a new run's meta if none."""
    meta = load_checkpoint(t.ckpt_dir, t.modules, t.opt)
    if meta is None:
        return {"step": 0, "diff_seconds": 0.0, "phase": "vae"}
    t.vae.register_to_config(scaling_factor=meta["vae"]["scaling_factor"])
    t.rng.bit_generator.state = meta["numpy_rng"]
    t.log(f"resumed from {t.ckpt_dir} at step {meta['step']} ({meta['phase']})")
    return meta


def train(args: argparse.Namespace) -> int:
    """Run (or resume) training as the parsed command line says, on ``args.threads`` torch threads."""
    cfg = train_config(args)
    with torch_threads(args.threads):
        t = set_up(args, cfg)
        if args.export:
            return export_latest(t, args.out)
        if t.meta["phase"] == "vae":
            vae_phase(t)
        diffusion_phase(t)
        t.meta["probe"] = attention_iou_probe(
            t.modules["ema_unet"], t.modules["ema_text"], t.tokenizer, t.vae, t.device
        )
        t.log(f"final probe (EMA, t=500) word-map IoU: {t.meta['probe']}")
        t.checkpoint()
        t.export(args.out)
        t.log(f"done: {t.meta['step']} steps, exported to {args.out}")
    return 0


def export_latest(t: Training, out: Path) -> int:
    """``--export``: the checkpoint's EMA weights to ``out`` (1 when there is no diffusion checkpoint)."""
    if t.meta["phase"] != "diffusion":
        t.log("no diffusion checkpoint to export")
        return 1
    t.export(out)
    t.log(f"exported step {t.meta['step']} to {out}")
    return 0


def vae_phase(t: Training) -> None:
    """Phase 1: train the autoencoder, start the EMA copies from the fresh models, and checkpoint."""
    t.meta["vae"] = train_vae(t.vae, t.cfg, t.rng, t.device, t.log)
    t.meta["phase"] = "diffusion"
    copy_params(t.modules["ema_text"], t.modules["text"])
    copy_params(t.modules["ema_unet"], t.modules["unet"])
    t.checkpoint()


def learning_rate(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warmup, then cosine decay to ``min_lr_frac`` over ``progress`` (0..1, steps or time)."""
    lr = cfg.lr * min(1.0, step / cfg.warmup)
    return lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def diffusion_phase(t: Training) -> None:
    """Phase 2: optimisation steps until the step cap or the time budget, checkpointing as it goes
    (checkpointing time does not count against the budget)."""
    cfg, meta = t.cfg, t.meta
    t.vae.requires_grad_(False)
    t.vae.eval()
    sched = build_train_scheduler(cfg.model)
    sched.alphas_cumprod = sched.alphas_cumprod.to(t.device)
    budget = cfg.minutes * 60.0 - meta["vae"]["vae_seconds"]
    layers = cross_attention_layers(t.modules["unet"])
    sink = ProbsSink()
    install(t.modules["unet"], sink)
    t.modules["unet"].train()
    t.modules["text"].train()
    last_ckpt = t_prev = time.time()
    run_start = time.time() - meta["diff_seconds"]
    t.log(f"diffusion: budget {budget / 60:.1f} min, batch {cfg.batch_size}, step {meta['step']}")
    while meta["step"] < cfg.steps and meta["diff_seconds"] < budget:
        step = meta["step"] + 1
        lr = learning_rate(cfg, step, min(1.0, max(step / cfg.steps, meta["diff_seconds"] / budget)))
        loss, diff_loss, attn_loss = optimisation_step(t, sched, sink, layers, lr, step)
        now = time.time()
        meta["step"], meta["diff_seconds"] = step, now - run_start
        if step % cfg.log_every == 0:
            t.log(
                f"step {step} loss {loss.item():.4f} diff {diff_loss.item():.4f} attn {attn_loss.item():.3f} "
                f"lr {lr:.2e} {(now - t_prev) / cfg.log_every:.2f}s/step "
                f"elapsed {meta['diff_seconds'] / 60:.1f}/{budget / 60:.1f} min"
            )
            t_prev = now
        if now - last_ckpt > cfg.ckpt_every_s:
            checkpoint_with_probe(t)
            last_ckpt = time.time()
            run_start += last_ckpt - now


def optimisation_step(
    t: Training, sched, sink: ProbsSink, layers: list[CrossAttentionLayer], lr: float, step: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch: v-prediction loss with min-SNR weights plus the attention loss, AdamW, EMA update.

    Returns the (total, diffusion, attention) losses.
    """
    cfg, text_encoder, unet = t.cfg, t.modules["text"], t.modules["unet"]
    for g in t.opt.param_groups:
        g["lr"] = lr
    scenes = training_batch(t.rng, cfg.batch_size, p_single=cfg.p_single)
    batch = make_batch(scenes, t.tokenizer, t.vae, cfg, t.rng, t.device)
    noise = torch.randn_like(batch.latents)  # (B, 4, 8, 8)
    timesteps = torch.randint(0, sched.config.num_train_timesteps, (len(scenes),), device=t.device)
    noisy = sched.add_noise(batch.latents, noise, timesteps)
    if cfg.model.prediction_type == "v_prediction":
        target = sched.get_velocity(batch.latents, noise, timesteps)
    else:
        target = noise
    sink.clear()
    text = text_encoder(batch.ids)[0]  # (B, T, hidden)
    pred = unet(noisy, timesteps, text).sample  # (B, 4, 8, 8)
    per = (pred - target).square().mean((1, 2, 3))  # (B,)
    diff_loss = (per * snr_weights(sched, timesteps, cfg.snr_gamma, cfg.model.prediction_type)).mean()
    attn_loss = attention_loss(sink.probs, layers, batch)
    loss = diff_loss + cfg.attn_weight * attn_loss
    t.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(t.params, 1.0)
    t.opt.step()
    decay = min(cfg.ema_decay, (1 + step) / (10 + step))
    ema_update(t.modules["ema_unet"], unet, decay)
    ema_update(t.modules["ema_text"], text_encoder, decay)
    return loss, diff_loss, attn_loss


def checkpoint_with_probe(t: Training) -> None:
    """Probe the EMA weights, save the checkpoint and export its pipeline beside it."""
    t.meta["probe"] = attention_iou_probe(
        t.modules["ema_unet"], t.modules["ema_text"], t.tokenizer, t.vae, t.device
    )
    t.log(f"probe (EMA, t=500) word-map IoU: {t.meta['probe']}")
    t.checkpoint()
    t.export(t.ckpt_dir / "pipeline")
    t.log(f"checkpoint at step {t.meta['step']}")


if __name__ == "__main__":
    raise SystemExit(main())
