"""Evaluate an embedded model ("toy", the UNet, or "toy-dit", the Flux-architecture MM-DiT) with the
world's own checker; both are measured by the same code, captions, seeds and map recipe.

    OMP_WAIT_POLICY=PASSIVE python -m workbench.toy.evaluate            # shipped UNet weights, prints the table
    python -m workbench.toy.evaluate --model toy-dit                    # the MM-DiT, with its per-block IoU
    python -m workbench.toy.evaluate --weights DIR --seeds 2 --no-write
    python -m workbench.toy.evaluate --model toy-dit --first-seed 100 --seeds 2 --guidance 1 --no-write  # tuning
    python -m workbench.toy.evaluate --card --grid workbench/toy/samples.png  # also update the model card

(On a shared 2-core machine set OMP_WAIT_POLICY=PASSIVE in the shell: busy-waiting OpenMP threads make
every step several times slower when another process holds a core, which also skews the speed figure.)

Caption sets (fixed, documented in MODEL_CARD.md): held-in = 12 two-object layouts seen in training
(6 swap pairs, 3 horizontal + 3 vertical), held-out = the 12 layouts of `world.HELD_OUT`; each layout
in both phrasings ("A left of B" and "B right of A"), so 24 captions per set. Every caption is drawn
with seeds 0..N-1 and 25 guided steps of the model's own sampler at 32x32 (the UNet: DDIM with
classifier-free guidance; the MM-DiT: flow-matching Euler with true CFG against the empty caption).

Metrics, per image unless said otherwise:
    object accuracy: exactly the two named colours are found, each with the named shape;
    relation accuracy: both found and placed as the relation word says;
    swap flips placement: for a caption and the same words with the objects exchanged, same seed,
        both images are placed as their words say (so the placement followed the word order);
    word-map IoU: per word, the conditional branch's cross-attention averaged over all steps, layers
        and heads, bilinearly upsampled to 32x32, sub-word tokens summed (`word_maps(run, "all-mean")`),
        min-max normalised and thresholded at 0.5 (`analysis.scoring.binarize(..., 0.5, rule="minmax")`);
        IoU (`analysis.scoring.iou`) with the generated object's segmented mask (objects the checker
        found), for colour words and shape words; "per block" repeats it with one group of layers in
        place of all (UNet: one resolution's cross-attention layers; MM-DiT: one dual- or single-stream
        block).

Images are generated and recorded by the workbench core (`workbench.core.generate_batch`, stock
processors with the probabilities computed beside them); the maps and scores come from
`workbench.analysis`.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from workbench.analysis.heatmaps import word_maps
from workbench.analysis.layout import block_groups
from workbench.analysis.scoring import binarize, iou
from workbench.core import Request, generate_batch, load_pipeline
from workbench.core.adapters import adapter_for
from workbench.core.numerics import machine_cores, torch_threads

from .catalog import EMBEDDED, EmbeddedModel
from .checker import detect, score_spec
from .world import HELD_OUT, SHAPES, ObjectSpec, SceneSpec, word_indices

STEPS = 25
SPEED_PROMPT = "a red circle left of a blue square"
MAPS = "all-mean"  # the word-map recipe (workbench.analysis.PRESETS)
IOU_THRESHOLD, IOU_RULE = 0.5, "minmax"  # min-max normalise, then threshold (analysis.scoring.binarize)
HELD_IN: tuple[tuple[str, str, str, str, str], ...] = (
    ("red", "circle", "h", "green", "triangle"),
    ("green", "triangle", "h", "red", "circle"),
    ("blue", "square", "h", "yellow", "triangle"),
    ("yellow", "triangle", "h", "blue", "square"),
    ("yellow", "circle", "h", "red", "square"),
    ("red", "square", "h", "yellow", "circle"),
    ("green", "circle", "v", "blue", "circle"),
    ("blue", "circle", "v", "green", "circle"),
    ("red", "triangle", "v", "yellow", "square"),
    ("yellow", "square", "v", "red", "triangle"),
    ("blue", "square", "v", "green", "square"),
    ("green", "square", "v", "blue", "square"),
)


def specs_for(layouts: tuple[tuple[str, str, str, str, str], ...]) -> list[SceneSpec]:
    """Both phrasings of each canonical layout (first object left/top)."""
    out = []
    for c1, s1, axis, c2, s2 in layouts:
        a, b = ObjectSpec(c1, s1), ObjectSpec(c2, s2)
        fwd, back = ("left of", "right of") if axis == "h" else ("above", "below")
        out += [SceneSpec((a, b), fwd), SceneSpec((b, a), back)]
    return out


@dataclass
class Sample:
    """One generated image and what was recorded with it."""

    spec: SceneSpec
    seed: int
    image: np.ndarray  # (32, 32, 3) uint8
    word_maps: torch.Tensor  # (words, 32, 32)
    layer_maps: dict[str, torch.Tensor] = field(default_factory=dict)  # block/resolution -> (words, 32, 32)


def generate_samples(
    pipe, specs: list[SceneSpec], seeds: list[int], fields: dict, per_layer: bool = False
) -> list[Sample]:
    """Generate every caption with every seed, recorded by the core; word maps by the `MAPS` recipe
    (with ``per_layer``, also each block's or resolution's own: ``analysis.block_groups``).
    ``fields``: the requests' guidance fields."""
    out = []
    for spec in specs:
        runs = generate_batch(
            pipe, [spec.caption()] * len(seeds), seeds=seeds, steps=STEPS, progress=False, **fields
        )
        for seed, run in zip(seeds, runs):
            wm = word_maps(run, MAPS, size=(32, 32))
            if wm.words != spec.caption().split():
                raise RuntimeError(f"word alignment differs: {wm.words} vs {spec.caption().split()}")
            layers = {k: m.maps.float() for k, m in block_maps(run, (32, 32)).items()} if per_layer else {}
            out.append(Sample(spec, seed, np.asarray(run.image.convert("RGB")), wm.maps.float(), layers))
    return out


