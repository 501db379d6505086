"""The step compiled by Numba: `numba` on one thread, `numba:parallel` with prange, `numba:blas` with BLAS.

The step is one compiled call (train_step). Its five products go through the loops below,
or, for numba:blas, through BLAS's gemm (SciPy's scipy.linalg.cython_blas) where the plan
chosen at create says so (NumbaBlasStep); everything else is the same code for all three.

Every product by loops is one of two kernels, each with a vectorised innermost loop over
contiguous memory:

- NT, c = a @ b.T: each output a dot product of two contiguous rows, in 4x4 register
  tiles (reassociation lets LLVM split each dot product over vector lanes).
- NN, c = a @ b: rows of c updated along their length by rows of b. For y_pred and ga
  when their inner dimension (H, O) is short (at the seed size, 10), where a dot product
  would be mostly its final horizontal sum; from NT_MIN_K on they use NT too.

So the arrays are kept in the layouts these want: activations batch-contiguous (h.T, a.T,
g.T: features x batch), w1 as w1.T, w2 in both orientations, x in both (copied once, at
create), and a and g also row-major where an NT product needs them.

Dimensions are padded with zeros: H and O to the 4-row tile, N and D (the inner dimension
of the two large products) to 8, a whole number of vectors. Padded entries add exact
zeros to every sum, get zero gradient and keep zero weights under SGD and Adam.

All buffers live in one array allocated at create and carved into views inside the
compiled code: a step is one call with one array argument (Numba unboxes each array
argument at every call) and allocates nothing. No loop makes views: each view is an
incref and a decref, calls to Numba's runtime that its reference-count pruning does not
remove across a loop, and at the seed size they cost more than the arithmetic. The
weights, their gradients and Adam's two moments each lie in one stretch of the arena (w1
then w2), so one flat loop updates both weights.
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib.util
import math
import os
import sys
import warnings

import llvmlite.binding
import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic

from . import threads
from .problem import ADAM_BETA1, ADAM_BETA2, ADAM_EPS
from .step import Step

TILE = 4  # a 4x4 block of c is accumulated in 16 registers
VECTOR = 8  # N and D are padded to whole 256-bit vectors of float32 (two of float64)
NT_MIN_K = 32  # below this inner dimension NN beats NT (at K=12: twice as fast)
K_BLOCK_BYTES = 4096  # an NT tile's 8 operand rows, this long, stay in L1 (32 KiB of 48)
N_BLOCK = 128  # rows of b per NT panel: N_BLOCK x k block (512 KiB) stays in L2 while a's strips pass
PACK_MIN_K = 512  # NT copies panels of b whose rows are at least this long (2 KiB float32, 4 KiB float64)
PACK_MIN_M = 256  # ... and only where a has this many rows: each copy serves M / 4 strips (see packs)
NN_BLOCK = 256  # columns of c per NN panel: four rows of it stay in L1 across k
M_BLOCK = 64  # rows of c per parallel task
B_IN_L2_BYTES = 1 << 20  # a parallel NT reads b whole in every strip up to this size (L2: 2 MiB per core)
PARALLEL_MIN_MACS = 1 << 21  # smaller products run serially: a prange launch costs 3 us and up, 5% of this
U1, U2, U3 = np.uint64(1), np.uint64(2), np.uint64(3)  # unsigned offsets: see _tile
ALIGN = 16  # arena offsets are multiples of 16 elements, so every buffer starts on a cache line

# Sums only: reassociation lets LLVM split each dot product into vector lanes
# (any summation order stays within the checker's u * sqrt(K) bound), contraction lets it
# fuse multiply and add (one rounding instead of two). No nnan/ninf: a diverging run must
# show its NaN and inf, not have them optimised away. The loss, a sum too, uses the same;
# the element-wise kernels (relu, transposes, updates) use no fastmath at all.
SUM_FLAGS = {"reassoc", "contract"}

_cache_warning_given = False


def _jit(**options):
    """numba.njit with an on-disk cache, or without one where no cache directory is writable.

    Numba caches in NUMBA_CACHE_DIR if set, else next to this file, else in the user's
    cache directory; where none is writable it compiles in every process instead.
    """

    def decorate(fn):
        global _cache_warning_given
        try:
            return numba.njit(cache=True, **options)(fn)
        except RuntimeError as err:  # numba: "cannot cache function ...: no locator available"
            if not _cache_warning_given:
                warnings.warn(f"numba kernels will be compiled in every process: {err}", RuntimeWarning, stacklevel=3)
                _cache_warning_given = True
            return numba.njit(**options)(fn)

    return decorate


@_jit()
def _round_up(size, multiple):
    return (size + multiple - 1) // multiple * multiple


@_jit()
def padded_shape(n, d, h, o):
    """(N, D, H, O) as the buffers hold them."""
    return _round_up(n, VECTOR), _round_up(d, VECTOR), _round_up(h, TILE), _round_up(o, TILE)


# ---------------------------------------------------------------------------------------
# c = a @ b.T


@_jit(fastmath=SUM_FLAGS, inline="always")
def _store_row(c, i, j, s0, s1, s2, s3, first):
    """c[i, j:j+4] = a tile row's four sums, added to what c holds unless on the first k block."""
    if not first:
        s0 += c[i, j]
        s1 += c[i, j + 1]
        s2 += c[i, j + 2]
        s3 += c[i, j + 3]
    c[i, j], c[i, j + 1], c[i, j + 2], c[i, j + 3] = s0, s1, s2, s3


