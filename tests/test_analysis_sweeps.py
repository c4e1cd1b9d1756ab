"""Analyses of a sweep from its index alone: variance split and word-order effects with bootstrap
intervals, their figures, and the report's sweep section."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from PIL import Image

import workbench
from workbench.analysis.seeds import variance_split
from workbench.analysis.sweeps import (
    done_runs,
    sweep_variance,
    thumbnails,
    word_order_distances,
    word_order_effects,
)
from workbench.report import report, sweep_section
from workbench.sweeps import read_index
from workbench.viz.sweeps import (
    sweep_variance_figure,
    thumbnail_sheet,
    word_order_distance_figure,
    word_order_effect_figure,
)

REF = "a red circle left of a blue square"
SWAP = "a blue square left of a red circle"


def fake_index(cells: dict, *, guidance: float = 4.0, prompts=None) -> pd.DataFrame:
    """Index rows for {(prompt, seed): (thumb uint8 (16, 16, 3), words, masses)}."""
    prompts = prompts or list(dict.fromkeys(p for p, _ in cells))
    rows = []
    for (prompt, seed), (thumb, words, mass) in cells.items():
        rows.append(
            {
                "sweep_id": "s1",
                "request_id": f"{prompt}|{seed}|{guidance}",
                "status": "done",
                "prompt": prompt,
                "prompt_index": prompts.index(prompt),
                "seed": seed,
                "steps": 6,
                "guidance": guidance,
                "scheduler": "default",
                "height": 32,
                "width": 32,
                "negative_prompt": None,
                "thumb": np.asarray(thumb, dtype=np.uint8).tobytes(),
                "words": list(words),
                "word_mass": list(mass),
            }
        )
    return pd.DataFrame(rows)


def additive_grid(seed_effect: float = 1.0, rng_seed: int = 0):
    """Thumbnails y[p, s] = prompt part + seed part (no interaction), as uint8."""
    rng = np.random.default_rng(rng_seed)
    prompts = ["a red circle", "a blue square", "a green triangle"]
    a = rng.integers(0, 100, size=(3, 16, 16, 3))
    b = (rng.integers(0, 100, size=(5, 16, 16, 3)) * seed_effect).astype(int)
    cells = {(p, s): (a[i] + b[s], p.split(), [1.0] * 3) for i, p in enumerate(prompts) for s in range(5)}
    return fake_index(cells), a, b


def test_variance_split_of_a_real_sweep_equals_the_split_of_its_images(tiny_folder, tmp_path):
    spec = {
        "model": str(tiny_folder),
        "prompts": [REF, "a painting of a horse"],
        "seeds": [0, 1, 2],
        "steps": 3,
        "guidance_scales": [4.0],
    }
    workbench.sweep(spec, out=tmp_path, progress=False, log=None)
    index = read_index(tmp_path)
    split = sweep_variance(index, n_boot=50).set_index("component")
    images = np.stack(  # (prompts, seeds, 16, 16, 3), computed here from the run folders
        [
            [
                np.asarray(
                    workbench.load_run(tmp_path / f"runs/{rid}")
                    .image.convert("RGB")
                    .resize((16, 16), Image.BOX),
                    dtype=float,
                )
                / 255
                for rid in index[index.prompt == p].sort_values("seed").request_id
            ]
            for p in spec["prompts"]
        ]
    )
    expected = variance_split(images).share
    for comp in ("prompt", "seed", "interaction"):
        assert split.loc[comp, "share"] == pytest.approx(expected[comp], abs=1e-12)
    assert (split.n_prompts == 2).all() and (split.n_seeds == 3).all()


def test_bootstrap_intervals_over_seeds():
    index, _, _ = additive_grid()
    df = sweep_variance(index, n_boot=200, seed=1).set_index("component")
    # every draw of seeds from an additive grid is additive: no interaction, whatever the draw
    assert df.loc["interaction", "share"] == pytest.approx(0, abs=1e-12)
    assert df.loc["interaction", "ci_low"] == pytest.approx(0, abs=1e-12)
    assert df.loc["interaction", "ci_high"] == pytest.approx(0, abs=1e-12)
    assert ((df.ci_low <= df.share + 1e-12) & (df.share <= df.ci_high + 1e-12)).all()
    assert df.loc["prompt", "share"] + df.loc["seed", "share"] == pytest.approx(1)
    again = sweep_variance(index, n_boot=200, seed=1).set_index("component")
    pd.testing.assert_frame_equal(df, again)  # reproducible
    other = sweep_variance(index, n_boot=200, seed=2).set_index("component")
    assert not np.allclose(other.ci_low.to_numpy(), df.ci_low.to_numpy())
    still, _, _ = additive_grid(seed_effect=0.0)  # the seed changes nothing
    df = sweep_variance(still, n_boot=50).set_index("component")
    assert df.loc["prompt", "share"] == pytest.approx(1) and df.loc["seed", "ci_high"] == pytest.approx(0)


def test_groups_incomplete_grids_and_what_a_split_needs():
    index, _, _ = additive_grid()
    more = pd.concat(
        [
            index,
            fake_index(
                {k: v for k, v in [(("a red circle", 0), (np.zeros((16, 16, 3)), [], []))]}, guidance=7.5
            ),
        ]
    )
    df = sweep_variance(more, n_boot=20)
    assert set(df.guidance) == {4.0}  # the 7.5 group has one prompt and one seed: no split there
    # a seed some prompt did not finish is left out of the grid
    dropped = index[~((index.prompt == "a blue square") & (index.seed == 4))]
    assert (sweep_variance(dropped, n_boot=20).n_seeds == 4).all()
    failed = index.assign(status=np.where(index.seed >= 1, "failed", "done"))
    with pytest.raises(ValueError, match="2 or more prompts"):
        sweep_variance(failed)
    with pytest.raises(ValueError, match="lacks the columns"):
        sweep_variance(index.drop(columns=["thumb"]))
    with pytest.raises(ValueError, match="n_boot"):
        sweep_variance(index, n_boot=0)


def order_cells(delta: int, mass_shift: float, seeds=range(4)):
    rng = np.random.default_rng(0)
    ref_words = REF.split()
    swap_words = SWAP.split()
    cells = {}
    for s in seeds:
        thumb = rng.integers(0, 200, size=(16, 16, 3))
        base = rng.random(len(ref_words))
        cells[(REF, s)] = (thumb, ref_words, base)
        # the same word gets the reference's mass plus a shift; "a" by occurrence
        lookup = {}
        seen = {}
        for w, m in zip(ref_words, base):
            lookup[(w, seen.get(w, 0))] = m
            seen[w] = seen.get(w, 0) + 1
        seen = {}
        masses = []
        for w in swap_words:
            masses.append(lookup[(w, seen.get(w, 0))] + (mass_shift if w == "red" else 0.0))
            seen[w] = seen.get(w, 0) + 1
        cells[(SWAP, s)] = (thumb + delta, swap_words, masses)
    return cells


def test_word_order_distances_and_effects_from_the_index():
    cells = order_cells(delta=17, mass_shift=0.25)
    index = fake_index(cells, prompts=[REF, SWAP])
    distances = word_order_distances(index, n_boot=100)
    assert len(distances) == 1
    row = distances.iloc[0]
    assert (row.reference, row.order, row.n_seeds) == (REF, SWAP, 4)
    assert row.pixel_rms == pytest.approx(17 / 255) and row.ci_low == pytest.approx(17 / 255)
    assert row.ci_high == pytest.approx(17 / 255) and row.identical == 0
    t = thumbnails(index[index.prompt == REF].sort_values("seed")).reshape(4, -1)
    pairs = [np.sqrt(((t[i] - t[j]) ** 2).mean()) for i in range(4) for j in range(i + 1, 4)]
    assert row.seed_pixel_rms == pytest.approx(np.mean(pairs))

    effects = word_order_effects(index, n_boot=100).set_index(["word", "occurrence"])
    assert len(effects) == 8 and effects.loc[("a", 1), "n_seeds"] == 4
    assert effects.loc[("red", 0), "mass_diff"] == pytest.approx(0.25)
    assert effects.loc[("red", 0), ["ci_low", "ci_high"]].tolist() == pytest.approx([0.25, 0.25])
    others = effects.drop(index=("red", 0))
    assert np.allclose(others.mass_diff, 0) and np.allclose(others.ci_low, 0)
    assert effects.loc[("square", 0), "mass_reference"] == pytest.approx(
        effects.loc[("square", 0), "mass_order"]
    )


def test_no_word_orders_gives_empty_tables():
    index, _, _ = additive_grid()
    assert word_order_distances(index).empty and word_order_effects(index).empty


def test_figures_of_the_analyses():
    index, _, _ = additive_grid()
    split = sweep_variance(index, n_boot=20)
    fig = sweep_variance_figure(split)
    assert (
        isinstance(fig, go.Figure)
        and len(fig.data) == 1
        and list(fig.data[0].x) == ["prompt", "seed", "interaction"]
    )
    assert fig.data[0].error_y.array is not None and "bootstrap" in fig.layout.title.text
    orders = fake_index(order_cells(delta=5, mass_shift=0.1), prompts=[REF, SWAP])
    fig = word_order_distance_figure(word_order_distances(orders, n_boot=20))
    assert [t.type for t in fig.data] == ["bar", "scatter"]
    fig = word_order_effect_figure(word_order_effects(orders, n_boot=20))
    assert len(fig.data) == 1 and "a (2)" in list(fig.data[0].x)
    with pytest.raises(ValueError, match="sweep_variance"):
        sweep_variance_figure(pd.DataFrame({"x": [1]}))


def test_thumbnail_sheet_lays_prompts_down_and_seeds_across():
    index, a, b = additive_grid()
    sheet, prompts, seeds = thumbnail_sheet(index, scale=2)
    assert prompts == ["a red circle", "a blue square", "a green triangle"] and seeds == [0, 1, 2, 3, 4]
    assert sheet.size == (5 * 33 + 1, 3 * 33 + 1)
    # prompt 1, seed 3, thumbnail pixel (0, 0): at (1 + 3 * 33, 1 + 1 * 33)
    assert sheet.getpixel((1 + 3 * 33, 1 + 33)) == tuple(int(v) for v in (a[1] + b[3])[0, 0])


def test_report_sweep_section(tmp_path):
    cells = order_cells(delta=9, mass_shift=0.1)
    cells[("a <b>bold</b> prompt", 0)] = cells[(REF, 0)]
    index = fake_index(cells, prompts=[REF, SWAP, "a <b>bold</b> prompt"])
    failed = index.iloc[:1].assign(request_id="x", status="failed", error="ValueError: height must be <8>")
    index = pd.concat([index, failed], ignore_index=True)
    html = "\n".join(sweep_section(index, n_boot=20))
    assert "a &lt;b&gt;bold&lt;/b&gt; prompt" in html and "<b>bold</b>" not in html
    assert "Failed runs" in html and "height must be &lt;8&gt;" in html
    assert "Word order: attention mass per word" in html and "data:image/png;base64" in html
    assert "Not shown" in html  # one seed for the third prompt: the variance split says why it is missing
    page = report([], tmp_path / "r.html", sweep=index, quiet=True).read_text()
    assert 'id="sweep-1"' in page and 'id="sweep-2"' in page and "<h2>Sweep</h2>" in page
    assert len(done_runs(index)) == len(index) - 1
