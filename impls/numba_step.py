"""The step as explicit loops compiled by Numba: `numba` on one thread, `numba:parallel` with prange.

Every product is one of two kernels, each with a vectorised innermost loop over
contiguous memory, and no BLAS call:

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
remove across a loop, and at the seed size they cost more than the arithmetic.
"""

from __future__ import annotations

import math
import warnings

import numba
import numpy as np
from numba import prange

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
    lr_t = w.dtype.type(lr)  # rounded to the dtype once, as NumPy does with a Python float
    rows, cols = w.shape
    for i in range(rows):
        for j in range(cols):
            w[i, j] -= lr_t * g[i, j]


@_jit(error_model="numpy")
def _adam(w, g, m, v, lr, t):
    """torch.optim.Adam at step t (from 1), in the dtype of w.

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
    rows, cols = w.shape
    for i in range(rows):
        for j in range(cols):
            grad = g[i, j]
            m_ij = beta1 * m[i, j] + one_minus_beta1 * grad
            v_ij = beta2 * v[i, j] + one_minus_beta2 * grad * grad
            m[i, j] = m_ij
            v[i, j] = v_ij
            w[i, j] -= step_size * m_ij / (math.sqrt(v_ij) / correction2_sqrt + eps)


# ---------------------------------------------------------------------------------------
# The arena: every buffer of the step, carved from one array.


@_jit()
def arena_shapes(n, d, h, o, adam):
    """(rows, cols) of each buffer, in arena order; sizes padded. Unused buffers are empty."""
    nt_y_pred = h >= NT_MIN_K  # y_pred by NT needs a row-major
    nt_ga = o >= NT_MIN_K  # ga by NT needs g row-major
    return (
        (n, d),  # x
        (d, n),  # x_t
        (o, n),  # y_t
        (h, d),  # w1_t
        (h, o),  # w2
        (o, h),  # w2_t
        (h, n),  # a_t: h.T, then relu in place
        (n, h) if nt_y_pred else (0, 0),  # a
        (o, n),  # g_t: y_pred.T, then 2 (y_pred - y).T in place
        (n, o) if nt_ga else (0, 0),  # g
        (h, n),  # gh_t: ga.T, then masked in place
        (h, d),  # gw1_t
        (h, o),  # gw2
        (h, d) if adam else (0, 0),  # m1_t
        (h, d) if adam else (0, 0),  # v1_t
        (h, o) if adam else (0, 0),  # m2
        (h, o) if adam else (0, 0),  # v2
        (1, N_BLOCK * K_BLOCK_BYTES // 4) if packs(h, max(n, d, o)) or packs(o, h) else (0, 0),  # pack: one panel of b
    )


@_jit(inline="always")
def _take(buf, offset, shape):
    rows, cols = shape
    size = rows * cols
    view = buf[offset : offset + size].reshape((rows, cols))
    return view, offset + (size + ALIGN - 1) // ALIGN * ALIGN


def arena_size(n, d, h, o, adam) -> int:
    return sum(_round_up(r * c, ALIGN) for r, c in arena_shapes(n, d, h, o, adam))


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
def arena_views(buf, n, d, h, o, adam):
    """The 18 buffers of arena_shapes, as views of buf."""
    s = arena_shapes(n, d, h, o, adam)
    x, off = _take(buf, 0, s[0])
    x_t, off = _take(buf, off, s[1])
    y_t, off = _take(buf, off, s[2])
    w1_t, off = _take(buf, off, s[3])
    w2, off = _take(buf, off, s[4])
    w2_t, off = _take(buf, off, s[5])
    a_t, off = _take(buf, off, s[6])
    a, off = _take(buf, off, s[7])
    g_t, off = _take(buf, off, s[8])
    g, off = _take(buf, off, s[9])
    gh_t, off = _take(buf, off, s[10])
    gw1_t, off = _take(buf, off, s[11])
    gw2, off = _take(buf, off, s[12])
    m1_t, off = _take(buf, off, s[13])
    v1_t, off = _take(buf, off, s[14])
    m2, off = _take(buf, off, s[15])
    v2, off = _take(buf, off, s[16])
    pack, off = _take(buf, off, s[17])
    return x, x_t, y_t, w1_t, w2, w2_t, a_t, a, g_t, g, gh_t, gw1_t, gw2, m1_t, v1_t, m2, v2, pack


# ---------------------------------------------------------------------------------------
# The step

GRADS_ONLY, SGD, ADAM = 0, 1, 2


@_jit()
def train_step(buf, n, d, h, o, adam, update, lr, t, parallel):
    """Loss and gradients (left in gw1_t, gw2) at the current weights, then the update.

    n, d, h, o: the problem's sizes (unpadded). adam: whether the arena holds Adam's
    moments (its layout, whatever this call does). update: GRADS_ONLY, SGD or ADAM (at
    Adam step t). Returns the pre-update loss.
    """
    x, x_t, y_t, w1_t, w2, w2_t, a_t, a, g_t, g, gh_t, gw1_t, gw2, m1_t, v1_t, m2, v2, pack = arena_views(
        buf, *padded_shape(n, d, h, o), adam
    )
    # The NT products over rows of H stop at the first even row count: the padding
    # beyond stays zero, and at H = 10 a fifth of their work is saved.
    h2 = _round_up(h, 2)
    _nt(w1_t[:h2], x, a_t[:h2], pack, parallel)  # H,N   h.T = w1.T @ x.T
    _relu(a_t)  # H,N   a.T
    if h >= NT_MIN_K:
        _transpose(a_t, a)  # N,H
        _nt(w2_t, a, g_t, pack, parallel)  # O,N   y_pred.T = w2.T @ a.T
    else:
        _nn(w2_t, a_t, g_t, parallel)  # O,N   y_pred.T = w2.T @ a.T
    loss = _loss_and_output_grad(g_t, y_t)  # O,N   g.T = 2 (y_pred - y).T
    _nt(a_t[:h2], g_t, gw2[:h2], pack, parallel)  # H,O   gw2 = a.T @ g
    if o >= NT_MIN_K:
        _transpose(g_t, g)  # N,O
        _nt(w2[:h2], g, gh_t[:h2], pack, parallel)  # H,N   ga.T = w2 @ g.T, with w2 before its update
    else:
        _nn(w2, g_t, gh_t, parallel)  # H,N   ga.T = w2 @ g.T, with w2 before its update
    _relu_grad(gh_t, a_t)  # H,N   gh.T
    _nt(gh_t[:h2], x_t, gw1_t[:h2], pack, parallel)  # H,D   gw1.T = gh.T @ x
    if update == SGD:
        _sgd(w1_t, gw1_t, lr)
        _sgd(w2, gw2, lr)
    elif update == ADAM:
        _adam(w1_t, gw1_t, m1_t, v1_t, lr, t)
        _adam(w2, gw2, m2, v2, lr, t)
    if update != GRADS_ONLY:
        _transpose(w2, w2_t)
    return loss


class NumbaStep(Step):
    """The step as jitted loops on buffers allocated here; `parallel` spreads the matmuls over threads."""

    def __init__(self, problem, arrays, parallel: bool = False):
        super().__init__(problem, arrays)
        self.parallel = bool(parallel)
        self._adam = problem.optimizer == "adam"
        self._update = ADAM if self._adam else SGD
        self._t = 0  # Adam's step count
        self._shape, self._lr = problem.shape, problem.lr  # read at every step
        padded = padded_shape(*problem.shape)
        self._buf = cache_aligned_zeros(arena_size(*padded, self._adam), problem.dtype)
        views = arena_views(self._buf, *padded, self._adam)
        x, x_t, y_t, self._w1_t, self._w2, w2_t = views[:6]
        self._gw1_t, self._gw2 = views[11:13]
        n, d, h, o = problem.shape
        x[:n, :d] = arrays.x
        x_t[:d, :n] = arrays.x.T
        y_t[:o, :n] = arrays.y.T
        self._w1_t[:h, :d] = arrays.w1.T
        self._w2[:h, :o] = arrays.w2
        w2_t[:o, :h] = arrays.w2.T
        _compile(self._buf.dtype)
        # The suite's thread budget, for numba.set_num_threads and for any pool that loading
        # the kernels brought in (Numba loads SciPy, and with it another OpenBLAS).
        threads.apply()

    def loss_and_grads(self):
        loss = train_step(self._buf, *self._shape, self._adam, GRADS_ONLY, self._lr, 0, self.parallel)
        d, h, o = self.problem.d, self.problem.h, self.problem.o
        return float(loss), self._gw1_t[:h, :d].T.copy(), self._gw2[:h, :o].copy()

    def _step(self):
        if self._adam:
            self._t += 1
        return train_step(self._buf, *self._shape, self._adam, self._update, self._lr, self._t, self.parallel)

    def weights(self):
        d, h, o = self.problem.d, self.problem.h, self.problem.o
        return self._w1_t[:h, :d].T.copy(), self._w2[:h, :o].copy()


_compiled: set = set()


def _compile(dtype) -> None:
    """Compile (or load from the cache) the step for dtype now, so that no timed call does.

    Numba compiles by argument types, not sizes, and every branch at once: one call on
    the smallest problem covers every later one of this dtype.
    """
    if dtype not in _compiled:
        buf = np.zeros(arena_size(*padded_shape(1, 1, 1, 1), True), dtype=dtype)
        train_step(buf, 1, 1, 1, 1, True, ADAM, 0.0, 1, False)
        _compiled.add(dtype)
