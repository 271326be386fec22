#!/usr/bin/env bash
# Speed before and after a change, on one GPU, in one call (docs/performance.md): the np sampler's
# latency (1 x 50) and throughput (1024 x 50) of the earlier code (.devbase/, a git archive of
# $BASE_COMMIT) and of this tree, the fast path's GPU tests, then the np sampler with --np_noise and
# the training rates of the three stages (TF32) before and after. Results in $R (default results/speed).
set -u
R=${R:-results/speed}
D=.devdata/cmu_h36m
mkdir -p "$R"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
stamp() { echo "== $(date +%T) $*"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
INF="--device cuda --batches 1,1024 --samplers np --variants compiled-fp16"
stamp "inference before ($BASE_COMMIT)"; (cd .devbase && python3 bench/inference.py $INF --out "../$R/inference_before.json")
stamp "inference after ($SPARD_COMMIT)"; python3 bench/inference.py $INF --out "$R/inference_after.json"
stamp "fast path GPU tests"; python3 -m pytest -q -p no:cacheprovider -s tests/test_fast.py -k gpu > "$R/tests.txt" 2>&1; grep -E "largest difference|passed|failed|^E " "$R/tests.txt" | tail -20
stamp "inference, np with --np_noise 1"; python3 bench/inference.py $INF --np_noise 1 --out "$R/inference_np_noise.json"
stamp "training before"; (cd .devbase && python3 bench/training.py --device cuda --data_dir "../$D" --variants ours-tf32 --out "../$R/training_before.json")
stamp "training after"; python3 bench/training.py --device cuda --data_dir "$D" --variants ours-tf32 --out "$R/training_after.json"
stamp done
