#!/bin/bash
set -o pipefail
cd "$(dirname "$0")"
T0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD/tree/src:$PWD/tree PYTHONUNBUFFERED=1
cd tree
cat COMMIT > $OUT/env2.txt
timeout 128 python3 benchmarks/bench_engine.py --device cuda --families transformer --streams 1 32 128 --seq-max-streams 0 \
  --budget-s 118 --out $OUT 2>&1 | grep -v decode_graph_captured | tail -40 | tee $OUT/bench_log.txt
echo "bench done at $(( $(date +%s) - T0 )) s"
mkdir -p $OUT/b; timeout 25 python3 benchmarks/bf16_logit_error.py --device cuda --families rwkv transformer --out $OUT/b 2>&1 | tail -6
echo "all done at $(( $(date +%s) - T0 )) s"