def block_maps(run, size: tuple[int, int]) -> dict:
    """Each block's or resolution's own word maps (``analysis.block_groups``: a UNet's resolutions, an
    MM-DiT's dual- and single-stream blocks), by the `MAPS` recipe at ``size``, in depth order."""
    store = run.attention
    return {
        label: word_maps(run, MAPS, layers=names, size=size)
        for label, names in block_groups(store.layer_names(), store.shapes)
    }


def mask_iou(heat: torch.Tensor, mask: np.ndarray) -> float:
    """A word map's IoU with an object's mask by the evaluation's rule (min-max, threshold 0.5)."""
    return iou(binarize(heat, IOU_THRESHOLD, rule=IOU_RULE), mask)


def _word_ious(sample: Sample, maps: torch.Tensor, found: dict) -> dict[str, list[float]]:
    """IoU of each found object's colour and shape word maps (rows of ``maps``) with its mask."""
    ious: dict[str, list[float]] = {"color": [], "shape": []}
    for obj, idx in zip(sample.spec.objects, word_indices(sample.spec)):
        det = found.get(obj.color)
        if det is None:
            continue  # no segmented mask to compare with
        for role in ("color", "shape"):
            ious[role].append(mask_iou(maps[idx[role]], det.mask))
    return ious


def layer_iou(samples: list[Sample]) -> pd.DataFrame:
    """Word-map IoU per block or resolution (samples made with ``per_layer``): one row per group of
    layers (``analysis.block_groups``: a UNet's resolutions, an MM-DiT's dual- and single-stream
    blocks), in the recording's order, with the colour- and shape-word IoU and how many maps each
    averages."""
    per: dict[str, dict[str, list[float]]] = {}
    for s in samples:
        found = detect(s.image)
        for name, maps in s.layer_maps.items():
            got = _word_ious(s, maps, found)
            slot = per.setdefault(name, {"color": [], "shape": []})
            for role in slot:
                slot[role] += got[role]
    rows = [
        {
            "layer": name,
            "iou_color": float(np.mean(v["color"])) if v["color"] else float("nan"),
            "iou_shape": float(np.mean(v["shape"])) if v["shape"] else float("nan"),
            "maps": len(v["color"]) + len(v["shape"]),
        }
        for name, v in per.items()
    ]
    return pd.DataFrame(rows, columns=["layer", "iou_color", "iou_shape", "maps"])


