#!/usr/bin/env bash
# The spec suite and the benchmarks on CUDA, for each model and dtype, with every value compared
# against the float32 CPU goldens (tools/compare_runs.py, each spec's own tolerances).
#
#   bash benchmarks/gpu_matrix.sh OUT "smollm2-135m gemma3-270m" "float32 bfloat16 float16" [specs|bench|both]
#
# OUT/summary.txt gets one line per run (exit status, seconds) and the comparisons; the logs,
# reports, golden copies and benchmark tables stay under OUT.
set -u
out=${1:?output directory}; models=${2:-smollm2-135m gemma3-270m}; dtypes=${3:-float32 bfloat16 float16}; what=${4:-both}
py=${PYTHON:-python3}
mkdir -p "$out"
model_args=$(for m in $models; do printf -- '--model %s ' "$m"; done)
timed() {  # name, command...: runs it, logs to OUT/name.log, one summary line
    local name=$1; shift
    local start=$SECONDS
    "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "$name: exit $rc in $((SECONDS - start)) s; $(grep -E '^(=+ )?[0-9]+ (passed|failed|error)|[0-9]+ (passed|xfailed)' "$out/$name.log" | tail -1)" | tee -a "$out/summary.txt"
}
if [ "$what" != bench ]; then
    for dtype in $dtypes; do
        # An empty golden dir: every snapshot is written fresh (a copy of golden/ would keep the
        # files whose values match within tolerance), so the comparison sees every value.
        rm -rf "$out/golden-$dtype" && mkdir -p "$out/golden-$dtype"
        timed "specs-$dtype" $py -m pytest specs/ $model_args --device cuda --dtype "$dtype" -p no:cacheprovider -q \
            --golden-dir "$out/golden-$dtype" --update-golden --report-dir "$out/reports-$dtype"
        find "$out/golden-$dtype" -name '*.obtained.json' -delete
        $py tools/compare_runs.py golden "$out/golden-$dtype" >"$out/compare-$dtype.txt" 2>&1
        echo "compare-$dtype: $(grep -c ', 0 outside' "$out/compare-$dtype.txt") snapshots within the goldens' tolerances," \
             "$(grep -c ', [1-9][0-9]* outside' "$out/compare-$dtype.txt") outside" | tee -a "$out/summary.txt"
    done
fi
if [ "$what" != specs ]; then
    for model in $models; do
        for dtype in $dtypes; do
            timed "bench-$model-$dtype" $py -m pytest benchmarks/ --model "$model" --device cuda --dtype "$dtype" \
                -p no:cacheprovider -q --benchmark-columns=min,mean,rounds
            sed -n '/massive_checks: ratios/,/^$/p' "$out/bench-$model-$dtype.log" | grep -v '^$' >>"$out/summary.txt"
        done
    done
fi
