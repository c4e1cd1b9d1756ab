"""Seed figures carry the grid's images, the distances and the shares."""

import numpy as np
import pytest
import torch
from PIL import Image
from test_analysis_fakes import (
    fake_run,
    one_thread,  # noqa: F401  (autouse fixture)
)

from workbench.analysis import SeedGrid, seed_study, trajectory_distances, variance_split
from workbench.viz import seed_grid_figure, seed_panels, trajectory_distance_figure, variance_figure


def test_seed_figures():
    runs = [[fake_run(prompt=p, seed=s) for s in (0, 1, 2)] for p in ("a red circle", "a blue square")]
    for i, row in enumerate(runs):
        for j, r in enumerate(row):
            r.image = Image.fromarray(np.full((8, 16, 3), 10 * i + j, dtype=np.uint8))
    grid = SeedGrid(prompts=["a red circle", "a blue square"], seeds=[0, 1, 2], runs=runs)
    fig = seed_grid_figure(grid)
    assert len(fig.data) == 6 and np.asarray(fig.data[4].z)[0, 0, 0] == 11  # prompt 1, seed 1
    # The prompts are row labels: horizontal, left of their rows, each at its row's middle.
    rows = {a.text: a.y for a in fig.layout.annotations if a.xref == "paper" and a.xanchor == "right"}
    assert set(rows) == {"a red circle", "a blue square"}
    assert rows["a blue square"] == pytest.approx(sum(fig.layout.yaxis4.domain) / 2)
    assert [a.text for a in fig.layout.annotations if a.text.startswith("seed")] == [
        "seed 0",
        "seed 1",
        "seed 2",
    ]
    la, lb = torch.zeros(6, 4, 4, 8), torch.ones(6, 4, 4, 8)
    dist = trajectory_distances([fake_run(latents=la), fake_run(latents=lb, seed=1)])
    tf = trajectory_distance_figure(dist)
    assert list(tf.data[0].y) == pytest.approx([1.0] * 5)
    split = variance_split(np.arange(24, dtype=float).reshape(2, 3, 4))
    vf = variance_figure(split)
    shares = {t.name: t.y[0] for t in vf.data}
    assert shares["prompt"] == pytest.approx(split.loc["prompt", "share"])
    assert sum(shares.values()) == pytest.approx(1.0)


def test_seed_panels_follow_what_the_study_holds():
    runs = [fake_run(prompt=p, seed=s) for p in ("a red circle", "a blue square") for s in (0, 1)]
    study = seed_study(runs, threshold=0.3)
    panels = seed_panels(study)
    assert [p.caption for p in panels] == [
        "Prompts × seeds",
        "Distance between trajectories of different seeds",
        "Commitment step",
        "How much is seed, how much is prompt",
    ]
    assert panels[2].figure is None and panels[2].table is study.commit_steps and "0.3" in panels[2].note
    assert len(panels[0].figure.data) == 4 and len(panels[3].figure.data) == 3  # 2 × 2 images; 3 shares
    one_seed = seed_panels(seed_study(runs[::2]))  # both prompts, seed 0 only
    assert [p.caption for p in one_seed] == ["Prompts × seeds", "Commitment step"]
