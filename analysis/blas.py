"""One BLAS thread while fitting.

The fits here are small (5 parameters, 3x3 systems, a few thousand points). OpenBLAS threads only
contend on them: on a busy 2-core machine scipy's L-BFGS-B ran 10-60x slower with its default
threads. The CLI sets OPENBLAS_NUM_THREADS=1 before numpy loads; this context manager does the
same at run time for callers that imported numpy first (tests, notebooks), using threadpoolctl
when installed and otherwise OpenBLAS's own setter found in the loaded libraries (Linux). It is
best effort: where neither works it changes nothing.
"""

from __future__ import annotations

import contextlib
import ctypes

_PAIRS = (  # (getter, setter) names in numpy's and scipy's bundled OpenBLAS builds, and plain OpenBLAS
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
)


def _openblas_controls():
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line})
    except OSError:
        return []
    controls = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get, set_ in _PAIRS:
            if hasattr(lib, get) and hasattr(lib, set_):
                controls.append((getattr(lib, get), getattr(lib, set_)))
                break
    return controls


@contextlib.contextmanager
def one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(1, user_api="blas"):
            yield
        return
    controls = _openblas_controls()
    saved = []
    for get, set_ in controls:
        try:
            saved.append((set_, int(get())))
            set_(1)
        except Exception:  # a foreign build with another signature: leave it alone
            continue
    try:
        yield
    finally:
        for set_, n in saved:
            set_(n)