@_jit(fastmath=SUM_FLAGS, inline="always")
def _tile(a, ia, b, jb, ka, kb, kc, c, i, j, first):
    """c[i:i+4, j:j+4] (+)= a[ia:ia+4, ka:ka+kc] @ b[jb:jb+4, kb:kb+kc].T; overwrites on the first k block.

    Sixteen accumulators in the dtype of c; the k loop reads eight contiguous rows and is
    vectorised along k (each accumulator becomes a vector of partial sums). The operand
    indices are unsigned (uint64), so Numba emits no negative-index wraparound, which
    would turn the vector loads into gathers; and the rows are indexed in place, not
    sliced: every view costs two calls to update its reference count, more than the
    arithmetic of a tile at the seed size.
    """
    zero = c.dtype.type(0)
    c00 = c01 = c02 = c03 = zero
    c10 = c11 = c12 = c13 = zero
    c20 = c21 = c22 = c23 = zero
    c30 = c31 = c32 = c33 = zero
    ia1, ia2, ia3 = ia + U1, ia + U2, ia + U3
    jb1, jb2, jb3 = jb + U1, jb + U2, jb + U3
    for k in range(kc):
        k_a, k_b = ka + k, kb + k
        x0, x1, x2, x3 = a[ia, k_a], a[ia1, k_a], a[ia2, k_a], a[ia3, k_a]
        y0, y1, y2, y3 = b[jb, k_b], b[jb1, k_b], b[jb2, k_b], b[jb3, k_b]
        c00 += x0 * y0
        c01 += x0 * y1
        c02 += x0 * y2
        c03 += x0 * y3
        c10 += x1 * y0
        c11 += x1 * y1
        c12 += x1 * y2
        c13 += x1 * y3
        c20 += x2 * y0
        c21 += x2 * y1
        c22 += x2 * y2
        c23 += x2 * y3
        c30 += x3 * y0
        c31 += x3 * y1
        c32 += x3 * y2
        c33 += x3 * y3
    _store_row(c, i, j, c00, c01, c02, c03, first)
    _store_row(c, i + 1, j, c10, c11, c12, c13, first)
    _store_row(c, i + 2, j, c20, c21, c22, c23, first)
    _store_row(c, i + 3, j, c30, c31, c32, c33, first)


@_jit(fastmath=SUM_FLAGS, inline="always")
def _tile2(a, ia, b, jb, ka, kb, kc, c, i, j, first):
    """_tile for two rows of a: the last strip where H is 2 more than a multiple of 4."""
    zero = c.dtype.type(0)
    c00 = c01 = c02 = c03 = zero
    c10 = c11 = c12 = c13 = zero
    ia1 = ia + U1
    jb1, jb2, jb3 = jb + U1, jb + U2, jb + U3
    for k in range(kc):
        k_a, k_b = ka + k, kb + k
        x0, x1 = a[ia, k_a], a[ia1, k_a]
        y0, y1, y2, y3 = b[jb, k_b], b[jb1, k_b], b[jb2, k_b], b[jb3, k_b]
        c00 += x0 * y0
        c01 += x0 * y1
        c02 += x0 * y2
        c03 += x0 * y3
        c10 += x1 * y0
        c11 += x1 * y1
        c12 += x1 * y2
        c13 += x1 * y3
    _store_row(c, i, j, c00, c01, c02, c03, first)
    _store_row(c, i + 1, j, c10, c11, c12, c13, first)


@_jit()
def packs(m_dim, k_dim):
    """Whether c = a @ b.T (a: M,K) copies panels of b.

    Long rows are copied next to each other first: rows thousands of elements apart would
    each sit on its own pages and, at power-of-two strides, in the same cache sets. The
    copy is made once for the M / 4 strips of a that read it, and on one thread; with
    few strips it costs more than it saves (tutorial, h.T with M = 100, two threads:
    130 us with the copy, 88 us without in float32; medium, M = 1024: 7.7 ms with,
    10.9 ms without).
    """
    return k_dim >= PACK_MIN_K and m_dim >= PACK_MIN_M


