#!/usr/bin/env bash
# The pass benchmarks on CUDA for random-initialised models of real shapes (no weights travel),
# plus CUDA-vs-cpu agreement of the specs of specs/any on the planted model: one call, made to fit
# a device session: every run has its own time limit (140 s per benchmark run, 50 s per spec run: under
# 9 minutes in all, within the 10 minutes a device command may run).
#
#   bash benchmarks/gpu_shapes.sh [OUT] ["random:smollm2-135m:float32 random:llama-3b:bfloat16 ..."]
#
# On the lent GPU machine (see ../shared/gpu/README.md): fetch the wheels it lacks once here
# (bash ../shared/gpu/fetch_wheels.sh), then one device call with carry [".whl"] and the command
# `bash benchmarks/gpu_shapes.sh "$OUT"`; the wheels are installed into /tmp/site first. OUT/summary.txt gets, per shape and dtype, the ratio table the
# benchmarks print, then the agreement; logs stay under OUT. Runs on a cpu too (DEVICE=cpu), slowly.
set -u
out=${1:-${OUT:-gpu-shapes}}
runs=${2:-random:smollm2-135m:float32 random:llama-3b:bfloat16 random:llama-3b:float32}
device=${DEVICE:-cuda}
py=${PYTHON:-python3}
mkdir -p "$out"
if [ -d .whl ]; then
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
# Where the package is not installed its pytest entry point is not registered: name the plugin.
plugin=$($py -c "import importlib.metadata as m; print('' if m.entry_points(group='pytest11', name='massive_checks') else '-p massive_checks.plugin')")
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"; git log -1 --format='commit %h %s' 2>/dev/null; } >>"$out/summary.txt"

timed() {  # name, limit in s, command...: runs it under the limit, logs to OUT/name.log, one summary line
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    # SIGINT at the limit: pytest stops as on Ctrl-C and still prints the ratios measured so far.
    timeout --signal=INT --kill-after=30 "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "$name: exit $rc in $((SECONDS - start)) s" | tee -a "$out/summary.txt"
}

for run in $runs; do  # NAME:DTYPE, NAME may hold a colon (random:llama-3b)
    model=${run%:*} dtype=${run##*:}
    name="bench-${model//[:\/]/-}-$dtype"
    timed "$name" 140 $py -m pytest benchmarks/test_passes.py $plugin -p no:cacheprovider -q -k "not nnsight" \
        --model "$model" --device "$device" --dtype "$dtype" --benchmark-columns=min,mean,rounds
    sed -n '/massive_checks: ratios/,/^$/p' "$out/$name.log" | grep -v '^$' >>"$out/summary.txt"
done

# The same specs on the planted model (exact ground truth) on the device and on the cpu: every
# value and verdict compared (tools/compare_runs.py, each spec's own tolerances).
wheres=$device && [ "$device" != cpu ] && wheres="$device cpu"
for where in $wheres; do
    rm -rf "$out/golden-$where" && mkdir -p "$out/golden-$where"
    timed "planted-$where" 50 $py -m pytest specs/any $plugin -p no:cacheprovider -q --model planted-llama \
        --device "$where" --golden-dir "$out/golden-$where" --update-golden --report-dir "$out/reports-$where"
    find "$out/golden-$where" -name '*.obtained.json' -delete
done
if [ "$device" != cpu ]; then
    $py tools/compare_runs.py "$out/golden-cpu" "$out/golden-$device" \
        --results "$out/reports-cpu/results.json" "$out/reports-$device/results.json" >"$out/agreement.txt" 2>&1
    echo "agreement ($device vs cpu, planted-llama, specs/any): exit $? ($(tail -1 "$out/agreement.txt"))" | tee -a "$out/summary.txt"
fi
