"""The experiment index: one row per saved run, saved as parquet beside the runs."""

import shutil

import pandas as pd
import pytest

from workbench import generate, save_run
from workbench.store.index import COLUMNS, build_index, filter_index, load_index
from workbench.store.runs import image_hash


@pytest.fixture(scope="module")
def root(tiny_pipe, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for i, (prompt, seed) in enumerate([("a red circle", 4), ("a blue square", 2), ("a red square", 9)]):
        save_run(generate(tiny_pipe, prompt, seed=seed, steps=2, progress=False), root / "batch" / f"r{i}")
    (root / "junk").mkdir()
    (root / "junk" / "run.json").write_text("{broken")
    return root


def test_index_rows_and_columns(root):
    df = build_index(root)
    assert list(df.columns) == COLUMNS
    assert sorted(df.path) == ["batch/r0", "batch/r1", "batch/r2"]  # the broken folder is left out
    row = df[df.path == "batch/r1"].iloc[0]
    assert row.prompt == "a blue square" and row.seed == 2 and row.steps == 2 and row.complete
    assert row.scheduler == "DDIMScheduler" and row.model
    from workbench import load_run

    assert row.image_hash == image_hash(load_run(root / "batch" / "r1").image)
    assert isinstance(df.created.dtype, pd.DatetimeTZDtype)


def test_index_saved_as_parquet(root, tiny_pipe, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(root, runs)
    saved = load_index(runs)
    assert (runs / "index.parquet").exists()
    # change the runs on disk after the index was saved: one replaced, one removed
    changed = generate(tiny_pipe, "a green triangle", seed=5, steps=2, progress=False)
    save_run(changed, runs / "batch" / "r1", overwrite=True)
    shutil.rmtree(runs / "batch" / "r2")
    stale = load_index(runs, refresh=False)  # the saved file, not a rescan
    pd.testing.assert_frame_equal(saved, stale)
    assert sorted(stale.path) == ["batch/r0", "batch/r1", "batch/r2"]
    assert stale.set_index("path").prompt["batch/r1"] == "a blue square"
    fresh = load_index(runs, refresh=True)
    assert sorted(fresh.path) == ["batch/r0", "batch/r1"]
    assert fresh.set_index("path").prompt["batch/r1"] == "a green triangle"
    pd.testing.assert_frame_equal(fresh, load_index(runs, refresh=False))  # the rescan was saved


def test_filter_and_sort(root):
    df = build_index(root)
    assert filter_index(df, "RED", sort_by="seed", ascending=True).seed.tolist() == [4, 9]
    with pytest.raises(ValueError, match="sort_by"):
        filter_index(df, sort_by="nope")


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError):
        build_index(tmp_path / "absent")


def test_a_sweeps_folder_is_not_indexed_over(root, tmp_path):
    """A sweep's index.parquet (sweep_id, status, error, failed rows) is the sweep's own: save_index and
    load_index refuse to write over it, whichever mark the folder has; build_index still lists its runs."""
    from workbench.store.index import SweepFolderError, save_index

    by_index, by_record = tmp_path / "by-index", tmp_path / "by-record"
    for out in (by_index, by_record):
        shutil.copytree(root / "batch", out / "runs")
    rows = pd.DataFrame({"sweep_id": ["abc"], "request_id": ["r0"], "status": ["failed"], "error": ["x"]})
    rows.to_parquet(by_index / "index.parquet")
    before = (by_index / "index.parquet").read_bytes()
    (by_record / "sweeps").mkdir()
    (by_record / "sweeps" / "0123456789ab.json").write_text("{}")
    for out in (by_index, by_record):
        for write in (save_index, load_index, lambda r: load_index(r, refresh=False)):
            with pytest.raises(
                SweepFolderError, match="is a sweep's folder: its index.parquet is the sweep's own"
            ):
                write(out)
        assert len(build_index(out)) == 3  # reading is fine; so is indexing OUT/runs
    assert (by_index / "index.parquet").read_bytes() == before
    assert not (by_record / "index.parquet").exists()
    assert len(load_index(by_index / "runs")) == 3
    # a folder merely holding a "sweeps" subfolder of runs is not a sweep's folder
    plain = tmp_path / "plain"
    shutil.copytree(root / "batch", plain / "sweeps" / "batch")
    assert len(load_index(plain)) == 3
