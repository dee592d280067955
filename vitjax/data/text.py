"""Tokenizers for captions, and the ``tokenize`` op (CLIP-style image-text training).

    dict(op="tokenize", tokenizer="bytes", context_length=64)          # no vocabulary file needed
    dict(op="tokenize", tokenizer="clip", context_length=77)           # CLIP BPE (open_clip's file)
    dict(op="tokenize", tokenizer="hf", path="tokenizer.json")         # any HF `tokenizers` JSON

``tokens`` comes out as int32 [context_length]: start token, ids, end token, then padding. Longer
captions are cut so that the end token stays last (as CLIP does) and are counted, with a warning
at the 1st, 10th, 100th, ... cut; empty captions are dropped and counted.
"""
from __future__ import annotations

import functools
import gzip
import html
import importlib.util
import logging
import os
import re
from typing import Sequence

import numpy as np

from vitjax.data.bad_input import SkipExample, count
from vitjax.data.image_ops import deterministic
from vitjax.data.registry import register_op

log = logging.getLogger("vitjax.data")


class Tokenizer:
    """The interface: ``encode(text) -> ids`` (no special tokens), ``vocab_size``, ``pad_id``,
    ``sot_id`` / ``eot_id`` (None when the tokenizer adds none), and ``tokenize`` below."""
    vocab_size: int
    pad_id: int = 0
    sot_id: int | None = None
    eot_id: int | None = None

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def tokenize(self, text: str, context_length: int) -> tuple[np.ndarray, bool]:
        """(int32 [context_length], whether the caption was truncated)."""
        head = [self.sot_id] if self.sot_id is not None else []
        tail = [self.eot_id] if self.eot_id is not None else []
        room = context_length - len(head) - len(tail)
        if room < 1:
            raise ValueError(f"context_length={context_length} leaves no room for text")
        ids = self.encode(text)
        seq = head + ids[:room] + tail
        out = np.full((context_length,), self.pad_id, np.int32)
        out[:len(seq)] = seq
        return out, len(ids) > room


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes: pad 0, start 1, end 2, byte b -> b + 3 (vocab 259). Needs no vocabulary file
    and never maps text to an unknown token; sequences are ~4x longer than BPE for English."""
    vocab_size = 259
    pad_id, sot_id, eot_id = 0, 1, 2
    offset = 3

    def encode(self, text: str) -> list[int]:
        return [b + self.offset for b in text.encode("utf-8")]

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) - self.offset for i in ids if int(i) >= self.offset).decode("utf-8", "replace")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table: printable Latin-1 bytes map to
    themselves, the other 68 bytes to characters from U+0100 on, in byte order. The dict's order
    (printable bytes first) is the order of the first 256 vocabulary entries."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in keep}
    rest = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + i) for i, b in enumerate(rest)})
    return table


def find_clip_bpe() -> str:
    """The path of ``bpe_simple_vocab_16e6.txt.gz`` inside an installed open_clip (not imported)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = os.path.join(folder, "bpe_simple_vocab_16e6.txt.gz")
            if os.path.isfile(path):
                return path
    raise FileNotFoundError(
        "the CLIP BPE vocabulary (bpe_simple_vocab_16e6.txt.gz) was not found: `pip install "
        "open_clip_torch`, or pass path=... to the file from the openai/CLIP repository")


