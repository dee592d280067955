"""Sparse attention patterns, exact, computed block-sparse: band (+ global tokens, Longformer,
Beltagy et al. 2020), dilated band, block-local, and BigBird's window + global + random blocks
(Zaheer et al. 2020).

Every pattern is a rule ``allowed(query position, key position)``; ``pattern_mask`` writes it out
as the explicit mask dense attention would need, and ``sparse_attention`` computes the same result
without the T x T matrix: the sequence is cut into query blocks of ``block_size``; each block
gathers only the K key blocks its rule can reach (a static plan, numpy) and takes one softmax over
those K x block_size keys, with the rule applied token by token inside them. Query blocks that see
everything (global tokens, BigBird's first and last block) run as dense rows. Memory and time grow
as T x K x block_size: linearly in T.
"""
from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np

from vitjax.models.attention_core import AttentionOptions, dense_attention, masked_softmax

__all__ = ["PATTERNS", "sparse_attention", "pattern_mask", "bigbird_random_blocks", "block_sparse_attention"]

log = logging.getLogger("vitjax")
PATTERNS = ("band", "dilated", "block_local", "bigbird")
_logged: set[str] = set()


def _log_once(msg: str) -> None:
    if msg not in _logged:
        _logged.add(msg)
        log.info(msg)


def bigbird_random_blocks(num_blocks: int, num_heads: int, num_random: int, seed: int) -> np.ndarray:
    """[H, num_blocks - 2, r] int: BigBird's random key blocks for query blocks 1..nb-2, drawn per head
    with ``np.random.RandomState(seed)`` from the blocks outside the row's window (i-1, i, i+1) and
    the two global blocks (0, nb-1), so no key block is counted twice. ``r`` is clamped to the blocks
    there are (logged)."""
    rng = np.random.RandomState(seed)
    rows = []
    for i in range(1, num_blocks - 1):
        legal = np.array([j for j in range(1, num_blocks - 1) if abs(j - i) > 1], np.int32)
        rows.append(legal)
    r = min([num_random] + [len(x) for x in rows]) if rows else 0
    if r < num_random:
        _log_once(f"bigbird: {num_random} random blocks asked for, but {num_blocks} blocks leave only {r} "
                  f"outside every row's window and the global blocks; using {r}")
    out = np.zeros((num_heads, max(num_blocks - 2, 0), r), np.int32)
    for i, legal in enumerate(rows):
        for h in range(num_heads):
            out[h, i] = rng.permutation(legal)[:r]
    return out


