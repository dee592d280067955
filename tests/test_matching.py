"""The on-device Hungarian assignment (vitjax.losses.matching) against scipy, and its padded form."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as scipy_lsa

from vitjax.losses.matching import batched_match, linear_sum_assignment, match


def test_thousand_random_matrices_match_scipy_in_one_jitted_vmap_call():
    """1,000 random cost matrices of mixed shapes and scales (rectangular 7x12, square 9x9 with
    integer costs = many ties, so only the total is compared there), solved in one jitted call each."""
    rng = np.random.default_rng(0)
    costs = (rng.normal(size=(1000, 7, 12)) * rng.uniform(0.1, 10, (1000, 1, 1))).astype(np.float32)
    cols, rows_of_col = jax.device_get(jax.jit(jax.vmap(linear_sum_assignment))(costs))
    for k in range(1000):
        r, c = scipy_lsa(costs[k])
        np.testing.assert_array_equal(cols[k][r], c)
    assert np.all((rows_of_col >= 0).sum(1) == 7)

    ints = rng.integers(0, 5, (200, 9, 9)).astype(np.float32)
    cols = jax.device_get(jax.jit(jax.vmap(linear_sum_assignment))(ints))[0]
    for k in range(200):
        r, c = scipy_lsa(ints[k])
        assert sorted(cols[k]) == list(range(9))
        assert ints[k][np.arange(9), cols[k]].sum() == ints[k][r, c].sum()


def test_padded_targets_are_ignored_and_every_real_target_is_matched():
    rng = np.random.default_rng(1)
    cost = rng.random((3, 10, 5)).astype(np.float32)          # [B, Q, G]
    mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
    out = np.asarray(jax.jit(batched_match)(cost, mask))
    for b in range(3):
        n = mask[b].sum()
        q, g = scipy_lsa(cost[b][:, :n])
        want = np.full(10, -1)
        want[q] = g
        np.testing.assert_array_equal(out[b], want)


def test_nonfinite_costs_are_matched_last():
    cost = np.array([[np.nan, 1.0], [0.5, np.inf], [2.0, 3.0]], np.float32)    # [Q=3, G=2]
    np.testing.assert_array_equal(np.asarray(jax.jit(match)(jnp.asarray(cost), jnp.ones(2, bool))), [1, 0, -1])


def test_more_targets_than_predictions_is_an_error_naming_both():
    with pytest.raises(ValueError, match="5 target slots but only 3 predictions"):
        match(jnp.zeros((3, 5)), jnp.ones(5, bool))
