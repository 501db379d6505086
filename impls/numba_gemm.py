"""c = a @ b.T and c = a @ b by loops compiled with Numba: the products of `numba` and `numba:parallel`.

Every product by loops is one of two kernels, each with a vectorised innermost loop over
contiguous memory:

- NT, c = a @ b.T: each output a dot product of two contiguous rows, in 4x4 register
  tiles (reassociation lets LLVM split each dot product over vector lanes).
- NN, c = a @ b: rows of c updated along their length by rows of b. For y_pred and ga
  when their inner dimension (H, O) is short (at the seed size, 10), where a dot product
  would be mostly its final horizontal sum; from NT_MIN_K on they use NT too.

Each comes serial and parallel (prange over strips or blocks of rows of c); by_nt and by_nn
take the one a flag asks for. The caller pads the operands as each kernel's docstring says.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .numba_jit import SUM_FLAGS, jit

TILE = 4  # a 4x4 block of c is accumulated in 16 registers
VECTOR = 8  # N and D are padded to whole 256-bit vectors of float32 (two of float64)
NT_MIN_K = 32  # below this inner dimension NN beats NT (at K=12: twice as fast)
K_BLOCK_BYTES = 4096  # an NT tile's 8 operand rows, this long, stay in L1 (32 KiB of 48)
N_BLOCK = 128  # rows of b per NT panel: N_BLOCK x k block (512 KiB) stays in L2 while a's strips pass
PACK_MIN_K = 512  # NT copies panels of b whose rows are at least this long (2 KiB float32, 4 KiB float64)
PACK_MIN_M = 256  # ... and only where a has this many rows: each copy serves M / 4 strips (see packs)
PACK_ELEMENTS = N_BLOCK * K_BLOCK_BYTES // 4  # the scratch for one copied panel, in float32 (float64 uses half)
NN_BLOCK = 256  # columns of c per NN panel: four rows of it stay in L1 across k
M_BLOCK = 64  # rows of c per parallel task
B_IN_L2_BYTES = 1 << 20  # a parallel NT reads b whole in every strip up to this size (L2: 2 MiB per core)
PARALLEL_MIN_MACS = 1 << 21  # smaller products run serially: a prange launch costs 3 us and up, 5% of this
U1, U2, U3 = np.uint64(1), np.uint64(2), np.uint64(3)  # unsigned offsets: see _tile


# ---------------------------------------------------------------------------------------
# c = a @ b.T


@jit(fastmath=SUM_FLAGS, inline="always")
def _store_row(c, i, j, s0, s1, s2, s3, first):
    """c[i, j:j+4] = a tile row's four sums, added to what c holds unless on the first k block."""
    if not first:
        s0 += c[i, j]
        s1 += c[i, j + 1]
        s2 += c[i, j + 2]
        s3 += c[i, j + 3]
    c[i, j], c[i, j + 1], c[i, j + 2], c[i, j + 3] = s0, s1, s2, s3


@jit(fastmath=SUM_FLAGS, inline="always")
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


@jit(fastmath=SUM_FLAGS, inline="always")
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


@jit()
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


@jit(inline="always")
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


@jit(fastmath=SUM_FLAGS)
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


@jit(fastmath=SUM_FLAGS)
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


@jit(fastmath=SUM_FLAGS, parallel=True)
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


@jit(fastmath=SUM_FLAGS)
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


@jit(fastmath=SUM_FLAGS)
def matmul_nn(a, b, c):
    """c = a @ b on one thread. a: M,K  b: K,N  c: M,N; M a multiple of TILE."""
    _matmul_nn_rows(a, b, c, 0, a.shape[0])


@jit(fastmath=SUM_FLAGS, parallel=True)
def matmul_nn_parallel(a, b, c):
    """c = a @ b, blocks of M_BLOCK rows of c spread over threads."""
    m_dim = a.shape[0]
    if m_dim * b.shape[1] * a.shape[1] < PARALLEL_MIN_MACS:
        _matmul_nn_rows(a, b, c, 0, m_dim)
        return
    for block in prange((m_dim + M_BLOCK - 1) // M_BLOCK):
        _matmul_nn_rows(a, b, c, block * M_BLOCK, min((block + 1) * M_BLOCK, m_dim))


# ---------------------------------------------------------------------------------------
# Either, serial or parallel


@jit()
def by_nt(a, b, c, pack, parallel):
    """c = a @ b.T by matmul_nt, or by matmul_nt_parallel if parallel."""
    if parallel:
        matmul_nt_parallel(a, b, c, pack)
    else:
        matmul_nt(a, b, c, pack)


@jit()
def by_nn(a, b, c, parallel):
    """c = a @ b by matmul_nn, or by matmul_nn_parallel if parallel."""
    if parallel:
        matmul_nn_parallel(a, b, c)
    else:
        matmul_nn(a, b, c)
