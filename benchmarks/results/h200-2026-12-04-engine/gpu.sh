#!/bin/bash
# engine helper's one GPU call: GPU tests, bf16 error breakdown, bench_engine (small, anchors + ceilings)
set -o pipefail
cd "$(dirname "$0")"
T0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD/tree/src:$PWD/tree PYTHONUNBUFFERED=1
cd tree
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch,triton,transformers,sys;print('python',sys.version.split()[0],'torch',torch.__version__,'triton',triton.__version__,'transformers',transformers.__version__)"
  cat COMMIT; } > $OUT/env.txt 2>&1
echo "== gpu tests" ; timeout ${TEST_S:-90} python3 -m pytest -v -p no:cacheprovider tests/backends/engine/test_gpu_engine.py 2>&1 | tail -40 | tee $OUT/gpu_tests.txt
echo "tests done at $(( $(date +%s) - T0 )) s"
echo "== bf16"; timeout ${BF16_S:-40} python3 benchmarks/bf16_logit_error.py --device cuda --out $OUT 2>&1 | tail -12
echo "bf16 done at $(( $(date +%s) - T0 )) s"
LEFT=$(( ${TOTAL_S:-385} - ( $(date +%s) - T0 ) - 10 ))
echo "== bench_engine, budget $LEFT s"
timeout $(( LEFT + 8 )) python3 benchmarks/bench_engine.py --device cuda --streams 1 32 128 --seq-max-streams 0 \
  --budget-s $LEFT --out $OUT 2>&1 | tail -70 | tee $OUT/bench_log.txt
echo "all done at $(( $(date +%s) - T0 )) s"
