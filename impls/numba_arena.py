"""The arena of the Numba steps: every buffer of a step, carved from one array allocated at create.

The arrays are kept in the layouts the loops' kernels (impls.numba_gemm) want: activations
batch-contiguous (h.T, a.T, g.T: features x batch), w1 as w1.T, w2 in both orientations, x
in both (copied once, at create), and a and g also row-major where an NT product needs them.

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

import collections
import dataclasses
from typing import NamedTuple

import numpy as np

from .numba_gemm import NT_MIN_K, PACK_ELEMENTS, TILE, VECTOR, packs
from .numba_jit import jit

ALIGN = 16  # arena offsets are multiples of 16 elements, so every buffer starts on a cache line
CACHE_LINE = 64


class Products(NamedTuple):
    """One flag per product, in the order the step computes them: which may go through the loops (an
    arena's may_loop), or which BLAS does (numba:blas's plan)."""

    h: bool  # h.T = w1.T @ x.T
    y_pred: bool  # y_pred.T = w2.T @ a.T
    gw2: bool  # gw2 = a.T @ g
    ga: bool  # ga.T = w2 @ g.T
    gw1: bool  # gw1.T = gh.T @ x


PRODUCTS = Products._fields  # the five products, in the order the step computes them
ALL_PRODUCTS = Products(True, True, True, True, True)
NO_PRODUCTS = Products(False, False, False, False, False)


class ArenaLayout(NamedTuple):
    """What an arena holds, and in which orientation: with these every buffer's shape and place are fixed."""

    n: int  # the problem's sizes, unpadded
    d: int
    h: int
    o: int
    adam: bool  # it holds Adam's two moments
    may_loop: Products  # the products it holds the loops' buffers for (the copies only the loops read)
    batch_major: bool  # the notebook's orientation (BLAS only, no product by the loops), else feature-major

    def argument(self) -> tuple:
        """These values as plain tuples: the form a compiled step takes, named again inside by layout_of.

        Numba types a plain tuple of numbers in C at every call, a named one in Python: about
        0.6 us a call, some 7% of a `numba` step at the seed size.
        """
        return (self.n, self.d, self.h, self.o, self.adam, tuple(self.may_loop), self.batch_major)


@jit(inline="always")
def layout_of(argument):
    """The ArenaLayout of ArenaLayout.argument(), inside compiled code."""
    n, d, h, o, adam, may_loop, batch_major = argument
    return ArenaLayout(n, d, h, o, adam, Products(*may_loop), batch_major)


# Every buffer of the step, in arena order: as views of the arena (arena_views), or as their
# (rows, cols) (arena_shapes). Named for the feature-major layout; batch-major uses the same
# slots for its own orientation (see arena_shapes).
Buffers = collections.namedtuple("Buffers", "x x_t y_t w1_t w2 w2_t a_t a g_t g gh_t gw1_t gw2 m1_t m2 v1_t v2 pack")


class Stretches(NamedTuple):
    """Flat views of the weights (w1, the gap to the next cache line, w2), their gradients and
    Adam's two moments: the four have the same length and the same gaps, which stay zero (a
    zero gradient keeps a zero weight under SGD and Adam), so one flat loop updates both weights."""

    weights: np.ndarray
    grads: np.ndarray
    moment1: np.ndarray  # empty without Adam
    moment2: np.ndarray


@jit()
def round_up(size, multiple):
    return (size + multiple - 1) // multiple * multiple


@jit()
def padded_shape(n, d, h, o):
    """(N, D, H, O) as the buffers hold them."""
    return round_up(n, VECTOR), round_up(d, VECTOR), round_up(h, TILE), round_up(o, TILE)


@jit(inline="always")
def _some(products):
    return products.h or products.y_pred or products.gw2 or products.ga or products.gw1


@jit()
def arena_shapes(layout):
    """Buffers of (rows, cols), sizes padded. Unused buffers are empty.

    Feature-major (the loops' layout): activations and their gradients as features x batch
    (h.T, y_pred.T), w1 as w1.T. may_loop: the products that may go through the loops; the
    copies only they read (x.T, w2.T, a and g row-major, the panel to pack) are left out for
    the others, which BLAS reads in place.

    batch_major (BLAS only, no product by the loops): the notebook's layout, batch x features
    and w1 as (D, H), in the same slots (named for the feature-major layout), and x.T for gw1 =
    x.T @ gh (OpenBLAS 0.3.30 took 19.5 ms from x.T in memory, 24.9 ms transposing x by
    flag, at N = 16384, D = 1000, H = 100, float32). The two layouts put BLAS's work on
    different loops of its kernels; which is faster depends on the shape.
    """
    n, d, h, o = padded_shape(layout.n, layout.d, layout.h, layout.o)
    adam, may_loop, batch_major = layout.adam, layout.may_loop, layout.batch_major
    empty = (0, 0)
    nt_y_pred = may_loop.y_pred and h >= NT_MIN_K  # y_pred by NT needs a row-major
    nt_ga = may_loop.ga and o >= NT_MIN_K  # ga by NT needs g row-major
    packing = _some(may_loop) and (packs(h, max(n, d, o)) or packs(o, h))
    by_w1 = (d, h) if batch_major else (h, d)  # w1 (w1.T feature-major), its gradient and moments
    by_hidden = (n, h) if batch_major else (h, n)  # h, a and their gradients
    by_output = (n, o) if batch_major else (o, n)  # y, y_pred and g
    by_w2 = (h, o)
    x_t = (d, n) if may_loop.gw1 or batch_major else empty
    w2_t = (o, h) if may_loop.y_pred else empty
    a = (n, h) if nt_y_pred else empty
    g = (n, o) if nt_ga else empty
    moment_w1 = by_w1 if adam else empty
    moment_w2 = by_w2 if adam else empty
    pack = (1, PACK_ELEMENTS) if packing else empty
    # Keywords of plain names: Numba refuses a call whose keyword values branch.
    return Buffers(
        x=(n, d),
        x_t=x_t,
        y_t=by_output,
        w1_t=by_w1,  # w1_t and w2: the weights, one stretch
        w2=by_w2,
        w2_t=w2_t,
        a_t=by_hidden,  # h.T, then relu in place
        a=a,
        g_t=by_output,  # y_pred.T, then 2 (y_pred - y).T in place
        g=g,
        gh_t=by_hidden,  # ga.T, then masked in place
        gw1_t=by_w1,  # gw1_t and gw2: their gradients, one stretch
        gw2=by_w2,
        m1_t=moment_w1,  # m1_t and m2: Adam's first moments, one stretch
        m2=moment_w2,
        v1_t=moment_w1,  # v1_t and v2: its second moments, one stretch
        v2=moment_w2,
        pack=pack,  # one panel of b, for NT
    )


