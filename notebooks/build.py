"""Write the walkthrough notebooks (outputs stripped) from the cell lists below.

Run ``python notebooks/build.py`` after editing; the test suite executes every notebook it writes.
Each notebook reads the model from ``WORKBENCH_MODEL`` (default ``"toy"``, the embedded model).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """\
import os

import workbench
from workbench import analysis, viz
from workbench.notebook import quiet_loading

MODEL = os.environ.get("WORKBENCH_MODEL", "toy")  # "toy" (UNet) or "toy-dit" (MM-DiT); or a diffusers folder / hub id
with quiet_loading():  # no loading progress bars or notices; quiet_loading(verbose=True) shows them
    pipe = workbench.load_pipeline(MODEL, device="cpu")
type(pipe).__name__  # StableDiffusionPipeline ("toy") or FluxPipeline ("toy-dit")"""

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "01_quickstart.ipynb": [
        (
            "md",
            """\
# Quickstart: a prompt, a number of steps, a seed

The workbench runs the **stock** diffusers pipeline and records every denoising step: the latent, the
predicted clean image (x0) and the cross-attention of every prompt token. This notebook runs on the
embedded model (a small text-to-image model of coloured shapes) on a CPU in well under a minute.""",
        ),
        ("code", SETUP),
        (
            "md",
            "## The three inputs\nA run is fixed by its prompt, its number of denoising steps and its seed.",
        ),
        (
            "code",
            """\
prompt = "a red circle left of a blue square"
steps = 20
seed = 3

run = workbench.generate(pipe, prompt, seed=seed, steps=steps, guidance_scale=4.0, progress=False)
run""",
        ),
        ("code", "run.image.resize((128, 128), 0)  # the stock pipeline's image, enlarged"),
        ("code", "run.tokens.head(12)  # which token sits where, and which word it belongs to"),
        (
            "md",
            """\
## The step filmstrip
x0 (the model's guess of the final image) at every step, beside the current latent. Drag the slider:
the layout is decided in the first steps, the details later.""",
        ),
        (
            "code",
            """\
strip = analysis.filmstrip(pipe, run)
viz.filmstrip_figure(strip)""",
        ),
        ("code", "viz.change_curve_figure(analysis.change_curves(run, strip=strip))"),
        (
            "md",
            """\
## The same, as an app
Change the inputs and press **Run**: the progress bar follows the steps, the preview shows x0 as it
forms, and afterwards the step slider walks through the filmstrip. The next cell presses Run for you.""",
        ),
        (
            "code",
            """\
from workbench.widgets import AttentionExplorer, GenerateApp

app = GenerateApp(pipe, prompt=prompt, seed=seed, steps=steps)
app""",
        ),
        ("code", "app.run_sync()"),
        (
            "md",
            """\
## Where does each word look?
Click a word of the prompt; choose the resolution, layer, head and steps. The map is recomputed from
the recorded attention, without running the model again. Given the app, the explorer follows it: press
**Run** above and the explorer shows the new run.""",
        ),
        ("code", 'AttentionExplorer(app, word="circle")'),
    ],
    "02_attention.ipynb": [
        (
            "md",
            """\
# Attention per token

Every map here says how it was made: which steps, layers and heads, how layers were upsampled and how
the map was normalised (the figure subtitle). Presets, each written from its source's code
(`analysis.SOURCES`): `all-mean`; for UNet models `daam` (DAAM 0.2.0), `p2p` (prompt-to-prompt's
`aggregate_attention`); `amd` (attention-map-diffusers' default); for SD3 and Flux `dit-word-share`.""",
        ),
        ("code", SETUP),
        (
            "code",
            """\
run = workbench.generate(pipe, "a yellow triangle above a green square", seed=1, steps=20, guidance_scale=4.0, progress=False)
maps = analysis.word_maps(run, normalize="max")
viz.word_overlay(run, maps)""",
        ),
        (
            "md",
            """\
DAAM's maps as its code makes them: every head of every layer but the mid block's, steps summed,
upsampled bicubically to the latent's size and averaged; one map per word (a repeated word's
occurrences averaged). Expanding them to the image is a separate step, bicubic as DAAM's `expand_as`.
DAAM reads a UNet's cross-attention; on a joint-attention model (`toy-dit`, SD3, Flux) the cell uses
`dit-word-share` instead (each image token's attention shared out over the words, averaged over steps
and the dual-stream blocks, normalised to unit mass) and says so; the scale notes below are DAAM's.

Summed over steps, these maps are unnormalised and their ranges differ several-fold from word to word,
so each word gets its own colour scale, from 0 to its maximum (written over its panel).
`scale="shared"` puts every word on one scale, to compare their values.""",
        ),
        (
            "code",
            """\
from workbench.widgets.explorer import preset_problem

summed = "daam" if preset_problem(run, "daam") is None else "dit-word-share"  # the one that applies here
print("preset:", summed, "-", analysis.SOURCES.get(summed, ""))
daam = analysis.word_maps(run, summed).expand(run)
viz.word_overlay(run, daam)""",
        ),
        ("code", 'viz.word_overlay(run, daam, scale="shared")'),
        ("md", "Late steps only, one resolution: the recipe is yours to choose."),
        (
            "code",
            """\
late = analysis.word_maps(run, steps=range(10, 20), layers=run.attention.resolutions()[0], normalize="max")
viz.word_overlay(run, late, words=["yellow", "triangle", "green", "square"])""",
        ),
        (
            "md",
            """\
## Single tokens, and the special positions (BOS, EOS, padding)
One map per encoder position, labelled `position:token`: the start token, each sub-word token of the
prompt, the end token and the first padding position (the others look like it). Each map is divided by
its own maximum.""",
        ),
        (
            "code",
            """\
tokens = analysis.token_maps(run, normalize="max")
shown = tokens.positions[: tokens.kinds.index("pad") + 1] if "pad" in tokens.kinds else tokens.positions
viz.word_overlay(run, tokens, words=shown, cols=4)""",
        ),
        (
            "md",
            """\
## How much attention each word gets, per step and per layer
A word's mass is the attention probability its tokens receive, averaged over a layer's pixels; the
subtitle says how steps, layers and heads were combined.""",
        ),
        ("code", "viz.word_step_matrix(analysis.word_step_mass(run))"),
        ("code", "viz.word_layer_matrix(analysis.word_layer_mass(run))"),
        ("md", "## Explore"),
        (
            "code",
            'from workbench.widgets import AttentionExplorer\n\nAttentionExplorer(run, word="triangle")',
        ),
    ],
    "03_word_order.ipynb": [
        (
            "md",
            """\
# Word order

*"a painting of a horse"* and *"a horse of a painting"* hold the same words. Here, on the embedded
model's vocabulary, the same seed (so the same initial noise) runs each order; we compare the images,
each word's map in both orders, and the step at which the two trajectories part.""",
        ),
        ("code", SETUP),
        (
            "code",
            """\
orders = analysis.permutations("a red circle left of a blue square", kind="relation")
orders""",
        ),
        (
            "code",
            """\
runs = analysis.word_order_runs(pipe, orders, seed=0, steps=20, guidance_scale=4.0)
cmp = analysis.compare_word_order(runs[0], runs[1], pipe, normalize="max")
viz.side_by_side(cmp)""",
        ),
        ("code", "viz.map_pairs(cmp)"),
        ("code", "viz.divergence_figure(cmp)"),
        ("code", 'cmp.words[["word", "mass_a", "mass_b", "map_corr", "map_iou"]]'),
        (
            "md",
            '## The *X of Y* swap\n`permutations(..., kind="of")` turns *a painting of X* into *X of a painting*.',
        ),
        (
            "code",
            """\
style_orders = analysis.permutations("a sketch of a blue square", kind="of")
style_runs = analysis.word_order_runs(pipe, style_orders, seed=2, steps=20, guidance_scale=4.0)
viz.side_by_side(style_runs)""",
        ),
        ("md", "## The lab\nType orders (one per line) or press *suggest orders*; one seed for all."),
        (
            "code",
            """\
from workbench.widgets import WordOrderLab

lab = WordOrderLab(pipe, prompt="a green triangle above a yellow circle", seed=1, steps=15)
lab""",
        ),
        ("code", "[r.prompt for r in lab.run_sync()]"),
    ],
    "04_seeds.ipynb": [
        (
            "md",
            """\
# Seeds

How much of a picture is the seed and how much the prompt? A grid of prompts × seeds, the distance
between trajectories of different seeds at every step, the step at which each run's layout commits,
and a two-way split of the variance.""",
        ),
        ("code", SETUP),
        (
            "code",
            """\
prompts = ["a red circle left of a blue square", "a blue square left of a red circle"]
grid = analysis.seed_grid(pipe, prompts, seeds=[0, 1, 2, 3], steps=15, guidance_scale=4.0)
viz.seed_grid_figure(grid)""",
        ),
        ("code", "viz.trajectory_distance_figure(analysis.trajectory_distances(grid))"),
        (
            "code",
            """\
import pandas as pd

pd.DataFrame(
    [{"prompt": r.prompt, "seed": r.seed, "commit step": analysis.commit_step(analysis.change_curves(r))} for r in grid.flat()]
)""",
        ),
        ("code", "viz.variance_figure(analysis.image_variance(grid))"),
        ("code", "viz.variance_figure(analysis.step_variance(grid))"),
        ("md", "## The lab"),
        (
            "code",
            """\
from workbench.widgets import SeedLab

lab = SeedLab(pipe, prompt="a yellow square below a green circle", seeds="0-3", steps=15)
lab""",
        ),
        ("code", "len(lab.run_sync())"),
    ],
    "05_attributions.ipynb": [
        (
            "md",
            """\
# Attributions with captum

Which prompt tokens does the model's prediction depend on? Integrated Gradients on the prompt's
embeddings (baseline: the empty prompt) explains how far the prompt moves x0 at one step; its
convergence delta says how well the attributions add up. Occlusion removes one word at a time.""",
        ),
        ("code", SETUP),
        (
            "code",
            """\
run = workbench.generate(pipe, "a blue triangle right of a red square", seed=4, steps=20, guidance_scale=4.0, progress=False)
ig = analysis.integrated_gradients(pipe, run, step=4, n_steps=16)
print(ig.describe(), "| convergence delta", round(ig.delta, 5))
viz.attribution_bar(ig)""",
        ),
        (
            "code",
            """\
try:  # occlusion re-encodes token ids with one CLIP encoder: Stable Diffusion 1.x/2.x and the UNet toy
    occ = analysis.occlusion(pipe, run, target="x0", step=4)
except NotImplementedError as err:
    occ = print("occlusion:", err)
viz.attribution_bar(occ, include_special=False) if occ is not None else None""",
        ),
        (
            "md",
            """\
## Attribution against attention: do the rankings agree?
Integrated Gradients attributions are signed: a negative one is a word that pulls the prediction back
towards the empty prompt's. Words are ranked by the size of their attribution, `|attribution|` (rank 1
the largest), so a large negative attribution ranks high; `by="signed"` ranks the signed values.""",
        ),
        (
            "code",
            """\
table = analysis.attribution_vs_attention(ig, run)  # by="signed" ranks the signed values instead
print("words ranked by", table.attrs["ranked_by"], "| Spearman rank correlation:", round(table.attrs["spearman"], 3))
viz.attribution_vs_attention_figure(table)""",
        ),
        ("code", 'table[["label", "attribution", "rank_attribution", "attention", "rank_attention"]]'),
    ],
    "06_report.ipynb": [
        (
            "md",
            """\
# A reproducible experiment, and its report

Runs are saved as folders (JSON + safetensors + PNG), indexed in a table, written into one
self-contained HTML report, and each comes with a re-run spec that regenerates it and checks that image
and attention match bit for bit (on the same device, dtype and library versions). Everything goes into
the folder `experiment/` beside this notebook, so JupyterLab's file browser shows it.""",
        ),
        ("code", SETUP),
        (
            "code",
            """\
from pathlib import Path

from workbench.store.index import load_index
from workbench.report import report
from workbench.rerun import rerun
from workbench.store.recipe import RerunRecipe, save_recipe

OUT = Path(os.environ.get("WORKBENCH_OUT") or "experiment")  # beside this notebook: open it in the file browser
runs = []
for prompt in ["a red circle left of a blue square", "a blue square left of a red circle"]:
    run = workbench.generate(pipe, prompt, seed=5, steps=20, guidance_scale=4.0, progress=False)
    folder = workbench.save_run(run, OUT / "runs" / prompt.replace(" ", "-"), overwrite=True)
    save_recipe(run, folder / "spec.json")
    runs.append(run)
load_index(OUT / "runs")""",
        ),
        (
            "md",
            "## The experiment browser\nFilter and sort the saved runs; open one in the attention explorer.",
        ),
        (
            "code",
            """\
from workbench.widgets import ExperimentBrowser

ExperimentBrowser(OUT / "runs")""",
        ),
        ("md", "## The report"),
        (
            "code",
            """\
cmp = analysis.compare_word_order(runs[0], runs[1], pipe, normalize="max")
path = report(
    runs,
    OUT / "report.html",
    title="Word order, seed 5",
    figures=[("Side by side", viz.side_by_side(cmp)), ("Divergence per step", viz.divergence_figure(cmp))],
)""",
        ),
        (
            "md",
            "## Re-run from the spec\nThe same as `workbench rerun <run folder>/spec.json` on the command line.",
        ),
        (
            "code",
            """\
result = rerun(RerunRecipe.load(OUT / "runs" / "a-red-circle-left-of-a-blue-square" / "spec.json"), model=pipe)
print(result.summary())
assert result.match""",
        ),
    ],
    "07_model_families.ipynb": [
        (
            "md",
            """\
# Architectures: a UNet and an MM-DiT side by side (and SDXL, SD3/SD3.5, Flux.1)

The same recording, maps and figures on every family. Each family has an adapter in
`workbench/core/adapters.py` that says where its text attention is and how to observe it; nothing
below branches on the family.

| family | pipeline | text attention recorded | text keys |
|---|---|---|---|
| SD 1.x/2.x (and the embedded `toy`) | `StableDiffusionPipeline` | UNet `attn2` | CLIP (77; `toy`: 20) |
| SDXL | `StableDiffusionXLPipeline` | UNet `attn2` | CLIP-L and CLIP-G joined on features (77) |
| SD3/SD3.5 | `StableDiffusion3Pipeline` | joint `transformer_blocks.N.attn` | CLIP (77) then T5 (`max_sequence_length`) |
| Flux.1 (and the embedded `toy-dit`) | `FluxPipeline` | dual `transformer_blocks.N.attn` and single `single_transformer_blocks.N.attn` | T5 (`max_sequence_length`; `toy-dit`: 24) |

For the joint-attention models the recorded quantity is the image-query × text-key block **of the
joint softmax** (what the model computed). Two models run offline here: **`toy`**, a UNet with
cross-attention, and **`toy-dit`**, a Flux.1-architecture MM-DiT (dual- and single-stream blocks, flow
matching) trained on the same toy world — so the questions below have a known answer (both are
calibration models whose attention was supervised; see their model cards). Set `WORKBENCH_SDXL`,
`WORKBENCH_SD3` or `WORKBENCH_FLUX` to a diffusers folder or hub id to add real checkpoints (they
need a GPU and many GB).""",
        ),
        (
            "code",
            """\
import os

import pandas as pd
from IPython.display import display

import workbench
from workbench import analysis, viz
from workbench.core.adapters import adapter_for
from workbench.crossmodel import mask_ious
from workbench.notebook import quiet_loading

PROMPT = "a red circle left of a blue square"
SOURCES = {"toy": "toy", "toy-dit": "toy-dit"}  # the embedded UNet and MM-DiT
for family in ("SDXL", "SD3", "FLUX"):  # real checkpoints when their variables are set
    if os.environ.get(f"WORKBENCH_{family}"):
        SOURCES[family] = os.environ[f"WORKBENCH_{family}"]
list(SOURCES)""",
        ),
        (
            "md",
            """\
## Load each model and record one image
The embedded models run 25 steps at their native 32×32 with their own guidance (the UNet's
classifier-free guidance; `toy-dit`'s true CFG against the empty caption, which its folder declares).
Added checkpoints run 4 steps on a non-square size: every grid follows the latent's own shape.""",
        ),
        (
            "code",
            """\
pipes, runs = {}, {}
for name, source in SOURCES.items():
    with quiet_loading():  # no loading progress bars or notices
        pipes[name] = pipe = workbench.load_pipeline(source)
    if name in ("toy", "toy-dit"):
        request = workbench.Request(PROMPT, seed=0, steps=25)
    else:
        adapter = adapter_for(pipe)
        height = adapter.default_size
        width = height + 2 * adapter.size_multiple  # wider than tall
        request = workbench.Request(PROMPT, seed=0, steps=4, guidance_scale=4.0, height=height, width=width)
    runs[name] = workbench.generate(pipe, request, policy=workbench.RecordingPolicy(heads="all"), progress=False)
    print(f"{name:8s}", runs[name])""",
        ),
        ("code", 'viz.side_by_side(list(runs.values()), [f"{name}: {PROMPT}" for name in runs])'),
        (
            "md",
            """\
## Attention sites and token tables
Layer paths are the module paths inside each denoiser. The UNet's cross-attention sits at two
resolutions; the MM-DiT's joint attention in every block. `toy-dit`'s table lists its T5 positions
(one token per word); SD3's lists the CLIP positions, then the T5 positions (its `encoder` column).""",
        ),
        (
            "code",
            """\
for name, run in runs.items():
    print(name, {layer: run.attention.shapes[layer] for layer in list(run.attention.probs)[:3]}, "...")""",
        ),
        ("code", 'runs["toy-dit"].tokens.head(12)'),
        ("md", "## Word maps, the same call for every model"),
        (
            "code",
            """\
for name, run in runs.items():
    display(viz.word_overlay(run, analysis.word_maps(run, normalize="max")).update_layout(title_text=name))""",
        ),
        (
            "md",
            """\
## Where each architecture localises words
Each word's map per block (the MM-DiT's dual- and single-stream blocks) or resolution (the UNet's),
and its IoU against the mask of the object the model drew (the toy evaluation's rule: min-max,
threshold 0.5, the checker's segmentation). The embedded models' whole evaluation, eight seeds of
48 captions each, is in their model cards.""",
        ),
        ("code", 'viz.word_grid_figure(analysis.word_layer_grid(runs["toy-dit"]))'),
        (
            "code",
            """\
ious = pd.concat([mask_ious(runs[m]).assign(model=m) for m in ("toy", "toy-dit")])
ious.pivot_table(index=["model", "layers"], columns="role", values="iou", sort=False).round(2)""",
        ),
        (
            "md",
            """\
## When the layout commits: a DDIM schedule against a flow-matching one
The commitment step is the first step from which the predicted clean latent stays within a quarter
of the initial noise's distance from the final latent; as a fraction of the steps it compares the
two schedules.""",
        ),
        (
            "code",
            """\
commits = {name: analysis.commit_step(analysis.change_curves(run)) for name, run in runs.items()}
pd.DataFrame(
    {
        "commitment step": commits,
        "of steps": {n: r.config.steps for n, r in runs.items()},
        "fraction": {n: None if c is None else round(c / runs[n].config.steps, 2) for n, c in commits.items()},
    }
)""",
        ),
        (
            "code",
            """\
strips = {name: analysis.filmstrip(pipes[name], run) for name, run in runs.items()}
viz.filmstrip_figure(strips["toy-dit"])""",
        ),
        (
            "md",
            """\
## Word order on both architectures
`workbench study --model toy toy-dit` (the main job) runs the prompt and its swap with the same seeds
on both models and writes one report comparing them; here the same call from Python.""",
        ),
        (
            "code",
            """\
from pathlib import Path

from workbench.crossmodel import block_iou_table, placement_table
from workbench.study import run_study

OUT = Path(os.environ.get("WORKBENCH_OUT", "runs/notebooks"))
with quiet_loading():  # the study loads each model itself
    study = run_study(OUT / "architectures", model=["toy", "toy-dit"], seeds=(0, 1), steps=25, log=lambda *_: None)
placement_table(study.studies, (PROMPT, analysis.permutations(PROMPT, kind="relation")[1]))""",
        ),
        ("code", "viz.block_iou_figure(block_iou_table(study.ious))  # mean IoU per model, block and role"),
        ("code", "study.report  # the side-by-side report: open it in a browser"),
    ],
    "08_interventions.ipynb": [
        (
            "md",
            """\
# Interventions: does attention cause the layout?

Maps show where each word's attention goes; an **edit** changes it during the call and shows what
follows. An edit is a value (`workbench.Edit`), checked when it is made and kept in the run's config:

| edit | what it does |
|---|---|
| `Edit.reweight(words, factor)` | scales the attention every image position pays to `words` (each row renormalised) |
| `Edit.ablate(words)` | removes the attention to `words` (a reweight by 0) |
| `Edit.replace(source, words)` | takes the attention of `words` from `source`, the source prompt run with the same seed and settings |
| `Edit.switch(prompt, from_step)` | conditions on `prompt` from step `from_step` on |

Reweight, ablate and replace can be limited to some `steps=`, `layers=` (module paths or resolutions
such as `"8x8"`) and `heads=`.""",
        ),
        ("code", SETUP),
        (
            "code",
            """\
from workbench import Edit

prompt = "a red circle left of a blue square"
swap = "a blue square left of a red circle"  # the same two objects, trading places
edits = {
    "no edit": [],
    "reweight": [Edit.reweight("blue", 3.0, steps=range(0, 10))],
    "ablate": [Edit.ablate("red")],
    "replace": [Edit.replace(swap, ["red", "circle", "blue", "square"])],
    "switch": [Edit.switch(swap, 15)],
}
[edit.describe() for chosen in edits.values() for edit in chosen]""",
        ),
        (
            "md",
            """\
## One run of each kind
The same prompt and seed (so the same initial noise) every time; only the edit differs.""",
        ),
        (
            "code",
            """\
runs = {
    name: workbench.generate(pipe, prompt, seed=0, steps=25, edits=chosen, progress=False)
    for name, chosen in edits.items()
}
viz.side_by_side(list(runs.values()), list(runs))""",
        ),
        (
            "md",
            """\
A run keeps its edits: `run.config.edits` holds the values, `run.config.edit_label` says what they did
in one line (saved runs, index rows, report headings and re-runs carry them too).""",
        ),
        ("code", 'runs["switch"].config.edits'),
        ("code", "{name: run.config.edit_label for name, run in runs.items()}"),
        (
            "md",
            """\
## The causal word-order lab
One image says little; the lab counts over seeds. For a caption and its object swap, with the same seed:

1. **inject-step**: the swap's object-word attention put into the caption's run (`Edit.replace`) from
   step k on; y is the fraction of images placed as the swap says.
2. **inject-layers**: the same at every step, into one resolution (or block) at a time.
3. **switch**: the prompt switched to the swap from step k on (`Edit.switch`); y as in 1.
4. **ablate**: the first object's colour word ablated from step k on; y is the fraction of images in
   which that object keeps its colour.

k = steps is the run without an edit. The bars are 95% bootstrap intervals over (pair, seed) units: with
two seeds, as here, they say little; the command at the end runs the full lab.""",
        ),
        (
            "code",
            """\
from workbench.lab import PAIRS, LabSettings, run_lab

settings = LabSettings(pairs=PAIRS[:1], seeds=(0, 1), steps=25, ks=(0, 15, 21, 25))
result = run_lab(pipe, settings)
viz.lab_curves_figure(result.summary, judge=result.judge, units=len(settings.pairs) * len(settings.seeds))""",
        ),
        ("code", "result.summary"),
        (
            "md",
            """\
## The same, as an app
Type a caption (its swap is suggested), seeds, steps and the ks, tick the curves and press **Run lab**;
Cancel stops after the current generation and shows the points finished so far. The next cell presses
Run for you.""",
        ),
        (
            "code",
            """\
from workbench.widgets import InterventionLab

lab = InterventionLab(pipe, seeds="0", steps=25, ks="0, 21, 25")
lab""",
        ),
        ("code", "lab.run_sync().summary"),
        (
            "md",
            """\
## The full lab
From a terminal, three caption pairs over sixteen seeds (about a thousand generations; the curves and
their intervals are printed as a table):

```
python -m workbench.lab --seeds 16 --pairs 3
```

On the embedded model, placement (and colour, for the ablation curve) is judged from each image by the
toy world's checker, which finds every coloured object and its centre. On any other model placement is
judged by where each object word's attention mass is centred, and the ablation curve is not drawn.""",
        ),
    ],
}


def build() -> list[Path]:
    written = []
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(
            cells=[new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells],
            metadata={
                "kernelspec": {
                    "name": "python3",
                    "display_name": "Python 3 (ipykernel)",
                    "language": "python",
                },
                "language_info": {"name": "python"},
            },
        )
        for i, cell in enumerate(nb.cells):  # stable ids: rebuilding gives the same files
            cell["id"] = f"{Path(name).stem}-{i:02d}"
        path = HERE / name
        nbformat.write(nb, path)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in build():
        print(path)
