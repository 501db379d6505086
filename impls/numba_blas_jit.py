"""oneMKL's JIT GEMM for numba:blas: a kernel generated for one product's shape, called from compiled code.

`mkl_cblas_jit_create_?gemm` generates code for one (sizes, transposes, leading dimensions)
and `mkl_jit_get_?gemm_ptr` gives its entry, kernel(jitter, a, b, c): no argument checks and no
dispatch per call, in the manner of libxsmm. numba:blas creates one per product it may give
to MKL, at create, and passes the addresses to its compiled step as plain integers (an address
written into the code would be wrong in the next process: the step is cached on disk).

Where MKL declines to generate a kernel (MKL_NO_JIT: a CPU it does not generate code for, or
a shape it finds too large) the pointer still computes the product, by MKL's standard gemm:
such a kernel is called "mkl-gemm" wherever it is recorded, never passed off as JIT code.

The library is the `mkl` wheel's libmkl_rt, on MKL's sequential layer (a JIT kernel is one
thread; nothing of MKL's threading is loaded beside torch's and numba's OpenMP). Without the
wheel numba:blas runs as before and its describe() says why.
"""

from __future__ import annotations

import ctypes
import fnmatch
import weakref
from importlib import metadata
from typing import NamedTuple

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .numba_jit import jit

DISTRIBUTION = "mkl"
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # MKL_LAYOUT, MKL_TRANSPOSE
JIT_SUCCESS, NO_JIT = 0, 1  # mkl_jit_status_t
THREADING_SEQUENTIAL = 1  # MKL_Set_Threading_Layer's MKL_THREADING_SEQUENTIAL
PROVIDERS = {JIT_SUCCESS: "mkl-jit", NO_JIT: "mkl-gemm"}

created = 0  # kernels created in this process: numba:blas creates them at create only, never in a timed call


class GemmShape(NamedTuple):
    """One row-major product c[:m, :n] = op(a) @ op(b), each matrix's leading dimension its row length."""

    m: int
    n: int
    k: int
    trans_a: bool
    trans_b: bool
    lda: int
    ldb: int
    ldc: int


class Kernel(NamedTuple):
    provider: str  # "mkl-jit" (generated code) or "mkl-gemm" (MKL declined to generate: its standard gemm)
    address: int  # kernel(jitter, a, b, c)
    jitter: int
    destroy: weakref.finalize  # frees the generated code; also runs when the owner is collected


def wheel_library(distribution: str, pattern: str, hint: str) -> tuple[ctypes.CDLL | None, str | None]:
    """(ctypes handle, None) of the shared library matching `pattern` that the wheel `distribution`
    installs, or (None, why not); `hint` says how to install it."""
    try:
        files = metadata.files(distribution) or []
    except metadata.PackageNotFoundError:
        return None, f"{distribution} not installed ({hint})"
    path = next((f.locate() for f in files if fnmatch.fnmatch(f.name, pattern)), None)
    if path is None:
        return None, f"the {distribution} wheel holds no {pattern}"
    try:
        return ctypes.CDLL(str(path)), None
    except OSError as error:
        return None, f"{path.name} did not load: {error}"


class _Mkl:
    def __init__(self):
        self.lib, self.version = None, None
        lib, self.reason = wheel_library(DISTRIBUTION, "libmkl_rt.so*", "requirements.txt pins it")
        if lib is None:
            return
        lib.MKL_Set_Threading_Layer(ctypes.c_int(THREADING_SEQUENTIAL))  # before any other MKL call
        text = ctypes.create_string_buffer(256)
        lib.MKL_Get_Version_String(text, len(text))
        self.version = text.value.decode().strip()
        for letter, real in (("s", ctypes.c_float), ("d", ctypes.c_double)):
            create = getattr(lib, f"mkl_cblas_jit_create_{letter}gemm")
            create.restype = ctypes.c_int
            # jitter, layout, transa, transb, m, n, k, alpha, lda, ldb, beta, ldc (MKL_INT: 32-bit, LP64)
            ints = [ctypes.c_int] * 6
            create.argtypes = [
                ctypes.POINTER(ctypes.c_void_p),
                *ints,
                real,
                ctypes.c_int,
                ctypes.c_int,
                real,
                ctypes.c_int,
            ]
            getter = getattr(lib, f"mkl_jit_get_{letter}gemm_ptr")
            getter.restype, getter.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
        lib.mkl_jit_destroy.argtypes = [ctypes.c_void_p]
        self.lib = lib


_mkl: _Mkl | None = None


def _library() -> _Mkl:
    global _mkl
    if _mkl is None:  # loaded on first use: only a numba:blas step that may use MKL pays for it
        _mkl = _Mkl()
    return _mkl


def unavailable_reason() -> str | None:
    return _library().reason


def version() -> str | None:
    return _library().version


def create(shape: GemmShape, dtype: str, owner) -> Kernel:
    """A kernel for `shape` in `dtype` (alpha 1, beta 0), destroyed when `owner` is collected or by .destroy()."""
    global created
    mkl = _library()
    if mkl.lib is None:
        raise RuntimeError(f"oneMKL's JIT GEMM is unavailable: {mkl.reason}")
    letter = {"float32": "s", "float64": "d"}[dtype]
    jitter = ctypes.c_void_p()
    status = getattr(mkl.lib, f"mkl_cblas_jit_create_{letter}gemm")(
        ctypes.byref(jitter),
        ROW_MAJOR,
        TRANS if shape.trans_a else NO_TRANS,
        TRANS if shape.trans_b else NO_TRANS,
        shape.m,
        shape.n,
        shape.k,
        1.0,
        shape.lda,
        shape.ldb,
        0.0,
        shape.ldc,
    )
    if status not in PROVIDERS or not jitter.value:
        raise RuntimeError(f"mkl_cblas_jit_create_{letter}gemm failed for {shape}: status {status}")
    created += 1
    address = getattr(mkl.lib, f"mkl_jit_get_{letter}gemm_ptr")(jitter)
    return Kernel(
        PROVIDERS[status], address, jitter.value, weakref.finalize(owner, mkl.lib.mkl_jit_destroy, jitter.value)
    )


@intrinsic
def _call(typingctx, kernel, jitter, a, b, c):
    """kernel(jitter, a, b, c) on the arrays' data: the call a JIT kernel takes (sizes, alpha and beta are in its code)."""
    if not all(isinstance(x, types.Array) and x.dtype == c.dtype for x in (a, b, c)):
        return None
    sig = types.void(kernel, jitter, a, b, c)

    def codegen(context, builder, signature, args):
        kernel, jitter, a, b, c = args
        data = [
            context.make_array(t)(context, builder, v).data for t, v in zip(signature.args[2:], (a, b, c), strict=True)
        ]
        void_p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [void_p, *(d.type for d in data)])
        builder.call(builder.inttoptr(kernel, fnty.as_pointer()), [builder.inttoptr(jitter, void_p), *data])
        return context.get_dummy_value()

    return sig, codegen


@jit(inline="always")
def call(kernel, jitter, a, b, c):
    """c = op(a) @ op(b) by the kernel created for these arrays' shapes and leading dimensions."""
    _call(kernel, jitter, a, b, c)