@jit(inline="always")
def _aligned(size):
    return (size + ALIGN - 1) // ALIGN * ALIGN


@jit(inline="always")
def _take(buf, offset, shape):
    rows, cols = shape
    size = rows * cols
    view = buf[offset : offset + size].reshape((rows, cols))
    return view, offset + _aligned(size)


def arena_size(layout: ArenaLayout) -> int:
    """Elements of the arena of this layout."""
    return sum(int(round_up(rows * cols, ALIGN)) for rows, cols in arena_shapes(layout))


def cache_aligned_zeros(size: int, dtype) -> np.ndarray:
    """np.zeros(size, dtype) starting on a cache line (NumPy guarantees only 16 bytes).

    With the arena's offsets in whole cache lines, every buffer then starts on one, and
    rows whose length is a whole number of vectors never split a vector load across two.
    """
    itemsize = np.dtype(dtype).itemsize
    raw = np.zeros(size * itemsize + CACHE_LINE, dtype=np.uint8)
    start = -raw.ctypes.data % CACHE_LINE
    return raw[start : start + size * itemsize].view(dtype)


@jit()
def arena_views(buf, layout):
    """(Buffers, Stretches): every buffer of arena_shapes as a view of buf, and the four stretches."""
    s = arena_shapes(layout)
    _, d, h, o = padded_shape(layout.n, layout.d, layout.h, layout.o)
    stretch = _aligned(h * d) + _aligned(h * o)
    x, off = _take(buf, 0, s.x)
    x_t, off = _take(buf, off, s.x_t)
    y_t, off = _take(buf, off, s.y_t)
    weights = buf[off : off + stretch]
    w1_t, off = _take(buf, off, s.w1_t)
    w2, off = _take(buf, off, s.w2)
    w2_t, off = _take(buf, off, s.w2_t)
    a_t, off = _take(buf, off, s.a_t)
    a, off = _take(buf, off, s.a)
    g_t, off = _take(buf, off, s.g_t)
    g, off = _take(buf, off, s.g)
    gh_t, off = _take(buf, off, s.gh_t)
    grads = buf[off : off + stretch]
    gw1_t, off = _take(buf, off, s.gw1_t)
    gw2, off = _take(buf, off, s.gw2)
    moment1 = buf[off : off + stretch] if layout.adam else buf[off:off]
    m1_t, off = _take(buf, off, s.m1_t)
    m2, off = _take(buf, off, s.m2)
    moment2 = buf[off : off + stretch] if layout.adam else buf[off:off]
    v1_t, off = _take(buf, off, s.v1_t)
    v2, off = _take(buf, off, s.v2)
    pack, off = _take(buf, off, s.pack)
    views = Buffers(x, x_t, y_t, w1_t, w2, w2_t, a_t, a, g_t, g, gh_t, gw1_t, gw2, m1_t, m2, v1_t, v2, pack)
    return views, Stretches(weights, grads, moment1, moment2)


@dataclasses.dataclass(frozen=True)
class Arena:
    """One laid-out arena and the views the Python side reads."""

    buf: np.ndarray
    layout: ArenaLayout
    argument: tuple  # layout.argument(), made once
    w1: np.ndarray  # w1, or w1.T where feature-major
    w2: np.ndarray
    gw1: np.ndarray  # as w1
    gw2: np.ndarray


def lay_out(arrays, layout: ArenaLayout) -> Arena:
    """A new arena of this layout, holding the inputs `arrays` (the weights as given at create)."""
    buf = cache_aligned_zeros(arena_size(layout), arrays.x.dtype)
    views, _ = arena_views(buf, layout)
    n, d, h, o = layout.n, layout.d, layout.h, layout.o
    views.x[:n, :d] = arrays.x
    views.w2[:h, :o] = arrays.w2
    if layout.batch_major:  # the same slots, batch x features
        views.y_t[:n, :o] = arrays.y
        views.w1_t[:d, :h] = arrays.w1
    else:
        views.y_t[:o, :n] = arrays.y.T
        views.w1_t[:h, :d] = arrays.w1.T
    if views.x_t.size:  # absent where no product by the loops reads them
        views.x_t[:d, :n] = arrays.x.T
    if views.w2_t.size:
        views.w2_t[:o, :h] = arrays.w2.T
    return Arena(buf, layout, layout.argument(), views.w1_t, views.w2, views.gw1_t, views.gw2)
