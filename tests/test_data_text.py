"""Tokenizers (bytes, CLIP BPE, HF tokenizer.json) and the tokenize op in a pipeline."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import data_files as files  # noqa: E402
from vitjax.data import bad_input, get_tokenizer, train_iterator  # noqa: E402
from vitjax.data.text import ByteTokenizer, find_clip_bpe  # noqa: E402


def test_byte_tokenizer():
    tok = get_tokenizer("bytes")
    ids, cut = tok.tokenize("hé!", 8)
    assert ids.dtype == np.int32 and ids.tolist() == [1, 107, 198, 172, 36, 2, 0, 0] and not cut
    ids, cut = tok.tokenize("abcdefgh", 6)
    assert ids.tolist() == [1, 100, 101, 102, 103, 2] and cut          # the end token stays last
    assert ByteTokenizer().decode(ids) == "abcd" and tok.vocab_size == 259


try:
    _CLIP = find_clip_bpe()
except FileNotFoundError:
    _CLIP = None


@pytest.mark.skipif(_CLIP is None, reason="open_clip (with its BPE vocabulary) is not installed")
def test_clip_bpe_matches_open_clip():
    tok = get_tokenizer("clip")
    # Reference ids from open_clip 3.3.0: open_clip.tokenize(texts, context_length=8).
    texts = ["a photo of a cat", "A  Photo of TWO dogs, running!!", "café ☕ &amp; naïve résumés",
             "it's 2024: don't stop", "supercalifragilisticexpialidocious", "寿司とお茶"]
    expect = [[49406, 320, 1125, 539, 320, 2368, 49407, 0],
              [49406, 320, 1125, 539, 1237, 3255, 267, 49407],
              [49406, 15304, 26561, 261, 1097, 35689, 563, 49407],
              [49406, 585, 568, 273, 271, 273, 275, 49407],
              [49406, 1642, 2857, 13093, 2076, 5868, 26850, 49407],
              [49406, 161, 107, 123, 34517, 116, 34671, 49407]]
    got = [tok.tokenize(t, 8) for t in texts]
    assert [g[0].tolist() for g in got] == expect
    assert [g[1] for g in got] == [False, True, True, True, True, True]
    assert tok.vocab_size == 49408 and tok.encode("a photo of a cat") == [320, 1125, 539, 320, 2368]


def test_hf_tokenizer_json(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, processors

    vocab = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[UNK]": 3, "a": 4, "photo": 5, "of": 6, "cat": 7}
    t = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                     special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    path = str(tmp_path / "tokenizer.json")
    t.save(path)
    tok = get_tokenizer(path)
    ids, cut = tok.tokenize("a photo of a dog", 9)
    assert ids.tolist() == [1, 4, 5, 6, 4, 3, 2, 0, 0] and not cut
    ids, cut = tok.tokenize("a photo of a cat", 4)
    assert ids.tolist() == [1, 4, 5, 2] and cut                         # [SEP] kept last
    assert tok.vocab_size == 8 and tok.pad_id == 0
    with pytest.raises(FileNotFoundError, match="tokenizer file /nope/tokenizer.json does not exist"):
        get_tokenizer("hf", "/nope/tokenizer.json")
    with pytest.raises(ValueError, match="unknown tokenizer 'sentencepiece'; use 'bytes', 'clip' or 'hf'"):
        get_tokenizer("sentencepiece")


def test_tokenize_op_drops_empty_captions_and_counts_truncation(caplog):
    bad_input.reset_counts()
    captions = ["a short one", "", "   ", "x" * 40, "ok"] * 4
    src = [{"image": files.jpeg(16, 16, i), "text": c, "file_name": f"{i}.jpg"} for i, c in enumerate(captions)]
    ops = [dict(op="decode_center_crop", size=8), dict(op="tokenize", tokenizer="bytes", context_length=12)]
    with caplog.at_level(logging.WARNING, logger="vitjax.data"):
        batches = [next(it) for it in [train_iterator(src, ops, 4, seed=0, num_threads=1)] for _ in range(6)]
    b = batches[0]
    assert sorted(b) == ["image", "tokens"] and b["tokens"].shape == (4, 12) and b["tokens"].dtype == np.int32
    toks = np.concatenate([x["tokens"] for x in batches])
    assert len(toks) == 24 and (toks[:, 0] == 1).all()
    assert (toks == 2).any(1).all()                                     # every row has its end token
    c = bad_input.counts()
    assert c["dropped/empty caption"] >= 8 and c["truncated_captions"] >= 4
    assert "bad_examples" not in c                                      # empty captions are not corrupt data
    assert any(r.getMessage() == "1 caption(s) truncated to context_length=12 tokens so far in this process; "
               "raise context_length to keep more text" for r in caplog.records)
