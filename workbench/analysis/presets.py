"""Named heat-map recipes (``PRESETS``), each written from the code of the method it is named after.

A preset named after a method promises that method's maps. Each docstring below names the file and
function the preset follows, what it reproduces exactly, and where the recorded store limits it.

``"all-mean"``
    The workbench's plain recipe: every kept step, layer and head averaged, each layer's grid
    upsampled bilinearly to the image, a word's tokens summed, one map per occurrence of a word.

``"daam"``
    DAAM (Tang et al., "What the DAAM", ACL 2023) as its code runs, daam 0.2.0 (castorini/daam):

    * layers, ``daam/hook.py`` ``UNetCrossAttentionLocator.locate``: the ``attn2`` of every
      transformer block of the UNet's down and up blocks; the mid block is never hooked
      (``locate_middle_block=False``, the default ``DiffusionHeatMapHooker`` passes);
    * ``daam/trace.py`` ``UNetCrossAttentionHooker.__call__``: the conditional half of
      ``attn.get_attention_scores``; maps whose grid is the latent / 8 are skipped
      (``factor != 8``); ``daam/heatmap.py`` ``RawHeatMapCollection.update`` sums every step per
      (layer, head);
    * ``daam/trace.py`` ``DiffusionHeatMapHooker.compute_global_heat_map``: every (layer, head) map
      upsampled bicubically to the latent size, clamped at 0 (``clamp_(min=0)``), and averaged over all
      (layer, head) maps (``maps.mean(0)``): layers weigh by their head counts (``heads="pool"``);
    * ``daam/heatmap.py`` ``GlobalHeatMap.compute_word_heat_map`` with ``daam/utils.py``
      ``compute_token_merge_indices``: a word's map is the mean over every position where the word's
      token sequence occurs in the prompt's tokens (all occurrences, ``repeats="token-match"``; a
      matching token inside another word is caught too, as in DAAM), unnormalized (``"mass"``);
    * scoring, ``daam/heatmap.py`` ``WordHeatMap.expand_as``: the map expanded bicubically to the image
      (a separate step, ``WordMaps.expand``, no clipping), rescaled ``(m - min) / (max - min + 1e-8)``
      and cut with ``> threshold``; threshold 0.4 (``daam/utils.py`` ``plot_mask_heat_map`` default,
      the paper's tau): ``"fraction-of-range-strict"``.

    Size: DAAM upsamples to a hard-coded 64x64 (96x96 for 768-pixel models), the latent of SD 1.x/2.x
    at their native sizes; the preset uses the run's latent size (for SDXL at 1024x1024 DAAM's table
    gives 64x64, half the latent: pass ``size=(64, 64)`` for DAAM's there). DAAM reads square grids
    only; the preset follows the run's height and width.
    Exactness: from a store that keeps every head in float32 (``RecordingPolicy(heads="all",
    dtype="float32")``) the maps equal DAAM's to float rounding. A store with heads averaged holds each
    layer's head mean; the head sum is the mean times the head count (exact), but the clamp at 0 then
    applies to the head sum, not to each head, so a head whose bicubic map dips below 0 where the others
    do not differs. float16 storage adds its rounding (about 1e-4 of a map's peak).

``"p2p"``
    Prompt-to-Prompt (Hertz et al. 2022, google/prompt-to-prompt), ``prompt-to-prompt_stable.ipynb``:
    ``AttentionStore.forward`` keeps the conditional half of each cross-attention map (places "down",
    "mid", "up" from ``ptp_utils.register_attention_control``), ``between_steps`` sums the steps and
    ``get_average_attention`` divides by the number of steps; ``aggregate_attention(..., res=16,
    from_where=("up", "down"), ...)`` takes the maps whose queries form a res x res grid from those
    places, reshapes them to (prompts, heads, res, res, tokens), concatenates layers and heads and
    averages them (``out.sum(0) / out.shape[0]``): every (layer, head) map weighs the same. res=16 is
    the latent / 4 of SD at 512x512; the preset takes the ``latent/4`` grid, leaves out the mid block
    (not in ``from_where``) and keeps the maps at that grid. Words: ``ptp_utils.get_word_inds`` with a
    word gives the token positions of every occurrence, and ``LocalBlend.get_mask`` sums them
    (``repeats="merge"``, ``words="sum"``); ``LocalBlend.get_mask`` expands with
    ``nnf.interpolate`` (nearest) and keeps ``map / max > th`` with ``th=(.3, .3)``:
    ``"fraction-of-max-strict"`` at 0.3 (its 3x3 max-pool is not applied). The notebook itself was read
    through copies of these functions in derived repositories; ``ptp_utils.py`` was read directly.

``"amd"``
    attention-map-diffusers 1.0.0 (wooyeolbaek/attention-map-diffusers) with its defaults:
    ``attention_capture.py`` ``AttentionCapture(timesteps="last", heads="mean", layers="all",
    relations="image->text")`` keeps the last denoising step, heads averaged (``capture/compute.py``
    ``reduce_heads``); ``visualization.py`` ``_aggregate_compatible`` / ``_aggregate_spatial`` take the
    conditional half (``_prepare_data``), resize every (layer, step) record to the largest captured grid
    (trilinear on one frame: bilinear, ``align_corners=False``) and average them (every layer weighs the
    same). Flux's single-stream blocks give it no image-to-text records
    (``processors/capture.py``), so they are left out. Its maps are per token; a word's tokens are summed
    here. It defines no threshold; its figures rescale min to max (``_colorize``), so the preset names
    ``"fraction-of-range"`` at 0.4.

``"dit-word-share"``
    For SD3 and Flux (joint attention). Not ConceptAttention (Helbling et al. 2025,
    helblazer811/ConceptAttention), whose maps need what the workbench does not record: separate concept
    tokens run through each layer, and dot products of attention *outputs*
    (``concept_attention/flux/pipeline.py`` ``compute_heatmaps_from_vectors``; ``attention_utils.py``
    ``compute_concept_attention_scores``). The closest recipe from recorded attention, shaped like
    that function: the image-to-text probabilities of the joint blocks (``transformer_blocks``; its Flux
    code takes only the 19 dual-stream blocks, by default 15-18), heads averaged, each (step, layer)
    map renormalized over the prompt's word and punctuation positions (``per_map="share"``: where its
    code takes a softmax over the concepts; for one head and one-token words the two are equal, since
    the joint softmax's normalizer cancels), averaged over steps and layers at the transformer's grid.
    (``analysis.over_text`` renormalizes over every text key, special ones included; here only the
    prompt's words count, as only concepts do there.) Scoring as its ``segmentation.py``: a pixel is in
    the mask when above the map's mean (``"above-mean"``, 1.0).
"""