def _geometry(pattern: str, length: int, o: AttentionOptions):
    """(block_size, window, dilation, globals) after clamping to the sequence (logged)."""
    bs = max(1, min(o.block_size, length))
    window, dil, g = o.window, o.dilation, min(o.global_tokens, length)
    if pattern in ("band", "dilated") and window * (dil if pattern == "dilated" else 1) >= length:
        reach = length - 1
        new = max(1, reach // (dil if pattern == "dilated" else 1))
        _log_once(f"attention {pattern}: window {window} reaches past the sequence of {length} tokens; "
                  f"clamped to {new}")
        window = new
    return bs, window, dil, g


def _block_table(pattern: str, nb: int, bs: int, window: int, dil: int, g: int, random_blocks):
    """(key_blocks [Hp, nb, K] int, valid [Hp, nb, K] bool, dense query blocks): the static plan."""
    if pattern == "bigbird":
        r = random_blocks.shape[-1]
        hp = random_blocks.shape[0]
        kb = np.zeros((hp, nb, 5 + r), np.int32)
        for i in range(1, nb - 1):
            kb[:, i, :5] = [i - 1, i, i + 1, 0, nb - 1]
            kb[:, i, 5:] = random_blocks[:, i - 1]
        valid = np.ones_like(kb, bool)
        dense = {0, nb - 1}
    else:
        reach = window * (dil if pattern == "dilated" else 1)
        n = 0 if pattern == "block_local" else -(-reach // bs)
        offsets = np.arange(-n, n + 1)
        near = np.arange(nb)[:, None] + offsets[None]                       # [nb, 2n+1]
        ng = -(-g // bs)                                                    # blocks holding globals
        glob = np.broadcast_to(np.arange(ng), (nb, ng))
        kb = np.concatenate([np.clip(near, 0, nb - 1), glob], axis=1)
        valid = np.concatenate([(near >= 0) & (near < nb), np.ones_like(glob, bool)], axis=1)
        kb, valid = kb[None], valid[None]
        dense = set(range(ng))
    # A key block listed twice in a row (a global block inside the window, row 1's window reaching
    # block 0) counts once: later copies are invalid.
    for c in range(1, kb.shape[-1]):
        valid[..., c] &= ~np.any((kb[..., :c] == kb[..., c:c + 1]) & valid[..., :c], axis=-1)
    return kb.astype(np.int32), valid, sorted(dense)


def _allowed(pattern, pq, pk, bs, window, dil, g, table):
    """bool rule on broadcast position arrays (numpy); ``table`` [Hp, nb, nb] for bigbird."""
    if pattern == "bigbird":
        if np.ndim(pq) == 2:              # dense rows [T, 1] x [1, S]: add the head axis
            pq, pk = pq[None], pk[None]
        heads = np.arange(table.shape[0]).reshape((-1,) + (1,) * (np.ndim(pk) - 1))
        ok = table[heads, pq // bs, pk // bs]
    elif pattern == "band":
        ok = np.abs(pq - pk) <= window
    elif pattern == "dilated":
        ok = (np.abs(pq - pk) <= window * dil) & ((pq - pk) % dil == 0)
    else:
        ok = (pq // bs) == (pk // bs)
    if g:
        ok = ok | (pq < g) | (pk < g)
    return ok


def _bigbird_table(nb: int, random_blocks: np.ndarray) -> np.ndarray:
    hp = random_blocks.shape[0]
    t = np.zeros((hp, nb, nb), bool)
    t[:, [0, nb - 1], :] = True
    t[:, :, [0, nb - 1]] = True
    for i in range(nb):
        t[:, i, max(0, i - 1):i + 2] = True
    for i in range(1, nb - 1):
        for h in range(hp):
            t[h, i, random_blocks[h, i - 1]] = True
    return t


def _plan(pattern, length, options, num_heads, random_blocks=None):
    bs, window, dil, g = _geometry(pattern, length, options)
    nb = -(-length // bs)
    table = None
    if pattern == "bigbird":
        if nb < 4:
            raise ValueError(f"bigbird needs at least 4 blocks of block_size={bs}, but the sequence has "
                             f"{length} tokens; lower model.attention_options.block_size")
        if random_blocks is None:
            random_blocks = bigbird_random_blocks(nb, num_heads, options.random_blocks, options.seed)
        table = _bigbird_table(nb, random_blocks)
    kb, valid, dense = _block_table(pattern, nb, bs, window, dil, g, random_blocks)
    rule = lambda pq, pk: _allowed(pattern, pq, pk, bs, window, dil, g, table)   # noqa: E731
    return bs, nb, kb, valid, dense, rule


def pattern_mask(pattern: str, length: int, options: AttentionOptions, num_heads: int = 1,
                 causal: bool = False, random_blocks=None) -> np.ndarray:
    """[1, Hp, T, T] bool: the explicit mask ``pattern`` equals (Hp = H for bigbird, else 1)."""
    if pattern not in PATTERNS:
        raise ValueError(f"unknown sparse pattern {pattern!r}; choose one of {PATTERNS}")
    *_, rule = _plan(pattern, length, options, num_heads, random_blocks)
    p = np.arange(length)
    m = rule(p[:, None], p[None, :])
    m = m if m.ndim == 3 else m[None]
    if causal:
        m = m & (p[None, :] <= p[:, None])
    return m[None]


def sparse_attention(q, k, v, *, pattern: str, options: AttentionOptions, mask=None, causal=False,
                     query_offset=0, dropout=None, random_blocks=None):
    """Exact ``pattern`` attention, [B, T, H, D] -> [B, T, H, D], computed block-sparse."""
    t, s = q.shape[1], k.shape[1]
    if t != s or not (isinstance(query_offset, int) and query_offset == 0):
        raise ValueError(f"{pattern} attention is a self-attention pattern: it needs as many queries as keys "
                         f"(got {t} and {s}) and no query offset; use model.attention='xla' here")
    bs, nb, kb, valid, dense, rule = _plan(pattern, t, options, q.shape[2], random_blocks)
    return block_sparse_attention(q, k, v, bs, kb, valid, dense, rule, mask=mask, causal=causal,
                                  dropout=dropout)


def _gather_mask(mask, rows, kb_r, bs, nb):
    """User mask [Bm, Hm, Tm, Sm] (Tm, Sm in {1, T}) -> [Bm, Hm|Hp, R|1, bs|1, K|1, bs|1] for the
    plan's rows ``rows`` and key blocks ``kb_r`` [Hp, R, K]."""
    bm, hm, tm, sm = mask.shape
    tp = nb * bs
    if tm > 1:
        m = jnp.pad(mask, [(0, 0), (0, 0), (0, tp - tm), (0, 0)]).reshape(bm, hm, nb, bs, sm)[:, :, rows]
    else:
        m = mask[:, :, :, None, :]
    if sm == 1:
        return m[..., None]
    m = jnp.pad(m, [(0, 0)] * 4 + [(0, tp - sm)]).reshape(m.shape[:4] + (nb, bs))
    m = jnp.broadcast_to(m, (bm, max(hm, kb_r.shape[0]), len(rows)) + m.shape[3:])
    return jnp.take_along_axis(m, jnp.asarray(kb_r)[None, :, :, None, :, None], axis=4)


def _dense_rows_mask(mask, pq, tp):
    """User mask [Bm, Hm, Tm, Sm] -> its rows ``pq`` (padded positions) over ``tp`` padded keys."""
    tm, sm = mask.shape[2:]
    if sm > 1:
        mask = jnp.pad(mask, [(0, 0), (0, 0), (0, 0), (0, tp - sm)])
    if tm > 1:
        mask = jnp.pad(mask, [(0, 0), (0, 0), (0, tp - tm), (0, 0)])[:, :, pq]
    return mask


def _take_blocks(x, rows, idx, valid):
    """x [B, H, nb, bs, D] -> [B, H, R, K, bs, D]: key block ``idx[r, c]`` for each plan row. A column
    that is the row shifted by a constant (the window) is a slice of the padded block axis and a
    column that is one block for every row (a global block) a broadcast: both cheaper than a gather
    forward and backward. Entries where ``valid`` is False are masked later, so they may read any
    block (or the zero padding)."""
    b, h, nb, bs, d = x.shape
    r = len(rows)
    cols, shifts = [], []
    for c in range(idx.shape[1]):
        ok = valid[:, c]
        off = idx[ok, c] - rows[ok]
        if ok.any() and (off == off[0]).all() and (np.diff(rows) == 1).all():
            shifts.append(int(off[0]))
            cols.append(("shift", int(off[0])))
        elif ok.any() and (idx[ok, c] == idx[ok, c][0]).all():
            cols.append(("const", int(idx[ok, c][0])))
        else:
            cols.append(("gather", c))
    pad = max([abs(o) for o in shifts], default=0)
    xp = jnp.pad(x, [(0, 0), (0, 0), (pad, pad), (0, 0), (0, 0)]) if pad else x
    out = []
    for kind, val in cols:
        if kind == "shift":
            start = int(rows[0]) + val + pad
            out.append(jax.lax.slice_in_dim(xp, start, start + r, axis=2))
        elif kind == "const":
            out.append(jnp.broadcast_to(x[:, :, val:val + 1], (b, h, r, bs, d)))
        else:
            out.append(x[:, :, idx[:, val]])
    return jnp.stack(out, axis=3)


def block_sparse_attention(q, k, v, bs, kb, valid, dense, rule, *, mask=None, causal=False, dropout=None):
    """The executor: q, k, v [B, T, H, D]; ``kb``/``valid`` [Hp, nb, K] the key blocks of every query
    block; ``dense`` the query blocks computed against all keys; ``rule(pq, pk)`` the token rule."""
    b, t, h, d = q.shape
    nb = kb.shape[1]
    tp = nb * bs
    if k.shape[2] != h:
        k, v = jnp.repeat(k, h // k.shape[2], axis=2), jnp.repeat(v, h // k.shape[2], axis=2)
    pad = [(0, 0), (0, tp - t), (0, 0), (0, 0)]
    blocks = lambda x: jnp.pad(x, pad).reshape(b, nb, bs, h, -1).transpose(0, 3, 1, 2, 4)  # noqa: E731
    kbk, vbk = blocks(k), blocks(v)                                                  # [B, H, nb, bs, D]
    rows = np.array([i for i in range(nb) if i not in dense], np.int64)
    drops = [None, None]
    if dropout is not None:
        drops = [(dropout[0], r) for r in jax.random.split(dropout[1])]
    kb_r, valid_r = kb[:, rows], valid[:, rows]                                        # [Hp, R, K]
    outs, order = [], []
    if len(rows):
        if kb_r.shape[0] == 1:
            kg, vg = _take_blocks(kbk, rows, kb_r[0], valid_r[0]), _take_blocks(vbk, rows, kb_r[0], valid_r[0])
        else:
            take = jax.vmap(lambda x, idx: x[:, idx], in_axes=(1, 0), out_axes=1)
            kg, vg = take(kbk, jnp.asarray(kb_r)), take(vbk, jnp.asarray(kb_r))
        qs = blocks(q * jnp.asarray(d ** -0.5, q.dtype))[:, :, rows]
        logits = jnp.einsum("bhrqd,bhrkcd->bhrqkc", qs, kg, preferred_element_type=jnp.float32)
        pq = (rows[:, None] * bs + np.arange(bs))[None, :, :, None, None]            # [1, R, bs, 1, 1]
        pk = (kb_r * bs)[:, :, None, :, None] + np.arange(bs)                        # [Hp, R, 1, K, bs]
        ok = np.asarray(rule(pq, pk)) & valid_r[:, :, None, :, None] & (pk < t)
        if causal:
            ok = ok & (pk <= pq)
        ok = ok[None]                                                                # [1, Hp, R, bs, K, bs]
        if mask is not None:
            ok = ok & _gather_mask(mask, rows, kb_r, bs, nb)
        r, kk = len(rows), kb_r.shape[-1]
        p = masked_softmax(logits.reshape(b, h, r, bs, kk * bs), ok.reshape(ok.shape[:4] + (kk * bs,)),
                           drops[0])
        o = jnp.einsum("bhrqx,bhrxd->bhrqd", p.astype(v.dtype), vg.reshape(b, h, r, kk * bs, -1))
        outs.append(o)
        order.extend(rows.tolist())
    if dense:
        dq = np.array(dense)
        pq = (dq[:, None] * bs + np.arange(bs)).reshape(-1)
        pk = np.arange(tp)
        ok = np.asarray(rule(pq[:, None], pk[None, :])) & (pk < t)
        ok = ok if ok.ndim == 3 else ok[None]
        if causal:
            ok = ok & (pk[None, :] <= pq[:, None])
        ok = ok[None]                                                                 # [1, Hp, nd*bs, Tp]
        if mask is not None:
            ok = ok & _dense_rows_mask(mask, pq, tp)
        qd = jnp.pad(q, pad)[:, pq]                                                   # [B, nd*bs, H, D]
        o = dense_attention(qd, jnp.pad(k, pad), jnp.pad(v, pad), ok, dropout=drops[1])
        outs.append(o.transpose(0, 2, 1, 3).reshape(b, h, len(dq), bs, -1))
        order.extend(dense)
    out = jnp.concatenate(outs, axis=2) if len(outs) > 1 else outs[0]
    inv = np.argsort(np.array(order))
    out = out[:, :, inv].reshape(b, h, tp, -1)[:, :, :t]
    return out.transpose(0, 2, 1, 3)
