"""c = op(a) @ op(b) by BLAS from compiled code: SciPy's s/dgemm (scipy.linalg.cython_blas), for numba:blas.

Importing this module imports SciPy (through numba's get_cython_function_address) and gives
LLVM the addresses of sgemm and dgemm under names of our own (GEMM_SYMBOLS); `gemm`, inlined
into compiled code, calls them by those names. Only numba:blas's step calls it: `numba`
and `numba:parallel` run without SciPy, and their steps load from the cache without it.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys

import llvmlite.binding
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic

from .numba_jit import jit

# LLVM names under which the compiled code calls gemm. By name, not by an address written into
# the code: the compiled step is cached on disk and the address changes with every process.
GEMM_SYMBOLS = {"float32": "stepbench_cython_blas_sgemm", "float64": "stepbench_cython_blas_dgemm"}
GEMM_NAMES = {"float32": "sgemm", "float64": "dgemm"}  # in scipy.linalg.cython_blas
BLAS_NO, BLAS_TRANSPOSE = ord("N"), ord("T")
BLAS_INT_LIMIT = 2**31  # cython_blas takes 32-bit sizes: every padded size stays below this

# gemm(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc): Fortran's, every argument a pointer.
_GEMM_ARGUMENTS = 13
_missing_gemm = []  # keeps the stand-in alive


def _stand_in_for_gemm(*_):
    """Where SciPy is missing: numba:blas is then unavailable and nothing calls its step, but
    should that step be loaded all the same, its code links against the names. Were gemm ever
    called, stop rather than leave c unwritten."""
    sys.stderr.write("impls.numba_blas_bridge: BLAS's gemm was called, but SciPy is not installed\n")
    sys.stderr.flush()
    os.abort()


def _register_gemm() -> str | None:
    """Give LLVM the addresses of SciPy's sgemm and dgemm; the reason if SciPy cannot provide them."""
    reason = None
    if importlib.util.find_spec("scipy") is None:
        reason = "scipy not installed"
    else:
        try:
            addresses = {
                d: get_cython_function_address("scipy.linalg.cython_blas", name) for d, name in GEMM_NAMES.items()
            }
        except (ImportError, ValueError) as error:
            reason = f"scipy.linalg.cython_blas has no s/dgemm: {error}"
    if reason is not None:
        stand_in = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * _GEMM_ARGUMENTS)(_stand_in_for_gemm)
        _missing_gemm.append(stand_in)
        addresses = {d: ctypes.cast(stand_in, ctypes.c_void_p).value for d in GEMM_SYMBOLS}
    for dtype, symbol in GEMM_SYMBOLS.items():
        llvmlite.binding.add_symbol(symbol, addresses[dtype])
    return reason


GEMM_UNAVAILABLE = _register_gemm()  # before any compiled step is loaded from the cache


@intrinsic
def _xgemm(typingctx, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):
    """Column-major c[:m, :n] = op(a) @ op(b) (alpha 1, beta 0: c is overwritten), on the data of
    arrays a, b, c of one float dtype; trans_*: BLAS_NO or BLAS_TRANSPOSE; sizes as integers.

    Each scalar goes by pointer to a slot on the caller's stack (alloca in its entry block).
    """
    dtype = c.dtype
    if not all(isinstance(x, types.Array) and x.dtype == dtype for x in (a, b, c)) or str(dtype) not in GEMM_SYMBOLS:
        return None
    sig = types.void(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc)

    def codegen(context, builder, signature, args):
        trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc = args
        char, real = ir.IntType(8), context.get_value_type(dtype)
        blas_int = ir.IntType(32)  # cython_blas's int
        # transa transb m n k alpha a lda b ldb beta c ldc
        kinds = (char, char, blas_int, blas_int, blas_int, real, real, blas_int, real, blas_int, real, real, blas_int)
        fnty = ir.FunctionType(ir.VoidType(), [kind.as_pointer() for kind in kinds])
        gemm = cgutils.get_or_insert_function(builder.module, fnty, GEMM_SYMBOLS[str(dtype)])

        def slot(value, kind):
            return cgutils.alloca_once_value(builder, builder.trunc(value, kind) if value.type != kind else value)

        def data(value, array_type):
            return context.make_array(array_type)(context, builder, value).data

        arrays = signature.args
        builder.call(
            gemm,
            [
                slot(trans_a, char),
                slot(trans_b, char),
                slot(m, blas_int),
                slot(n, blas_int),
                slot(k, blas_int),
                cgutils.alloca_once_value(builder, context.get_constant(dtype, 1.0)),
                data(a, arrays[5]),
                slot(lda, blas_int),
                data(b, arrays[7]),
                slot(ldb, blas_int),
                cgutils.alloca_once_value(builder, context.get_constant(dtype, 0.0)),
                data(c, arrays[9]),
                slot(ldc, blas_int),
            ],
        )
        return context.get_dummy_value()

    return sig, codegen


@jit(inline="always")
def gemm(a, trans_a, b, trans_b, c, m, n, k):
    """c[:m, :n] = op(a) @ op(b) by BLAS; a, b, c row-major with contiguous rows, op(a) m x k, op(b) k x n.

    BLAS is column-major, where a row-major matrix reads as its transpose: so it is asked for
    c.T = op(b).T @ op(a).T, b first, each transpose a flag (no data is moved). The leading
    dimensions are the rows' lengths in the arena, so padded buffers are read in place.
    """
    _xgemm(
        BLAS_TRANSPOSE if trans_b else BLAS_NO,
        BLAS_TRANSPOSE if trans_a else BLAS_NO,
        n,
        m,
        k,
        b,
        b.shape[1],
        a,
        a.shape[1],
        c,
        c.shape[1],
    )
