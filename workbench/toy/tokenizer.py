"""A small CLIP-style BPE tokenizer trained on the toy world's captions.

Saved as vocab.json + merges.txt (+ tokenizer_config.json, special_tokens_map.json) so that
`transformers.CLIPTokenizer.from_pretrained(folder)` loads it: lowercase, `</w>` end-of-word
suffix, `<|startoftext|>` / `<|endoftext|>` specials, `<|endoftext|>` as padding.
The vocabulary is deliberately small so that some words stay split into several sub-word tokens
(e.g. yellow, below, painting), which the workbench's word<->token alignment must handle.

Example:
    save_tokenizer(folder)
    tok = CLIPTokenizer.from_pretrained(folder)
    tok("a yellow circle").input_ids
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from .world import all_words, caption_corpus

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MODEL_MAX_LENGTH = 20  # longest caption is 14 words -> at most 18 tokens + BOS/EOS; checked in tests
VOCAB_SIZE = 100  # an upper bound: the caption alphabet plus merges stops near 91 tokens
MAX_TOKEN_LENGTH = 6  # longer words (yellow, circle, painting, ...) stay split into sub-words
CORPUS_SIZE = 4000


def train_bpe(
    vocab_size: int = VOCAB_SIZE,
    max_token_length: int | None = MAX_TOKEN_LENGTH,
    n_captions: int = CORPUS_SIZE,
    seed: int = 0,
) -> Tokenizer:
    """Train a BPE model with CLIP conventions on world captions."""
    tok = Tokenizer(models.BPE(unk_token=None, end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS],
        end_of_word_suffix="</w>",
        initial_alphabet=list("abcdefghijklmnopqrstuvwxyz"),
        max_token_length=max_token_length,
        show_progress=False,
    )
    tok.train_from_iterator(caption_corpus(n_captions, seed=seed), trainer=trainer)
    return tok


def _vocab_and_merges(tok: Tokenizer) -> tuple[dict[str, int], list[str]]:
    """Vocab in CLIP order (letters, letters+</w>, merges in order, specials) and merges."""
    model = json.loads(tok.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    letters = list("abcdefghijklmnopqrstuvwxyz")
    vocab_order = letters + [c + "</w>" for c in letters]
    for merge in merges:
        merged = merge.replace(" ", "")
        if merged not in vocab_order:
            vocab_order.append(merged)
    vocab_order += [BOS, EOS]
    return {t: i for i, t in enumerate(vocab_order)}, merges


def save_tokenizer(folder: str | Path, tok: Tokenizer | None = None) -> Path:
    """Write vocab.json, merges.txt and the configs CLIPTokenizer expects into folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = _vocab_and_merges(tok or train_bpe())
    (folder / "vocab.json").write_text(json.dumps(vocab, indent=1, ensure_ascii=False) + "\n")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
        "clean_up_tokenization_spaces": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    specials = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")
    return folder


def word_token_groups(tokens: list[str]) -> list[list[int]]:
    """Group token positions into words by the `</w>` end-of-word marker (specials skipped).

    Args:
        tokens: token strings of one caption, e.g. from CLIPTokenizer.convert_ids_to_tokens.
    Returns:
        One list of token positions per word, in word order.
    """
    groups: list[list[int]] = []
    current: list[int] = []
    for pos, tok in enumerate(tokens):
        if tok in (BOS, EOS):
            continue
        current.append(pos)
        if tok.endswith("</w>"):
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups


def vocabulary_words() -> list[str]:
    """Every caption word (re-exported for tests)."""
    return all_words()
