#!/usr/bin/env bash
# The GPU work behind docs/results.md and docs/performance.md, most valuable first: the CMU study, then
# speed before and after the current changes (alone on the GPU), then the GPU check. Run from the
# repository root on the GPU machine, with the earlier code in .devbase/ (git archive of the base
# commit), the CMU data and oracle in .devdata/, and wheels of missing packages in .whl/.
set -u
R=${R:-results/gpu}
D=.devdata/cmu_h36m
mkdir -p "$R"
export PYTHONUNBUFFERED=1 SPARD_ORACLE_DIR=$PWD/.devdata/oracle SPARD_SHARED_DIR=$PWD/.devdata
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
stamp() { echo "== $(date +%T) $*"; }
stamp environment
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import sys, torch, triton, numpy, scipy, tqdm, tensorboard; print(sys.version.split()[0], torch.__version__, torch.version.cuda, triton.__version__, numpy.__version__)" || exit 1
GIB=$(python3 -c "import torch; print(torch.cuda.get_device_properties(0).total_memory >> 30)")

stamp study
# STUDY_S caps the study's wall time (what has not finished by then is stopped and reported as not done)
timeout "${STUDY_S:-36000}" python3 bench/cmu_study.py --data_dir "$D" --out "$R/study" --jobs "${JOBS:-12}" \
  --heavy_jobs $((GIB / 26)) ${STUDY_FLAGS:-}
pkill -f "spard.cli|np_study.py"; sleep 5
[ "${SPEED:-1}" = 1 ] || { stamp done; exit 0; }

stamp "speed${BASE_COMMIT:+ before ($BASE_COMMIT) and} after ($SPARD_COMMIT)"
[ -z "${BASE_COMMIT:-}" ] || (cd .devbase && python3 bench/inference.py --device cuda --batches 1,1024 --samplers np --variants compiled-fp16 --out "../$R/inference_before.json")
python3 bench/inference.py --device cuda --batches 1,1024 --samplers np --variants compiled-fp16 --out "$R/inference_after.json"
python3 bench/inference.py --device cuda --batches 1,1024 --samplers np --variants compiled-fp16 --np_noise 1 --out "$R/inference_after_np_noise.json"
[ -z "${BASE_COMMIT:-}" ] || { (cd .devbase && python3 bench/training.py --device cuda --data_dir "../$D" --variants ours-tf32 --out "../$R/training_before.json")
python3 bench/training.py --device cuda --data_dir "$D" --variants ours-tf32 --out "$R/training_after.json"; }

stamp "gpu check"
# the accuracy check on the study's first model when it finished (else gpu_check trains a short one)
CK=$R/study/tf32_seed0; [ -f "$CK/np/np_ckpt.pt" ] && CKPTS=(--ckpt "$CK/np/np_ckpt.pt" --base_ckpt "$CK/train/ckpt.pt") || CKPTS=()
python3 bench/gpu_check.py --data_dir "$D" "${CKPTS[@]}" --inference "$R/inference_after.json" --tests "${CHECK_TESTS:-tests/test_fast.py,tests/test_oracle.py,tests/test_step_graph.py}" --out "$R/gpu_check.json"
stamp done
