"""The small-GEMM study's providers: one product of numba:blas's step, called from compiled code by each.

- openblas: SciPy's s/dgemm, as numba:blas calls it (impls.numba_blas_bridge.gemm).
- mkl-jit: the kernel Intel oneMKL generates for the one shape, transposes and leading dimensions,
  as numba:blas creates and calls it (impls.numba_blas_jit). Where MKL declines to generate one
  (MKL_NO_JIT: on a CPU it does not JIT for, or a shape it finds too large) the pointer runs its
  standard gemm, and the provider is named mkl-gemm instead: timed all the same, never passed
  off as a JIT kernel.
- blis: BLIS's typed API (bli_?gemm, from the `blis` wheel), strides given as they lie.

BLIS is optional (requirements-small-gemm.txt pins it), and so, outside requirements.txt, is
MKL: a missing one is a reason, printed, never a silent gap. Each runs on one thread (MKL's
sequential layer; the wheel's BLIS is single-threaded): a JIT kernel is one thread by design.
"""

from __future__ import annotations

import ctypes
import sys
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from bench.harness.machine import cpu_model
from impls import numba_blas_jit
from impls.numba_blas_bridge import gemm as openblas_gemm
from impls.numba_jit import jit

BLIS_NO_TRANSPOSE, BLIS_TRANSPOSE = 0, 8  # trans_t: BLIS_TRANS_BIT


class Shape(NamedTuple):
    """One product c (m x n) = op(a) @ op(b), row-major, each matrix's rows its leading dimension."""

    m: int
    n: int
    k: int
    trans_a: bool
    trans_b: bool

    def a_shape(self):
        return (self.k, self.m) if self.trans_a else (self.m, self.k)

    def b_shape(self):
        return (self.n, self.k) if self.trans_b else (self.k, self.n)

    @property
    def flops(self) -> int:
        return 2 * self.m * self.n * self.k


@intrinsic
def _call_blis(typingctx, function, trans_a, trans_b, m, n, k, a, b, c):
    """bli_?gemm(transa, transb, m, n, k, &1, a, lda, 1, b, ldb, 1, &0, c, ldc, 1) on row-major arrays."""
    dtype = c.dtype
    sig = types.void(function, trans_a, trans_b, m, n, k, a, b, c)

    def codegen(context, builder, signature, args):
        function, trans_a, trans_b, m, n, k, a, b, c = args
        i32, i64 = ir.IntType(32), ir.IntType(64)
        arrays = [
            context.make_array(t)(context, builder, v) for t, v in zip(signature.args[6:], (a, b, c), strict=True)
        ]
        real_p = context.get_value_type(dtype).as_pointer()
        one = cgutils.alloca_once_value(builder, context.get_constant(dtype, 1.0))
        zero = cgutils.alloca_once_value(builder, context.get_constant(dtype, 0.0))
        unit = ir.Constant(i64, 1)
        kinds = [i32, i32, i64, i64, i64, real_p, real_p, i64, i64, real_p, i64, i64, real_p, real_p, i64, i64]
        fnty = ir.FunctionType(ir.VoidType(), kinds)
        # Row stride of a row-major array: its row length (strides are in bytes in Numba's arrays).
        size = context.get_abi_sizeof(context.get_value_type(dtype))
        rows = [builder.sdiv(cgutils.unpack_tuple(builder, x.strides, 2)[0], ir.Constant(i64, size)) for x in arrays]
        builder.call(
            builder.inttoptr(function, fnty.as_pointer()),
            [
                builder.trunc(trans_a, i32),
                builder.trunc(trans_b, i32),
                m,
                n,
                k,
                one,
                arrays[0].data,
                rows[0],
                unit,
                arrays[1].data,
                rows[1],
                unit,
                zero,
                arrays[2].data,
                rows[2],
                unit,
            ],
        )
        return context.get_dummy_value()

    return sig, codegen


@jit()
def run_openblas(calls, a, trans_a, b, trans_b, c, m, n, k):
    for _ in range(calls):
        openblas_gemm(a, trans_a, b, trans_b, c, m, n, k)


@jit()
def run_mkl(calls, kernel, jitter, a, b, c):
    for _ in range(calls):
        numba_blas_jit.call(kernel, jitter, a, b, c)


@jit()
def run_blis(calls, function, trans_a, trans_b, m, n, k, a, b, c):
    for _ in range(calls):
        _call_blis(function, trans_a, trans_b, m, n, k, a, b, c)