@_jit(inline="always")
def _panel(a, b, j0, j1, k0, k1, pack):
    """b[j0:j1, k0:k1] as (rows, row offset, column offset) for _tile: copied if packs(), else b in place."""
    if not packs(a.shape[0], b.shape[1]):
        return b, 0, k0
    kc = k1 - k0
    panel = pack[0, : (j1 - j0) * kc].reshape((j1 - j0, kc))
    for j in range(j1 - j0):
        for k in range(kc):
            panel[j, k] = b[j0 + j, k0 + k]
    return panel, j0, 0


@_jit(fastmath=SUM_FLAGS)
def _strip(a, i, k0, panel, j_off, k_off, kc, c, j0, j1):
    """Rows i:i+4 of c (i:i+2 at the end of an M of 4k+2) over columns j0:j1 of one panel.

    The strip of a stays in L1 while the panel's rows pass.
    """
    first = k0 == 0
    ia, ka, kb, kn = np.uint64(i), np.uint64(k0), np.uint64(k_off), np.uint64(kc)
    if i + TILE <= a.shape[0]:
        for j in range(j0, j1, TILE):
            _tile(a, ia, panel, np.uint64(j - j_off), ka, kb, kn, c, i, j, first)
    else:
        for j in range(j0, j1, TILE):
            _tile2(a, ia, panel, np.uint64(j - j_off), ka, kb, kn, c, i, j, first)


@_jit(fastmath=SUM_FLAGS)
def matmul_nt(a, b, c, pack):
    """c = a @ b.T on one thread. a: M,K  b: N,K  c: M,N; M even, N a multiple of TILE.

    Loop order: k block, panel of N_BLOCK rows of b (kept in L2), 4-row strip of a (kept
    in L1), 4x4 tile. pack: scratch for one panel.
    """
    m_dim, k_dim = a.shape
    n_dim = b.shape[0]
    k_block = K_BLOCK_BYTES // a.itemsize
    for k0 in range(0, k_dim, k_block):
        k1 = min(k0 + k_block, k_dim)
        for j0 in range(0, n_dim, N_BLOCK):
            j1 = min(j0 + N_BLOCK, n_dim)
            panel, j_off, k_off = _panel(a, b, j0, j1, k0, k1, pack)
            for i in range(0, m_dim, TILE):
                _strip(a, i, k0, panel, j_off, k_off, k1 - k0, c, j0, j1)


@_jit(fastmath=SUM_FLAGS, parallel=True)
def matmul_nt_parallel(a, b, c, pack):
    """matmul_nt with the 4-row strips of c spread over threads (each writes its own rows of c).

    Where b fits in L2 it is read in place and one parallel loop covers the product: each
    strip reads all of b. Otherwise the threads go through b a panel at a time (copied if
    packs()), one parallel loop per panel, so b is read from memory once, not once per
    strip (the batch sweep at N = 16384, gw1.T: b = x.T is 64 MiB in float32).
    """
    m_dim, k_dim = a.shape
    n_dim = b.shape[0]
    if m_dim * n_dim * k_dim < PARALLEL_MIN_MACS:
        matmul_nt(a, b, c, pack)
        return
    k_block = K_BLOCK_BYTES // a.itemsize
    strips = (m_dim + TILE - 1) // TILE
    if not packs(m_dim, k_dim) and n_dim * k_dim * b.itemsize <= B_IN_L2_BYTES:
        for strip in prange(strips):
            for k0 in range(0, k_dim, k_block):
                k1 = min(k0 + k_block, k_dim)
                for j0 in range(0, n_dim, N_BLOCK):
                    _strip(a, strip * TILE, k0, b, 0, k0, k1 - k0, c, j0, min(j0 + N_BLOCK, n_dim))
        return
    for k0 in range(0, k_dim, k_block):
        k1 = min(k0 + k_block, k_dim)
        for j0 in range(0, n_dim, N_BLOCK):
            j1 = min(j0 + N_BLOCK, n_dim)
            panel, j_off, k_off = _panel(a, b, j0, j1, k0, k1, pack)
            for strip in prange(strips):
                _strip(a, strip * TILE, k0, panel, j_off, k_off, k1 - k0, c, j0, j1)


# ---------------------------------------------------------------------------------------
# c = a @ b, for short k: the k-loop of a dot product would be mostly horizontal sums.