from __future__ import annotations

from .recipe import Aggregation

PRESETS: dict[str, Aggregation] = {
    "all-mean": Aggregation(name="all-mean"),
    "daam": Aggregation(
        name="daam",
        skip=("mid_block", "latent/8"),
        heads="pool",
        step_reduce="sum",
        layer_reduce="mean",
        upsample="bicubic",
        size="latent",
        words="mean",
        repeats="token-match",
        normalize="mass",
        threshold_rule="fraction-of-range-strict",
        threshold=0.4,
        expand="bicubic",
        applies_to="unet",
    ),
    "p2p": Aggregation(
        name="p2p",
        layers=("latent/4",),
        skip=("mid_block",),
        heads="pool",
        step_reduce="mean",
        layer_reduce="mean",
        upsample="nearest",
        size="largest",
        words="sum",
        repeats="merge",
        normalize="mass",
        threshold_rule="fraction-of-max-strict",
        threshold=0.3,
        expand="nearest",
        applies_to="unet",
    ),
    "amd": Aggregation(
        name="amd",
        steps="last",
        skip=("single_transformer_blocks",),
        heads="mean",
        step_reduce="mean",
        layer_reduce="mean",
        upsample="bilinear",
        size="largest",
        normalize="mass",
        threshold_rule="fraction-of-range",
        threshold=0.4,
    ),
    "dit-word-share": Aggregation(
        name="dit-word-share",
        layers=("transformer_blocks",),
        heads="mean",
        per_map="share",
        step_reduce="mean",
        layer_reduce="mean",
        size="largest",
        normalize="mass",
        threshold_rule="above-mean",
        threshold=1.0,
        applies_to="dit",
    ),
}

# What each preset follows, in one line (for tables and the README).
SOURCES: dict[str, str] = {
    "all-mean": "the workbench's plain average",
    "daam": "daam 0.2.0: trace.py compute_global_heat_map, heatmap.py compute_word_heat_map / expand_as",
    "p2p": "prompt-to-prompt_stable.ipynb: AttentionStore, aggregate_attention, LocalBlend.get_mask",
    "amd": "attention-map-diffusers 1.0.0: AttentionCapture defaults, visualization._aggregate_spatial",
    "dit-word-share": "ConceptAttention's aggregation shape on recorded image-to-text attention (not its method)",
}
