#!/usr/bin/env bash
# One prepared GPU check (issue 15 §1 "Devices"): on a machine with a CUDA device, run
#   1. the exact GN step benchmark at the paper size (case b: d=784, H=8000, N=1000, depth 2) and on
#      real MNIST (case m) on cuda,
#   2. the NTK benchmark on cuda (MLP, paper-size RevMLP, CNN),
#   3. the test suite (its CUDA tests run instead of being skipped),
# and print a table of what passed, with the wall time of each part; full outputs go to $LOGS.
#
#   bash benchmarks/gpu_check.sh               # device cuda (or DEVICE=cuda:1 bash ...)
#   GPU_CHECK_CPU=1 bash benchmarks/gpu_check.sh   # no GPU: run the quick CPU versions instead
#   PYTHON=/path/to/python ...                     # default .venv/bin/python, else python3
#
# Without a CUDA device (and without GPU_CHECK_CPU=1) it says so and exits with status 3.
set -u
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "gpu_check: $PY cannot import torch; run 'make install' or set PYTHON=/path/to/python" >&2
    exit 2
fi
DEVICE=${DEVICE:-cuda}
LOGS=${LOGS:-${OUT:-/tmp}/gpu_check_logs}
mkdir -p "$LOGS"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    if [ "${GPU_CHECK_CPU:-0}" != "1" ]; then
        echo "gpu_check: torch sees no CUDA device here ($("$PY" -c 'import torch; print(torch.__version__)')); nothing to check." >&2
        echo "gpu_check: run it on a GPU machine, or set GPU_CHECK_CPU=1 for the quick CPU versions." >&2
        exit 3
    fi
    echo "gpu_check: no CUDA device; running the quick CPU versions (GPU_CHECK_CPU=1)"
    DEVICE=cpu
    GN_ARGS="--cases a --repeats 1"
    NTK_ARGS="--quick --repeats 1"
    TEST_ARGS="tests/trainers/test_runtime.py"
else
    GN_ARGS="--cases bm --repeats 5"
    NTK_ARGS="--repeats 3"
    TEST_ARGS=""
fi
"$PY" benchmarks/environment.py

names=(); results=(); seconds=()
part() {  # part NAME COMMAND...: run COMMAND, log to $LOGS/NAME.log, remember status and time
    local name=$1; shift
    local start=$SECONDS
    echo "== $name: $*"
    "$@" > "$LOGS/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$LOGS/$name.log"
    names+=("$name"); seconds+=($((SECONDS - start)))
    if [ $rc -eq 0 ]; then results+=("ok"); else results+=("FAILED (exit $rc)"); fi
}

part gn_step "$PY" benchmarks/gn_step.py --device "$DEVICE" $GN_ARGS
part ntk "$PY" benchmarks/ntk.py --device "$DEVICE" $NTK_ARGS
part tests "$PY" -m pytest -q -x -p no:cacheprovider $TEST_ARGS

echo
echo "| part | result | wall s | log |"
echo "|---|---|---|---|"
failed=0
for i in "${!names[@]}"; do
    echo "| ${names[$i]} | ${results[$i]} | ${seconds[$i]} | $LOGS/${names[$i]}.log |"
    [ "${results[$i]}" = "ok" ] || failed=1
done
echo
grep -h -E "^(ReversibleGN|published|Adam|SGD|\(|\| )" "$LOGS/gn_step.log" "$LOGS/ntk.log" 2>/dev/null
grep -h -E "passed|failed" "$LOGS/tests.log" | tail -n 1
exit $failed