@_jit(fastmath=SUM_FLAGS)
def _matmul_nn_rows(a, b, c, i0, i1):
    """c[i0:i1] = a[i0:i1] @ b, four rows of c at a time, each updated along its contiguous length.

    a is only read one element at a time; the innermost loop, over a row of b and four
    rows of c, is vectorised. Unsigned indices and no views, as in _tile.
    """
    k_dim = a.shape[1]
    n_dim = b.shape[1]
    for j0 in range(0, n_dim, NN_BLOCK):
        jc, jn = np.uint64(j0), np.uint64(min(j0 + NN_BLOCK, n_dim) - j0)
        for i in range(i0, i1, TILE):
            r0 = np.uint64(i)
            r1, r2, r3 = r0 + U1, r0 + U2, r0 + U3
            for k in range(k_dim):
                x0, x1, x2, x3 = a[i, k], a[i + 1, k], a[i + 2, k], a[i + 3, k]
                rk = np.uint64(k)
                if k == 0:
                    for jj in range(jn):
                        j = jc + jj
                        y = b[rk, j]
                        c[r0, j] = x0 * y
                        c[r1, j] = x1 * y
                        c[r2, j] = x2 * y
                        c[r3, j] = x3 * y
                else:
                    for jj in range(jn):
                        j = jc + jj
                        y = b[rk, j]
                        c[r0, j] += x0 * y
                        c[r1, j] += x1 * y
                        c[r2, j] += x2 * y
                        c[r3, j] += x3 * y


@_jit(fastmath=SUM_FLAGS)
def matmul_nn(a, b, c):
    """c = a @ b on one thread. a: M,K  b: K,N  c: M,N; M a multiple of TILE."""
    _matmul_nn_rows(a, b, c, 0, a.shape[0])


