"""Train the toy-dit model: the toy world as a tiny Flux.1-architecture model. Resumable.

    OMP_WAIT_POLICY=PASSIVE python -m workbench.toy.dit.train --minutes 270 --out DIR --ckpt-dir DIR --log-dir DIR
    python -m workbench.toy.dit.train --export --out DIR --ckpt-dir DIR --log-dir DIR   # latest EMA -> DIR
    python -m workbench.toy.dit.train --tiny --out /tmp/x --ckpt-dir /tmp/c --log-dir /tmp/l

Phase 1 trains the one-downsampling AutoencoderKL with the toy model's autoencoder phase
(``workbench.toy.train.train_vae``: colour-weighted reconstruction, decoder fine-tune until the colour
checker passes, scaling factor 1/std of latents; ``shift_factor`` stays 0).
Phase 2 trains the CLIP text encoder (pooled), the T5 encoder (sequence) and the Flux transformer
jointly with rectified flow as FluxPipeline samples it: x_t = (1 - s) x0 + s eps, target eps - x0, the
transformer called with ``timestep=s`` (the pipeline passes timesteps / 1000), its own packed latents
and ``img_ids`` / ``txt_ids``; s drawn logit-normal. AdamW with warm-up and cosine decay over the time
budget, gradient clipping, EMA (exported), 10% empty captions for true classifier-free guidance
(``true_cfg_scale`` with ``negative_prompt=""``), and attention supervision: on every joint-attention
layer (dual- and single-stream) and head, each object word's image-query -> text-key probability from
the joint softmax (as ``workbench.core.joint`` records it), normalised over the 8x8 image grid, is
pulled towards the object's area-pooled mask (KL, ``workbench.toy.train.attention_loss``). The
probabilities come from taps (``workbench.core.taps``) beside the stock processors, removed before export.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import FluxPipeline
from transformers import CLIPTokenizer, T5TokenizerFast

from workbench.analysis.scoring import binarize, iou
from workbench.core.adapters import MODEL_DEFAULTS_FILE, FluxAdapter
from workbench.core.joint import JointObserver
from workbench.core.layers import CrossAttentionLayer
from workbench.core.numerics import torch_threads

from .. import WEIGHTS_DIR as TOY_WEIGHTS_DIR
from ..checkpoint import save_checkpoint
from ..evaluate import IOU_RULE, IOU_THRESHOLD
from ..tokenizer import save_tokenizer
from ..train import (
    Batch,
    Logger,
    Training,
    TrainSchedule,
    attention_loss,
    copy_params,
    ema_update,
    export_latest,
    images_to_tensor,
    learning_rate,
    probe_word_maps,
    resume,
    train_config,
    train_vae,
)
from ..train import parse_args as toy_parse_args
from ..world import Scene, sample_scene, training_batch
from . import WEIGHTS_DIR
from .models import (
    DitConfig,
    build_clip,
    build_scheduler,
    build_t5,
    build_transformer,
    build_vae,
    save_t5_tokenizer,
)

DIT_DIR = Path(__file__).resolve().parent
IMAGE_SIZE = 32


@dataclass
class DitTrainConfig(TrainSchedule):
    """Everything that decides a toy-dit training run (saved into training.json): the shared schedule
    (``workbench.toy.train.TrainSchedule``, which ``train_vae`` and ``learning_rate`` read) with this
    model's rate, warm-up and budget, its flow-matching and probe settings, and its model."""

    lr: float = 6e-4
    warmup: int = 200
    minutes: float = 270.0  # wall-time budget for the whole run (both phases)
    sigma_mean: float = 0.0  # logit-normal sigma: sigmoid(mean + std * N(0, 1))
    sigma_std: float = 1.0
    probe_sigma: float = 0.5
    # for sampling, with negative_prompt="": chosen on held-in seeds 100-101 (model card)
    true_cfg_scale: float = 2.0
    model: DitConfig = field(default_factory=DitConfig)

    @classmethod
    def tiny_model(cls) -> DitConfig:
        return DitConfig.tiny()


# ----------------------------------------------------------------------------- joint attention


def joint_layers(transformer) -> list[CrossAttentionLayer]:
    """Every joint-attention layer of a Flux transformer, dual-stream first, as the workbench names them
    (the Flux adapter's own list: its names and grids are what recording uses)."""
    return FluxAdapter(SimpleNamespace(transformer=transformer)).layers()