def score(samples: list[Sample]) -> dict:
    """Object/relation accuracy, swap flips and word-map IoU for one caption set."""
    by_key = {(s.spec.caption(), s.seed): s for s in samples}
    objects, relations, styles = [], [], []
    ious: dict[str, list[float]] = {"color": [], "shape": []}
    for s in samples:
        found = detect(s.image)
        r = score_spec(found, s.spec)
        objects.append(r["objects"])
        relations.append(r["relation"])
        styles.append(r["style"])
        for role, values in _word_ious(s, s.word_maps, found).items():
            ious[role] += values
    flips = []
    for s in samples:
        other = by_key.get((s.spec.swapped().caption(), s.seed))
        if other is None or s.spec.caption() > other.spec.caption():
            continue  # count each unordered pair once
        flips.append(
            bool(score_spec(detect(s.image), s.spec)["relation"])
            and bool(score_spec(detect(other.image), other.spec)["relation"])
        )
    return {
        "images": len(samples),
        "object_acc": float(np.mean(objects)),
        "relation_acc": float(np.mean(relations)),
        "swap_flip": float(np.mean(flips)) if flips else float("nan"),
        "swap_pairs": len(flips),
        "iou_color": float(np.mean(ious["color"])) if ious["color"] else float("nan"),
        "iou_shape": float(np.mean(ious["shape"])) if ious["shape"] else float("nan"),
        "iou_maps": len(ious["color"]) + len(ious["shape"]),
        "style_acc": float(np.mean(styles)),
    }


def speed(pipe, fields: dict, n: int = 5) -> float:
    """Seconds per image for 25 guided steps at the model's size, batch 1, no recording (after one
    warm-up): the stock pipeline called with the keywords the workbench would pass for ``fields``."""
    adapter = adapter_for(pipe)
    request = Request(SPEED_PROMPT, 0, steps=STEPS, **fields).for_model(adapter)
    kwargs = dict(
        num_inference_steps=STEPS,
        height=request.height,
        width=request.width,
        **adapter.call_arguments(request),
    )
    pipe.set_progress_bar_config(disable=True)
    pipe("a red circle", **kwargs)
    t0 = time.perf_counter()
    for i in range(n):
        pipe(SPEED_PROMPT, generator=torch.Generator().manual_seed(i), **kwargs)
    return (time.perf_counter() - t0) / n


def sample_grid(samples: dict[str, list[Sample]], scale: int = 3) -> Image.Image:
    """One row per caption set: seed 0 of every caption, upscaled (nearest) by `scale`."""
    rows = []
    for group in samples.values():
        first = [s.image for s in group if s.seed == 0]
        rows.append(np.concatenate(first, axis=1))  # (32, 32 * captions, 3)
    grid = np.concatenate(rows, axis=0)
    return Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)


def evaluate(
    model: EmbeddedModel,
    weights: Path | None = None,
    seeds: int = 8,
    guidance: float | None = None,
    grid: Path | None = None,
    first_seed: int = 0,
) -> tuple[pd.DataFrame, dict]:
    """Score both caption sets on ``model`` (its shipped weights unless ``weights``; its evaluation
    guidance unless ``guidance``); returns the table and a JSON-able record, with the per-layer IoU of
    the held-in set (optionally saves a grid)."""
    with torch_threads(min(2, machine_cores())):  # the figures in the model cards are on 2 threads
        seed_list = list(range(first_seed, first_seed + seeds))
        return _evaluate(model, Path(weights or model.weights), seed_list, guidance, grid)


def _evaluate(
    model: EmbeddedModel, weights: Path, seed_list: list[int], guidance, grid
) -> tuple[pd.DataFrame, dict]:
    pipe = load_pipeline(str(weights), device="cpu")
    pipe.set_progress_bar_config(disable=True)
    fields = {model.guidance_field: model.guidance if guidance is None else float(guidance)}
    rows, samples = {}, {}
    t0 = time.perf_counter()
    for name, layouts in (("held-in", HELD_IN), ("held-out", HELD_OUT)):
        samples[name] = generate_samples(
            pipe, specs_for(layouts), seed_list, fields, per_layer=name == "held-in"
        )
        rows[name] = score(samples[name])
    if grid is not None:
        sample_grid(samples).save(grid)
    eval_seconds = time.perf_counter() - t0
    sec = speed(pipe, fields)
    table = pd.DataFrame(rows).T[
        ["images", "object_acc", "relation_acc", "swap_flip", "iou_color", "iou_shape", "style_acc"]
    ]
    record = {
        "model": model.name,
        "architecture": model.architecture,
        "weights": str(weights),
        "loader": "workbench.load_pipeline",
        "recorder": f"workbench.generate_batch + analysis.word_maps({MAPS!r})",
        "seeds": seed_list,
        "steps": STEPS,
        "sampler": model.sampler,
        "guidance": fields,
        "iou_rule": f"all steps/layers/heads mean, bilinear to 32x32, min-max, threshold {IOU_THRESHOLD}",
        "results": rows,
        "per_layer_iou_held_in": layer_iou(samples["held-in"]).to_dict(orient="records"),
        "seconds_per_image_25_guided_steps": sec,
        "eval_seconds": eval_seconds,
        "torch_threads": torch.get_num_threads(),
        "shapes": list(SHAPES),
    }
    return table, record


