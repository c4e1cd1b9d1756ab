"""The toy BPE tokenizer loads in CLIPTokenizer and splits words as designed."""

import itertools

import pytest
from transformers import CLIPTokenizer

from workbench.toy.tokenizer import MODEL_MAX_LENGTH, save_tokenizer, train_bpe, word_token_groups
from workbench.toy.world import COLORS, SHAPES, ObjectSpec, SceneSpec, all_words, caption_corpus


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    raw = train_bpe()
    folder = save_tokenizer(tmp_path_factory.mktemp("tok"), raw)
    return raw, CLIPTokenizer.from_pretrained(folder)


def test_clip_tokenizer_matches_the_trained_bpe(tokenizers):
    raw, clip = tokenizers
    for caption in caption_corpus(300, seed=9):
        ids = clip(caption).input_ids
        tokens = clip.convert_ids_to_tokens(ids)
        assert tokens[0] == "<|startoftext|>" and tokens[-1] == "<|endoftext|>"
        assert tokens[1:-1] == raw.encode(caption).tokens
        assert clip.decode(ids, skip_special_tokens=True) == caption


def test_expected_sub_word_splits(tokenizers):
    _, clip = tokenizers
    assert clip.tokenize("yellow") == ["yel", "low</w>"]
    assert clip.tokenize("painting") == ["pain", "ting</w>"]
    assert clip.tokenize("red") == ["red</w>"]
    split = [w for w in all_words() if len(clip.tokenize(w)) > 1]
    assert 3 <= len(split) <= 8, split


def test_longest_caption_fits_the_context(tokenizers):
    _, clip = tokenizers
    assert clip.model_max_length == MODEL_MAX_LENGTH
    longest = 0
    for (c1, s1), (c2, s2) in itertools.product(itertools.product(COLORS, SHAPES), repeat=2):
        if c1 == c2:
            continue
        for style, rel, size in itertools.product(
            ("painting", "sketch"), ("left of", "right of", "above", "below"), ("small", "big")
        ):
            spec = SceneSpec((ObjectSpec(c1, s1, size), ObjectSpec(c2, s2, size)), rel, style)
            longest = max(longest, len(clip(spec.caption()).input_ids))
    assert 15 <= longest <= MODEL_MAX_LENGTH


def test_word_groups_follow_end_of_word_markers(tokenizers):
    _, clip = tokenizers
    caption = "a painting of a yellow circle below a red square"
    ids = clip(caption, padding="max_length", max_length=clip.model_max_length).input_ids
    groups = word_token_groups(clip.convert_ids_to_tokens(ids))
    assert len(groups) == len(caption.split())
    tokens = clip.convert_ids_to_tokens(ids)
    assert ["".join(tokens[p] for p in g).replace("</w>", "") for g in groups] == caption.split()
    assert groups[4] == [6, 7]  # BOS, a, pain, ting, of, a, then yel + low</w>