class ClipBpeTokenizer(Tokenizer):
    """CLIP's byte-level BPE (Radford et al. 2021): lower-cased, ftfy/HTML-cleaned text split by
    CLIP's regex, each piece merged by rank. ``<start_of_text>`` = 49406, ``<end_of_text>`` =
    49407, pad 0, vocab 49408 with the standard file (ids match open_clip's tokenizer)."""

    NUM_MERGES = 49152 - 256 - 2     # what CLIP uses of its merges file

    def __init__(self, path: str | None = None):
        try:
            import regex  # optional dependency, needed only by the CLIP tokenizer
        except ImportError as e:
            raise ImportError("the CLIP tokenizer needs the `regex` package: pip install regex") from e
        path = path or find_clip_bpe()
        with gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1:self.NUM_MERGES + 1] if line.strip()]
        self.byte_char = _bytes_to_unicode()
        chars = list(self.byte_char.values())
        vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
        vocab += ["<start_of_text>", "<end_of_text>"]
        self.ids = {tok: i for i, tok in enumerate(vocab)}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.vocab_size = len(vocab)
        self.sot_id, self.eot_id, self.pad_id = self.ids["<start_of_text>"], self.ids["<end_of_text>"], 0
        self._split = regex.compile(r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|"""
                                    r"""[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)
        self._cache: dict[str, list[str]] = {}
        try:
            import ftfy  # optional dependency: without it text is not unicode-fixed
            self._fix = ftfy.fix_text
        except ImportError:
            self._fix = lambda s: s

    @staticmethod
    def _merge_pair(parts: list[str], a: str, b: str) -> list[str]:
        out, i = [], 0
        while i < len(parts):
            if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                out.append(a + b)
                i += 2
            else:
                out.append(parts[i])
                i += 1
        return out

    def _bpe(self, piece: str) -> list[str]:
        """Repeatedly merges the adjacent pair of lowest rank until no known pair is left."""
        if piece in self._cache:
            return self._cache[piece]
        parts = list(piece[:-1]) + [piece[-1] + "</w>"]
        while len(parts) > 1:
            rank, a, b = min((self.ranks.get(p, float("inf")), *p) for p in zip(parts, parts[1:]))
            if rank == float("inf"):
                break
            parts = self._merge_pair(parts, a, b)
        if len(self._cache) < 100_000:
            self._cache[piece] = parts
        return parts

    def clean(self, text: str) -> str:
        text = html.unescape(html.unescape(self._fix(text))).strip()
        return re.sub(r"\s+", " ", text).strip().lower()

    def encode(self, text: str) -> list[int]:
        ids = []
        for piece in self._split.findall(self.clean(text)):
            chars = "".join(self.byte_char[b] for b in piece.encode("utf-8"))
            ids += [self.ids[p] for p in self._bpe(chars)]
        return ids


class HFTokenizer(Tokenizer):
    """Any Hugging Face ``tokenizer.json`` through the ``tokenizers`` library; its own
    post-processor adds the special tokens (e.g. BERT's [CLS] ... [SEP]). On truncation a final
    special token is kept last."""

    def __init__(self, path: str):
        try:
            from tokenizers import Tokenizer as _Tok  # optional dependency, needed only for "hf"
        except ImportError as e:
            raise ImportError("HF tokenizers need the `tokenizers` package: pip install tokenizers") from e
        if not os.path.isfile(path):
            raise FileNotFoundError(f"tokenizer file {path} does not exist (expected a tokenizer.json)")
        self.path = path
        self._tok = _Tok.from_file(path)
        self._tok.no_truncation()
        self._tok.no_padding()
        self.vocab_size = self._tok.get_vocab_size()
        pad = None
        for name in ("<pad>", "[PAD]", "<|pad|>", "<|endoftext|>"):
            pad = self._tok.token_to_id(name)
            if pad is not None:
                break
        self.pad_id = 0 if pad is None else int(pad)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def tokenize(self, text: str, context_length: int) -> tuple[np.ndarray, bool]:
        enc = self._tok.encode(text)
        ids, special = list(enc.ids), list(enc.special_tokens_mask)
        truncated = len(ids) > context_length
        if truncated:
            ids = ids[:context_length - 1] + [ids[-1]] if special[-1] else ids[:context_length]
        out = np.full((context_length,), self.pad_id, np.int32)
        out[:len(ids)] = ids
        return out, truncated


@functools.lru_cache(maxsize=8)
def get_tokenizer(name: str = "bytes", path: str | None = None) -> Tokenizer:
    """``"bytes"``, ``"clip"`` (``path``: a BPE merges file; default: open_clip's), or ``"hf"``
    (``path``: tokenizer.json; a name ending in .json is taken as that path)."""
    if name.endswith(".json"):
        name, path = "hf", name
    if name == "bytes":
        return ByteTokenizer()
    if name == "clip":
        return ClipBpeTokenizer(path)
    if name == "hf":
        if not path:
            raise ValueError("tokenizer='hf' needs path='.../tokenizer.json'")
        return HFTokenizer(path)
    raise ValueError(f"unknown tokenizer {name!r}; use 'bytes', 'clip' or 'hf' (with path=...)")


def _note_truncation(context_length: int) -> None:
    n = count("truncated_captions")
    if n == 10 ** int(round(np.log10(n))):
        log.warning("%d caption(s) truncated to context_length=%d tokens so far in this process; "
                    "raise context_length to keep more text", n, context_length)


@register_op("tokenize")
def tokenize(tokenizer: str = "bytes", context_length: int = 77, path: str | None = None,
             key: str = "text", out_key: str = "tokens"):
    """Caption ``key`` (str) -> ``out_key`` int32 [context_length]; empty captions are dropped.
    Deterministic: the in-memory path tokenizes each record once."""
    tok = get_tokenizer(tokenizer, path)

    def op(ex, rng):
        text = ex.get(key)
        if isinstance(text, (bytes, np.bytes_)):
            text = bytes(text).decode("utf-8", "replace")
        if text is None or not str(text).strip():
            raise SkipExample("empty caption")
        ids, truncated = tok.tokenize(str(text), context_length)
        if truncated:
            _note_truncation(context_length)
        return dict(ex, **{out_key: ids})
    return deterministic(op)
