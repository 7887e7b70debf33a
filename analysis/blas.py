"""One BLAS thread while fitting.

The fits here are small (5 parameters, 3x3 systems, a few thousand points). OpenBLAS threads only
contend on them: on a busy 2-core machine scipy's L-BFGS-B ran 10-60x slower with its default
threads. The CLI sets OPENBLAS_NUM_THREADS=1 before numpy loads; this context manager does the
same at run time for callers that imported numpy first (tests, notebooks), through threadpoolctl,
which finds every BLAS that numpy and scipy loaded.
"""
from __future__ import annotations

from threadpoolctl import threadpool_limits


def one_blas_thread() -> threadpool_limits:
    """`with one_blas_thread(): ...` runs its block on one BLAS thread, then restores the counts."""
    return threadpool_limits(limits=1, user_api="blas")
