#!/usr/bin/env bash
# Everything a GPU user asks about, in one run that stops by itself (LIMIT seconds, default 570)
# and prints one table last (bench/gpu-table.py):
#   1. the training step, samples/s, ours (`byol bench step`) and shared/reference/byol_torch.py,
#      ResNet-18 CIFAR (batch 512) and ResNet-50 224 px (batch 256), f32 and bf16; and the
#      `vit-cifar10-cpu` preset's ViT (vitc32, batch BATCH_VIT, default 512) against
#      bench/vit_torch.py (eager PyTorch, scaled_dot_product_attention), f32 and bf16 (VIT=0: not);
#   2. the batched view pipeline (`byol bench augment`), views/s at 32 and 224 px, against the
#      views/s the ResNet-50 step consumes;
#   3. time to accuracy on CIFAR-10: ResNet-18 (CIFAR stem, full width), ours
#      (`byol pretrain --time-budget`) and shared/reference/byol_cifar_torch.py (`--minutes`),
#      the same budget, data, hyper-parameters and bf16, kNN top-1 of both;
#   4. peak GPU memory of ours (nvidia-smi, the whole device less what was in use before) beside
#      PyTorch's max_memory_allocated;
#   5. data parallel (machines with more than one GPU; skipped with a message otherwise):
#      `byol pretrain --devices cuda:0,…` on all N GPUs against cuda:0 alone, the same
#      ResNet-18 CIFAR step at DP_BATCH images per GPU (the global batch grows with N),
#      cross-replica BatchNorm on, samples/s and the scaling efficiency (N-GPU / (N × 1-GPU)).
# A part that no longer fits in what is left of LIMIT is skipped and says so in the table. The
# table is rewritten after every part (OUT/table.md), so a run cut off keeps what it measured.
#
# QUICK=1: a first, short device slot (LIMIT 480 s): only the most important rows, in this order:
# ResNet-18 CIFAR step f32 and bf16 and ResNet-50 224 px step bf16 against byol_torch.py (5 timed
# steps after 2), the ViT step f32 against vit_torch.py, then time to accuracy against
# byol_cifar_torch.py at a 2-minute budget each.
#
# The first step of each `byol` process is reported apart (compilation and autotune); CubeCL
# keeps the tuned choices and compiled kernels in BYOL_GPU_CACHE (default ~/.cache/byol/cubecl),
# so a second run on the same machine does not pay them again. The table's first line says
# whether the binary has burn's autotune and fusion.
#
# Builds nothing. It runs a `byol` built elsewhere (BYOL_BIN; else dist/byol-cuda.xz from
# bench/pack-cuda.sh; else target/release/byol) and needs on the GPU machine only what
# bench/pack-cuda.sh made (carry `dist`) and a Python with PyTorch and Pillow (PYTHON).
# NVRTC needs libnvrtc (from PyTorch's `nvidia` wheels) and CUDA headers (CUDA_PATH; else the
# wheels' include folders, else dist/cuda). CIFAR-10: DATA (an ImageFolder with train/ and
# test/); else ../shared/data/cifar10; else dist/cifar10-subset.xz (bench/pack-cuda.sh: 10,000
# training and 2,000 test images, unpacked here as PNG, lossless).
#
#   bench/gpu.sh
#   LIMIT=570 TTA_S=120 STEPS=10 WARM=3 bench/gpu.sh
# Dry run without a GPU (what was checked here): BACKEND=wgpu on Mesa's lavapipe, the
# reference on the CPU, tiny sizes:
#   BACKEND=wgpu BYOL_BIN=<a --features wgpu build> CONFIGS=r18c32 BATCH_R18=64 STEPS=1 WARM=1 \
#     STEP_TIMEOUT=300 TTA_S=20 TTA_WIDTH=8 TTA_PRECISION=f32 DATA=<≥ 512 training images> LIMIT=1200 bench/gpu.sh
# (docs/BENCHMARKS.md, "On a GPU", has the exact commands and the table it printed.)
set -uo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  LIMIT=${LIMIT:-480}
  STEPS=${STEPS:-5}
  WARM=${WARM:-2}
fi
LIMIT=${LIMIT:-570}
PY=${PYTHON:-python3}
BACKEND=${BACKEND:-cuda}
CONFIGS=${CONFIGS-r18c32,r50i224}  # empty: no step rows
STEPS=${STEPS:-10}
WARM=${WARM:-3}
TTA_S=${TTA_S:-120}
TTA_WIDTH=${TTA_WIDTH:-64}
TTA_PRECISION=${TTA_PRECISION:-bf16}
TTA_BATCH=${TTA_BATCH:-512}
REF_DIR=${BYOL_REFERENCE_DIR:-../shared/reference}
[ -f "$REF_DIR/byol_torch.py" ] || REF_DIR=shared/reference
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
echo "results in $OUT" >&2

