"""Multi-slice meshes (``config.mesh.dcn_data``, vitjax.sharding.hybrid_devices): the data axis
crosses slices, fsdp/tensor stay inside one; checked with stand-in devices that carry slice_index."""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from vitjax import sharding as sh


@dataclasses.dataclass(frozen=True)
class FakeDevice:
    """What create_hybrid_device_mesh reads of a device (a CPU stand-in for a TPU chip)."""
    id: int
    slice_index: int
    process_index: int
    platform: str = "cpu"
    device_kind: str = "cpu"


def _devices(slices: int, per_slice: int):
    # interleaved on purpose: the mesh must group by slice_index, not by list order
    return [FakeDevice(id=s + slices * i, slice_index=s, process_index=s) for i in range(per_slice)
            for s in range(slices)]


def test_two_slices_put_data_across_slices_and_fsdp_tensor_within():
    devs = _devices(2, 8)
    grid = sh.hybrid_devices({"data": 1, "fsdp": 4, "tensor": 2}, 2, devs)
    assert grid.shape == (2, 4, 2)
    slice_of = np.vectorize(lambda d: d.slice_index)(grid)
    # data index i lives on slice i; every fsdp x tensor block is one slice's 8 devices
    np.testing.assert_array_equal(slice_of, np.broadcast_to(np.arange(2)[:, None, None], (2, 4, 2)))
    assert {d.id for d in grid[1].ravel()} == {d.id for d in devs if d.slice_index == 1}


def test_data_within_slices_too_and_leftover_slices_split_fsdp():
    grid = sh.hybrid_devices({"data": 2, "fsdp": -1}, 2, _devices(4, 4))
    # data = 2 (DCN) x 2 (ICI); fsdp = 2 (DCN: 4 slices / dcn_data 2) x 2 (ICI)
    assert grid.shape == (4, 4, 1)
    slice_of = np.vectorize(lambda d: d.slice_index)(grid)[:, :, 0]
    np.testing.assert_array_equal(slice_of, [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])


def test_dcn_data_not_dividing_the_slices_names_both():
    with pytest.raises(ValueError) as e:
        sh.hybrid_devices({"data": -1}, 3, _devices(2, 4))
    assert str(e.value) == ("config.mesh.dcn_data=3 does not divide the 2 slices the devices belong to; set "
                            "config.mesh.dcn_data to a divisor of 2 (usually 2: one data-parallel group per slice)")


def test_make_mesh_reads_dcn_data():
    m = sh.make_mesh({"data": -1, "dcn_data": 1})
    assert dict(m.shape) == {"data": len(jax.devices()), "fsdp": 1, "tensor": 1}
    # this host's CPU devices all sit in slice 0: the Trainer turns this into a one-line ConfigError
    with pytest.raises(ValueError, match=r"^config.mesh.dcn_data=2 does not divide the 1 slices"):
        sh.make_mesh({"data": -1, "dcn_data": 2})
