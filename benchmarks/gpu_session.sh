#!/usr/bin/env bash
# Build, test and benchmark on a CUDA machine in one go (how the committed GPU
# results were produced on a lent H100). Steps run in the order given, e.g.
#   bash benchmarks/gpu_session.sh build test-gpu bench-ops bench sweep
# ("all" is those five). Logs and results land under $OUT (default gpu_out/):
#   bench/  afnet bench: bf16, channels_last, 8 videos (the suite, compiled and graphed rows included)
#   sweep/  afnet bench --batch-sweep: TSN, AF-ResNet50 RT 0.25, AF-MobileNetV3 at 1, 8 and 32 videos
# BENCH_ARGS adds flags to both (e.g. BENCH_ARGS=--no-compile when time is short).
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 FORCE_CUDA=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
PY=${PY:-python3}
BENCH_ARGS=${BENCH_ARGS:-}
# The lent machine's default /opt/gcc g++ builds an extension in which a thrown
# TORCH_CHECK segfaults; the system compiler does not.
if [ -x /usr/bin/g++ ]; then export CC=/usr/bin/gcc CXX=/usr/bin/g++; fi
status=0

step() {  # name, command...: run one step, log it, remember failures
  local name=$1; shift
  echo "=== $name ($(date -u +%H:%M:%S))"
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n "${TAIL:-15}" "$OUT/$name.log"
  echo "=== $name rc=$rc"
  [ $rc -eq 0 ] || status=1
  return $rc
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv | tee "$OUT/gpu.txt"
steps=("$@")
[ "${steps[*]}" = all ] && steps=(build test-gpu bench-ops bench sweep)
for s in "${steps[@]}"; do
  case $s in
    build) step build $PY -m pip install --no-build-isolation --no-deps -e . || exit 1
           $PY -c "import afnet_kernels, json; print(json.dumps(afnet_kernels.backends()))" ;;
    test-gpu) step test-gpu $PY -m pytest -q -ra -m cuda tests ;;
    bench-ops) step bench-ops $PY benchmarks/ops.py --device cuda --dtype bfloat16 --channels-last --out "$OUT/ops" ;;
    bench) step bench $PY -m afnet bench --device cuda --out "$OUT/bench" $BENCH_ARGS ;;
    sweep) step sweep $PY -m afnet bench --device cuda --batch-sweep 1,8,32 --out "$OUT/sweep" $BENCH_ARGS ;;
    *) echo "unknown step $s"; exit 2 ;;
  esac
done
exit $status
