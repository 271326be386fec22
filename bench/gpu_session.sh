#!/usr/bin/env bash
# The GPU work behind docs/performance.md and docs/results.md, in the order it must run: speed before
# and after the current changes (alone on the GPU), the CMU study, the GPU check. Run from the
# repository root on the GPU machine, with the earlier code in .devbase/ (git archive of the base
# commit), the CMU data and oracle in .devdata/, and wheels of missing packages in .whl/.
set -u
R=${R:-results/gpu}
D=.devdata/cmu_h36m
mkdir -p "$R"
export PYTHONUNBUFFERED=1 SPARD_ORACLE_DIR=$PWD/.devdata/oracle SPARD_SHARED_DIR=$PWD/.devdata
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
stamp() { echo "== $(date +%T) $*"; }
stamp environment
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import sys, torch, triton, numpy, scipy, tqdm, tensorboard; print(sys.version.split()[0], torch.__version__, torch.version.cuda, triton.__version__, numpy.__version__)" || exit 1

if [ "${SPEED:-1}" = 1 ]; then
  stamp "speed before ($BASE_COMMIT) and after ($SPARD_COMMIT)"
  (cd .devbase && python3 bench/inference.py --device cuda --batches 1,1024 --samplers np,onestep --variants compiled-fp16 --out "../$R/inference_before.json")
  python3 bench/inference.py --device cuda --batches 1,1024 --samplers np,onestep --variants compiled-fp16 --out "$R/inference_after.json"
  python3 bench/inference.py --device cuda --batches 1,1024 --samplers np --variants compiled-fp16 --np_noise 1 --out "$R/inference_after_np_noise.json"
  (cd .devbase && python3 bench/training.py --device cuda --data_dir "../$D" --variants ours-tf32,ours-bf16 --out "../$R/training_before.json")
  python3 bench/training.py --device cuda --data_dir "$D" --variants ours-tf32,ours-bf16 --out "$R/training_after.json"
fi
stamp study
python3 bench/cmu_study.py --data_dir "$D" --out "$R/study" --jobs "${JOBS:-12}"
stamp "gpu check"
python3 bench/gpu_check.py --data_dir "$D" --ckpt "$R/study/tf32_seed0/np/np_ckpt.pt" --base_ckpt "$R/study/tf32_seed0/train/ckpt.pt" --out "$R/gpu_check.json"
stamp done
