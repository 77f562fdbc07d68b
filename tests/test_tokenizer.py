"""The tiny tokenizer keeps the words of grounded answers whole, so a model trained from scratch copies them as
single tokens."""

import re

from training.synthetic.dataset import SyntheticDataset
from training.synthetic.world import CATEGORIES, DIRECTIONS, PALETTE, SIZE_SCALE, WorldConfig
from vglamm.modeling.configuration import LanguageModelConfig
from vglamm.modeling.language_model import SEG_TOKEN, build_tokenizer, train_tiny_tokenizer


def test_tiny_tokenizer_is_deterministic():
    a, b = train_tiny_tokenizer(), train_tiny_tokenizer()
    text = "Sure, it is <p> the large cyan car </p> [SEG]."
    assert a.get_vocab() == b.get_vocab() and a(text)["input_ids"] == b(text)["input_ids"]


def test_synthetic_world_words_are_single_tokens():
    tok = train_tiny_tokenizer()
    world_words = [*CATEGORIES, *DIRECTIONS, *PALETTE, *SIZE_SCALE]
    split = {w: tok.tokenize(" " + w) for w in world_words if len(tok.tokenize(" " + w)) != 1}
    assert not split, f"world words split into pieces: {split}"
    # and every word the dataset writes (questions, GCG captions, all three answer styles)
    words = set()
    for answers in ("plain", "phrase", "name"):
        ds = SyntheticDataset(40, config=WorldConfig(num_frames=8), p_gcg=0.4, exprs_per_sample=3, answers=answers)
        for i in range(len(ds)):
            for turn in ds[i].conversation:
                words.update(re.findall(r"[A-Za-z]+", turn["content"].replace(SEG_TOKEN, "")))
    split = sorted(w for w in words if len(tok.tokenize(" " + w)) != 1)
    assert not split, f"dataset words split into pieces: {split}"


def test_seg_token_is_one_token_after_a_name():
    tok = build_tokenizer(LanguageModelConfig(pretrained=None, llm_config=dict(model_type="phi3")))
    pieces = tok.tokenize("Sure, it is <p> the small brown ball </p> [SEG].")
    assert SEG_TOKEN in pieces and pieces.count(SEG_TOKEN) == 1
    assert ["Ġsmall", "Ġbrown", "Ġball"] == pieces[pieces.index("<p>") + 2:pieces.index("<p>") + 5]
