#!/bin/bash
# One lent GPU machine's checks, each part time-boxed so that one hang does not eat the session's device time:
#   1. bench.cuda_families: every model family in bfloat16 on the GPU against its diffusers pipeline there, and
#      each video family's frame pipeline (one stage) at 64/256/1,024 frames;
#   2. bench.frame_pipeline_cores: the built-in video model's frame pipeline, 1 worker against 2 and 3 stages, on
#      the machine's CPU cores (16 there, most idle), without Ray and without the MP4 encode (no ffmpeg there).
# The GPU image has torch and transformers but not ray, diffusers or hydra: they travel unpacked in
# .whl2/site.tar.xz (cp312), extracted to /tmp/gpusite. A dry run here, on the CPU:
#   PY=.venv/bin/python OUT=/tmp/dry DEVICE=cpu FRAMES="32 64" CORE_FRAMES=32 REPEATS=1 bash bench/cuda_session.sh
set -u
cd "$(dirname "$0")/.."
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
PY=${PY:-python3}; OUT=${OUT:-/tmp/out}; DEVICE=${DEVICE:-cuda}; mkdir -p "$OUT"
if [ -f .whl2/site.tar.xz ] && [ ! -d /tmp/gpusite ]; then tar -xJf .whl2/site.tar.xz -C /tmp || exit 3; fi
if [ -d /tmp/gpusite ]; then export PYTHONPATH=/tmp/gpusite:$PWD; else export PYTHONPATH=$PWD; fi
export PYTHONUNBUFFERED=1
echo "set up at $(el) s"; nvidia-smi -L 2>/dev/null; nproc
$PY -c "import torch, ray, diffusers, transformers; print('torch', torch.__version__, torch.cuda.is_available(), \
'ray', ray.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)" || exit 4
timeout "${FAMILIES_S:-230}" $PY -m bench.cuda_families --out "$OUT" --device "$DEVICE" --frames ${FRAMES:-64 256 1024} \
  --parts ${PARTS:-image video frames} \
  > "$OUT/families.log" 2>&1
echo "families: exit $? at $(el) s"; grep -E "^(image|video|frames) " "$OUT/families.log" | cut -c1-220
timeout "${CORES_S:-250}" $PY -m bench.frame_pipeline_cores --out "$OUT" --frames ${CORE_FRAMES:-64 256} --stages ${STAGES:-2 3} \
  --repeats "${REPEATS:-3}" --drop-frames > "$OUT/cores.log" 2>&1
echo "cores: exit $? at $(el) s"; grep -v "^ *round" "$OUT/cores.log" | grep -E "frames|worker|stages" | head -12
echo "all done at $(el) s"
