"""The evaluation's scoring on ground truth: perfect pictures and perfect maps score 1.0; wrong ones do not."""

import numpy as np
import torch

from workbench.toy.evaluate import HELD_IN, Sample, score, specs_for
from workbench.toy.world import HELD_OUT, render, word_indices


def _perfect_samples(specs, seeds=(0, 1)):
    out = []
    for spec in specs:
        for seed in seeds:
            scene = render(spec, np.random.default_rng(seed))
            maps = torch.zeros(len(scene.caption.split()), 32, 32)  # (words, 32, 32)
            for obj, idx in zip(scene.objects, word_indices(spec)):
                for i in idx.values():
                    maps[i] = torch.from_numpy(obj.mask.astype(np.float32))
            out.append(Sample(spec, seed, scene.image, maps))
    return out


def test_caption_sets_are_disjoint_closed_under_swap_and_balanced():
    held_in, held_out = specs_for(HELD_IN), specs_for(HELD_OUT)
    assert len(held_in) == len(held_out) == 24
    assert not any(s.is_held_out() for s in held_in) and all(s.is_held_out() for s in held_out)
    for specs in (held_in, held_out):
        captions = {s.caption() for s in specs}
        assert all(s.swapped().caption() in captions for s in specs)
        relations = [s.relation for s in specs]
        assert len(set(relations)) == 4


def test_ground_truth_scores_perfectly():
    r = score(_perfect_samples(specs_for(HELD_IN)))
    assert r["images"] == 48 and r["swap_pairs"] == 24
    assert r["object_acc"] == r["relation_acc"] == r["swap_flip"] == 1.0
    assert r["iou_color"] == r["iou_shape"] == 1.0


def test_swapped_pictures_and_wrong_maps_are_caught():
    samples = _perfect_samples(specs_for(HELD_OUT)[:4])
    # draw every picture as its swapped caption would: placements now contradict the words
    wrong = []
    for s in samples:
        scene = render(s.spec.swapped(), np.random.default_rng(s.seed))
        wrong.append(Sample(s.spec, s.seed, scene.image, s.word_maps))  # maps still on the old places
    r = score(wrong)
    assert r["object_acc"] == 1.0  # the right objects are still there
    assert r["relation_acc"] == 0.0 and r["swap_flip"] == 0.0
    assert r["iou_color"] < 0.2 and r["iou_shape"] < 0.2
