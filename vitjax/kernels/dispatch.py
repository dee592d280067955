"""What the Pallas kernels share: backend, implementation choice, compiler params, padding.

Every kernel in ``vitjax.kernels`` (``window_attention``, ``latent_cross_attention``) resolves its
``implementation=`` / ``interpret=`` arguments here, by one rule:

=====================  ===========================================================================
implementation         what runs
=====================  ===========================================================================
``None`` / ``"auto"``  the Pallas kernel when the backend is TPU or GPU, or when ``interpret=True``
                       (then in the Pallas interpreter); otherwise -- CPU without ``interpret=True``
                       -- the pure-jnp reference.
``"reference"``        the pure-jnp reference on any backend; ``interpret`` is ignored.
``"pallas"``           the Pallas kernel. ``interpret=True``: in the Pallas interpreter, on any
                       backend. ``interpret=None`` or ``False``: compiled for the backend (Mosaic on
                       TPU, Triton on GPU); on a backend Pallas cannot compile for (CPU) this
                       raises a ``ValueError`` that names both ways out (``interpret=True``,
                       ``implementation="reference"``). It never falls back to the interpreter
                       on its own.
anything else          ``ValueError: unknown <kernel> implementation '<name>' (got
                       implementation='<name>'; choose one of 'auto', 'pallas', 'reference', or
                       None for auto)``.
=====================  ===========================================================================

Why "pallas" on CPU raises instead of interpreting (the two kernels used to differ here:
window attention raised, latent cross-attention silently interpreted): the interpreter is orders of
magnitude slower than either the compiled kernel or the XLA reference, so a config that asks for
the kernel on a CPU host -- a job that lost its accelerator, a typo'd platform -- should fail
loudly rather than run for hours; a test or a benchmark that wants the interpreter says
``interpret=True``, and every caller in this repository (tests, benchmarks, the Swin and
Perceiver models through their ``*_interpret`` fields) already does. The window-attention tests pin
the error message. ``None`` and ``"auto"`` keep the CPU default everyone relies on: the reference.

The backend is always an argument here, never looked up: each kernel module reads it through its
own ``_backend`` (``from vitjax.kernels.dispatch import backend as _backend``), the seam the tests
monkeypatch to lower the GPU (Triton) and TPU (Mosaic) paths from a CPU host with ``jax.export``.
"""
from __future__ import annotations

import importlib
import logging
from typing import Sequence

import jax
import jax.numpy as jnp

__all__ = ["IMPLEMENTATIONS", "COMPILED_BACKENDS", "backend", "resolve", "compiled_for",
           "compiler_params", "optional_module", "pow2_at_least_16", "round_up", "pad_trailing"]

IMPLEMENTATIONS = ("auto", "pallas", "reference")   # and None, the same as "auto"
COMPILED_BACKENDS = ("tpu", "gpu")                  # where Pallas kernels compile (not interpret)
# The Pallas lowering each compiled backend needs: Mosaic on TPU, Triton on GPU.
LOWERING = {"tpu": "jax.experimental.pallas.tpu", "gpu": "jax.experimental.pallas.triton"}

log = logging.getLogger("vitjax")
_modules: dict[str, tuple[object | None, str | None]] = {}


def optional_module(name: str):
    """(module, None), or (None, why) when ``name`` does not import on this jax.

    Pallas' lowerings and jax's own flash kernels live under ``jax.experimental``, which moves
    between jax releases; importing them lazily through here keeps ``import vitjax`` working on a
    jax that lacks one, and lets ``auto`` fall back with the reason (explicit requests raise it).
    """
    if name not in _modules:
        try:
            _modules[name] = (importlib.import_module(name), None)
        except Exception as e:  # noqa: BLE001 -- ImportError, or an AttributeError inside jax's own module
            _modules[name] = (None, f"{name} does not import on jax {jax.__version__} "
                                    f"({type(e).__name__}: {e})")
    return _modules[name]


