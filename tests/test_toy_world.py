"""The toy world: masks, layouts, captions and the held-out split."""

import numpy as np
import pytest

from workbench.toy.world import (
    HELD_OUT,
    RELATIONS,
    SIZE,
    ObjectSpec,
    SceneSpec,
    caption_corpus,
    render,
    sample_scene,
    training_batch,
)


def _scenes(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, held_out=None) for _ in range(n)]


def test_masks_cover_exactly_the_non_white_pixels_and_are_disjoint():
    for scene in _scenes():
        non_white = (scene.image != 255).any(-1)
        masks = [o.mask for o in scene.objects]
        union = np.logical_or.reduce(masks)
        assert np.array_equal(union, non_white), scene.caption
        if len(masks) == 2:
            assert not (masks[0] & masks[1]).any(), scene.caption
        for obj in scene.objects:
            # every masked pixel carries the object's colour
            colors = np.unique(scene.image[obj.mask], axis=0)
            assert len(colors) == 1


def test_objects_stand_in_the_halves_their_relation_names():
    half = SIZE // 2
    for scene in _scenes(300, seed=1):
        if len(scene.objects) != 2:
            continue
        a, b = scene.objects
        xs_a, ys_a = np.nonzero(a.mask)[1], np.nonzero(a.mask)[0]
        xs_b, ys_b = np.nonzero(b.mask)[1], np.nonzero(b.mask)[0]
        rel = scene.spec.relation
        if rel == "left of":
            assert xs_a.max() < half <= xs_b.min()
        elif rel == "right of":
            assert xs_b.max() < half <= xs_a.min()
        elif rel == "above":
            assert ys_a.max() < half <= ys_b.min()
        else:
            assert ys_b.max() < half <= ys_a.min()


def test_word_order_swap_swaps_places():
    spec = SceneSpec((ObjectSpec("red", "circle"), ObjectSpec("blue", "square")), "left of")
    a = render(spec, np.random.default_rng(3))
    b = render(spec.swapped(), np.random.default_rng(3))
    assert a.caption == "a red circle left of a blue square"
    assert b.caption == "a blue square left of a red circle"
    assert a.objects[0].center[0] < 16 < a.objects[1].center[0]  # red left
    assert b.objects[1].center[0] > 16 > b.objects[0].center[0]  # blue left, red right
    # the other phrasing of the same picture names the same layout
    other = SceneSpec((ObjectSpec("blue", "square"), ObjectSpec("red", "circle")), "right of")
    assert other.canonical() == spec.canonical() == ("red", "circle", "h", "blue", "square")


def test_word_indices_point_at_the_objects_words():
    for scene in _scenes(100, seed=2):
        words = scene.caption.split()
        for obj in scene.objects:
            for role, idx in obj.word_indices.items():
                assert words[idx] == obj.words[role]


def test_rendering_is_deterministic_from_the_seed():
    a, b = _scenes(20, seed=5), _scenes(20, seed=5)
    assert [s.caption for s in a] == [s.caption for s in b]
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))


def test_training_batches_exclude_held_out_layouts_and_balance_relations():
    rng = np.random.default_rng(0)
    batch = training_batch(rng, 400, p_single=0.0)
    assert not any(s.spec.is_held_out() for s in batch)
    counts = {r: sum(s.spec.relation == r for s in batch) for r in RELATIONS}
    assert set(counts.values()) == {100}


def test_held_out_list_is_closed_under_swapping():
    for c1, s1, axis, c2, s2 in HELD_OUT:
        assert (c2, s2, axis, c1, s1) in HELD_OUT
        assert c1 != c2


def test_held_out_sampling_and_corpus():
    rng = np.random.default_rng(0)
    assert all(sample_scene(rng, held_out=True).spec.is_held_out() for _ in range(20))
    corpus = caption_corpus(50)
    assert len(corpus) == 50 and all(c.startswith("a ") for c in corpus)


def test_unknown_shape_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        render(SceneSpec((ObjectSpec("red", "star"),)), np.random.default_rng(0))
