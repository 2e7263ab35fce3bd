#!/bin/bash
# issue 22's GPU call: the sampling extras' CUDA tests, then bench_sampling_features on CUDA
set -o pipefail
T0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD/src:$PWD PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch,triton,sys,llguidance;print('python',sys.version.split()[0],'torch',torch.__version__,'triton',triton.__version__,'llguidance',llguidance.__version__)"
  echo "commit $(cat COMMIT)"; } > $OUT/env.txt 2>&1
timeout 150 python3 -m pytest -v -p no:cacheprovider \
  "tests/backends/engine/test_gpu_engine.py::test_openai_extras_on_cuda_batched_equal_alone" \
  tests/backends/test_sampling_features.py 2>&1 | tail -30 | tee $OUT/gpu_tests.txt
echo "tests done at $(( $(date +%s) - T0 )) s" | tee -a $OUT/gpu_tests.txt
timeout 95 python3 benchmarks/bench_sampling_features.py --device cuda --streams 64 --tokens 32 --repeats 3 \
  --out $OUT 2>&1 | tail -45 | tee $OUT/bench_log.txt
echo "all done at $(( $(date +%s) - T0 )) s"
