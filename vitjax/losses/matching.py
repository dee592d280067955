"""Optimal one-to-one assignment (the Hungarian problem) in JAX, jittable and vmappable: DETR's matcher
runs inside the sharded train step, with no host round trip.

``linear_sum_assignment(cost)`` solves min over injective maps rows -> columns of the summed cost, for
``cost [R, C]`` with ``R <= C``, exactly: the shortest-augmenting-path form of the Hungarian method
with dual potentials (Kuhn 1955; Munkres 1957; in the O(R^2 C) formulation of Jonker & Volgenant 1987
that scipy's ``linear_sum_assignment`` also uses). One row enters per outer step (``lax.fori_loop``);
a Dijkstra-like search over columns (``lax.while_loop``, vectorised over the columns) finds the
cheapest augmenting path under the reduced costs ``cost[i, j] - u[i] - v[j]``, then the path is
flipped (a second ``while_loop``). The result is optimal for any real cost matrix; with ties any
optimal assignment may come back (scipy may pick another one of equal cost).

``match(cost, target_mask)`` is DETR's use: ``cost [Q, G]`` between Q predictions and G padded targets,
rows of padded targets are zeroed (a constant row never changes which real assignment is optimal), and
the result says which target each prediction got (-1: none, "no object"). vmap it over the batch.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

#: Non-finite costs (a NaN box early in training) are replaced by this, so that such a pair is chosen
#: only when nothing else is left (as HF's matcher does with the dtype's max; a moderate value keeps
#: the dual updates finite in float32).
NONFINITE_COST = 1e6


def linear_sum_assignment(cost: jax.Array) -> tuple[jax.Array, jax.Array]:
    """cost [R, C], R <= C -> (col_of_row int32 [R], row_of_col int32 [C], -1 = unassigned) of a
    minimum-cost assignment of every row to a distinct column. Costs are computed in the input's
    float dtype (float32 unless x64 is on)."""
    n, m = cost.shape
    if n > m:
        raise ValueError(f"linear_sum_assignment needs rows <= columns, got a [{n}, {m}] cost matrix; "
                         f"transpose it")
    dtype = jnp.promote_types(cost.dtype, jnp.float32)
    cost = jnp.where(jnp.isfinite(cost), cost, NONFINITE_COST).astype(dtype)
    # 1-based rows and columns: row 0 / column 0 are the search's virtual source.
    a = jnp.zeros((n + 1, m + 1), dtype).at[1:, 1:].set(cost)
    inf = jnp.array(jnp.inf, dtype)

    def add_row(i, carry):
        u, v, p, way = carry
        p = p.at[0].set(i)

        def search_cond(s):
            return ~s[-1]

        def search_step(s):
            u, v, p, way, minv, used, j0, _ = s
            used = used.at[j0].set(True)
            i0 = p[j0]
            reduced = a[i0] - u[i0] - v
            better = ~used & (reduced < minv)
            minv = jnp.where(better, reduced, minv)
            way = jnp.where(better, j0, way)
            candidates = jnp.where(used, inf, minv)
            j1 = jnp.argmin(candidates).astype(jnp.int32)
            delta = candidates[j1]
            # Used columns hold distinct rows (column 0 holds the new row i), so this is one add per row.
            u = u.at[p].add(jnp.where(used, delta, 0))
            v = jnp.where(used, v - delta, v)
            minv = jnp.where(used, minv, minv - delta)
            return u, v, p, way, minv, used, j1, p[j1] == 0

        init = (u, v, p, way, jnp.full((m + 1,), inf), jnp.zeros((m + 1,), bool), jnp.int32(0),
                jnp.bool_(False))
        u, v, p, way, _, _, j0, _ = jax.lax.while_loop(search_cond, search_step, init)

        def flip(s):
            p, j0 = s
            j1 = way[j0]
            return p.at[j0].set(p[j1]), j1

        p, _ = jax.lax.while_loop(lambda s: s[1] != 0, flip, (p, j0))
        return u, v, p, way

    init = (jnp.zeros((n + 1,), dtype), jnp.zeros((m + 1,), dtype), jnp.zeros((m + 1,), jnp.int32),
            jnp.zeros((m + 1,), jnp.int32))
    _, _, p, _ = jax.lax.fori_loop(1, n + 1, add_row, init)
    row_of_col = p[1:] - 1                                       # -1: column left free
    col_of_row = jnp.full((n,), -1, jnp.int32).at[jnp.where(row_of_col >= 0, row_of_col, n)].set(
        jnp.arange(m, dtype=jnp.int32), mode="drop")
    return col_of_row, row_of_col


def match(cost: jax.Array, target_mask: jax.Array) -> jax.Array:
    """DETR's assignment of one image: cost [Q, G] (predictions x padded targets), target_mask [G]
    bool -> target index per prediction int32 [Q] (-1: matched to no target). Needs G <= Q."""
    q, g = cost.shape
    if g > q:
        raise ValueError(f"{g} target slots but only {q} predictions: every target needs its own "
                         f"prediction; raise the number of queries/detection tokens to at least {g}")
    rows = jnp.where(target_mask[:, None], cost.T, 0.0)         # padded targets: constant rows
    _, target_of_pred = linear_sum_assignment(rows)
    valid = (target_of_pred >= 0) & target_mask[jnp.clip(target_of_pred, 0, g - 1)]
    return jnp.where(valid, target_of_pred, -1)


batched_match = jax.vmap(match)
"""cost [B, Q, G], target_mask [B, G] -> target index per prediction [B, Q] (-1: none)."""
