"""Fused (shifted-)window attention with a relative-position bias table: Swin's W-MSA / SW-MSA.

    out = softmax(scale * q k^T + table[rel_index] + shift_mask) v        per window and head

Inputs are a batch of windows, ``q, k, v: [num_windows_total, heads, T, head_dim]`` with
``T = window_size**2`` and the windows ordered batch-major (``n = b * nW + w``, as Swin's window
partition emits them). ``bias_table: [(2W-1)**2, heads]`` is Swin's learned relative-position bias
table; ``shift_mask: [nW, T, T]`` is the additive SW-MSA region mask (0 / -100) for each window
position in the image, shared by every image of the batch.

What the kernel saves over the XLA path: XLA materialises the gathered bias (and the masked scores)
as [N, H, T, T] tensors in HBM, forward and backward. Here the bias is gathered from the table
inside the kernel (a one-hot select over the table entries, computed once per grid step and
shared by every window of the block), scores and probabilities live only in on-chip memory, and
the backward kernel reduces the score gradient over windows and scatters it into the table
gradient itself, so no [N, H, T, T] tensor ever reaches HBM (the backward's only T x T output is
its per-group bias-gradient accumulator, [groups, H, T, T]). The in-kernel gather costs
(2W-1)^2 compare-and-selects over a T x T tile per grid step (169 x 49 x 49 for W = 7), amortised
over the block's windows.

Layout of the work: one grid step handles ``block_windows`` windows of one head, chosen so that
``block_windows * T >= min_rows`` (128 by default) query rows go through the matrix unit per step.
With a shift mask, ``block_windows`` must divide ``nW`` so each block reads one contiguous slice of
the mask. The backward grid is ``(heads, groups, blocks_per_group)``: the bias gradient of a head
is accumulated over the blocks of a group in a VMEM-resident output and turned into table rows at
the group's last step. ``groups=1`` (the TPU default) relies on TPU's sequential grid order
("arbitrary" semantics, also what interpret mode does); on GPU (not in interpret mode), whose grid
programs run in parallel, the default is one block per group and the per-group table partials are
summed outside.

GPU form (``pad_tokens=True``, the default when the kernel is compiled for GPU): Triton needs
power-of-two tiles (and matmul operands of at least 16 in each dim) and has no batched matmul, so
the token axis is zero-padded to the next power of two >= 16 (T = 49 -> 64, 144 -> 256) and
head_dim likewise (32 stays 32), and the kernels loop over the block's windows with 2-D matmuls.
Padded positions carry a negative relative-position index (no table row matches it: no bias, no
table gradient); padded keys are set to -inf before the softmax (probability exactly 0); padded
query rows and head columns are sliced off the outputs, and the backward pads the output
gradient with zeros, so padded rows add nothing to dk, dv or the table. The custom-VJP residuals
are the unpadded inputs (the backward pads again). The pallas_calls get Triton compiler params on
GPU (with none, this jax would pick the Mosaic GPU backend). Note that with the GPU default of one
window block per backward group, the bias-gradient accumulator is [N / block_windows, H, Tp, Tp]
in HBM: a fraction 1 / block_windows of a score tensor, not the few T x T tiles of the TPU mode.

Implementations (``implementation=``, resolved by ``vitjax.kernels.dispatch``, the same rule for
every kernel): ``"pallas"`` (this kernel), ``"reference"`` (pure jnp, the numerics this kernel is
tested against), ``None``/``"auto"``: Pallas on TPU and GPU, reference on CPU. ``interpret=True``
runs the Pallas kernel in Pallas's interpreter on any backend, in its padded GPU form with
``pad_tokens=True``; ``"pallas"`` on CPU without it raises.

What was verified (2 CPU cores, no accelerator; tests/test_kernel_window_attention.py):
* Interpret mode against the reference, fp32 relative error <= 1e-5 on the output and on the
  gradients of q, k, v and the table: the unpadded form for window sizes 7, 8, 12, head dims
  16/32, with and without the shift mask, both backward grouping modes; the padded GPU form for
  window 7 / head_dim 32 (T 49 -> 64) with and without the shift mask, and window 3 / head_dim 12
  (T 9 -> 16, head_dim 12 -> 16) with the mask.
* The GPU dispatch (padded form, fwd + bwd, fp32 and bf16, window 7 with mask) lowers from this
  CPU host to Triton IR for CUDA (``jax.export`` with ``platforms=("cuda",)``), producing two
  Triton custom calls; the unpadded form fails that lowering (49 is not a power of two). This
  checks jax's Pallas -> Triton IR lowering rules only: Triton's compilation to PTX, a run on a GPU
  (results) and GPU timings have not been done here. On GPU the bias gather is (2W-1)^2
  compare-and-selects over a 64 x 64 tile per grid step, and the default tiling (``min_rows``,
  ``num_warps``) was not tuned for it.
* Mosaic (TPU) lowering: the unpadded form uses only the generic ``pl.pallas_call`` API
  (BlockSpecs with full-extent trailing dims, batched ``einsum``, ``fori_loop``, dynamic
  second-minor ``pl.ds`` slices) and is written for it, but it has not been compiled or timed here.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from vitjax.kernels.dispatch import IMPLEMENTATIONS, compiled_for, compiler_params, pad_trailing, resolve
# Module-level names the tests use: ``_backend`` is the seam they monkeypatch to lower the GPU path
# from a CPU host (every backend lookup in this module goes through it).
from vitjax.kernels.dispatch import backend as _backend
from vitjax.kernels.dispatch import pow2_at_least_16 as _pow2_at_least_16

__all__ = ["BlockSizes", "relative_position_index", "window_shift_mask", "window_attention",
           "window_attention_reference", "IMPLEMENTATIONS"]

_KERNEL = "window-attention"   # the kernel's name in dispatch's error messages


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tiling of the window-attention kernels.

    Attributes:
      block_windows: windows per forward grid step; None picks the smallest that gives
        ``min_rows`` query rows (and divides the window count, or ``nW`` with a shift mask).
      block_windows_bwd: the same for the backward kernel (None: as ``block_windows``).
      min_rows: rows per step the automatic choice aims for (the MXU is 128 rows tall).
      bwd_groups: how many independent groups the backward splits the window blocks of a head into
        (each group reduces its own bias-table partial). None: 1 on TPU and in interpret mode
        (sequential grid), one block per group on GPU (parallel grid programs).
    """
    block_windows: int | None = None
    block_windows_bwd: int | None = None
    min_rows: int = 128
    bwd_groups: int | None = None


