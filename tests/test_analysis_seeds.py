"""Seed grids, trajectory distances and the seed-vs-prompt variance split."""

import numpy as np
import pytest
import torch
from test_analysis_fakes import (
    fake_run,
    one_thread,  # noqa: F401  (autouse fixture)
)

from workbench.analysis import (
    COMMIT_THRESHOLD,
    SeedGrid,
    change_curves,
    commit_step,
    commit_steps,
    image_variance,
    map_variance,
    seed_grid,
    seed_study,
    step_variance,
    trajectory_distances,
    variance_split,
)


def test_variance_split_recovers_known_effects():
    rng = np.random.default_rng(0)
    P, S, F = 3, 4, 50
    a = rng.normal(size=(P, F)) * 2.0
    b = rng.normal(size=(S, F)) * 0.5
    a -= a.mean(0)  # centred effects: the split is then exact
    b -= b.mean(0)
    c = rng.normal(size=(P, S, F)) * 0.1
    c -= c.mean(0, keepdims=True)
    c -= c.mean(1, keepdims=True)
    y = 7.0 + a[:, None] + b[None] + c  # (P, S, F)
    df = variance_split(y)
    assert df.loc["prompt", "sum_sq"] == pytest.approx(S * (a**2).sum())
    assert df.loc["seed", "sum_sq"] == pytest.approx(P * (b**2).sum())
    assert df.loc["interaction", "sum_sq"] == pytest.approx((c**2).sum())
    assert df.loc["total", "sum_sq"] == pytest.approx(((y - y.mean((0, 1))) ** 2).sum())
    assert df.loc[["prompt", "seed", "interaction"], "share"].sum() == pytest.approx(1.0)
    assert df.loc["prompt", "dof"] == 2 * F and df.loc["interaction", "dof"] == 2 * 3 * F
    seed_only = variance_split(np.broadcast_to(b[None], (P, S, F)))
    assert seed_only.loc["seed", "share"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2 prompts and 2 seeds"):
        variance_split(np.zeros((1, 3, 4)))


def test_trajectory_distances_by_hand_and_model_mismatch():
    la = torch.zeros(6, 4, 4, 8)
    lb = torch.full((6, 4, 4, 8), 2.0)
    a, b = fake_run(latents=la, seed=0), fake_run(latents=lb, seed=1)
    df = trajectory_distances([a, b])
    assert df.x0_latent_rms.tolist() == pytest.approx([2.0] * 5)
    assert df.seed_a.unique().tolist() == [0] and df.seed_b.unique().tolist() == [1]
    with pytest.raises(ValueError, match="same model weights"):
        trajectory_distances([a, fake_run(sha="other")])


def test_seed_grid_on_tiny_model(tiny_pipe):
    prompts, seeds = ["a red circle", "a blue square"], [0, 1]
    grid = seed_grid(tiny_pipe, prompts, seeds, steps=2, guidance_scale=1.0)
    assert grid.run("a blue square", 1).seed == 1 and grid.run("a blue square", 1).prompt == "a blue square"
    assert torch.equal(grid.runs[0][1].noise, grid.runs[1][1].noise)  # same seed, same noise
    split = image_variance(grid)
    images = np.stack(
        [[np.asarray(r.image, float) / 255 for r in row] for row in grid.runs]
    )  # (2, 2, H, W, 3)
    # two-by-two grid: each effect is a contrast of the four cells
    d_prompt = (images[0] - images[1]).sum(0)  # (sum over seeds) prompt contrast
    d_seed = (images[:, 0] - images[:, 1]).sum(0)
    assert split.loc["prompt", "sum_sq"] == pytest.approx((d_prompt**2).sum() / 4)
    assert split.loc["seed", "sum_sq"] == pytest.approx((d_seed**2).sum() / 4)
    steps = step_variance(grid)
    assert sorted(steps.step.unique()) == [0, 1]
    maps = map_variance(grid, words=["a"])
    assert set(maps.component) == {"prompt", "seed", "interaction", "total"}
    with pytest.raises(ValueError, match="\\['circle'\\] are not in every prompt"):
        map_variance(grid, words=["circle"])
    dist = trajectory_distances(grid)
    assert len(dist) == 2 * 2  # one seed pair per prompt, two steps each
    with pytest.raises(ValueError, match="seeds must be distinct"):
        seed_grid(tiny_pipe, prompts, [1, 1])


def test_seed_grid_from_runs_arranges_prompts_by_seeds():
    runs = [fake_run(prompt=p, seed=sd) for sd in (4, 2) for p in ("a red circle", "a blue square")]
    grid = SeedGrid.from_runs(runs)
    assert grid.prompts == ["a red circle", "a blue square"] and grid.seeds == [4, 2]
    assert grid.run("a blue square", 2) is runs[3] and grid.run("a red circle", 2) is runs[2]
    with pytest.raises(ValueError, match="missing \\[\\('a blue square', 2\\)\\]"):
        SeedGrid.from_runs(runs[:3])


def test_commit_steps_by_hand():
    # Noise at 0, final latent at 1 (distance 1): x0 relative distances per step 1, 0.1, 0.5, 0.2, 0.
    lat = torch.zeros(6, 4, 4, 8)
    lat[5] = 1.0
    x0 = torch.stack([torch.full((4, 4, 8), v) for v in (0.0, 0.9, 0.5, 0.8, 1.0)])
    run = fake_run(latents=lat, x0=x0)
    assert COMMIT_THRESHOLD == 0.25
    table = commit_steps([run, fake_run(latents=lat, x0=x0, seed=1)])
    assert table.commitment_step.tolist() == [3, 3]  # last above 0.25 is step 2 (0.5)
    assert table.seed.tolist() == [0, 1] and table.steps.tolist() == [5, 5]
    assert commit_steps([run], threshold=0.6).commitment_step.tolist() == [1]  # only step 0 above 0.6
    never = x0.clone()
    never[-1] = 0.0
    assert commit_step(change_curves(fake_run(latents=lat, x0=never))) is None


def test_seed_study_has_what_the_grid_allows():
    one_prompt = [fake_run(prompt="a red circle", seed=sd) for sd in (0, 1)]
    study = seed_study(one_prompt, threshold=0.3)
    assert study.grid.seeds == [0, 1] and study.threshold == 0.3
    assert study.commit_steps.attrs["threshold"] == 0.3 and len(study.commit_steps) == 2
    assert study.distances is not None and study.step_variance is None
    single = seed_study(one_prompt[:1])
    assert single.distances is None and single.step_variance is None
    two = [fake_run(prompt=p, seed=sd) for p in ("a red circle", "a blue square") for sd in (0, 1)]
    both = seed_study(two)
    assert both.step_variance is not None and both.commit_steps.prompt.tolist() == [r.prompt for r in two]