CARD_START, CARD_END = "<!-- evaluation:start -->", "<!-- evaluation:end -->"


def card_section(table: pd.DataFrame, record: dict) -> str:
    """The model card's results block (markdown), written by `--card`."""
    lines = [
        "| captions | images | object acc | relation acc | swap flips placement | IoU colour words | IoU shape words | style acc |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in table.iterrows():
        lines.append(
            f"| {name} | {int(r.images)} | {r.object_acc:.3f} | {r.relation_acc:.3f} | {r.swap_flip:.3f} | "
            f"{r.iou_color:.3f} | {r.iou_shape:.3f} | {r.style_acc:.3f} |"
        )
    guidance = ", ".join(f"{k} {v:g}" for k, v in record["guidance"].items())
    lines += [
        "",
        f"Seeds {record['seeds'][0]}..{record['seeds'][-1]}, {record['steps']} {record['sampler']} steps, "
        f"{guidance}, recorded with {record['recorder']}; IoU rule: {record['iou_rule']}.",
        f"Speed: {record['seconds_per_image_25_guided_steps']:.2f} s per image for 25 guided steps at 32x32 "
        f"(batch 1, {record['torch_threads']} CPU threads, no recording).",
        "",
        "Word-map IoU per block or resolution (held-in captions; the same recipe restricted to that "
        "group's layers):",
        "",
        "| layers | IoU colour words | IoU shape words | maps |",
        "|---|---|---|---|",
    ]
    for r in record["per_layer_iou_held_in"]:
        lines.append(f"| {r['layer']} | {r['iou_color']:.3f} | {r['iou_shape']:.3f} | {r['maps']} |")
    return "\n".join(lines)


def write_card(table: pd.DataFrame, record: dict, card: Path) -> None:
    """Replace the results block between the markers in the model card."""
    text = card.read_text()
    head, rest = text.split(CARD_START, 1)
    _, tail = rest.split(CARD_END, 1)
    card.write_text(f"{head}{CARD_START}\n{card_section(table, record)}\n{CARD_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(EMBEDDED), default="toy", help="the embedded model")
    ap.add_argument("--weights", type=Path, default=None, help="its weights (default: the shipped ones)")
    ap.add_argument("--seeds", type=int, default=8, help="how many seeds per caption")
    ap.add_argument(
        "--first-seed", type=int, default=0,
        help="the first seed (guidance is chosen on seeds 100-101, never the evaluation's 0..N-1)",
    )  # fmt: skip
    ap.add_argument(
        "--guidance", type=float, default=None,
        help="the model's guidance: guidance_scale (toy) or true_cfg_scale (toy-dit); default its card's",
    )  # fmt: skip
    ap.add_argument("--no-write", action="store_true", help="do not write evaluation.json")
    ap.add_argument("--grid", type=Path, default=None, help="save seed-0 samples of every caption here")
    ap.add_argument("--card", action="store_true", help="write the results block into the model card")
    args = ap.parse_args(argv)
    if args.seeds < 1 or args.first_seed < 0:
        ap.error(f"--seeds must be >= 1 and --first-seed >= 0, got {args.seeds} and {args.first_seed}")
    model = EMBEDDED[args.model]
    weights = args.weights or model.weights
    if not (weights / "model_index.json").exists():
        ap.error(f"no exported weights in {weights}; run `{model.train}` first")
    table, record = evaluate(model, weights, args.seeds, args.guidance, args.grid, args.first_seed)
    with pd.option_context("display.float_format", "{:.3f}".format):
        print(f"{model.name}: {model.architecture}")
        print(table.to_string())
        print("word-map IoU per block / resolution (held-in):")
        print(pd.DataFrame(record["per_layer_iou_held_in"]).to_string(index=False))
    print(
        f"speed: {record['seconds_per_image_25_guided_steps']:.2f} s per image (25 guided steps, 32x32, CPU)"
    )
    seeds = record["seeds"]
    print(f"recorder: {record['recorder']}; guidance {record['guidance']}; seeds {seeds[0]}..{seeds[-1]}")
    if not args.no_write:
        (weights / "evaluation.json").write_text(json.dumps(record, indent=1) + "\n")
    if args.card:
        write_card(table, record, model.card)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
