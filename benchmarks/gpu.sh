#!/usr/bin/env bash
# GPU check of an exported fleetcast model (docs/EXPORT.md#gpu).
#
#   benchmarks/gpu.sh [MODEL.onnx] [extra gpu_check.py arguments]
#
# Environment:
#   WHEELS   folder (or a single .whl) of onnxruntime-gpu to install first, offline, into
#            /tmp/fleetcast-site (the machine's own onnxruntime is left alone)
#   WHEEL_PARTS  a folder of `split` parts (part_*) of one onnxruntime-gpu wheel, joined first
#            (for transports that limit the size of one file)
#   PYTHON   interpreter (default python3)
#   OUT      if set, the JSON result goes to $OUT/gpu_check.json
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
MODEL=${1:-models/latest/model.onnx}
shift || true
SITE=/tmp/fleetcast-site

if [[ -n "${WHEEL_PARTS:-}" ]]; then
  first=$(ls "$WHEEL_PARTS"/part_* | head -1)
  name=$(cat "$WHEEL_PARTS/NAME" 2>/dev/null || echo onnxruntime_gpu-0-py3-none-any.whl)
  mkdir -p /tmp/fleetcast-wheels
  cat "$WHEEL_PARTS"/part_* > "/tmp/fleetcast-wheels/$name" || { echo "joining $first... failed"; exit 2; }
  WHEELS=/tmp/fleetcast-wheels
fi
if [[ -n "${WHEELS:-}" ]]; then
  echo "installing onnxruntime-gpu from $WHEELS into $SITE"
  if [[ -d "$WHEELS" ]]; then files=("$WHEELS"/*.whl); else files=("$WHEELS"); fi
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "${files[@]}" || { echo "pip install of ${files[*]} failed"; exit 2; }
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
"$PYTHON" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.__file__, o.get_available_providers())"
exec "$PYTHON" benchmarks/gpu_check.py --model "$MODEL" "$@"
