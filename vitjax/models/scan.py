"""Scanned layers (``model.scan_layers=True``, as MaxText and big_vision do): a stack of identical
blocks runs as one ``nn.scan``, so XLA compiles one block instead of ``depth`` copies, and the
lossless conversion between the scanned and unscanned parameter layouts.

Layout. Unscanned, block ``i`` of a stack is the child ``{prefix}{i}`` (``block3``, ``stage2_block1``,
``block_7``). Scanned, the whole stack is one child ``{prefix}{first}-{last}`` (``block0-11``) whose
every parameter has a leading axis of length ``last - first + 1`` with the logical name ``layers``
(replicated by the rules table: FSDP and tensor parallelism split the other dims exactly as before,
so per-device bytes do not change). The name says which blocks the stack holds, so converting needs
no knowledge of the model:

    unscan_tree(tree)             # every stack -> its blocks (idempotent; exporters start with it)
    scan_tree(tree, names)        # the blocks of each stack named in ``names`` -> the stack
    to_layout(tree, like)         # ``tree`` in the layout of the parameter tree ``like``

Each works on any tree that holds parameter-shaped dicts (params, Adam's moments inside an optax
state, DINO's teacher), on arrays and on ``jax.ShapeDtypeStruct``s (whose shardings gain or lose the
replicated ``layers`` dim), which is how a checkpoint saved in one layout is restored into the other.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec as P

LAYERS = "layers"
_STACK = re.compile(r"^(.*?)(\d+)-(\d+)$")


def stack_name(prefix: str, first: int, last: int) -> str:
    """The child name of the scanned stack of blocks ``{prefix}{first}`` .. ``{prefix}{last}``."""
    return f"{prefix}{first}-{last}"


def parse_stack(name: str) -> tuple[str, int, int] | None:
    """``"block0-11"`` -> ``("block", 0, 11)``; None for any other name."""
    m = _STACK.match(str(name))
    if m is None or int(m.group(3)) < int(m.group(2)):
        return None
    return m.group(1), int(m.group(2)), int(m.group(3))


def check_uniform(stage: str, configs: Sequence[Any]) -> None:
    """Raises the one-line error for a stack whose blocks are configured differently (a scan runs one
    block ``depth`` times, so every block must have the same shapes); ``configs``: one hashable
    description of each block's shape-deciding settings."""
    for i, c in enumerate(configs[1:], 1):
        if c != configs[0]:
            raise ValueError(f"model.scan_layers=True cannot scan {stage}: its block {i} is built with {c} but "
                             f"block 0 with {configs[0]} (layers of different shapes); set "
                             f"--config.model.scan_layers=False for this model")


class Layer(NamedTuple):
    """What one layer of a scanned stack is told: its index in the stack and its drop-path rate
    (traced scalars, one per scan step)."""
    index: Any
    drop_path: Any


def scan_stack(block: nn.Module, carry, call: Callable, *, length: int, rates: Iterable[float] | None = None,
               broadcast: tuple = (), remat_policy: Any = "none", collect: bool = False):
    """Runs the child ``block`` ``length`` times as one ``nn.scan``:
    ``carry = call(block, carry, Layer(index, drop_path), *broadcast)`` per layer.

    ``block``: the stack's module, built once in the parent's compact method and named with
    ``stack_name`` (its parameters get the leading ``layers`` axis). ``carry``: the activations (or a
    tuple, e.g. with a KV cache). ``rates``: per-layer drop-path rates (0 without). ``broadcast``:
    arrays every layer sees (masks, positions). ``remat_policy``: the ``jax.checkpoint`` policy
    (``REMAT_POLICIES`` value; None = save nothing) applied *inside* the scan, so the backward pass
    keeps one layer's residuals at a time; "none" for no rematerialisation. ``collect``: also return
    every layer's output carry stacked on a leading axis, ``(carry, per_layer)``."""
    rates = jnp.zeros((length,), jnp.float32) if rates is None else jnp.asarray(list(rates), jnp.float32)
    if rates.shape != (length,):
        raise ValueError(f"scan_stack: {rates.shape[0]} drop-path rates for {length} layers")

    def body(mdl, c, xs, *bc):
        c = call(mdl, c, Layer(*xs), *bc)
        return c, (c if collect else None)

    if remat_policy != "none":
        body = nn.remat(body, policy=remat_policy, prevent_cse=False)
    scanned = nn.scan(body, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                      in_axes=(0,) + (nn.broadcast,) * len(broadcast), length=length,
                      metadata_params={nn.PARTITION_NAME: LAYERS})
    carry, per_layer = scanned(block, carry, (jnp.arange(length, dtype=jnp.int32), rates), *broadcast)
    return (carry, per_layer) if collect else carry


# ------------------------------------------------------------------------------- layout conversion


def _add_layers_dim(sharding):
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, P(None, *sharding.spec))
    return sharding


def _drop_layers_dim(sharding):
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, P(*tuple(sharding.spec)[1:]))
    return sharding


