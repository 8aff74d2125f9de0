#!/bin/bash
# One lease, several long stages: the GPU tests, then issue 15's decode benchmark, then issue
# 14's million-token run, one after another in a detached process session (a lease's command
# may run 10 minutes; these together take about 25). Each stage writes its log (and JSON) in
# DIR as it goes; `--poll` waits for the stages and copies DIR's files to a folder ($OUT).
#
#   setsid nohup bash benchmarks/gpu_session.sh run /tmp/sess > /tmp/sess.log 2>&1 < /dev/null &
#   bash benchmarks/gpu_session.sh poll /tmp/sess 570 "$OUT"   # wait at most 570 s, copy back
#
# Needs MOM_COMMIT (the full hash the tree is at) and PYTHONPATH with the repo and psutil.
set -u
mode=$1 dir=$2
stage() {
    local name=$1; shift
    echo "$(date +%s) start $name" >> "$dir/stages"
    "$@" > "$dir/$name.log" 2>&1
    echo "$(date +%s) end $name rc=$?" >> "$dir/stages"
}
if [ "$mode" = run ]; then
    mkdir -p "$dir"
    echo "commit $MOM_COMMIT" >> "$dir/stages"
    stage gpu_tests python3 -m pytest -o addopts="" -p no:cacheprovider -m gpu -rA --durations=0 tests/engine tests/memory
    stage decode_speed python3 benchmarks/decode_speed.py --variants hf,hf-static-compile,mom,mom-eager \
        --once mom-eager --out "$dir/decode_speed.json"
    stage million python3 benchmarks/million.py --gpu-gib 79.1 --out "$dir/million.json"
    echo "$(date +%s) all done" >> "$dir/stages"
elif [ "$mode" = poll ]; then
    limit=$3 out=$4 waited=0
    while [ $waited -lt "$limit" ] && ! grep -q "all done" "$dir/stages" 2>/dev/null; do
        sleep 10; waited=$((waited + 10))
    done
    cat "$dir/stages"; nvidia-smi --query-gpu=memory.used --format=csv,noheader; free -g | head -2
    for f in "$dir"/*; do cp "$f" "$out/"; done
    tail -n 5 "$dir"/*.log
fi
