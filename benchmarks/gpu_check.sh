#!/usr/bin/env bash
# GPU check, in at most about 8 minutes on one GPU:
#   1. installs what is missing (wheels carried in .whl/ when the machine is offline),
#   2. runs the cuda-marked tests,
#   3. runs each estimator at a size that shows the GPU (benchmarks/gpu_check.py: CMF
#      10^7 ratings, HyperLearn 10^7 hyperedges, MMEDA and DCMF on the digits), writing
#      benchmarks/results/gpu_<device>.json and .md (and a copy under $OUT when set),
#   4. checks that every model fitted on the device loads and transforms on the CPU.
#
#   bash benchmarks/gpu_check.sh                       # on a GPU machine
#   bash benchmarks/gpu_check.sh --device cpu          # the CPU path (tiny sizes)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEVICE=cuda
SIZE=
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    *) echo "usage: $0 [--device cuda|cpu] [--size tiny|small|full]" >&2; exit 2 ;;
  esac
done
[ -n "$SIZE" ] || { [ "$DEVICE" = cpu ] && SIZE=tiny || SIZE=full; }
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
status=0

echo "== 1. environment"
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/mmf_site .whl/*.whl || exit 1
  export PYTHONPATH=$ROOT:/tmp/mmf_site${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
fi
"$PY" - <<'EOF' || exit 1
import importlib, sys
missing = [m for m in ("numpy", "scipy", "sklearn", "torch", "tqdm", "joblib", "pytest",
                       "hypothesis") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing packages: {missing} (carry their wheels in .whl/)")
import torch, mmfactor
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}, "
      f"devices: {torch.cuda.device_count()}, mmfactor {mmfactor.__version__}")
EOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true

echo "== 2. cuda-marked tests"
if [ "$DEVICE" = cpu ]; then
  # no CUDA here: check that the cuda tests are collected, they run on the GPU machine
  files=$(grep -l "mark.cuda" tests/test_*.py)
  timeout 120 "$PY" -m pytest -q -p no:cacheprovider -m cuda --collect-only $files \
    || status=1
else
  files=$(grep -l "mark.cuda" tests/test_*.py)
  timeout 240 "$PY" -m pytest -q -p no:cacheprovider -m cuda -x $files || status=1
fi

echo "== 3+4. workloads on $DEVICE (size $SIZE), and reloading on the CPU"
timeout 360 "$PY" benchmarks/gpu_check.py --device "$DEVICE" --size "$SIZE" || status=1
if [ -n "${OUT:-}" ]; then
  cp benchmarks/results/gpu_"${DEVICE%%:*}".{json,md} "$OUT"/ 2>/dev/null || true
fi
echo "gpu_check: $([ $status = 0 ] && echo passed || echo FAILED)"
exit $status