class JointProbs:
    """Holds the latest transformer call's image-query -> text-key probabilities per layer.

    Each entry is (batch, heads, image queries, text keys): the text block of the joint softmax over
    [text | image] keys, with gradients unless ``detach``. Stands in for the recorder's sink for
    ``JointObserver`` (which asks ``wants`` and ``policy.heads``).
    """

    def __init__(self, detach: bool = False) -> None:
        self.detach = detach
        self.policy = SimpleNamespace(heads="all")
        self.probs: dict[str, torch.Tensor] = {}

    def wants(self, layer: str) -> bool:
        return True

    def clear(self) -> None:
        self.probs = {}

    def put(self, name: str, probs: torch.Tensor) -> None:
        self.probs[name] = probs.detach() if self.detach else probs


class TrainingObserver(JointObserver):
    """``JointObserver`` whose probabilities keep their gradients and go to a ``JointProbs``."""

    def _after(self, module, args, kwargs, output) -> None:
        if self.q is not None and self.k is not None:
            self.sink.put(self.name, self.probs())  # (batch, heads, queries, text), float32
        self._reset()


def observe_joint(transformer, sink: JointProbs) -> list:
    """Tap a ``TrainingObserver`` onto every joint-attention layer; returns the handles.

    The stock processors stay in place and compute the output; ``handle.remove()`` undoes each tap.
    """
    handles = []
    for layer in joint_layers(transformer):
        attn = transformer.get_submodule(layer.name)
        block = transformer.get_submodule(layer.name.removesuffix(".attn"))
        single = layer.name.startswith("single_")
        observer = TrainingObserver(
            attn, layer.name, sink, text_first=True, rotary=True, block=block if single else None
        )
        handles += observer.install()
    return handles


def remove_all(handles: list) -> None:
    """Take off every tap and hook of ``handles``."""
    for h in handles:
        h.remove()


# ----------------------------------------------------------------------------- batches


@dataclass
class DitBatch(Batch):
    """One diffusion step's tensors: the toy ``Batch`` over T5 positions plus the CLIP ids.

    ``latents`` (B, C, 16, 16) are scaled and unpacked; ``ids`` and ``token_obj`` run over the T5
    positions (the joint-attention text keys); ``masks`` (B, 2, 32, 32).
    """

    clip_ids: torch.Tensor  # (B, CLIP length)


def t5_word_groups(tokens: list[str]) -> list[list[int]]:
    """Token positions of each word of a T5 (SentencePiece) tokenization; ``</s>`` and padding skipped."""
    groups: list[list[int]] = []
    for pos, tok in enumerate(tokens):
        if tok in ("</s>", "<pad>"):
            continue
        if tok.startswith("\u2581") or not groups:
            groups.append([pos])
        else:
            groups[-1].append(pos)
    return groups


def t5_token_objects(tokenizer: T5TokenizerFast, scene: Scene, ids: list[int]) -> list[int]:
    """For each T5 position: the index of the object whose colour/shape/size word it is, else -1."""
    groups = t5_word_groups(tokenizer.convert_ids_to_tokens(ids))
    n_words = len(scene.caption.split())
    if len(groups) != n_words:
        raise ValueError(f"caption {scene.caption!r}: {len(groups)} T5 words for {n_words} words")
    out = [-1] * len(ids)
    for j, obj in enumerate(scene.objects):
        for word_index in obj.word_indices.values():
            for pos in groups[word_index]:
                out[pos] = j
    return out


