#!/usr/bin/env bash
# Train and export the default model on a machine with an NVIDIA GPU, from a source
# checkout, without installing fleetcast (trainer/README.md#hardware-and-scale).
#
#   benchmarks/gpu_train.sh [MINUTES]
#
# Environment:
#   WHEELS   folder of extra wheels to install offline first (e.g. pytorch-forecasting and
#            scikit-base on an image that has torch and lightning but not those)
#   PYTHON   interpreter (default python3)
#   FLEET_ARGS  fleet to simulate (default "--servers 90 --hours 720 --seed 42")
#   OUT      where the bundle tarball, the logs and the accuracy table go (default ./gpu-out)
# Steps: generate the default fleet (90 servers x 720 h, seed 42) -> a bf16 smoke run ->
# `fleetcast train` for MINUTES (default 5) with mixed precision if the smoke run passed,
# else fp32 -> `fleetcast export` -> tarball of the bundle.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
MINUTES=${1:-5}
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT"
SITE=/tmp/fleetcast-site
if [[ -n "${WHEELS:-}" ]]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl || { echo "installing $WHEELS failed"; exit 2; }
fi
export PYTHONPATH="$SITE:$PWD/contract/src:$PWD/trainer/src:$PWD/exporter/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true

# The CLI's subcommands come from entry points, which an uninstalled checkout lacks:
# drive the same handlers through argparse directly.
cli() {
  "$PYTHON" - "$@" <<'PY'
import argparse, logging, sys
from fleetcast.contract.simulate.cli import register_generate
from fleetcast.trainer.commands import register_train
from fleetcast.exporter.commands import register_export
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
parser = argparse.ArgumentParser(prog="fleetcast")
sub = parser.add_subparsers()
for register in (register_generate, register_train, register_export):
    register(sub)
args = parser.parse_args(sys.argv[1:])
sys.exit(int(args.handler(args) or 0))
PY
}

data=/tmp/fleetcast-gpu/training
cli generate ${FLEET_ARGS:---servers 90 --hours 720 --seed 42} --out-dir "$data" 2>&1 | tail -3

cli generate --servers 14 --hours 48 --seed 1 --out-dir /tmp/fleetcast-gpu/smoke-data >/dev/null 2>&1
precision=bf16-mixed
if ! cli train --data /tmp/fleetcast-gpu/smoke-data --out /tmp/fleetcast-gpu/smoke --epochs 1 --max-batches-per-epoch 5 \
     --val-batches 2 --eval-windows 50 --precision bf16-mixed >"$OUT/smoke.log" 2>&1; then
  echo "bf16 smoke run failed (tail below); training in fp32"; tail -5 "$OUT/smoke.log"
  precision=32-true
fi
echo "training with precision $precision for at most $MINUTES min"
cli train --data "$data" --out /tmp/fleetcast-gpu/models --epochs 100 --max-minutes "$MINUTES" \
  --max-batches-per-epoch 300 --batch-size 256 --num-workers 8 --precision "$precision" \
  2>&1 | grep -v "Tip:" | tee "$OUT/train.log" | tail -32
cli export --bundle /tmp/fleetcast-gpu/models/latest 2>&1 | tail -15 | tee "$OUT/export.log"
bundle=$(readlink -f /tmp/fleetcast-gpu/models/latest)
tar -C "$(dirname "$bundle")" -czf "$OUT/bundle.tgz" "$(basename "$bundle")" && ls -la "$OUT"
