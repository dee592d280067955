"""Position embeddings: fixed 2-D sin-cos tables and resizing of learned tables to a new grid."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """[len(positions), dim]: sin half then cos half, frequencies 1/10000^(i/(dim/2)) (MAE's form)."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dim, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", positions.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    """[grid_h * grid_w, dim] fixed 2-D table, row-major over (h, w).

    Follows MAE's ``get_2d_sincos_pos_embed`` (He et al. 2021, code release) exactly, which HF
    ViTMAE reproduces: the first half of the channels encodes the column (w) index, the second the
    row (h) index.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs dim divisible by 4, got {dim}")
    gw, gh = np.meshgrid(np.arange(grid_w, dtype=np.float64), np.arange(grid_h, dtype=np.float64))
    emb_w = sincos_1d(dim // 2, gw)
    emb_h = sincos_1d(dim // 2, gh)
    return np.concatenate([emb_w, emb_h], axis=1).astype(np.float32)


def sincos_2d_with_prefix(dim: int, grid_h: int, grid_w: int, num_prefix: int) -> np.ndarray:
    """[num_prefix + grid_h * grid_w, dim]: ``sincos_2d`` after zero rows for the prefix tokens
    (class / distillation), the fixed table of MAE's encoder and decoder and of sin-cos ViTs."""
    return np.concatenate([np.zeros((num_prefix, dim), np.float32), sincos_2d(dim, grid_h, grid_w)], axis=0)


def resize_posemb(posemb: jax.Array | np.ndarray, num_prefix: int, old_grid: tuple[int, int],
                  new_grid: tuple[int, int], method: str = "bilinear", antialias: bool = True):
    """Resizes a learned table ``[1, num_prefix + gh*gw, D]`` to a new patch grid.

    Prefix tokens (class / distillation) keep their embeddings; the patch part is interpolated in
    float32, as for fine-tuning at a higher resolution (Dosovitskiy et al. 2021, sec. 3.2).
    ``method``: "bilinear" (fine-tuning, init-from-weights) or "cubic" with ``antialias=False``
    (DINO's ``interpolate_pos_encoding``, used by ``ViT(dynamic_img_size=True)`` under jit). A numpy
    table gives a numpy table (the same object when the grids agree); a jax array (or tracer), a
    jax array.
    """
    host = isinstance(posemb, np.ndarray)
    if posemb.ndim != 3 or posemb.shape[1] != num_prefix + old_grid[0] * old_grid[1]:
        raise ValueError(
            f"position embedding of shape {posemb.shape} does not hold {num_prefix} prefix tokens "
            f"plus a {old_grid[0]}x{old_grid[1]} grid")
    if tuple(old_grid) == tuple(new_grid):
        return posemb
    dim = posemb.shape[-1]
    grid = jnp.asarray(posemb[:, num_prefix:], jnp.float32).reshape(1, old_grid[0], old_grid[1], dim)
    grid = jax.image.resize(grid, (1, new_grid[0], new_grid[1], dim), method, antialias=antialias)
    grid = grid.reshape(1, new_grid[0] * new_grid[1], dim).astype(posemb.dtype)
    if host:
        return np.concatenate([posemb[:, :num_prefix], np.asarray(grid)], axis=1)
    return jnp.concatenate([posemb[:, :num_prefix], grid], axis=1)
