#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md ("On a GPU") in one call of a lent machine, within a time
# budget: each stage has its own limit and the last ones run only if time is left.
#   1. (run second) configs/tensorf_blender.gin on lego at 800x800, its 30k steps: wall time and test PSNR
#      (stopped at its limit, it leaves a checkpoint that is evaluated instead); then the
#      step profile of scripts/profile.py at the trained state (issue 19).
#   2. (run first, short) Render speed at 800x800 of the colour NeRF (blender.gin) against latent rendering with
#      each decoder (latent_blender.gin), freshly initialised (their cost does not depend on
#      the weights: fixed sample counts) (issue 16).
#   3. Misaligned lego at 200x200 with 16x the CPU benchmark's batch: clean rays, misaligned
#      rays, misaligned patches with alignment (align.gin), three runs at once (issue 15).
# OUT=dir DATA=dir BUDGET=seconds bash scripts/gpu_checks.sh; QUICK=1 rehearses it on a CPU
# with tiny settings (every command runs, no figure means anything).
set -u
OUT=${OUT:-out/gpu}
DATA=${DATA:-../shared/data}
BUDGET=${BUDGET:-540}
QUICK=${QUICK:-0}
STAGES=${STAGES:-1 2 3}
mkdir -p "$OUT"
START=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - START))); }
say() { echo "[$(($(date +%s) - START)) s] $*" | tee -a "$OUT/summary.txt"; }
LEGO=(--gin_bindings="Config.data_dir='$DATA/nerf_synthetic/lego'")
BIG=(--gin_bindings=Config.render_chunk_size=16384)
if [ "$QUICK" = 1 ]; then
  SMALL=(--gin_bindings=Config.factor=8 --gin_bindings=Config.max_steps=30
         --gin_bindings=Config.print_every=10 --gin_bindings=Config.batch_size=256)
  LSMALL=(--gin_bindings=Config.factor=4)  # 200 x 200: divisible by the decoder's 8
  STEPS=3; ALIGN_BATCH=1024
else
  SMALL=(); LSMALL=(); STEPS=20; ALIGN_BATCH=16384
fi

{ nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv 2>&1
  python3 -c "import jax, flax, optax, orbax.checkpoint as o; print(jax.__version__, \
flax.__version__, optax.__version__, jax.devices())" 2>&1; date -u; } > "$OUT/env.txt"
say "env: $(tail -2 "$OUT/env.txt" | head -1)"

# 2. Render speed at 800x800, colour against latent.
fails=0
for spec in "blender.gin " "latent_blender.gin LatentDecoder.size='large'" \
            "latent_blender.gin LatentDecoder.size='small'"; do
  set -- $spec
  [[ $STAGES == *2* ]] && [ "$(left)" -gt 60 ] || break
  extra=(); [ $# -gt 1 ] && extra=(--gin_bindings="$2")
  timeout $((QUICK == 1 ? 300 : 90)) python3 scripts/benchmark.py --gin_configs=configs/$1 "${LEGO[@]}" "${BIG[@]}" \
    "${LSMALL[@]}" "${extra[@]}" --steps=$STEPS >> "$OUT/render_speed.log" 2>&1
  rc=$?; [ $rc = 0 ] || [ $rc = 124 ] || fails=$((fails + 1))
  say "render speed $spec: rc $rc $(grep -E '"render_rays_per_sec"' "$OUT/render_speed.log" \
    | tail -1)"
done

if [ $fails = 3 ]; then say "every render-speed run failed; stopping here"
  tail -30 "$OUT/render_speed.log"; exit 1; fi

# 1. TensoRF on lego at 800x800.
RUN=/tmp/gpu_tensorf
if [[ $STAGES == *1* ]]; then
rm -rf "$RUN"
say "tensorf_blender: start"
t0=$(date +%s)
timeout -s TERM $(( $(left) - 130 < 330 ? $(left) - 130 : 330 )) python3 scripts/benchmark.py --gin_configs=configs/tensorf_blender.gin \
  "${LEGO[@]}" "${SMALL[@]}" --psnr --steps=$STEPS --keep_run=$RUN \
  --out="$OUT/tensorf.json" > "$OUT/tensorf.log" 2>&1
rc=$?
say "tensorf_blender: rc $rc after $(($(date +%s) - t0)) s"
if ! grep -qE "train.py.*step [0-9]" "$OUT/tensorf.log" || [ ! -d "$RUN/checkpoints" ]; then
  say "tensorf_blender failed before training; stopping here"; tail -30 "$OUT/tensorf.log"
  exit 1
fi
if [ ! -s "$OUT/tensorf.json" ]; then  # stopped at its limit: evaluate what it reached
  timeout 90 python3 -m jaxnerf360.eval --checkpoint_dir=$RUN >> "$OUT/tensorf.log" 2>&1
  say "tensorf_blender eval of the stopped run: rc $?"
fi
grep -E "test_psnr|train_seconds|rays_per_sec|max_steps|compile" "$OUT/tensorf.json" \
  2>/dev/null | tee -a "$OUT/summary.txt"
grep -iE "psnr|step +[0-9]+0000? " "$OUT/tensorf.log" | tail -8 | tee -a "$OUT/summary.txt"
if [ "$(left)" -gt 60 ]; then
  timeout 75 python3 scripts/profile.py --gin_configs=configs/tensorf_blender.gin \
    "${LEGO[@]}" "${SMALL[@]}" --run=$RUN > "$OUT/profile.txt" 2>&1
  say "profile: rc $?"; tail -22 "$OUT/profile.txt"
fi
fi

# 3. Misaligned lego with a large batch: three runs at once, a share of the GPU's memory each.
if [[ $STAGES == *3* ]] && [ "$(left)" -gt 90 ]; then
  steps=$(( QUICK == 1 ? 30 : 2000 ))
  A=(--gin_bindings=Config.batch_size=$ALIGN_BATCH --gin_bindings=Config.max_steps=$steps
     --gin_bindings=Config.checkpoint_every=100000 "${LEGO[@]}" --psnr --lpips)
  [ "$QUICK" = 1 ] && A+=(--gin_bindings=Config.factor=8 --gin_bindings=Misalign.shift_pixels=1.0)
  export XLA_PYTHON_CLIENT_MEM_FRACTION=0.25
  lim=$(($(left) - 10))
  timeout $lim python3 scripts/benchmark.py --gin_configs=configs/lego200_cpu.gin "${A[@]}" \
    --steps=$STEPS --out=/tmp/al_clean.json > /tmp/al_clean.log 2>&1 &
  timeout $lim python3 scripts/benchmark.py --gin_configs=configs/misaligned_lego200_cpu.gin \
    "${A[@]}" --steps=$STEPS --out=/tmp/al_mis.json > /tmp/al_mis.log 2>&1 &
  timeout $lim python3 scripts/benchmark.py --gin_configs=configs/misaligned_lego200_cpu.gin \
    --gin_configs=configs/align.gin "${A[@]}" --steps=$STEPS --out=/tmp/al_align.json \
    > /tmp/al_align.log 2>&1 &
  wait
  for r in clean mis align; do
    echo "== $r"; cat /tmp/al_$r.json 2>/dev/null || tail -15 /tmp/al_$r.log
    grep -E "step +[0-9]+ " /tmp/al_$r.log | tail -2
  done > "$OUT/align.txt"
  say "align: $(grep -cE '"test_psnr"' "$OUT/align.txt") of 3 runs finished"
  grep -E "== |test_psnr|test_lpips|train_seconds" "$OUT/align.txt" | tee -a "$OUT/summary.txt"
fi
say "done, $(left) s of the budget left"