left() { echo $((LIMIT - (SECONDS - START))); }
gpu_mem() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1; }
# run_part NAME NEEDED_S TIMEOUT_S MEMORY_LABEL CMD...: run CMD under a timeout if NEEDED_S
# still fit in what is left, else record the part as skipped. With a MEMORY_LABEL (not "-"),
# sample the device's used memory every 0.2 s meanwhile and record the peak less the memory in
# use before.
run_part() {
  local name=$1 need=$2 max=$3 mem=$4; shift 4
  local l; l=$(left)
  if [ "$l" -lt "$need" ]; then
    echo "{\"skipped\": \"$name\", \"left_s\": $l}" >> "$OUT/skipped.jsonl"
    echo "skipping $name: $l s left" >&2
    return 0
  fi
  [ "$max" -gt "$l" ] && max=$l
  local base="" sampler=""
  if [ "$mem" != - ]; then base=$(gpu_mem); fi
  if [ -n "$base" ]; then
    ( while :; do gpu_mem; sleep 0.2; done ) > "$OUT/mem-$mem.txt" &
    sampler=$!
  fi
  local status=0
  timeout --kill-after=5 "$max" "$@" || status=$?
  [ "$status" -ne 0 ] && echo "{\"failed\": \"$name\", \"status\": $status}" >> "$OUT/skipped.jsonl"
  if [ -n "$sampler" ]; then
    kill "$sampler" 2>/dev/null
    echo "{\"label\": \"$mem\", \"peak_mib\": $(sort -n "$OUT/mem-$mem.txt" | tail -1), \"before_mib\": $base}" >> "$OUT/memory.jsonl"
  fi
  table
  return 0
}
# table: the table of what has been measured so far, into OUT/table.md.
table() { "$PY" bench/gpu-table.py "$OUT" "$GPU" "$TTA_S" > "$OUT/table.md" 2>> "$OUT/table.err" || true; }

BYOL=${BYOL_BIN:-}
if [ -z "$BYOL" ] && [ -f dist/byol-cuda.xz ] && [ "$BACKEND" = cuda ]; then
  BYOL=$(mktemp -d)/byol
  xz -dc dist/byol-cuda.xz > "$BYOL" && chmod +x "$BYOL"
fi
BYOL=${BYOL:-target/release/byol}
NV=$("$PY" -c 'import nvidia, os; print(os.path.dirname(nvidia.__file__))' 2>/dev/null || true)
if [ -n "$NV" ]; then
  LIBS=$(find "$NV" -name 'libnvrtc.so*' -printf '%h\n' 2>/dev/null | sort -u | paste -sd: -)
  export LD_LIBRARY_PATH="${LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if [ -z "${CUDA_PATH:-}" ]; then
  H=$(find ${NV:+"$NV"} dist/cuda -name cuda_fp16.h 2>/dev/null | head -1 || true)
  [ -n "$H" ] && export CUDA_PATH=$(dirname "$(dirname "$H")")
fi
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
[ -n "$GPU" ] || GPU="$BACKEND (no nvidia-smi)"
batch_of() { case $1 in r18c32) echo "${BATCH_R18:-512}" ;; r50i224) echo "${BATCH_R50:-256}" ;; esac; }