def _stack_leaves(leaves: list, where: str):
    first = leaves[0]
    for i, leaf in enumerate(leaves[1:], 1):
        if tuple(leaf.shape) != tuple(first.shape):
            raise ValueError(f"cannot stack {where}: layer {i} has shape {tuple(leaf.shape)} but layer 0 has "
                             f"{tuple(first.shape)} (layers of different shapes cannot be one scan; use "
                             f"--config.model.scan_layers=False)")
    if isinstance(first, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct((len(leaves),) + tuple(first.shape), first.dtype,
                                    sharding=_add_layers_dim(getattr(first, "sharding", None)))
    if isinstance(first, np.ndarray) or np.isscalar(first):
        return np.stack(leaves)
    return jnp.stack(leaves)


def _unstack_leaf(leaf, n: int, where: str) -> list:
    if not leaf.shape or leaf.shape[0] != n:
        raise ValueError(f"{where}: expected a leading layers axis of {n}, got shape {tuple(leaf.shape)}")
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return [jax.ShapeDtypeStruct(tuple(leaf.shape[1:]), leaf.dtype,
                                     sharding=_drop_layers_dim(getattr(leaf, "sharding", None)))] * n
    return [leaf[i] for i in range(n)]


def _map_dicts(tree, fn: Callable[[dict], dict]):
    """Applies ``fn`` to every dict of ``tree`` bottom-up, through any pytree container (optax's
    namedtuples, tuples, lists)."""
    if isinstance(tree, dict):
        return fn({k: _map_dicts(v, fn) for k, v in tree.items()})
    return jax.tree.map(lambda sub: _map_dicts(sub, fn) if isinstance(sub, dict) else sub, tree,
                        is_leaf=lambda sub: isinstance(sub, dict))


def _split_blocks(node: dict) -> dict:
    out = {}
    for key, value in node.items():
        parsed = parse_stack(key) if isinstance(value, dict) else None
        if parsed is None:
            out[key] = value
            continue
        prefix, first, last = parsed
        n = last - first + 1
        flat, treedef = jax.tree_util.tree_flatten(value)
        per_leaf = [_unstack_leaf(leaf, n, f"stack {key!r}") for leaf in flat]
        for i in range(n):
            out[f"{prefix}{first + i}"] = jax.tree_util.tree_unflatten(treedef, [p[i] for p in per_leaf])
    return out


def unscan_tree(tree):
    """``tree`` with every scanned stack ``{prefix}{a}-{b}`` split into its blocks ``{prefix}{a}`` ..
    ``{prefix}{b}``; a tree without stacks comes back unchanged."""
    return _map_dicts(tree, _split_blocks)


def stack_names(tree) -> set[str]:
    """The names of the scanned stacks anywhere in ``tree`` (``{"block0-11", "block0-7"}``)."""
    names: set[str] = set()

    def visit(node: dict) -> dict:
        names.update(k for k, v in node.items() if isinstance(v, dict) and parse_stack(k) is not None)
        return node

    _map_dicts(tree, visit)
    return names


def scan_tree(tree, names: Iterable[str]):
    """``tree`` with the blocks of each stack in ``names`` stacked into it, wherever a dict holds all
    of that stack's blocks (so the encoder's and decoder's ``block0-7`` are both found)."""
    stacks = [(n, *parse_stack(n)) for n in names]

    def merge(node: dict) -> dict:
        for name, prefix, first, last in stacks:
            keys = [f"{prefix}{i}" for i in range(first, last + 1)]
            if name in node or not all(k in node for k in keys):
                continue
            trees = [node.pop(k) for k in keys]
            flats = [jax.tree_util.tree_flatten(t) for t in trees]
            treedef = flats[0][1]
            for k, (_, td) in zip(keys[1:], flats[1:]):
                if td != treedef:
                    raise ValueError(f"cannot scan {name!r}: {k!r} has other parameters than {keys[0]!r} "
                                     f"(layers of different structure; use --config.model.scan_layers=False)")
            paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(trees[0])[0]]
            leaves = [_stack_leaves([f[0][j] for f in flats], f"{name}{paths[j]}") for j in range(len(paths))]
            node[name] = jax.tree_util.tree_unflatten(treedef, leaves)
        return node

    return _map_dicts(tree, merge)


def to_layout(tree, like):
    """``tree`` (any layout) converted to the layout of the parameter tree ``like`` (scanned where
    ``like`` has stacks, unscanned elsewhere)."""
    names = stack_names(like)
    tree = unscan_tree(tree)
    return scan_tree(tree, names) if names else tree


def same_layout(a, b) -> bool:
    return stack_names(a) == stack_names(b)


def unscanned(model, params=None):
    """``(model, params)`` with scanning off: the same network, its parameters split into blocks
    (for code that reaches into single blocks: cached decoding, mid-network features)."""
    if getattr(model, "scan_layers", False):
        model = model.clone(scan_layers=False)
    return model, (None if params is None else unscan_tree(params))