@_jit(fastmath=SUM_FLAGS, parallel=True)
def matmul_nn_parallel(a, b, c):
    """c = a @ b, blocks of M_BLOCK rows of c spread over threads."""
    m_dim = a.shape[0]
    if m_dim * b.shape[1] * a.shape[1] < PARALLEL_MIN_MACS:
        _matmul_nn_rows(a, b, c, 0, m_dim)
        return
    for block in prange((m_dim + M_BLOCK - 1) // M_BLOCK):
        _matmul_nn_rows(a, b, c, block * M_BLOCK, min((block + 1) * M_BLOCK, m_dim))


@_jit()
def _nt(a, b, c, pack, parallel):
    if parallel:
        matmul_nt_parallel(a, b, c, pack)
    else:
        matmul_nt(a, b, c, pack)


@_jit()
def _nn(a, b, c, parallel):
    if parallel:
        matmul_nn_parallel(a, b, c)
    else:
        matmul_nn(a, b, c)


# ---------------------------------------------------------------------------------------
# c = op(a) @ op(b) by BLAS: SciPy's s/dgemm (scipy.linalg.cython_blas), called from compiled code.

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
    """Where SciPy is missing: numba:blas is then unavailable and nothing calls gemm, but the
    cached step still links against the name. Were it ever called, stop rather than leave c unwritten."""
    sys.stderr.write("impls.numba_step: BLAS's gemm was called, but SciPy is not installed\n")
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


@_jit(inline="always")
def _gemm(a, trans_a, b, trans_b, c, m, n, k):
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


# ---------------------------------------------------------------------------------------
# Element-wise passes

BLOCK = 32  # transposes go in 32x32 blocks, so both sides stay in L1 while a block is copied


@_jit()
def _transpose(src, dst):
    """dst = src.T; each block written a row of dst at a time (measured 2-3x faster than by columns)."""
    rows, cols = src.shape
    for i0 in range(0, rows, BLOCK):
        i1 = min(i0 + BLOCK, rows)
        for j0 in range(0, cols, BLOCK):
            for j in range(j0, min(j0 + BLOCK, cols)):
                for i in range(i0, i1):
                    dst[j, i] = src[i, j]


@_jit()
def _relu(a):
    """a = relu(a) in place. NaN passes through, as in np.maximum."""
    zero = a.dtype.type(0)
    rows, cols = a.shape
    for i in range(rows):
        for j in range(cols):
            if a[i, j] <= zero:
                a[i, j] = zero


@_jit(fastmath=SUM_FLAGS)
def _loss_and_output_grad(y_pred, y):
    """y_pred becomes g = 2 (y_pred - y) in place; returns sum((y_pred - y)^2), summed in the dtype.

    Row sums first, then their sum: the error grows with sqrt(rows) + sqrt(cols), not
    sqrt(rows cols). A sum, so reassociation is allowed here too (the row sums vectorise).
    """
    loss = y_pred.dtype.type(0)
    rows, cols = y_pred.shape
    for i in range(rows):
        row = y_pred.dtype.type(0)
        for j in range(cols):
            diff = y_pred[i, j] - y[i, j]
            row += diff * diff
            y_pred[i, j] = diff + diff  # exactly 2 * diff
        loss += row
    return loss


@_jit()
def _relu_grad(ga_t, a_t):
    """gh = ga * relu'(h) in place, with relu'(0) = 0: a > 0 exactly where h > 0."""
    zero = ga_t.dtype.type(0)
    rows, cols = ga_t.shape
    for i in range(rows):
        for j in range(cols):
            if not a_t[i, j] > zero:
                ga_t[i, j] = zero


@_jit()
def _sgd(w, g, lr):
    """w -= lr g over flat arrays (both weights at once: see arena_views)."""
    lr_t = w.dtype.type(lr)  # rounded to the dtype once, as NumPy does with a Python float
    for i in range(w.size):
        w[i] -= lr_t * g[i]


@_jit(error_model="numpy")
def _adam(w, g, m, v, lr, t):
    """torch.optim.Adam at step t (from 1), in the dtype of w, over flat arrays (both weights at once).

    Constants are formed in float64 and rounded once to the dtype, as torch does: in
    float32, 1 - float32(0.999) would be off by 1.3e-5 relative, far beyond rounding.
    Division follows NumPy (x / 0 is inf or nan), not Python: Numba's default error
    model tests every divisor for zero to raise ZeroDivisionError, and that branch kept
    the loop from being vectorised (scalar vdivss/vsqrtss only, checked in the assembly).
    """
    dtype = w.dtype.type
    beta1, beta2, eps = dtype(ADAM_BETA1), dtype(ADAM_BETA2), dtype(ADAM_EPS)
    one_minus_beta1, one_minus_beta2 = dtype(1.0 - ADAM_BETA1), dtype(1.0 - ADAM_BETA2)
    step_size = dtype(lr / (1.0 - ADAM_BETA1**t))
    correction2_sqrt = dtype(math.sqrt(1.0 - ADAM_BETA2**t))
    for i in range(w.size):
        grad = g[i]
        m_i = beta1 * m[i] + one_minus_beta1 * grad
        v_i = beta2 * v[i] + one_minus_beta2 * grad * grad
        m[i] = m_i
        v[i] = v_i
        w[i] -= step_size * m_i / (math.sqrt(v_i) / correction2_sqrt + eps)


# ---------------------------------------------------------------------------------------
# The arena: every buffer of the step, carved from one array.

# The five products, in the order the step computes them, each a bit of a plan (the products
# BLAS does) and of may_loop (the products that may go through the loops: their buffers are
# in the arena).
PRODUCTS = ("h", "y_pred", "gw2", "ga", "gw1")
H_PRODUCT, Y_PRED, GW2, GA, GW1 = 1, 2, 4, 8, 16
ALL_PRODUCTS = 31


@_jit()
def arena_shapes(n, d, h, o, adam, may_loop, batch_major):
    """(rows, cols) of each buffer, in arena order; sizes padded. Unused buffers are empty.

    Feature-major (the loops' layout): activations and their gradients as features x batch
    (h.T, y_pred.T), w1 as w1.T. may_loop: the products that may go through the loops; the
    copies only they read (x.T, w2.T, a and g row-major, the panel to pack) are left out for
    the others, which BLAS reads in place.

    batch_major (BLAS only, may_loop 0): the notebook's layout, batch x features and w1 as
    (D, H), in the same slots (named below for the feature-major layout), and x.T for gw1 =
    x.T @ gh (OpenBLAS 0.3.30 took 19.5 ms from x.T in memory, 24.9 ms transposing x by
    flag, at N = 16384, D = 1000, H = 100, float32). The two layouts put BLAS's work on
    different loops of its kernels; which is faster depends on the shape.
    """
    y_pred_loops, ga_loops = (may_loop & Y_PRED) != 0, (may_loop & GA) != 0
    nt_y_pred = y_pred_loops and h >= NT_MIN_K  # y_pred by NT needs a row-major
    nt_ga = ga_loops and o >= NT_MIN_K  # ga by NT needs g row-major
    packing = may_loop != 0 and (packs(h, max(n, d, o)) or packs(o, h))
    by_batch = (n, h) if batch_major else (h, n)
    return (
        (n, d),  # x
        (d, n) if may_loop & GW1 or batch_major else (0, 0),  # x_t
        (n, o) if batch_major else (o, n),  # y_t
        (d, h) if batch_major else (h, d),  # w1_t    } the weights: one stretch
        (h, o),  # w2      }
        (o, h) if y_pred_loops else (0, 0),  # w2_t
        by_batch,  # a_t: h.T, then relu in place
        (n, h) if nt_y_pred else (0, 0),  # a
        (n, o) if batch_major else (o, n),  # g_t: y_pred.T, then 2 (y_pred - y).T in place
        (n, o) if nt_ga else (0, 0),  # g
        by_batch,  # gh_t: ga.T, then masked in place
        (d, h) if batch_major else (h, d),  # gw1_t   } their gradients: one stretch
        (h, o),  # gw2     }
        ((d, h) if batch_major else (h, d)) if adam else (0, 0),  # m1_t    } Adam's first moments: one stretch
        (h, o) if adam else (0, 0),  # m2      }
        ((d, h) if batch_major else (h, d)) if adam else (0, 0),  # v1_t    } and its second
        (h, o) if adam else (0, 0),  # v2      }
        (1, N_BLOCK * K_BLOCK_BYTES // 4) if packing else (0, 0),  # pack: one panel of b
    )


@_jit(inline="always")
def _aligned(size):
    return (size + ALIGN - 1) // ALIGN * ALIGN


@_jit(inline="always")
def _take(buf, offset, shape):
    rows, cols = shape
    size = rows * cols
    view = buf[offset : offset + size].reshape((rows, cols))
    return view, offset + _aligned(size)


def arena_size(n, d, h, o, adam, may_loop=ALL_PRODUCTS, batch_major=False) -> int:
    return sum(_round_up(r * c, ALIGN) for r, c in arena_shapes(n, d, h, o, adam, may_loop, batch_major))


CACHE_LINE = 64


def cache_aligned_zeros(size: int, dtype) -> np.ndarray:
    """np.zeros(size, dtype) starting on a cache line (NumPy guarantees only 16 bytes).

    With the arena's offsets in whole cache lines, every buffer then starts on one, and
    rows whose length is a whole number of vectors never split a vector load across two.
    """
    itemsize = np.dtype(dtype).itemsize
    raw = np.zeros(size * itemsize + CACHE_LINE, dtype=np.uint8)
    start = -raw.ctypes.data % CACHE_LINE
    return raw[start : start + size * itemsize].view(dtype)


@_jit()
def arena_views(buf, n, d, h, o, adam, may_loop, batch_major):
    """The 18 buffers of arena_shapes, as views of buf; then the weights, their gradients and
    Adam's two moments, each as one flat view of its stretch (w1, the gap to the next
    cache line, w2). The four stretches have the same length and the same gaps, which stay
    zero: a zero gradient keeps a zero weight under SGD and Adam."""
    s = arena_shapes(n, d, h, o, adam, may_loop, batch_major)
    stretch = _aligned(h * d) + _aligned(h * o)
    x, off = _take(buf, 0, s[0])
    x_t, off = _take(buf, off, s[1])
    y_t, off = _take(buf, off, s[2])
    weights = buf[off : off + stretch]
    w1_t, off = _take(buf, off, s[3])
    w2, off = _take(buf, off, s[4])
    w2_t, off = _take(buf, off, s[5])
    a_t, off = _take(buf, off, s[6])
    a, off = _take(buf, off, s[7])
    g_t, off = _take(buf, off, s[8])
    g, off = _take(buf, off, s[9])
    gh_t, off = _take(buf, off, s[10])
    grads = buf[off : off + stretch]
    gw1_t, off = _take(buf, off, s[11])
    gw2, off = _take(buf, off, s[12])
    moment1 = buf[off : off + stretch] if adam else buf[off:off]
    m1_t, off = _take(buf, off, s[13])
    m2, off = _take(buf, off, s[14])
    moment2 = buf[off : off + stretch] if adam else buf[off:off]
    v1_t, off = _take(buf, off, s[15])
    v2, off = _take(buf, off, s[16])
    pack, off = _take(buf, off, s[17])
    views = (x, x_t, y_t, w1_t, w2, w2_t, a_t, a, g_t, g, gh_t, gw1_t, gw2, m1_t, m2, v1_t, v2, pack)
    return views, (weights, grads, moment1, moment2)


# ---------------------------------------------------------------------------------------
# The step

GRADS_ONLY, SGD, ADAM = 0, 1, 2


@_jit()
def _grads_batch_major(x, x_t, y, w1, w2, a, g, gh, gw1, gw2, n, d, h, o):
    """Loss and gradients by BLAS on batch-major buffers (the notebook's layout); returns the loss."""
    _gemm(x, False, w1, False, a, n, h, d)  # N,H   h = x @ w1
    _relu(a)  # N,H   a
    _gemm(a, False, w2, False, g, n, o, h)  # N,O   y_pred = a @ w2
    loss = _loss_and_output_grad(g, y)  # N,O   g = 2 (y_pred - y)
    _gemm(a, True, g, False, gw2, h, o, n)  # H,O   gw2 = a.T @ g
    _gemm(g, False, w2, True, gh, n, h, o)  # N,H   ga = g @ w2.T, with w2 before its update
    _relu_grad(gh, a)  # N,H   gh
    _gemm(x_t, False, gh, False, gw1, d, h, n)  # D,H   gw1 = x.T @ gh
    return loss


@_jit()
def _grads_feature_major(views, n, d, h, o, parallel, may_loop, plan):
    """Loss and gradients on feature-major buffers, each product by BLAS or the loops as plan says."""
    x, x_t, y_t, w1_t, w2, w2_t, a_t, a, g_t, g, gh_t, gw1_t, gw2, m1_t, m2, v1_t, v2, pack = views
    # The NT products over rows of H stop at the first even row count: the padding
    # beyond stays zero, and at H = 10 a fifth of their work is saved.
    h2 = _round_up(h, 2)
    if plan & H_PRODUCT:
        _gemm(w1_t, False, x, True, a_t, h, n, d)  # H,N   h.T = w1.T @ x.T
    else:
        _nt(w1_t[:h2], x, a_t[:h2], pack, parallel)  # H,N   h.T = w1.T @ x.T
    _relu(a_t)  # H,N   a.T
    if plan & Y_PRED:
        _gemm(w2, True, a_t, False, g_t, o, n, h)  # O,N   y_pred.T = w2.T @ a.T
    elif h >= NT_MIN_K:
        _transpose(a_t, a)  # N,H
        _nt(w2_t, a, g_t, pack, parallel)  # O,N   y_pred.T = w2.T @ a.T
    else:
        _nn(w2_t, a_t, g_t, parallel)  # O,N   y_pred.T = w2.T @ a.T
    loss = _loss_and_output_grad(g_t, y_t)  # O,N   g.T = 2 (y_pred - y).T
    if plan & GW2:
        _gemm(a_t, False, g_t, True, gw2, h, o, n)  # H,O   gw2 = a.T @ g
    else:
        _nt(a_t[:h2], g_t, gw2[:h2], pack, parallel)  # H,O   gw2 = a.T @ g
    if plan & GA:
        _gemm(w2, False, g_t, False, gh_t, h, n, o)  # H,N   ga.T = w2 @ g.T, with w2 before its update
    elif o >= NT_MIN_K:
        _transpose(g_t, g)  # N,O
        _nt(w2[:h2], g, gh_t[:h2], pack, parallel)  # H,N   ga.T = w2 @ g.T, with w2 before its update
    else:
        _nn(w2, g_t, gh_t, parallel)  # H,N   ga.T = w2 @ g.T, with w2 before its update
    _relu_grad(gh_t, a_t)  # H,N   gh.T
    if plan & GW1:
        _gemm(gh_t, False, x, False, gw1_t, h, d, n)  # H,D   gw1.T = gh.T @ x
    else:
        _nt(gh_t[:h2], x_t, gw1_t[:h2], pack, parallel)  # H,D   gw1.T = gh.T @ x
    return loss


@_jit()
def train_step(buf, n, d, h, o, adam, update, lr, t, parallel, may_loop, batch_major, plan):
    """Loss and gradients (left in gw1_t, gw2) at the current weights, then the update.

    n, d, h, o: the problem's sizes (unpadded). adam, may_loop, batch_major: the arena's
    layout (whatever this call does): whether it holds Adam's moments, which products it
    holds the loops' buffers for, and its orientation. update: GRADS_ONLY, SGD or ADAM (at
    Adam step t). plan: the products done by BLAS (on its own threads); the others by the
    loops (spread over threads if parallel). Returns the pre-update loss.

    BLAS is given the unpadded sizes and reads the padded buffers in place; what it leaves
    unwritten is padding, zero from the start.
    """
    views, stretches = arena_views(buf, *padded_shape(n, d, h, o), adam, may_loop, batch_major)
    if batch_major:
        x, x_t, y, w1, w2, _, a, _, g, _, gh, gw1, gw2 = views[:13]
        loss = _grads_batch_major(x, x_t, y, w1, w2, a, g, gh, gw1, gw2, n, d, h, o)
    else:
        loss = _grads_feature_major(views, n, d, h, o, parallel, may_loop, plan)
    weights, grads, moment1, moment2 = stretches
    if update == SGD:
        _sgd(weights, grads, lr)  # w1 and w2 in one pass
    elif update == ADAM:
        _adam(weights, grads, moment1, moment2, lr, t)
    if update != GRADS_ONLY and (may_loop & Y_PRED) != 0:
        _transpose(views[4], views[5])  # w2.T, for y_pred by the loops
    return loss


@dataclasses.dataclass(frozen=True)
class Arena:
    """One laid-out arena and the views the Python side reads."""

    buf: np.ndarray
    may_loop: int
    batch_major: bool
    w1: np.ndarray  # w1, or w1.T where feature-major
    w2: np.ndarray
    gw1: np.ndarray  # as w1
    gw2: np.ndarray


class NumbaStep(Step):
    """The step as jitted loops on buffers allocated here; `parallel` spreads the matmuls over threads."""

    def __init__(self, problem, arrays, parallel: bool = False):
        super().__init__(problem, arrays)
        self.parallel = bool(parallel)
        self._adam = problem.optimizer == "adam"
        self._update = ADAM if self._adam else SGD
        self._t = 0  # Adam's step count
        self._shape, self._lr = problem.shape, problem.lr  # read at every step
        self._plan = 0  # every product by the loops; NumbaBlasStep sets its own
        self._arena = self._lay_out(*self._first_layout())
        _compile(self._arena.buf.dtype)
        # The suite's thread budget, for numba.set_num_threads and for any pool that loading
        # the kernels brought in (SciPy's OpenBLAS, which numba:blas calls).
        threads.apply()

    def _lay_out(self, may_loop: int, batch_major: bool) -> Arena:
        """A new arena of this layout, holding the inputs (the weights as given at create)."""
        padded = padded_shape(*self.problem.shape)
        buf = cache_aligned_zeros(arena_size(*padded, self._adam, may_loop, batch_major), self.problem.dtype)
        views, _ = arena_views(buf, *padded, self._adam, may_loop, batch_major)
        x, x_t, y, w1, w2, w2_t = views[:6]
        n, d, h, o = self.problem.shape
        arrays = self.arrays
        x[:n, :d] = arrays.x
        w2[:h, :o] = arrays.w2
        if batch_major:
            y[:n, :o] = arrays.y
            w1[:d, :h] = arrays.w1
        else:
            y[:o, :n] = arrays.y.T
            w1[:h, :d] = arrays.w1.T
        if x_t.size:  # absent where no product by the loops reads them
            x_t[:d, :n] = arrays.x.T
        if w2_t.size:
            w2_t[:o, :h] = arrays.w2.T
        return Arena(buf, may_loop, batch_major, w1, w2, views[11], views[12])

    def _first_layout(self) -> tuple[int, bool]:
        """The arena laid out at create: (the products that may go through the loops, batch-major)."""
        return ALL_PRODUCTS, False

    def _call(self, update, t, plan, arena: Arena | None = None):
        a = self._arena if arena is None else arena
        return train_step(
            a.buf, *self._shape, self._adam, update, self._lr, t, self.parallel, a.may_loop, a.batch_major, plan
        )

    def _d_by_h(self, view) -> np.ndarray:
        """A copy of w1 or gw1, (D, H), from its buffer in either layout."""
        d, h = self.problem.d, self.problem.h
        return view[:d, :h].copy() if self._arena.batch_major else view[:h, :d].T.copy()

    def loss_and_grads(self):
        loss = self._call(GRADS_ONLY, 0, self._plan)
        h, o = self.problem.h, self.problem.o
        return float(loss), self._d_by_h(self._arena.gw1), self._arena.gw2[:h, :o].copy()

    def _step(self):
        if self._adam:
            self._t += 1
        return self._call(self._update, self._t, self._plan)

    def weights(self):
        h, o = self.problem.h, self.problem.o
        return self._d_by_h(self._arena.w1), self._arena.w2[:h, :o].copy()

    def describe(self) -> dict:
        """What results record about how this step ran."""
        return {"numba": numba.__version__, "threads": numba.get_num_threads() if self.parallel else 1}


_compiled: set = set()


def _compile(dtype) -> None:
    """Compile (or load from the cache) the step for dtype now, so that no timed call does.

    Numba compiles by argument types, not sizes, and every branch at once: one call on
    the smallest problem covers every later one of this dtype.
    """
    if dtype not in _compiled:
        buf = np.zeros(arena_size(*padded_shape(1, 1, 1, 1), True), dtype=dtype)
        train_step(buf, 1, 1, 1, 1, True, ADAM, 0.0, 1, False, ALL_PRODUCTS, False, 0)
        _compiled.add(dtype)
