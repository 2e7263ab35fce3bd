# The zoo training run on one GPU: the four families at once (matched steps), then the capability accuracy
# (no cost: timings would be disturbed by training still running). Usage: bash scripts/train_zoo.sh STEPS MINUTES
set -u
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}  # the GPU image has no install of archrouter
STEPS=$1; MIN=$2
OUT=${OUT:-runs/zoo-out}  # the device tool sets OUT; what is written there comes back
mkdir -p runs/zoo /tmp/l "$OUT"
declare -A P
for F in transformer mamba rwkv xlstm; do
  python3 -m archrouter.evals.training --family $F --preset zoo --out runs/zoo/$F --steps $STEPS --batch-size 64 \
    --seq-len 256 --max-minutes $MIN --eval-every 0 --no-progress --pack $OUT/$F.tar > /tmp/l/train_$F.log 2>&1 &
  P[$F]=$!
done
wait ${P[transformer]} ${P[mamba]} ${P[rwkv]}
echo "three done at $SECONDS s"; tail -n 2 /tmp/l/train_{transformer,mamba,rwkv}.log
python3 -m archrouter.evals.capability --out /tmp/cap --models-dir runs/zoo --families transformer mamba rwkv --device cuda \
  --items 200 --scales 1 2 4 8 --no-cost > /tmp/l/cap_a.log 2>&1
echo "capability a done at $SECONDS s"; tail -n 8 /tmp/l/cap_a.log
wait ${P[xlstm]}
echo "xlstm done at $SECONDS s"; tail -n 2 /tmp/l/train_xlstm.log
LEFT=$(( 570 - SECONDS ))
timeout $LEFT python3 -m archrouter.evals.capability --out /tmp/cap_x --models-dir runs/zoo --families xlstm --device cuda \
  --items 200 --scales 1 2 4 8 --no-cost > /tmp/l/cap_x.log 2>&1
echo "capability x rc=$? at $SECONDS s"; tail -n 4 /tmp/l/cap_x.log
tar cf $OUT/capability.tar -C /tmp cap cap_x 2>/dev/null
cat /tmp/l/*.log > $OUT/logs.txt
