"""Edits on the embedded model, judged by the toy world's checker: what each edit does to the image.

The embedded model's text encoder is causal (CLIP), so a word's meaning also reaches the tokens after it:
ablating the colour word alone leaves the colour (the model reads it from the next tokens too), while
ablating it with the two words after it removes the colour. Injecting the swap's object-word attention
at every step moves the objects where the swap puts them; a switch at step 0 is the target prompt's run.
"""

import numpy as np
import pytest
import torch

from workbench import Edit, generate
from workbench.lab import relation_holds
from workbench.toy.checker import detect

SEEDS = range(4)
A = "a red circle left of a blue square"
B = "a blue square left of a red circle"


@pytest.fixture(scope="module")
def toy():
    import workbench

    return workbench.load_pipeline("toy")


def colours(run) -> set[str]:
    return set(detect(np.asarray(run.image.convert("RGB"))))


def test_ablating_the_colour_word_with_the_words_that_carry_it_removes_the_colour(toy):
    alone = [colours(generate(toy, A, seed=s, edits=[Edit.ablate("red")], progress=False)) for s in SEEDS]
    carried = [
        colours(generate(toy, A, seed=s, edits=[Edit.ablate(["red", "circle", "left"])], progress=False))
        for s in SEEDS
    ]
    assert sum("red" in found for found in alone) >= 3  # the causal encoder carries "red" onward
    assert sum("red" not in found for found in carried) >= 3  # ... and there it is removed
    assert all("blue" in found for found in carried)  # the other object keeps its colour


def test_injecting_the_swaps_object_attention_at_every_step_flips_placement(toy):
    words = ["red", "circle", "blue", "square"]
    flipped = 0
    for seed in SEEDS:
        plain = generate(toy, A, seed=seed, progress=False)
        assert relation_holds(plain) is True  # as written, before the edit
        edited = generate(toy, A, seed=seed, edits=[Edit.replace(B, words)], progress=False)
        flipped += relation_holds(edited, B) is True
    assert flipped >= 3


def test_switching_at_step_0_is_the_target_prompts_run(toy):
    switched = generate(toy, A, seed=0, edits=[Edit.switch(B, 0)], progress=False)
    target = generate(toy, B, seed=0, progress=False)
    assert torch.equal(switched.latents, target.latents)
    assert np.array_equal(np.asarray(switched.image), np.asarray(target.image))
