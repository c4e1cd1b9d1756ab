"""The checker scores rendered ground truth at 100% and rejects wrong pictures."""

import numpy as np

from workbench.toy.checker import detect, relation_holds, score_spec
from workbench.toy.world import ObjectSpec, SceneSpec, render, sample_scene


def test_checker_scores_rendered_ground_truth_perfectly():
    rng = np.random.default_rng(11)
    n, objects, relations, styles, two = 160, 0, 0, 0, 0
    for _ in range(n):
        scene = sample_scene(rng, held_out=None)
        r = score_spec(detect(scene.image), scene.spec)
        objects += r["objects"]
        styles += r["style"]
        if r["relation"] is not None:
            two += 1
            relations += r["relation"]
    assert objects == n
    assert two > 80 and relations == two
    assert styles / n >= 0.85  # small outlined triangles can look filled at 32x32


def test_detected_masks_match_ground_truth_masks():
    rng = np.random.default_rng(12)
    for _ in range(50):
        scene = sample_scene(rng, held_out=None)
        found = detect(scene.image)
        for obj in scene.objects:
            assert np.array_equal(found[obj.spec.color].mask, obj.mask)


def test_checker_rejects_wrong_shape_wrong_place_and_blank():
    spec = SceneSpec((ObjectSpec("red", "circle"), ObjectSpec("blue", "square")), "left of")
    scene = render(spec, np.random.default_rng(0))
    found = detect(scene.image)
    wrong_shape = SceneSpec((ObjectSpec("red", "triangle"), ObjectSpec("blue", "square")), "left of")
    assert score_spec(found, wrong_shape)["objects"] is False
    assert score_spec(found, spec.swapped())["relation"] is False
    assert score_spec(found, spec) == {"objects": True, "relation": True, "style": True}
    blank = np.full((32, 32, 3), 255, np.uint8)
    assert detect(blank) == {}
    assert score_spec(detect(blank), spec) == {"objects": False, "relation": False, "style": False}


def test_relation_uses_the_dominant_axis():
    assert relation_holds((5, 16), (25, 16), "left of")
    assert not relation_holds((5, 16), (25, 16), "right of")
    assert not relation_holds((14, 2), (16, 30), "left of")  # mostly vertical
    assert relation_holds((14, 2), (16, 30), "above")