# 1. The training step.
[ -n "$CONFIGS" ] && run_part "reference step" 60 150 - "$PY" "$REF_DIR/byol_torch.py" --configs "$CONFIGS" --steps "$STEPS" --warm "$WARM" > "$OUT/ref.jsonl"
precisions_of() { if [ "$QUICK" = 1 ] && [ "$1" = r50i224 ]; then echo bf16; else echo f32 bf16; fi; }
for cfg in ${CONFIGS//,/ }; do
  for prec in $(precisions_of "$cfg"); do
    run_part "ours $cfg $prec" 30 "${STEP_TIMEOUT:-100}" "$cfg-$prec" \
      "$BYOL" bench step --arch "$cfg" --backend "$BACKEND" --precision "$prec" --batch "$(batch_of "$cfg")" --steps "$STEPS" --warmup "$WARM" >> "$OUT/ours.jsonl"
  done
done

# The ViT step (the preset's ViT; QUICK=1: f32 only).
if [ "${VIT:-1}" = 1 ]; then
  for prec in $(if [ "$QUICK" = 1 ]; then echo f32; else echo f32 bf16; fi); do
    run_part "reference vitc32 $prec" 30 100 - "$PY" bench/vit_torch.py --device "$([ "$BACKEND" = cuda ] && echo cuda || echo cpu)" \
      --precision "$prec" --batch "${BATCH_VIT:-512}" --steps "$STEPS" --warm "$WARM" >> "$OUT/ref.jsonl"
    run_part "ours vitc32 $prec" 30 "${STEP_TIMEOUT:-100}" "vitc32-$prec" \
      "$BYOL" bench step --arch vitc32 --backend "$BACKEND" --precision "$prec" --batch "${BATCH_VIT:-512}" --steps "$STEPS" --warmup "$WARM" >> "$OUT/ours.jsonl"
  done
fi

# 2. The view pipeline.
[ "$QUICK" = 1 ] || run_part "view pipeline" 20 60 - "$BYOL" bench augment --backend "$BACKEND" --sizes 32,224 --batch 256 > "$OUT/augment.jsonl"

# 3. Time to accuracy.
DATA=${DATA:-}
[ -z "$DATA" ] && [ -d ../shared/data/cifar10/train ] && DATA=../shared/data/cifar10
if [ -z "$DATA" ] && [ -f dist/cifar10-subset.xz ]; then
  DATA=$OUT/cifar10
  xz -dc dist/cifar10-subset.xz | "$PY" bench/cifar-subset.py unpack "$DATA"
fi
if [ -n "$DATA" ]; then
  TTA_NEED=$((2 * TTA_S + 60))
  # The same hyper-parameters on both sides: our cifar10-resnet18 preset (LARS, base lr 1.0 at
  # batch 512, wd 1.5e-6, τ 0.996, target initialised on its own, 10 warm-up epochs, solarize
  # 0.2 on view 2, no blur), bf16, 200 epochs planned and cut by the budget.
  run_part "time to accuracy, ours" "$TTA_NEED" $((TTA_S + 120)) tta \
    "$BYOL" pretrain --config cifar10-resnet18 --backend "$BACKEND" --data "$DATA" --epochs 200 --batch-size "$TTA_BATCH" \
      --set train.precision="$TTA_PRECISION" --set model.encoder.base-width="$TTA_WIDTH" --set train.knn-every-epochs=0 \
      --set train.checkpoint-every=0 --time-budget "$TTA_S" --run-dir "$OUT/tta-ours" > "$OUT/tta-ours.txt"
  run_part "time to accuracy, reference" $((TTA_S + 30)) $((TTA_S + 120)) - \
    "$PY" "$REF_DIR/byol_cifar_torch.py" "$DATA" --minutes "$(awk "BEGIN { print $TTA_S / 60 }")" --epochs 200 --batch "$TTA_BATCH" \
      --width "$TTA_WIDTH" --lr 1.0 --wd 1.5e-6 --tau 0.996 --target-init independent --full-test > "$OUT/tta-ref.jsonl"
else
  echo '{"skipped": "time to accuracy", "why": "no CIFAR-10: set DATA, or carry dist/cifar10-subset.xz"}' >> "$OUT/skipped.jsonl"
fi

# 5. Data parallel over every GPU of the machine.
NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
if [ "$QUICK" = 1 ]; then
  :
elif [ "${NGPU:-0}" -gt 1 ] && [ -n "$DATA" ]; then
  DP_BATCH=${DP_BATCH:-512}
  DP_STEPS=${DP_STEPS:-30}
  ALL=$(seq -s, -f 'cuda:%g' 0 $((NGPU - 1)))
  for n in 1 "$NGPU"; do
    devs=$([ "$n" = 1 ] && echo cuda:0 || echo "$ALL")
    run_part "data parallel, $n GPU(s)" 60 180 - \
      "$BYOL" pretrain --config cifar10-resnet18 --backend "$BACKEND" --data "$DATA" --devices "$devs" \
        --batch-size $((DP_BATCH * n)) --set train.precision="$TTA_PRECISION" --set train.checkpoint-every=0 \
        --set train.knn-every-epochs=0 --set eval.online-probe.enabled=false --set train.log-every=1 --max-steps "$DP_STEPS" \
        --run-dir "$OUT/dp-$n" > "$OUT/dp-$n.txt"
  done
  echo "{\"gpus\": $NGPU, \"per_gpu_batch\": $DP_BATCH}" > "$OUT/dp.json"
else
  echo "{\"skipped\": \"data parallel\", \"why\": \"${NGPU:-0} GPU(s) on this machine (or no CIFAR-10): the multi-GPU row needs at least 2\"}" >> "$OUT/skipped.jsonl"
fi

echo "finished in $((SECONDS - START)) s of $LIMIT" >&2
table
cat "$OUT/table.md"
