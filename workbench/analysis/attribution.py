"""Token attributions with captum: Integrated Gradients on the prompt's embeddings, and occlusion.

What is attributed (stated once, used everywhere here):
    * Input: the text encoders' *output* embeddings as the denoiser reads them (``encoder_hidden_states``,
      one vector per key position: CLIP's for SD 1.x/2.x and SDXL, [CLIP | T5] for SD3, T5 for Flux). Each position's vector already carries the context
      of the positions before it (CLIP's text encoder is causal), so an attribution to a position is an
      attribution to that position *in its context*.
    * Baseline: the embeddings of the empty prompt ``""`` (BOS, EOS, then padding), i.e. the
      unconditional input of classifier-free guidance without a negative prompt.
    * Output: the model's prediction of the clean latent x0 at one step, from the run's recorded latent
      at that step, with the run's guidance (the unconditional branch is held fixed at the run's
      negative prompt). The scalar explained is the projection of ``x0(E) - x0(baseline)`` onto the
      unit direction of ``x0(input) - x0(baseline)``, weighted by an optional region mask: how far the
      prompt moves the step's prediction away from the empty-prompt prediction, in latent units. So
      ``output(baseline) = 0`` and, by IG's completeness, attributions sum to ``output(input)`` up to
      captum's reported convergence delta.
    * Occlusion: a word's tokens are replaced by the padding token and the prompt is re-encoded; the
      change of x0 at a step (RMS over the region, latent units) or of the final image (regenerated from
      the same noise; RMS of [0, 1] intensities) is reported per word.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from workbench.core.adapters import adapter_for
from workbench.core.generate import replay
from workbench.core.run import Run
from workbench.core.step_model import StepModel, conditioning, encode, token_ids

from .aggregate import Aggregation, make_aggregation
from .checks import check_pipe, check_unedited
from .heatmaps import TEXT_KINDS, attention_mass, unique_labels, word_groups, word_maps

BASELINE = 'the empty prompt "" through the text encoder'
RANKED_BY = {"abs": "|attribution|", "signed": "signed attribution"}  # what attribution ranks are of


def region_weights(region, run: Run, latent_hw: tuple[int, int]) -> torch.Tensor:
    """A region mask (image- or latent-sized, bool or [0, 1]) -> (h, w) weights on the latent grid."""
    if region is None:
        return torch.ones(latent_hw)
    r = torch.as_tensor(np.asarray(region), dtype=torch.float32)
    if r.ndim != 2:
        raise ValueError(f"region must be a 2-D mask, got shape {tuple(r.shape)}")
    image_hw = (run.config.height, run.config.width)
    if tuple(r.shape) == image_hw:
        r = F.adaptive_avg_pool2d(r[None, None], latent_hw)[0, 0]  # (h, w): the share of each latent cell
    elif tuple(r.shape) != tuple(latent_hw):
        raise ValueError(
            f"region must be image-sized {image_hw} or latent-sized {tuple(latent_hw)}, got {tuple(r.shape)}"
        )
    if float(r.sum()) <= 0:
        raise ValueError("region is empty (all zero)")
    return r


def _by_word(run: Run, per_position: torch.Tensor, column: str) -> pd.DataFrame:
    groups = word_groups(run.tokens, include_special=True)
    labels = unique_labels([g["word"] for g in groups])
    return pd.DataFrame(
        [
            {
                "word_index": g["word_index"],
                "word": g["word"],
                "label": lab,
                "kind": g["kind"],
                column: float(per_position[g["positions"]].sum()),
            }
            for g, lab in zip(groups, labels)
        ]
    )


@dataclass(frozen=True)
class Attribution:
    """Per-token and per-word attributions of one run's prediction.

    Attributes:
        tokens: per encoder position: ``position``, ``token``, ``kind``, ``word_index``, ``word``,
            ``attribution``.
        words: per word (special positions grouped as ``<bos>``, ``<eos>``, ``<pad>``): ``word_index``,
            ``word``, ``label``, ``kind``, ``attribution``.
        method: ``"integrated_gradients"`` or ``"occlusion"``.
        target: what was explained (see the module docstring).
        step: the step explained (None for the final image).
        delta: IG's convergence delta, ``sum(attributions) - (output(input) - output(baseline))``.
        output_input, output_baseline: the explained scalar at the input and at the baseline.
        baseline: the baseline, in words.
        region: whether a region mask restricted the output.
    """

    tokens: pd.DataFrame
    words: pd.DataFrame
    method: str
    target: str
    step: int | None
    delta: float = float("nan")
    output_input: float = float("nan")
    output_baseline: float = float("nan")
    baseline: str = BASELINE
    region: bool = False
    reference_matches_run: bool | None = None

    def describe(self) -> str:
        at = f"step {self.step}" if self.step is not None else "final image"
        return f"{self.method} of {self.target} at {at}{' in a region' if self.region else ''}; baseline: {self.baseline}"


def integrated_gradients(
    pipe, run: Run, *, step: int, region=None, n_steps: int = 32, internal_batch_size: int = 8
) -> Attribution:
    """Integrated Gradients of the prediction at ``step`` with respect to the prompt embeddings.

    Args:
        pipe: the pipeline that made the run (same weights).
        run: a recorded run.
        step: the denoising step whose x0 prediction is explained.
        region: optional (H, W) image-sized or (h, w) latent-sized mask restricting the output.
        n_steps: IG integration steps (Gauss-Legendre, captum's default method).
        internal_batch_size: UNet batch per captum call.

    Returns:
        ``Attribution`` with captum's convergence delta.

    Example:
        >>> ig = integrated_gradients(pipe, run, step=5, region=scene.objects[0].mask)  # doctest: +SKIP
    """
    from captum.attr import IntegratedGradients

    if not isinstance(n_steps, int) or n_steps < 2:
        raise ValueError(f"n_steps must be an int >= 2, got {n_steps!r}")
    check_pipe(pipe, run)
    check_unedited(run, "integrated_gradients")
    model = StepModel(pipe, run, step)
    # The prompt's and the empty prompt's embeddings as the family's own encoders make them: (1, T, D)
    emb_in, emb_base = model.embeds, conditioning(pipe, run.config, "")
    baseline = "the empty-prompt prediction"
    if (
        emb_base.shape != emb_in.shape
    ):  # text as long as its prompt (Qwen-Image): no empty prompt of this length
        emb_base, baseline = torch.zeros_like(emb_in), "the prediction from all-zero text embeddings"
    weights = region_weights(region, run, tuple(run.latents.shape[-2:])).to(
        emb_in.device, emb_in.dtype
    )  # (h, w)
    with torch.no_grad():
        x_base = model.x0(emb_base)  # (1, C, h, w)
        d = (model.x0(emb_in) - x_base) * weights  # (1, C, h, w)
    norm = d.norm()
    if float(norm) == 0:
        raise ValueError(
            "the prompt does not change the prediction at this step (in this region): nothing to attribute"
        )
    u = d / norm  # (1, C, h, w) unit direction

    def forward(embeds: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B,)
        return ((model.x0(embeds) - x_base) * weights * u).flatten(1).sum(dim=1)

    ig = IntegratedGradients(forward)
    attr, delta = ig.attribute(
        emb_in,
        baselines=emb_base,
        n_steps=n_steps,
        internal_batch_size=internal_batch_size,
        return_convergence_delta=True,
    )  # attr: (1, T, D)
    per_position = attr[0].sum(dim=-1).detach().float().cpu()  # (T,)
    with torch.no_grad():
        out_in, out_base = float(forward(emb_in)[0]), float(forward(emb_base)[0])
    tokens = _token_frame(run, per_position, "attribution")
    return Attribution(
        tokens=tokens,
        words=_by_word(run, per_position, "attribution"),
        method="integrated_gradients",
        target=f"x0 moved from {baseline} (latent units)",
        step=step,
        delta=float(delta.reshape(-1)[0]),
        output_input=out_in,
        output_baseline=out_base,
        region=region is not None,
    )


def _check_ids(run: Run, ids: torch.Tensor) -> None:
    inside = run.tokens[run.tokens.kind != "cut"]
    rec = inside.sort_values("position").token_id.astype(int).tolist()
    if ids[0, : len(rec)].tolist() != rec:
        raise ValueError(
            "the pipeline's tokenizer does not reproduce the run's token table; use the run's model"
        )


def _token_frame(run: Run, per_position: torch.Tensor, column: str) -> pd.DataFrame:
    inside = run.tokens[run.tokens.kind != "cut"].sort_values("position")
    df = inside[["position", "token", "kind", "word_index", "word"]].reset_index(drop=True).copy()
    df[column] = per_position[df.position.astype(int).tolist()].numpy()
    return df


def occlusion(
    pipe,
    run: Run,
    *,
    target: str = "x0",
    step: int | None = None,
    region=None,
    words: list[str] | None = None,
) -> Attribution:
    """Occlude each word (its tokens replaced by padding) and measure how much the prediction changes.

    Args:
        pipe: the pipeline that made the run.
        run: a recorded run.
        target: ``"x0"``: RMS change of x0 at ``step`` (latent units); ``"image"``: RMS change of the
            final image regenerated from the run's noise ([0, 1] intensities; one generation per word).
        step: required for ``target="x0"``.
        region: optional mask restricting where the change is measured.
        words: the words (or labels like ``a#2``) to occlude; default every word.

    Returns:
        ``Attribution`` with the change per word (``attribution`` column; special positions are not
        occluded and get NaN). For ``"image"``, ``reference_matches_run`` says whether the
        unoccluded regeneration reproduced ``run.image`` exactly.

    Example:
        >>> occlusion(pipe, run, target="x0", step=3)  # doctest: +SKIP
    """
    if target not in ("x0", "image"):
        raise ValueError(f"target must be 'x0' or 'image', got {target!r}")
    if target == "x0" and step is None:
        raise ValueError("target='x0' needs step=")
    check_pipe(pipe, run)
    check_unedited(run, "occlusion")
    adapter = adapter_for(pipe)
    if not adapter.one_clip_encoder:  # a capability the adapter states, not a family name
        raise NotImplementedError(
            f"occlusion re-encodes token ids with one CLIP text encoder (Stable Diffusion 1.x/2.x); "
            f"for {adapter.family} use integrated_gradients"
        )
    ids = token_ids(pipe, run.prompt)
    _check_ids(run, ids)
    pad = (
        pipe.tokenizer.pad_token_id
        if pipe.tokenizer.pad_token_id is not None
        else pipe.tokenizer.eos_token_id
    )
    groups = [g for g in word_groups(run.tokens, include_special=True) if g["kind"] in TEXT_KINDS]
    labels = unique_labels([g["word"] for g in groups])
    if words is not None:
        lower = [w.lower() for w in words]
        known = set(labels) | {g["word"].lower() for g in groups}
        missing = [w for w in words if w not in known and w.lower() not in known]
        if missing:
            raise ValueError(f"words {missing} are not in the prompt {run.prompt!r}; its words are {labels}")
        keep = [lab in words or g["word"].lower() in lower for g, lab in zip(groups, labels)]
        groups = [g for g, k in zip(groups, keep) if k]
        labels = [lab for lab, k in zip(labels, keep) if k]
    variants = []
    for g in groups:
        occluded = ids.clone()
        occluded[0, g["positions"]] = pad
        variants.append(encode(pipe, ids=occluded))  # (1, T, D)
    matches = None
    if target == "x0":
        model = StepModel(pipe, run, step)
        w = region_weights(region, run, tuple(run.latents.shape[-2:])).to(pipe.device)  # (h, w)
        with torch.no_grad():
            ref = model.x0(encode(pipe, ids=ids))  # (1, C, h, w)
            changes = [_weighted_rms(model.x0(v) - ref, w) for v in variants]
        what = "x0 change, RMS (latent units)"
    else:
        h, wd = run.config.height, run.config.width
        w = region_weights(region, run, (h, wd))  # (H, W)
        ref_img = _regenerate(pipe, run, encode(pipe, ids=ids))  # (H, W, 3) float in [0, 1]
        matches = run.image is not None and np.array_equal(
            (ref_img * 255).round().astype(np.uint8), np.asarray(run.image)
        )
        changes = [
            _weighted_rms(torch.from_numpy(_regenerate(pipe, run, v) - ref_img).permute(2, 0, 1)[None], w)
            for v in variants
        ]
        step = None
        what = "final image change, RMS ([0, 1] intensity)"
    table = pd.DataFrame(
        [
            {
                "word_index": g["word_index"],
                "word": g["word"],
                "label": lab,
                "kind": g["kind"],
                "attribution": c,
            }
            for g, lab, c in zip(groups, labels, changes)
        ]
    )
    per_position = torch.full((ids.shape[1],), float("nan"))
    for g, c in zip(groups, changes):
        per_position[g["positions"]] = c / len(g["positions"])
    return Attribution(
        tokens=_token_frame(run, per_position, "attribution"),
        words=table,
        method="occlusion",
        target=what,
        step=step,
        baseline="the word's tokens replaced by the padding token",
        region=region is not None,
        reference_matches_run=matches,
    )


def _weighted_rms(diff: torch.Tensor, w: torch.Tensor) -> float:
    """RMS of (1, C, h, w) ``diff`` with per-pixel weights (h, w)."""
    sq = diff.float().pow(2).mean(dim=1)[0]  # (h, w)
    w = w.to(sq.device, sq.dtype)
    return float(((sq * w).sum() / w.sum()).sqrt())


def _regenerate(pipe, run: Run, prompt_embeds: torch.Tensor) -> np.ndarray:
    """The run's generation again with other prompt embeddings: (H, W, 3) float in [0, 1]."""
    return replay(pipe, run.config, prompt_embeds=prompt_embeds)


def attribution_vs_attention(
    attribution: Attribution,
    run: Run,
    aggregation: Aggregation | str | None = None,
    *,
    by: str = "abs",
    region=None,
    **overrides,
) -> pd.DataFrame:
    """Rank the words by attribution and by attention mass; where do the two agree?

    The attention side uses the recipe (default: the attributed step when the run kept it, else every
    kept step). With a region, a word's attention is the mean of its ``"mass"`` map inside the region.

    Args:
        attribution: from ``integrated_gradients`` or ``occlusion``.
        run: the same run.
        by: ``"abs"`` (default) ranks attributions by magnitude, so a large negative attribution (a
            word that pulls the prediction back) ranks as high as a large positive one; ``"signed"``
            ranks them as they are (most positive first, most negative last).

    Returns:
        DataFrame per word (special positions left out): ``word``, ``label``, ``attribution``,
        ``attention``, ``rank_attribution``, ``rank_attention`` (1 = largest), ``rank_diff``;
        ``attrs["spearman"]`` is the rank correlation (Pearson of the ranks, ties averaged),
        ``attrs["ranked_by"]`` what the attribution ranks are of (``RANKED_BY``).

    Example:
        >>> attribution_vs_attention(integrated_gradients(pipe, run, step=3), run)  # doctest: +SKIP
    """
    if by not in ("signed", "abs"):
        raise ValueError(f"by must be 'signed' or 'abs', got {by!r}")
    if "steps" not in overrides and attribution.step is not None and attribution.step in run.attention.steps:
        overrides["steps"] = [attribution.step]
    agg = make_aggregation(aggregation, **overrides)
    words = attribution.words[attribution.words.kind.isin(TEXT_KINDS)].copy()
    if region is None:
        mass = attention_mass(run, agg, by=None).set_index("word_index").mass
    else:
        wm = word_maps(run, agg, normalize="mass", size="image")  # the region is image-sized
        r = torch.as_tensor(np.asarray(region), dtype=torch.float32)
        if tuple(r.shape) != tuple(wm.maps.shape[-2:]):
            raise ValueError(f"region must be image-sized {tuple(wm.maps.shape[-2:])}, got {tuple(r.shape)}")
        inside = (wm.maps * r).sum(dim=(-2, -1)) / r.sum().clamp_min(1e-12)  # (words,)
        mass = pd.Series(inside.numpy(), index=wm.word_indices)
    words["attention"] = [float(mass[i]) for i in words.word_index]
    score = words.attribution.abs() if by == "abs" else words.attribution
    words["rank_attribution"] = score.rank(ascending=False, method="average")
    words["rank_attention"] = words.attention.rank(ascending=False, method="average")
    words["rank_diff"] = words.rank_attribution - words.rank_attention
    ra, rb = words.rank_attribution.to_numpy(float), words.rank_attention.to_numpy(float)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra**2).sum() * (rb**2).sum())
    df = words[
        [
            "word_index",
            "word",
            "label",
            "attribution",
            "attention",
            "rank_attribution",
            "rank_attention",
            "rank_diff",
        ]
    ].reset_index(drop=True)
    df.attrs["spearman"] = float((ra * rb).sum() / den) if den > 0 else float("nan")
    df.attrs["aggregation"] = agg.describe()
    df.attrs["attribution"] = attribution.describe()
    df.attrs["ranked_by"] = RANKED_BY[by]
    return df
