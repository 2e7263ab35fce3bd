# The zoo v2 training run on one GPU, all four families at once (each its own process, same data
# stream, steps and tokens), in two device calls that resume each other. Run from the checkout root:
#   bash scripts/train_zoo.sh probe   # call 1: the probe segment (to --stop-at PROBE_STEPS, two Transformer lrs),
#                                     #   then the probe verdicts (evals.zoo_probe)
#   bash scripts/train_zoo.sh main    # call 2: every family to S steps or TRAIN_MIN minutes (see the branch below),
#                                     #   then the capability matrix (1x-8x, 200 items a cell) + recall load sweep
# Checkpoints live under $RUNS (fp32 + optimizer state, kept while the machine stays warm); each call also
# packs bf16 checkpoints into $OUT (<family>.tar); `main` restores the ones it continues from $CARRY/*.tar
# (weights only: the optimizer state restarts, and training.json says so).
set -u
MODE=$1
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
OUT=${OUT:-runs/zoo-out}; RUNS=${RUNS:-/tmp/zoo}; CARRY=${CARRY:-ckpt}
S=${S:-3000}; PROBE_STEPS=${PROBE_STEPS:-1500}; TRAIN_MIN=${TRAIN_MIN:-5.8}
S_MIN=${S_MIN:-1500}; S_MAX=${S_MAX:-4000}; CAP_ITEMS=${CAP_ITEMS:-200}; SWEEP_ITEMS=${SWEEP_ITEMS:-100}
PRESET=${PRESET:-zoo}; DEVICE=${DEVICE:-cuda}; EXTRA=${EXTRA:-}  # a CPU rehearsal: PRESET=tiny DEVICE=cpu EXTRA="--tokens-per-step 512 ..."
mkdir -p "$RUNS/logs" "$OUT"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null
train() {  # name family extra-flags...
  local name=$1 fam=$2; shift 2
  python3 -m archrouter.evals.training --family "$fam" --preset "$PRESET" --out "$RUNS/$name" --max-minutes "$TRAIN_MIN" \
    --eval-every 250 --eval-items 64 --workers 2 --no-progress --pack "$OUT/$name.tar" $EXTRA "$@" >> "$RUNS/logs/$name.log" 2>&1
  echo "$name exit $? at ${SECONDS}s: $(tail -n 2 "$RUNS/logs/$name.log" | head -n 1)"
}
watch_logs() { while sleep 60; do echo "--- ${SECONDS}s"; for f in "$RUNS"/logs/*.log; do
  echo "$(basename "$f" .log): $(grep -a ' step ' "$f" | tail -n 1 | cut -c1-220)"; done; nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader 2>/dev/null; done; }
if [ "$MODE" = probe ]; then
  watch_logs & W=$!
  for f in mamba rwkv xlstm; do train $f $f --steps "$S" --stop-at "$PROBE_STEPS" & done
  train transformer transformer --steps "$S" --stop-at "$PROBE_STEPS" &
  train transformer_lr5e-3 transformer --steps "$S" --stop-at "$PROBE_STEPS" --lr 5e-3 &
  wait -n; wait -n; wait -n; wait -n; wait -n; kill $W
  python3 -m archrouter.evals.zoo_probe --runs "$RUNS" --variants transformer transformer_lr5e-3 --out "$RUNS/probe.json"
  cp "$RUNS/probe.json" "$OUT/probe.json"
elif [ "$MODE" = main ]; then
  # the main segment in one call: Mamba and RWKV-7 resume from the probe's bf16 packs in $CARRY (their
  # optimizer state restarts, with a short re-warmup); the Transformer starts again at the lower lrs the
  # probe pointed to (two variants, the better recall chosen at the end); the xLSTM starts from scratch.
  # Every family runs to S steps or to TRAIN_MIN minutes, the lr decaying over the last DECAY_MIN minutes
  # (or the last quarter of S), then the capability matrix + recall load sweep run in the time left.
  for f in mamba rwkv; do [ -f "$RUNS/$f/training.json" ] || { mkdir -p "$RUNS/$f"; tar xf "$CARRY/$f.tar" -C "$RUNS/$f"; }; done
  watch_logs & W=$!
  for f in mamba rwkv xlstm; do train $f $f --steps "$S" --decay-minutes "${DECAY_MIN:-1.5}" & done
  train transformer transformer --steps "$S" --decay-minutes "${DECAY_MIN:-1.5}" --lr "${T_LR:-1e-3}" &
  train transformer_b transformer --steps "$S" --decay-minutes "${DECAY_MIN:-1.5}" --lr "${T_LR_B:-5e-4}" &
  wait -n; wait -n; wait -n; wait -n; wait -n; kill $W
  python3 -m archrouter.evals.zoo_probe --runs "$RUNS" --variants transformer transformer_b --out "$RUNS/probe.json"
  cp "$RUNS/probe.json" "$OUT/probe.json"
  V=$(python3 -c "import json; print(json.load(open('$RUNS/probe.json'))['transformer_variant'])")
  mkdir -p "$RUNS/spare"
  if [ "$V" = transformer_b ]; then mv "$OUT/transformer.tar" "$RUNS/spare/transformer_a.tar"; mv "$OUT/transformer_b.tar" "$OUT/transformer.tar"
  else mv "$OUT/transformer_b.tar" "$RUNS/spare/transformer_b.tar"; fi
  for v in transformer transformer_b; do cp "$RUNS/$v/training.json" "$RUNS/logs/training_$v.json"; done
  mkdir -p "$RUNS/served"
  for f in transformer mamba rwkv xlstm; do mkdir -p "$RUNS/served/$f"; tar xf "$OUT/$f.tar" -C "$RUNS/served/$f"; done
  LEFT=$(( ${DEADLINE:-585} - SECONDS )); echo "capability with ${LEFT}s left"
  for f in transformer mamba rwkv xlstm; do
    timeout "$LEFT" python3 -m archrouter.evals.capability --out "$RUNS/cap/$f" --models-dir "$RUNS/served" \
      --families $f --device "$DEVICE" --items "$CAP_ITEMS" --scales 1 2 4 8 --no-cost > "$RUNS/logs/cap_$f.log" 2>&1 &
    timeout "$LEFT" python3 -m archrouter.evals.capability --out "$RUNS/cap/sweep_$f" --models-dir \
      "$RUNS/served" --families $f --device "$DEVICE" --items 0 --scales 1 --no-cost --sweep-items "$SWEEP_ITEMS" \
      > "$RUNS/logs/sweep_$f.log" 2>&1 &
  done
  wait; echo "capability done at ${SECONDS}s"; tail -n 2 "$RUNS"/logs/cap_*.log "$RUNS"/logs/sweep_*.log | cut -c1-400
  tar cf "$OUT/capability.tar" -C "$RUNS" cap
elif [ "$MODE" = more ]; then
  # a family that got fewer steps in the shared `main` call (the xLSTM: its sLSTM is sequential in time)
  # continues alone from its bf16 pack in $CARRY towards S steps, then its capability is measured again
  F=${FAMILY:-xlstm}
  [ -f "$RUNS/$F/training.json" ] || { mkdir -p "$RUNS/$F"; tar xf "$CARRY/$F.tar" -C "$RUNS/$F"; }
  train "$F" "$F" --steps "$S" --decay-minutes "${DECAY_MIN:-1.0}"
  mkdir -p "$RUNS/served/$F"; tar xf "$OUT/$F.tar" -C "$RUNS/served/$F"
  LEFT=$(( ${DEADLINE:-270} - SECONDS )); echo "capability with ${LEFT}s left"
  timeout "$LEFT" python3 -m archrouter.evals.capability --out "$RUNS/cap/$F" --models-dir "$RUNS/served" \
    --families "$F" --device "$DEVICE" --items "$CAP_ITEMS" --scales 1 2 4 8 --no-cost > "$RUNS/logs/cap_$F.log" 2>&1 &
  timeout "$LEFT" python3 -m archrouter.evals.capability --out "$RUNS/cap/sweep_$F" --models-dir "$RUNS/served" \
    --families "$F" --device "$DEVICE" --items 0 --scales 1 --no-cost --sweep-items "$SWEEP_ITEMS" \
    > "$RUNS/logs/sweep_$F.log" 2>&1 &
  wait; echo "capability done at ${SECONDS}s"; tail -n 2 "$RUNS"/logs/cap_*.log "$RUNS"/logs/sweep_*.log | cut -c1-400
  tar cf "$OUT/capability.tar" -C "$RUNS" cap
fi
tar czf "$OUT/logs.tgz" -C "$RUNS" logs
echo "done at ${SECONDS}s"
