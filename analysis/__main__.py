"""python -m analysis fit PATH... --out DIR | python -m analysis plan --fit FILE --flops C"""

from __future__ import annotations

import os

# Set before numpy loads. The fits here are small, and OpenBLAS threads only contend with each
# other: on a busy 2-core machine scipy's L-BFGS-B ran 10-60x slower with them (blas.py does the
# same at run time for callers that loaded numpy first).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402

from .conventions import CONVENTIONS  # noqa: E402
from .errors import AnalysisError  # noqa: E402
from train.logs import get_logger, setup_logging  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis", description="IsoFLOP analysis (Chinchilla Approaches 1-3) and budget planning.")
    sub = p.add_subparsers(dest="cmd", required=True)

    f = sub.add_parser("fit", help="fit IsoFLOP minima and power laws; write fit.json, minima.csv, report.md, figures")
    f.add_argument("paths", nargs="+", metavar="PATH", help="results CSV(s), run directories or sweep directories")
    f.add_argument("--out", required=True, help="output directory")
    f.add_argument("--convention", default="6N", choices=CONVENTIONS, help="FLOP convention to fit under (default 6N)")
    f.add_argument("--window", default=None,
                   help="IsoFLOP fit window: K distinct sizes around the empirical minimum (default 5), or e.g. 0.4dex")
    f.add_argument("--all-points", action="store_true", help="fit each parabola to all points of its budget (biased; for comparison)")
    f.add_argument("--include-edge", action="store_true", help="keep edge budgets in the exponent fit")
    f.add_argument("--drop-invalid", action="store_true", help="drop invalid rows and too-small budgets with a warning instead of failing")
    f.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples for the intervals (default 1000; 0 = none)")
    f.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    f.add_argument("--loss", choices=("val", "train", "bpb"), default="val",
                   help="what to fit: the final validation loss (default), the final train loss, or bpb, the validation "
                        "loss in bits per UTF-8 byte, comparable across tokenizers")
    f.add_argument("--no-approach1", action="store_true", help="skip Approach 1 (training-curve envelope)")
    f.add_argument("--no-approach3", action="store_true", help="skip Approach 3 (parametric fit)")

    q = sub.add_parser("plan", help="compute-optimal N and D for a budget, from fit.json")
    q.add_argument("--fit", required=True, help="fit.json, or the directory holding it")
    g = q.add_mutually_exclusive_group(required=True)
    g.add_argument("--flops", type=float, help="compute budget C [FLOPs] -> N_opt, D_opt")
    g.add_argument("--params", type=float, help="model size N -> the budget it is optimal for, and D")
    g.add_argument("--tokens", type=float, help="data D -> the budget needed, and N")
    q.add_argument("--vocab-size", type=int, default=50304, help="vocabulary for choosing a catalog model (default 50304)")
    q.add_argument("--json", action="store_true", help="print the plan as JSON")
    return p


def _fit(args) -> int:
    from .pipeline import FitOptions, run_fit
    from .report import summary, write_outputs

    if args.bootstrap < 0:
        raise AnalysisError(f"--bootstrap {args.bootstrap}: give a number of resamples >= 0 (0 for no intervals)")
    if args.seed < 0:
        raise AnalysisError(f"--seed {args.seed}: give a seed >= 0")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise AnalysisError(f"--out {args.out}: is a file; give a directory for fit.json, report.md and the figures")
    opts = FitOptions(
        convention=args.convention, window=args.window, all_points=args.all_points, drop_invalid=args.drop_invalid,
        include_edge=args.include_edge, n_boot=max(0, args.bootstrap), seed=args.seed, loss=args.loss,
        approach1=not args.no_approach1, approach3=not args.no_approach3,
    )
    warnings: list[str] = []
    try:
        res = run_fit(args.paths, opts, warnings)
    finally:  # shown even when a later step fails: a drop is loud either way
        log = get_logger("analysis")
        for w in warnings:
            log.warning(w)
    for n in res.notes:
        print("note: " + n, file=sys.stderr)
    try:
        paths = write_outputs(res, args.out)
    except OSError as e:
        raise AnalysisError(f"--out {args.out}: cannot write the outputs ({e.strerror or e}: {e.filename or args.out})") from None
    print(summary(paths))
    return 0


def _plan(args) -> int:
    from .planner import load_fit, make_plan, plan_json, plan_text

    if args.vocab_size < 1:
        raise AnalysisError(f"--vocab-size {args.vocab_size}: give the tokenizer's vocabulary, a positive integer")
    fit = load_fit(args.fit)
    p = make_plan(fit, flops=args.flops, params=args.params, tokens=args.tokens, vocab_size=args.vocab_size)
    print(plan_json(p) if args.json else plan_text(p, args.fit))
    return 0


def main(argv=None) -> int:
    import warnings

    args = _parser().parse_args(argv)
    setup_logging()  # $ISOFLOP_LOG_LEVEL
    try:
        # what a RuntimeWarning would say (a vertex far out, a degenerate resample) is reported by
        # name in the fit's own warnings; numpy's raw text would only add noise
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return _fit(args) if args.cmd == "fit" else _plan(args)
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
