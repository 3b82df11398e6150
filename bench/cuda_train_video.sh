#!/bin/bash
# The video DiT trained by `tessera train` on one GPU, two patch sizes one after the other, each time-boxed:
# A = the built-in architecture with patch 1x1x1, B = as committed (patch 1x2x2), both from the seed-0 start
# of pipelines/builtin/video.py (model=local init=model). Each run checkpoints every 100 steps; the last
# checkpoint of each (transformer, text encoder, optimizer state, metrics.jsonl) is packed into $OUT.
#
# Used on a lent GPU machine (BENCHMARKS.md "Video DiT training on one GPU"), whose image has torch but
# not ray, deepspeed, diffusers or hydra: those travel as an unpacked site-packages tarball in .whl2/
# (site.tar.xz, extra.tar.xz), extracted to /tmp/gpusite. A dry run on this machine, tiny and on the CPU:
#   SITE=0 STOP=0 DEVICE=cpu PY=.venv/bin/python OUT=/tmp/dry \
#     RECIPE="dit.steps=3 dit.micro_batch=2 dit.micro_batches=2 dit.cache_size=16 dit.resolution=32" \
#     bash bench/cuda_train_video.sh
# Env: DEVICE (cuda|cpu), BOX (seconds per run), TOTAL (seconds for both), RECIPE (overrides), PY, OUT,
# SITE=0 (do not use /tmp/gpusite), STOP=0 (do not kill Ray processes after a time-boxed run).
set -u
cd "$(dirname "$0")/.."
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
DEVICE=${DEVICE:-cuda}; BOX=${BOX:-260}; PY=${PY:-python3}; OUT=${OUT:-/tmp/out}; mkdir -p $OUT
RECIPE=${RECIPE:-"dit.steps=100000 dit.micro_batch=32 dit.micro_batches=4 dit.cache_size=8192 checkpoint_every=100 log_every=50"}
if [ -f .whl2/site.tar.xz ] && [ ! -d /tmp/gpusite ]; then tar -xJf .whl2/site.tar.xz -C /tmp && tar -xJf .whl2/extra.tar.xz -C /tmp || exit 3; fi
[ -d /tmp/gpusite ] && [ "${SITE:-1}" = 1 ] && export PYTHONPATH=/tmp/gpusite:$PWD || export PYTHONPATH=$PWD
export PYTHONUNBUFFERED=1 RAY_DEDUP_LOGS=0
echo "setup done at $(el) s"
nvidia-smi -L 2>/dev/null; nproc; free -g | head -2
$PY -c "import torch, ray, deepspeed, diffusers, hydra, transformers, cluster.cli, cluster.train, runtime.training.worker, pipelines.builtin.video; from ray.train.torch import TorchTrainer; print('torch', torch.__version__, torch.cuda.is_available(), 'ray', ray.__version__, 'ds', deepspeed.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)" || exit 4
$PY - <<'PY' || exit 5
import pipelines.builtin.video as b
base = b.transformer_config
for name, patch in (("p1start", (1, 1, 1)), ("p2start", (1, 2, 2))):
    b.transformer_config = lambda: {**base(), "patch_size": patch}
    b.write_builtin_video(f"/tmp/{name}", seed=0)
    print(f"wrote /tmp/{name} (patch {patch}, seed 0)")
PY
stop_ray() { [ "${STOP:-1}" = 0 ] && return; pkill -9 -f "ray::" ; pkill -9 -f raylet; pkill -9 -f gcs_server; pkill -9 -f "ray/_private"; pkill -9 -f "ray/dashboard"; sleep 2; }
run() {  # name, box seconds, model overrides
  local name=$1 box=$2; shift 2
  echo "== run $name at $(el) s: $*"
  timeout $box $PY -m cluster.cli train "$@" parallel.stages=1 pool.workers=1 pool.device=$DEVICE $RECIPE \
      progress=false run_dir=/tmp/run$name > $OUT/train$name.log 2>&1
  echo "run $name exit $? at $(el) s"; stop_ray
  tail -4 $OUT/train$name.log
  last=$(ls -d /tmp/run$name/checkpoints/step-* 2>/dev/null | tail -1)
  echo "last checkpoint: $last"
  if [ -n "$last" ]; then
    tar -czf $OUT/run$name.tar.gz -C /tmp/run$name metrics.jsonl -C "$last" state.json optimizer \
        pipeline/transformer pipeline/text_encoder
  fi
}
run A $BOX model=local model.name=/tmp/p1start init=model
nvidia-smi --query-gpu=memory.used --format=csv 2>/dev/null
LEFT=$(( ${TOTAL:-575} - $(el) - 10 ))
[ $LEFT -gt $BOX ] && LEFT=$BOX
run B $LEFT model=local model.name=/tmp/p2start init=model
echo "all done at $(el) s"; ls -la $OUT