class Mkl:
    """oneMKL's JIT GEMM as numba:blas uses it; kernels created: impls.numba_blas_jit.created."""

    def __init__(self):
        self.reason = numba_blas_jit.unavailable_reason()
        self.available = self.reason is None
        self.version = numba_blas_jit.version()

    def kernel(self, shape: Shape, dtype: str, owner) -> tuple[str, int, int]:
        """(provider name, kernel address, jitter address) for `shape`; destroyed with `owner`."""
        a, b = shape.a_shape(), shape.b_shape()
        gemm_shape = numba_blas_jit.GemmShape(*shape, lda=a[1], ldb=b[1], ldc=shape.n)
        kernel = numba_blas_jit.create(gemm_shape, dtype, owner)
        return kernel.provider, kernel.address, kernel.jitter


class Blis:
    def __init__(self):
        hint = "pip install -r requirements-small-gemm.txt"
        self.lib, self.reason = numba_blas_jit.wheel_library("blis", "cy.*.so", hint)
        self.available = self.lib is not None
        if self.available:
            from importlib import metadata

            self.version = metadata.version("blis")

    def function(self, dtype: str) -> int:
        return ctypes.cast(getattr(self.lib, f"bli_{'s' if dtype == 'float32' else 'd'}gemm"), ctypes.c_void_p).value


class Operands:
    """One product's arrays and each available provider's call of `calls` products on them."""

    def __init__(self, shape: Shape, dtype: str, mkl: Mkl, blis: Blis, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.shape, self.dtype = shape, dtype
        self.a = rng.standard_normal(shape.a_shape()).astype(dtype)  # op(a): m,k
        self.b = rng.standard_normal(shape.b_shape()).astype(dtype)  # op(b): k,n
        self.c = {}  # provider: its own output, m,n
        self.runs = {}  # provider: run(calls)
        s, a, b = shape, self.a, self.b
        self._add("openblas", lambda c, r: run_openblas(r, a, s.trans_a, b, s.trans_b, c, s.m, s.n, s.k))
        if mkl.available:
            name, kernel, jitter = mkl.kernel(shape, dtype, owner=self)
            self._add(name, lambda c, r: run_mkl(r, kernel, jitter, a, b, c))
        if blis.available:
            function = blis.function(dtype)
            ta, tb = (BLIS_TRANSPOSE if t else BLIS_NO_TRANSPOSE for t in (s.trans_a, s.trans_b))
            self._add("blis", lambda c, r: run_blis(r, function, ta, tb, s.m, s.n, s.k, a, b, c))

    def _add(self, provider: str, run) -> None:
        c = np.full((self.shape.m, self.shape.n), np.nan, dtype=self.dtype)  # m,n: unwritten shows as nan
        self.c[provider] = c
        self.runs[provider] = lambda calls: run(c, calls)

    def check(self) -> dict[str, float]:
        """Each provider's largest error against the float64 product, in units of the dtype's epsilon
        times k times the largest |a| |b| sum: the agreement that must hold before anything is timed."""
        op_a = (self.a.T if self.shape.trans_a else self.a).astype(np.float64)  # m,k
        op_b = (self.b.T if self.shape.trans_b else self.b).astype(np.float64)  # k,n
        exact = op_a @ op_b  # m,n
        scale = float((np.abs(op_a) @ np.abs(op_b)).max()) * np.finfo(self.dtype).eps
        errors = {}
        for provider, run in self.runs.items():
            run(1)
            errors[provider] = float(np.abs(self.c[provider] - exact).max() / scale)  # nan stays nan
        return errors


def step_products(n: int, d: int, h: int, o: int) -> dict[str, Shape]:
    """numba:blas's five products in its feature-major plan, unpadded (impls.numba_blas.kernel_shapes)."""
    from impls.numba_arena import NO_PRODUCTS, ArenaLayout
    from impls.numba_blas import kernel_shapes

    layout = ArenaLayout(n, d, h, o, adam=False, may_loop=NO_PRODUCTS, batch_major=False)
    return {name: Shape(*shape[:5]) for name, shape in kernel_shapes(layout).items()}


def versions(mkl: Mkl, blis: Blis) -> dict:
    return {
        "mkl": getattr(mkl, "version", None) or mkl.reason,
        "blis": getattr(blis, "version", None) or blis.reason,
        "python": sys.version.split()[0],
        "cpu": cpu_model(),
    }