def relative_position_index(window_size: int) -> np.ndarray:
    """[T, T] int32 index into the (2W-1)**2 table: (dy + W-1) * (2W-1) + (dx + W-1), with
    (dy, dx) = position of query minus position of key (row-major tokens), as Swin and timm."""
    w = window_size
    ys, xs = np.meshgrid(np.arange(w), np.arange(w), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    dy = ys[:, None] - ys[None, :] + w - 1
    dx = xs[:, None] - xs[None, :] + w - 1
    return (dy * (2 * w - 1) + dx).astype(np.int32)


def window_shift_mask(height: int, width: int, window_size: int, shift: int,
                      masked_value: float = -100.0) -> np.ndarray:
    """[nW, T, T] float32 additive SW-MSA mask for a (padded) ``height x width`` map after a cyclic
    shift by ``shift``: tokens of different regions get ``masked_value`` (Swin's -100), else 0.

    Along each axis the regions are [0, L-W), [L-W, L-shift), [L-shift, L) (Swin / timm / HF); the
    windows are ordered row-major over the map, as the window partition emits them.
    """
    if height % window_size or width % window_size:
        raise ValueError(f"the shift mask is built on the padded map: {height}x{width} is not a multiple of "
                         f"window_size={window_size}")
    def regions(n):
        i = np.arange(n)
        return (i >= n - window_size).astype(np.int32) + (i >= n - shift).astype(np.int32)
    img = regions(height)[:, None] * 3 + regions(width)[None, :]
    w = window_size
    win = img.reshape(height // w, w, width // w, w).transpose(0, 2, 1, 3).reshape(-1, w * w)
    diff = win[:, None, :] - win[:, :, None]
    return np.where(diff != 0, masked_value, 0.0).astype(np.float32)


def _check(q, k, v, bias_table, shift_mask, window_size):
    if q.ndim != 4:
        raise ValueError(f"window_attention expects q/k/v of shape [num_windows, heads, T, head_dim], got "
                         f"q.shape={tuple(q.shape)}")
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k and v must have the same shape, got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    n, h, t, _ = q.shape
    if t != window_size * window_size:
        raise ValueError(f"q has {t} tokens per window but window_size={window_size} needs "
                         f"{window_size * window_size}")
    r = (2 * window_size - 1) ** 2
    if tuple(bias_table.shape) != (r, h):
        raise ValueError(f"bias_table must have shape ((2*{window_size}-1)**2, heads) = {(r, h)}, got "
                         f"{tuple(bias_table.shape)}")
    if shift_mask is not None:
        if shift_mask.ndim != 3 or tuple(shift_mask.shape[1:]) != (t, t):
            raise ValueError(f"shift_mask must have shape [num_windows_per_image, {t}, {t}], got "
                             f"{tuple(shift_mask.shape)}")
        if n % shift_mask.shape[0]:
            raise ValueError(f"{n} windows is not a whole number of images of {shift_mask.shape[0]} "
                             f"windows (the shift_mask's first dim)")


def _default_scale(q, scale):
    return q.shape[-1] ** -0.5 if scale is None else float(scale)


# ----------------------------------------------------------------------------------------------------
# reference


def window_attention_reference(q, k, v, bias_table, shift_mask=None, *, window_size: int,
                               scale: float | None = None):
    """Pure-jnp window attention: the same function as the kernel, through XLA. Shapes as the module
    docstring; returns [num_windows_total, heads, T, head_dim] in q's dtype."""
    _check(q, k, v, bias_table, shift_mask, window_size)
    n, h, t, _ = q.shape
    scale = _default_scale(q, scale)
    idx = relative_position_index(window_size)
    bias = bias_table[idx.reshape(-1)].reshape(t, t, h).transpose(2, 0, 1).astype(jnp.float32)
    s = jnp.einsum("nhtd,nhsd->nhts", q, k, preferred_element_type=jnp.float32) * scale + bias[None]
    if shift_mask is not None:
        nw = shift_mask.shape[0]
        s = (s.reshape(n // nw, nw, h, t, t) + shift_mask[None, :, None].astype(jnp.float32)).reshape(s.shape)
    p = jax.nn.softmax(s, axis=-1)
    o = jnp.einsum("nhts,nhsd->nhtd", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return o.astype(q.dtype)


# ----------------------------------------------------------------------------------------------------
# kernels


# Relative-position index of padded positions (pad_tokens): no table row matches a negative index,
# so padded positions get no bias and contribute nothing to the table gradient.
_PAD_QUERY = -1   # padded query row, real key: the row is computed and sliced off
_PAD_KEY = -2     # padded key column: masked to probability exactly 0


def _padded_index(window_size: int, tp: int) -> np.ndarray:
    """[tp, tp] relative-position index with the padded rows / columns marked (see _PAD_*)."""
    idx = relative_position_index(window_size)
    t = idx.shape[0]
    out = np.full((tp, tp), _PAD_QUERY, np.int32)
    out[:, t:] = _PAD_KEY
    out[:t, :t] = idx
    return out


def _gather_bias(idx, table_ref, num_rel):
    """[T, T] float32 bias = table[idx] for this head; ``table_ref`` block is [R, 1].

    A select per table entry instead of a gather: Mosaic has no general vector gather, while
    compare + select on a [T, T] tile and a dynamic second-minor slice of the table are cheap.
    """
    def body(r, acc):
        return jnp.where(idx == r, table_ref[pl.ds(r, 1), :].astype(jnp.float32), acc)
    return jax.lax.fori_loop(0, num_rel, body, jnp.zeros(idx.shape, jnp.float32))


def _scores(q, k, bias, mask, key_pad, scale):
    """Masked scores of one window ([T, d] operands) or a block of windows ([w, T, d])."""
    s = jnp.einsum("...td,...sd->...ts", q, k, preferred_element_type=jnp.float32) * scale + bias
    if mask is not None:
        s = s + mask.astype(jnp.float32)
    if key_pad is not None:   # padded keys: exp(-inf - max) = 0 exactly (every row has real keys)
        s = jnp.where(key_pad, -jnp.inf, s)
    return s


def _softmax(s):
    m = jnp.max(s, axis=-1, keepdims=True)
    p = jnp.exp(s - m)
    return p / jnp.sum(p, axis=-1, keepdims=True)


def _attend(q, k, v, bias, mask, key_pad, scale):
    p = _softmax(_scores(q, k, bias, mask, key_pad, scale))
    return jnp.einsum("...ts,...sd->...td", p.astype(v.dtype), v, preferred_element_type=jnp.float32)


def _attend_bwd(q, k, v, do, bias, mask, key_pad, scale):
    """(dq, dk, dv, ds) of one window or a block of windows; ds is the score (= bias) gradient."""
    p = _softmax(_scores(q, k, bias, mask, key_pad, scale))
    dv = jnp.einsum("...ts,...td->...sd", p.astype(do.dtype), do, preferred_element_type=jnp.float32)
    dp = jnp.einsum("...td,...sd->...ts", do, v, preferred_element_type=jnp.float32)
    ds = p * (dp - jnp.sum(dp * p, axis=-1, keepdims=True))
    dq = jnp.einsum("...ts,...sd->...td", ds.astype(k.dtype), k, preferred_element_type=jnp.float32) * scale
    dk = jnp.einsum("...ts,...td->...sd", ds.astype(q.dtype), q, preferred_element_type=jnp.float32) * scale
    return dq, dk, dv, ds


def _fwd_kernel(idx_ref, table_ref, q_ref, k_ref, v_ref, *refs, scale, num_rel, has_mask, padded):
    mask_ref, o_ref = (refs[0], refs[1]) if has_mask else (None, refs[0])
    idx = idx_ref[...]
    bias = _gather_bias(idx, table_ref, num_rel)
    if not padded:   # the whole block at once: batched matmuls (Mosaic)
        mask = mask_ref[...] if has_mask else None
        o_ref[...] = _attend(q_ref[...], k_ref[...], v_ref[...], bias, mask, None, scale).astype(o_ref.dtype)
        return
    # GPU form: power-of-two tiles, one 2-D matmul chain per window (Triton has no batched dot).
    key_pad = idx == _PAD_KEY

    def window(w, carry):
        mask = mask_ref[w] if has_mask else None
        o_ref[w] = _attend(q_ref[w], k_ref[w], v_ref[w], bias, mask, key_pad, scale).astype(o_ref.dtype)
        return carry
    jax.lax.fori_loop(0, q_ref.shape[0], window, 0)


def _bwd_kernel(idx_ref, table_ref, q_ref, k_ref, v_ref, do_ref, *refs, scale, num_rel, has_mask, padded):
    if has_mask:
        mask_ref, dq_ref, dk_ref, dv_ref, dbias_ref, dtable_ref = refs
    else:
        mask_ref = None
        dq_ref, dk_ref, dv_ref, dbias_ref, dtable_ref = refs
    j = pl.program_id(2)
    idx = idx_ref[...]
    bias = _gather_bias(idx, table_ref, num_rel)
    if not padded:
        dq, dk, dv, ds = _attend_bwd(q_ref[...], k_ref[...], v_ref[...], do_ref[...], bias,
                                     mask_ref[...] if has_mask else None, None, scale)
        dq_ref[...] = dq.astype(dq_ref.dtype)
        dk_ref[...] = dk.astype(dk_ref.dtype)
        dv_ref[...] = dv.astype(dv_ref.dtype)
        ds_sum = jnp.sum(ds, axis=0)
    else:
        key_pad = idx == _PAD_KEY

        def window(w, acc):
            mask = mask_ref[w] if has_mask else None
            dq, dk, dv, ds = _attend_bwd(q_ref[w], k_ref[w], v_ref[w], do_ref[w], bias, mask, key_pad, scale)
            dq_ref[w] = dq.astype(dq_ref.dtype)
            dk_ref[w] = dk.astype(dk_ref.dtype)
            dv_ref[w] = dv.astype(dv_ref.dtype)
            return acc + ds
        ds_sum = jax.lax.fori_loop(0, q_ref.shape[0], window, jnp.zeros(idx.shape, jnp.float32))

    # The bias gradient is the score gradient summed over windows; it stays resident across the
    # blocks of this group (same output block index) and becomes table rows at the group's end.
    @pl.when(j == 0)
    def _init():
        dbias_ref[...] = jnp.zeros(dbias_ref.shape, dbias_ref.dtype)

    dbias_ref[...] += ds_sum

    @pl.when(j == pl.num_programs(2) - 1)
    def _to_table():
        dbias = dbias_ref[...]

        def body(r, carry):
            # Padded positions carry a negative index: they match no table row.
            tot = jnp.sum(jnp.where(idx == r, dbias, 0.0), axis=(0, 1), keepdims=True)
            dtable_ref[pl.ds(r, 1), :] = tot.astype(dtable_ref.dtype)
            return carry
        jax.lax.fori_loop(0, num_rel, body, 0)


# ----------------------------------------------------------------------------------------------------
# pallas_call wrappers


def _pick_block(count: int, t: int, requested: int | None, min_rows: int, what: str) -> int:
    if requested is not None:
        if requested <= 0 or count % requested:
            raise ValueError(f"block_windows={requested} must be a positive divisor of the {what} ({count})")
        return requested
    divisors = [d for d in range(1, count + 1) if count % d == 0]
    for d in divisors:
        if d * t >= min_rows:
            return d
    return divisors[-1]


def _blocks(n, nw, t, requested, min_rows):
    """Windows per block: divides nW (with a mask, so a block reads one mask slice) or N."""
    if nw is not None:
        return _pick_block(nw, t, requested, min_rows, "number of windows per image (shift_mask.shape[0])")
    return _pick_block(n, t, requested, min_rows, "total number of windows")


def _mask_index(nb_mask):
    # The block of windows n*bw .. (n+1)*bw - 1 sits at window positions (n % (nW / bw)) * bw ...
    return lambda n: (n % nb_mask, 0, 0)


def _fwd_call(q, k, v, table_t, mask, idx, scale, bw, padded, interpret):
    n, h, t, d = q.shape
    r = table_t.shape[1]
    has_mask = mask is not None
    win_spec = pl.BlockSpec((bw, None, t, d), lambda i, hh: (i, hh, 0, 0))
    in_specs = [pl.BlockSpec((t, t), lambda i, hh: (0, 0)),
                pl.BlockSpec((None, r, 1), lambda i, hh: (hh, 0, 0)),
                win_spec, win_spec, win_spec]
    args = [idx, table_t, q, k, v]
    if has_mask:
        mi = _mask_index(mask.shape[0] // bw)
        in_specs.append(pl.BlockSpec((bw, t, t), lambda i, hh: mi(i)))
        args.append(mask)
    kernel = functools.partial(_fwd_kernel, scale=scale, num_rel=r, has_mask=has_mask, padded=padded)
    return pl.pallas_call(
        kernel, out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype), grid=(n // bw, h),
        in_specs=in_specs, out_specs=win_spec,
        compiler_params=compiler_params(_backend(), interpret, ("parallel", "parallel")),
        interpret=interpret, name="window_attention_fwd")(*args)


def _bwd_call(q, k, v, do, table_t, mask, idx, scale, bw, groups, padded, interpret):
    n, h, t, d = q.shape
    r = table_t.shape[1]
    nb = n // bw
    if groups is None:
        groups = nb if compiled_for(_backend(), interpret) == "gpu" else 1
    if groups <= 0 or nb % groups:
        raise ValueError(f"bwd_groups={groups} must be a positive divisor of the {nb} backward window blocks")
    per = nb // groups
    has_mask = mask is not None
    win = lambda hh, g, j: (g * per + j, hh, 0, 0)  # noqa: E731
    win_spec = pl.BlockSpec((bw, None, t, d), win)
    in_specs = [pl.BlockSpec((t, t), lambda hh, g, j: (0, 0)),
                pl.BlockSpec((None, r, 1), lambda hh, g, j: (hh, 0, 0)),
                win_spec, win_spec, win_spec, win_spec]
    args = [idx, table_t, q, k, v, do]
    if has_mask:
        mi = _mask_index(mask.shape[0] // bw)
        in_specs.append(pl.BlockSpec((bw, t, t), lambda hh, g, j: mi(g * per + j)))
        args.append(mask)
    out_shape = [jax.ShapeDtypeStruct(q.shape, q.dtype)] * 3 + [
        jax.ShapeDtypeStruct((groups, h, t, t), jnp.float32),
        jax.ShapeDtypeStruct((groups, h, r, 1), jnp.float32)]
    out_specs = [win_spec] * 3 + [pl.BlockSpec((None, None, t, t), lambda hh, g, j: (g, hh, 0, 0)),
                                  pl.BlockSpec((None, None, r, 1), lambda hh, g, j: (g, hh, 0, 0))]
    kernel = functools.partial(_bwd_kernel, scale=scale, num_rel=r, has_mask=has_mask, padded=padded)
    dq, dk, dv, _, dtable = pl.pallas_call(
        kernel, out_shape=out_shape, grid=(h, groups, per), in_specs=in_specs, out_specs=out_specs,
        compiler_params=compiler_params(_backend(), interpret, ("parallel", "parallel", "arbitrary")),
        interpret=interpret, name="window_attention_bwd")(*args)
    return dq, dk, dv, dtable.sum(0)[..., 0].T  # [R, H]


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8, 9))
def _window_attention_pallas(q, k, v, bias_table, shift_mask, window_size, scale, blocks, pad, interpret):
    out, _ = _vjp_fwd(q, k, v, bias_table, shift_mask, window_size, scale, blocks, pad, interpret)
    return out


def _kernel_operands(q, shift_mask, window_size, pad):
    """(padded T, padded head_dim, index, mask) as the kernels see them. With ``pad`` the token and
    head axes become powers of two >= 16 (Triton's tile and matmul constraints): zero rows/columns,
    padded positions marked in the index, the mask zero-padded (padded keys are masked in-kernel)."""
    _, _, t, d = q.shape
    if not pad:
        return t, d, jnp.asarray(relative_position_index(window_size)), shift_mask
    tp, dp = _pow2_at_least_16(t), _pow2_at_least_16(d)
    mask = None if shift_mask is None else pad_trailing(shift_mask, tp, tp)
    return tp, dp, jnp.asarray(_padded_index(window_size, tp)), mask


def _vjp_fwd(q, k, v, bias_table, shift_mask, window_size, scale, blocks, pad, interpret):
    n, _, t, d = q.shape
    tp, dp, idx, mask = _kernel_operands(q, shift_mask, window_size, pad)
    nw = None if shift_mask is None else shift_mask.shape[0]
    bw = _blocks(n, nw, tp, blocks.block_windows, blocks.min_rows)
    table_t = bias_table.T[..., None]                        # [H, R, 1]: one head's column per block
    qp, kp, vp = ((pad_trailing(x, tp, dp) for x in (q, k, v)) if pad else (q, k, v))
    out = _fwd_call(qp, kp, vp, table_t, mask, idx, scale, bw, pad, interpret)
    if pad:
        out = out[:, :, :t, :d]
    return out, (q, k, v, bias_table, shift_mask)   # unpadded residuals: the backward re-pads


def _vjp_bwd(window_size, scale, blocks, pad, interpret, res, do):
    q, k, v, bias_table, shift_mask = res
    n, _, t, d = q.shape
    tp, dp, idx, mask = _kernel_operands(q, shift_mask, window_size, pad)
    nw = None if shift_mask is None else shift_mask.shape[0]
    bw = _blocks(n, nw, tp, blocks.block_windows_bwd or blocks.block_windows, blocks.min_rows)
    # Padded query rows get a zero output gradient, so they add nothing to dk, dv or the table.
    ops = [pad_trailing(x, tp, dp) for x in (q, k, v, do)] if pad else [q, k, v, do]
    dq, dk, dv, dtable = _bwd_call(*ops, bias_table.T[..., None], mask, idx, scale, bw,
                                   blocks.bwd_groups, pad, interpret)
    if pad:
        dq, dk, dv = (x[:, :, :t, :d] for x in (dq, dk, dv))
    dmask = None if shift_mask is None else jnp.zeros_like(shift_mask)   # the mask is a constant
    return dq, dk, dv, dtable.astype(bias_table.dtype), dmask


_window_attention_pallas.defvjp(_vjp_fwd, _vjp_bwd)


# ----------------------------------------------------------------------------------------------------
# public entry point


def window_attention(q, k, v, bias_table, shift_mask=None, *, window_size: int, scale: float | None = None,
                     block_sizes: BlockSizes | None = None, implementation: str | None = None,
                     interpret: bool | None = None, pad_tokens: bool | None = None):
    """Window attention with relative-position bias and optional shift mask.

    Args:
      q, k, v: [num_windows_total, heads, T, head_dim], T = window_size**2, windows batch-major.
      bias_table: [(2 * window_size - 1)**2, heads] relative-position bias table (differentiable).
      shift_mask: None, or [nW, T, T] additive mask for the nW window positions of one image
        (Swin's SW-MSA region mask); a constant (its gradient is zero).
      window_size: the window side W.
      scale: score scale; default head_dim ** -0.5.
      block_sizes: ``BlockSizes`` for the Pallas kernels.
      implementation: None/"auto" (Pallas on TPU/GPU, reference on CPU), "pallas", "reference";
        see ``vitjax.kernels.dispatch`` ("pallas" on CPU needs ``interpret=True``).
      interpret: run the Pallas kernel in the interpreter (any backend, e.g. CPU tests); None:
        compiled for TPU/GPU.
      pad_tokens: run the GPU form of the kernel: tokens and head_dim zero-padded to powers of two
        >= 16 (T = 49 -> 64), padded keys masked to probability 0, padded query rows and head
        columns sliced off, one 2-D matmul chain per window. None: on when the kernel is compiled
        for GPU (required there), off otherwise (TPU and interpret mode); True exercises the GPU
        form in interpret mode. Ignored by the reference.
    Returns:
      [num_windows_total, heads, T, head_dim] in q's dtype.
    """
    _check(q, k, v, bias_table, shift_mask, window_size)
    impl, interp = resolve(_KERNEL, implementation, interpret, _backend())
    if impl == "reference":
        return window_attention_reference(q, k, v, bias_table, shift_mask, window_size=window_size,
                                          scale=scale)
    blocks = block_sizes or BlockSizes()
    if not isinstance(blocks, BlockSizes):
        raise TypeError(f"block_sizes must be a window_attention.BlockSizes, got {type(blocks).__name__}")
    on_gpu = compiled_for(_backend(), interp) == "gpu"
    pad = on_gpu if pad_tokens is None else bool(pad_tokens)
    if on_gpu and not pad:
        raise ValueError("the Pallas window-attention kernel compiled for GPU (Triton) needs pad_tokens=True "
                         "(power-of-two tiles, no batched matmuls); leave pad_tokens=None")
    return _window_attention_pallas(q, k, v, bias_table, shift_mask, window_size,
                                    _default_scale(q, scale), blocks, pad, interp)


def num_flops(num_windows: int, heads: int, window_size: int, head_dim: int) -> int:
    """Matmul FLOPs of the forward pass (2 matmuls of T x T x head_dim per window and head)."""
    t = window_size * window_size
    return 4 * num_windows * heads * t * t * head_dim