def scene_masks(scenes: list[Scene]) -> torch.Tensor:
    """(B, 2, 32, 32) float object masks (zeros for a missing second object)."""
    masks = np.zeros((len(scenes), 2, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for i, s in enumerate(scenes):
        for j, obj in enumerate(s.objects):
            masks[i, j] = obj.mask
    return torch.from_numpy(masks)


def encode_latents(vae, scenes: list[Scene], device, sample: bool = True) -> torch.Tensor:
    """Scaled latents (B, C, 16, 16) as FluxPipeline decodes them: latent / scaling + shift."""
    with torch.no_grad():
        dist = vae.encode(images_to_tensor(scenes, device)).latent_dist
        z = dist.sample() if sample else dist.mean
    return (z - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor


def make_batch(scenes: list[Scene], t: DitTraining, drop: np.ndarray, sample: bool = True) -> DitBatch:
    """Encode images (a posterior sample, or its mean), tokenize captions for both encoders (``drop``ped
    ones as ''), and map T5 tokens to object masks."""
    captions = ["" if d else s.caption for s, d in zip(scenes, drop)]
    clip_tok, t5_tok = t.tokenizer, t.t5_tokenizer
    clip_ids = clip_tok(captions, padding="max_length", max_length=clip_tok.model_max_length, truncation=True)
    length = t.cfg.model.t5_length
    t5_ids = t5_tok(captions, padding="max_length", max_length=length, truncation=True).input_ids
    token_obj = [
        [-1] * len(row) if d else t5_token_objects(t5_tok, s, row) for s, row, d in zip(scenes, t5_ids, drop)
    ]
    return DitBatch(
        latents=encode_latents(t.vae, scenes, t.device, sample),
        ids=torch.tensor(t5_ids, device=t.device),
        token_obj=torch.tensor(token_obj, device=t.device),
        masks=scene_masks(scenes).to(t.device),
        clip_ids=torch.tensor(clip_ids.input_ids, device=t.device),
    )


# ----------------------------------------------------------------------------- the flow model


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h/2 * w/2, 4C): FluxPipeline's own packing."""
    b, c, h, w = latents.shape
    return FluxPipeline._pack_latents(latents, b, c, h, w)


def position_ids(latent_hw: tuple[int, int], text_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(img_ids (h/2 * w/2, 3), txt_ids (text_len, 3)) exactly as FluxPipeline prepares them."""
    h, w = latent_hw
    img_ids = FluxPipeline._prepare_latent_image_ids(1, h // 2, w // 2, device, torch.float32)
    txt_ids = torch.zeros(text_len, 3, device=device, dtype=torch.float32)  # encode_prompt's text_ids
    return img_ids, txt_ids


def flow_prediction(transformer, clip, t5, batch: DitBatch, x_t: torch.Tensor, sigma: torch.Tensor):
    """The transformer's velocity for packed ``x_t`` (B, N, 4C) at noise level ``sigma`` (B,), as the
    pipeline calls it: pooled CLIP, T5 sequence, ``timestep = sigma`` (= pipeline timestep / 1000)."""
    pooled = clip(batch.clip_ids).pooler_output  # (B, clip hidden)
    text = t5(batch.ids)[0]  # (B, T, t5 hidden)
    img_ids, txt_ids = position_ids(tuple(batch.latents.shape[-2:]), text.shape[1], x_t.device)
    return transformer(
        hidden_states=x_t,
        timestep=sigma,
        pooled_projections=pooled,
        encoder_hidden_states=text,
        txt_ids=txt_ids,
        img_ids=img_ids,
        return_dict=False,
    )[0]


def flow_loss(transformer, clip, t5, batch: DitBatch, cfg: DitTrainConfig) -> torch.Tensor:
    """Rectified-flow loss: x_t = (1 - s) x0 + s eps, target eps - x0, s logit-normal; mean squared error."""
    x0 = pack(batch.latents)  # (B, N, 4C)
    noise = torch.randn_like(x0)
    sigma = torch.sigmoid(cfg.sigma_mean + cfg.sigma_std * torch.randn(x0.shape[0], device=x0.device))
    s = sigma[:, None, None]
    pred = flow_prediction(transformer, clip, t5, batch, (1 - s) * x0 + s * noise, sigma)
    return F.mse_loss(pred, noise - x0)


# ----------------------------------------------------------------------------- training state


@dataclass
class DitTraining(Training):
    """The toy ``Training`` with the T5 tokenizer; ``modules``: vae, clip, t5, transformer and their
    ``ema_`` copies; ``tokenizer`` is the CLIP tokenizer, ``tok_dir`` its folder."""

    t5_tokenizer: T5TokenizerFast | None = None

    def info(self) -> dict:
        """What ``training.json`` beside the exported weights says."""
        meta, cfg = self.meta, self.cfg
        return {
            "model": "toy-dit",
            "config": asdict(cfg),
            "command": self.command,
            "steps": meta["step"],
            "vae": meta.get("vae"),
            "wall_seconds": meta.get("vae", {}).get("vae_seconds", 0.0) + meta["diff_seconds"],
            "diffusion_seconds": meta["diff_seconds"],
            "probe": meta.get("probe"),
            "parameters": {k: n_params(self.modules[k]) for k in ("vae", "clip", "t5", "transformer")},
            "generation": generation_defaults(cfg),
            "device": str(self.device),
            "torch": torch.__version__,
        }

    def export(self, out: Path) -> Path:
        """The EMA weights as a stock FluxPipeline in ``out``."""
        return export_pipeline(self, out)

    def checkpoint(self) -> None:
        """The toy checkpoint, with T5's tied embedding stored once per key (``SeparateState``)."""
        self.meta["numpy_rng"] = self.rng.bit_generator.state
        modules = {k: SeparateState(v) for k, v in self.modules.items()}
        save_checkpoint(self.ckpt_dir, modules, self.opt, self.meta)


class SeparateState:
    """A module's state dict in which tensors that share memory (T5's ``shared`` and
    ``encoder.embed_tokens`` weights) are separate copies: safetensors refuses shared memory, and
    loading the copies back writes the one tied parameter twice."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def state_dict(self) -> dict[str, torch.Tensor]:
        seen: set[int] = set()
        out = {}
        for k, v in self.module.state_dict().items():
            out[k] = v.clone() if v.data_ptr() in seen else v
            seen.add(v.data_ptr())
        return out


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_modules(cfg: DitTrainConfig, clip_tok, t5_tok, device) -> dict[str, torch.nn.Module]:
    """Fresh models, built in a fixed order from the one torch seed (the order decides the weights)."""
    m = cfg.model
    modules = {
        "vae": build_vae(m),
        "clip": build_clip(m, clip_tok),
        "t5": build_t5(m, t5_tok),
        "transformer": build_transformer(m),
        "ema_clip": build_clip(m, clip_tok),
        "ema_t5": build_t5(m, t5_tok),
        "ema_transformer": build_transformer(m),
    }
    return {k: v.to(device) for k, v in modules.items()}


def copy_clip_tokenizer(folder: Path) -> Path:
    """The toy model's CLIP tokenizer files (its shipped ones, so token ids match; trained afresh when the
    toy weights are absent) into ``folder``."""
    shipped = TOY_WEIGHTS_DIR / "tokenizer"
    if (shipped / "vocab.json").exists() and (shipped / "merges.txt").exists():
        shutil.copytree(shipped, folder)
        return folder
    return save_tokenizer(folder)


def set_up(args: argparse.Namespace, cfg: DitTrainConfig) -> DitTraining:
    """Seed, tokenizers, fresh models and optimizer, then the checkpoint's state when there is one."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    log = Logger(args.log_dir / "train.log")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if args.fresh and args.ckpt_dir.exists():
        shutil.rmtree(args.ckpt_dir)
    tok_dir, t5_dir = args.ckpt_dir / "tokenizer", args.ckpt_dir / "tokenizer_2"
    if not (tok_dir / "vocab.json").exists():
        copy_clip_tokenizer(tok_dir)
    if not (t5_dir / "tokenizer.json").exists():
        save_t5_tokenizer(t5_dir, cfg.model.t5_length)
    clip_tok = CLIPTokenizer.from_pretrained(tok_dir)
    t5_tok = T5TokenizerFast.from_pretrained(t5_dir)
    modules = build_modules(cfg, clip_tok, t5_tok, device)
    params = [p for k in ("transformer", "clip", "t5") for p in modules[k].parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    command = " ".join([Path(sys.executable).name, "-m", "workbench.toy.dit.train", *sys.argv[1:]])
    t = DitTraining(
        cfg, device, log, rng, args.ckpt_dir, tok_dir, clip_tok, modules, params, opt, {}, command, t5_tok
    )
    t.meta = resume(t)
    return t


# ----------------------------------------------------------------------------- export


def build_pipeline(t: DitTraining, prefix: str = "ema_") -> FluxPipeline:
    """A stock FluxPipeline of the run's models (the EMA copies by default)."""
    m = t.modules
    return FluxPipeline(
        scheduler=build_scheduler(t.cfg.model),
        vae=m["vae"],
        text_encoder=m[f"{prefix}clip"],
        tokenizer=t.tokenizer,
        text_encoder_2=m[f"{prefix}t5"],
        tokenizer_2=t.t5_tokenizer,
        transformer=m[f"{prefix}transformer"],
    )


def generation_defaults(cfg) -> dict:
    """The model folder's generation defaults (``MODEL_DEFAULTS_FILE``): native size, the T5 length it
    was trained at, and true CFG against the empty caption it saw under caption dropout. The
    transformer has no embedded guidance, so ``guidance_scale`` is not used (1.0 says so)."""
    return {
        "guidance_scale": 1.0,
        "size": IMAGE_SIZE,
        "max_sequence_length": cfg.model.t5_length,
        "true_cfg_scale": cfg.true_cfg_scale,
        "negative_prompt": "",
    }


def export_pipeline(t: DitTraining, out: Path) -> Path:
    """Save the EMA weights as a stock FluxPipeline folder in ``out`` (safetensors), replacing it.

    The evaluation records and generation defaults (``MODEL_DEFAULTS_FILE``) already in ``out`` are kept;
    a new folder gets ``generation_defaults``. The CLIP tokenizer folder holds the vocab.json +
    merges.txt the run trained on.
    """
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    build_pipeline(t).save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(tmp / "tokenizer")
    shutil.copytree(t.tok_dir, tmp / "tokenizer")
    keep = [*out.glob("evaluation*.json"), *out.glob(MODEL_DEFAULTS_FILE)] if out.exists() else []
    for p in keep:
        shutil.copy2(p, tmp / p.name)
    if not (tmp / MODEL_DEFAULTS_FILE).exists():
        (tmp / MODEL_DEFAULTS_FILE).write_text(json.dumps(generation_defaults(t.cfg)) + "\n")
    (tmp / "training.json").write_text(json.dumps(t.info(), indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


# ----------------------------------------------------------------------------- probe


def attention_iou_probe(t: DitTraining, n: int = 24, seed: int = 123) -> dict:
    """Word-map IoU of the EMA models on noised ground-truth latents at ``cfg.probe_sigma`` (fixed
    held-in scenes, fixed noise), with the toy evaluation's map recipe and threshold rule."""
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, held_out=False) for _ in range(n)]
    m = t.modules
    transformer = m["ema_transformer"]
    sink = JointProbs(detach=True)
    handles = observe_joint(transformer, sink)
    try:
        with torch.no_grad():
            batch = make_batch(scenes, t, np.zeros(n, dtype=bool), sample=False)
            x0 = pack(batch.latents)
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(t.device)
            sigma = torch.full((n,), t.cfg.probe_sigma, device=t.device)
            x_t = (1 - sigma[:, None, None]) * x0 + sigma[:, None, None] * noise
            flow_prediction(transformer, m["ema_clip"], m["ema_t5"], batch, x_t, sigma)
    finally:
        remove_all(handles)
    return probe_scores(t, scenes, batch, sink.probs, joint_layers(transformer))


def probe_scores(t: DitTraining, scenes: list[Scene], batch: DitBatch, probs: dict, layers) -> dict:
    """Mean IoU of colour and shape word maps against the objects' masks."""
    scores: dict[str, list[float]] = {"color": [], "shape": []}
    latent_hw = tuple(batch.latents.shape[-2:])
    for i, s in enumerate(scenes):
        groups = t5_word_groups(t.t5_tokenizer.convert_ids_to_tokens(batch.ids[i].tolist()))
        one = {k: v[i].cpu() for k, v in probs.items()}  # layer -> (heads, queries, text)
        maps = probe_word_maps(one, layers, latent_hw, groups, s.image.shape[:2])  # (words, 32, 32)
        for obj in s.objects:
            for role in ("color", "shape"):
                mask = binarize(maps[obj.word_indices[role]], IOU_THRESHOLD, rule=IOU_RULE)
                scores[role].append(iou(mask, obj.mask))
    return {k: float(np.mean(v)) for k, v in scores.items()}


# ----------------------------------------------------------------------------- phases


def vae_phase(t: DitTraining) -> None:
    """Phase 1: the toy model's autoencoder phase, then the EMA copies start from the fresh models."""
    t.meta["vae"] = train_vae(t.vae, t.cfg, t.rng, t.device, t.log)
    with torch.no_grad():
        z = t.vae.encode(images_to_tensor(training_batch(t.rng, 256), t.device)).latent_dist.sample()
    t.meta["vae"]["latent_mean"] = float(z.mean())  # what a shift_factor would remove (kept at 0)
    t.meta["phase"] = "diffusion"
    for name in ("clip", "t5", "transformer"):
        copy_params(t.modules[f"ema_{name}"], t.modules[name])
    t.checkpoint()


def optimisation_step(t: DitTraining, sink: JointProbs, layers, lr: float, step: int):
    """One batch: flow loss plus the attention loss, AdamW, EMA update. Returns (total, flow, attention)."""
    cfg, m = t.cfg, t.modules
    for g in t.opt.param_groups:
        g["lr"] = lr
    scenes = training_batch(t.rng, cfg.batch_size, p_single=cfg.p_single)
    batch = make_batch(scenes, t, t.rng.random(len(scenes)) < cfg.cond_dropout)
    sink.clear()
    diff_loss = flow_loss(m["transformer"], m["clip"], m["t5"], batch, cfg)
    attn_loss = attention_loss(sink.probs, layers, batch)
    loss = diff_loss + cfg.attn_weight * attn_loss
    t.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(t.params, 1.0)
    t.opt.step()
    decay = min(cfg.ema_decay, (1 + step) / (10 + step))
    for name in ("clip", "t5", "transformer"):
        ema_update(m[f"ema_{name}"], m[name], decay)
    return loss, diff_loss, attn_loss


def diffusion_phase(t: DitTraining) -> None:
    """Phase 2: optimisation steps until the step cap or the time budget, checkpointing as it goes
    (checkpointing time does not count against the budget)."""
    cfg, meta = t.cfg, t.meta
    t.vae.requires_grad_(False)
    t.vae.eval()
    budget = cfg.minutes * 60.0 - meta["vae"]["vae_seconds"]
    layers = joint_layers(t.modules["transformer"])
    sink = JointProbs()
    handles = observe_joint(t.modules["transformer"], sink)
    for name in ("clip", "t5", "transformer"):
        t.modules[name].train()
    last_ckpt = t_prev = time.time()
    run_start = time.time() - meta["diff_seconds"]
    t.log(f"diffusion: budget {budget / 60:.1f} min, batch {cfg.batch_size}, step {meta['step']}")
    try:
        while meta["step"] < cfg.steps and meta["diff_seconds"] < budget:
            step = meta["step"] + 1
            lr = learning_rate(cfg, step, min(1.0, max(step / cfg.steps, meta["diff_seconds"] / budget)))
            loss, diff_loss, attn_loss = optimisation_step(t, sink, layers, lr, step)
            now = time.time()
            meta["step"], meta["diff_seconds"] = step, now - run_start
            if step % cfg.log_every == 0:
                t.log(
                    f"step {step} loss {loss.item():.4f} flow {diff_loss.item():.4f} attn {attn_loss.item():.3f} "
                    f"lr {lr:.2e} {(now - t_prev) / cfg.log_every:.2f}s/step "
                    f"elapsed {meta['diff_seconds'] / 60:.1f}/{budget / 60:.1f} min"
                )
                t_prev = now
            if now - last_ckpt > cfg.ckpt_every_s:
                checkpoint_with_probe(t)
                last_ckpt = time.time()
                run_start += last_ckpt - now
                t_prev += last_ckpt - now
    finally:
        remove_all(handles)


def checkpoint_with_probe(t: DitTraining) -> None:
    """Probe the EMA weights, save the checkpoint and export its pipeline beside it."""
    t.meta["probe"] = attention_iou_probe(t)
    t.log(f"probe (EMA, sigma={t.cfg.probe_sigma}) word-map IoU: {t.meta['probe']}")
    t.checkpoint()
    t.export(t.ckpt_dir / "pipeline")
    t.log(f"checkpoint at step {t.meta['step']}")


# ----------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: the embedded UNet trainer's options, with this model's folders as defaults."""
    return toy_parse_args(argv, description=__doc__, out=WEIGHTS_DIR, home=DIT_DIR)


def train(args: argparse.Namespace) -> int:
    """Run (or resume) training as the parsed command line says, on ``args.threads`` torch threads."""
    cfg = train_config(args, DitTrainConfig)
    with torch_threads(args.threads):
        t = set_up(args, cfg)
        if args.export:
            return export_latest(t, args.out)
        if t.meta["phase"] == "vae":
            vae_phase(t)
        diffusion_phase(t)
        t.meta["probe"] = attention_iou_probe(t)
        t.log(f"final probe (EMA, sigma={cfg.probe_sigma}) word-map IoU: {t.meta['probe']}")
        t.checkpoint()
        t.export(args.out)
        t.log(f"done: {t.meta['step']} steps, exported to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return train(parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