def backend() -> str:
    """The platform the kernels are built for: ``jax.default_backend()``."""
    return jax.default_backend()


def resolve(kernel: str, implementation: str | None, interpret: bool | None,
            backend: str) -> tuple[str, bool]:
    """(``"pallas"`` or ``"reference"``, interpret) for a call on ``backend``, by the module's rule.

    ``kernel`` names the kernel in the error messages (e.g. ``"window-attention"``).
    """
    impl = "auto" if implementation is None else implementation
    if impl not in IMPLEMENTATIONS:
        choices = ", ".join(repr(i) for i in IMPLEMENTATIONS)
        raise ValueError(f"unknown {kernel} implementation {implementation!r} (got "
                         f"implementation={implementation!r}; choose one of {choices}, or None for auto)")
    compiles = backend in COMPILED_BACKENDS
    missing = optional_module(LOWERING[backend])[1] if compiles and not interpret else None
    if impl == "auto":
        impl = "pallas" if (interpret or compiles) else "reference"
        if impl == "pallas" and missing:
            log.warning("%s kernel: using the jnp reference on %s: %s", kernel, backend, missing)
            impl = "reference"
    if impl == "reference":
        return impl, False
    if not interpret and not compiles:
        raise ValueError(f"the Pallas {kernel} kernel needs a TPU or GPU but the backend is {backend!r}; "
                         f"pass interpret=True to run it in the Pallas interpreter, or "
                         f"implementation='reference'")
    if missing:
        raise ValueError(f"the Pallas {kernel} kernel cannot compile on {backend}: {missing}; use "
                         f"implementation='reference' (or 'auto', which falls back to it)")
    return impl, bool(interpret)


def compiled_for(backend: str, interpret: bool) -> str | None:
    """The platform a kernel is compiled for: ``"tpu"`` or ``"gpu"``; None in interpret mode (or on
    a backend Pallas does not compile for)."""
    if interpret or backend not in COMPILED_BACKENDS:
        return None
    return backend


def compiler_params(backend: str, interpret: bool, dimension_semantics: Sequence[str]):
    """``compiler_params=`` for a ``pallas_call``: Mosaic's with the grid's dimension semantics
    (``"parallel"`` / ``"arbitrary"``, one per grid axis) on TPU, Triton's on GPU, None when
    interpreting.

    GPU gets Triton explicitly: with no compiler params this jax lowers to Mosaic GPU, which these
    kernels are not written for (its async copies and shared-memory budget do not fit whole-axis
    K/V blocks, and the window kernel's tiles assume Triton's 2-D dots).
    """
    target = compiled_for(backend, interpret)
    if target is None:
        return None
    lowering, missing = optional_module(LOWERING[target])
    if missing:
        raise ValueError(f"Pallas kernels cannot compile on {target}: {missing}")
    if target == "tpu":
        return lowering.CompilerParams(dimension_semantics=tuple(dimension_semantics))
    return lowering.CompilerParams()


# ----------------------------------------------------------------------------------------------------
# Padding. Triton needs power-of-two tensor shapes and ``dot`` operands of at least 16 in each dim;
# the kernels zero-pad their operands up to such shapes (or up to whole blocks) and slice the
# results back.


def pow2_at_least_16(n: int) -> int:
    """The next power of two >= max(n, 16): a dim Triton can tile and ``dot``."""
    return max(16, 1 << (int(n) - 1).bit_length())


def round_up(x: int, k: int) -> int:
    """The smallest multiple of ``k`` >= ``x``."""
    return -(-x // k) * k


def pad_trailing(x, *sizes: int):
    """Zero-pads the last ``len(sizes)`` axes of ``x`` up to ``sizes`` (each >= the axis' size);
    returns ``x`` itself when nothing needs padding."""
    lead = x.ndim - len(sizes)
    widths = [(0, 0)] * lead + [(0, s - n) for s, n in zip(sizes, x.shape[lead:])]
    if not any(hi for _, hi in widths):
        return x
    return jnp.pad(x, widths)
