#!/bin/bash
# One lease, several long stages one after another in a detached process session (a lease's
# command may run 10 minutes; the stages together run longer). Stages, in the order given:
#   gpu_tests     the `gpu` tests of tests/engine and tests/memory (about 5.5 min on an H100);
#                 the CUDA-OOM drawing test is deselected: it runs under
#                 set_per_process_memory_fraction, which broke the device call before (NOTES.md)
#   decode_speed  issue 15: hf, hf static+compile, mom (graph), mom-eager, mom-stream (~7 min)
#   decode_speed_fresh  the same at K/V lengths never decoded before in the process (--fresh),
#                 mom-eager in every round (~8 min)
#   paper144k     issue 12: Tables 1-4 at 144k for hf and mom, 3 repeats (~5 min)
#   paper_small   issue 12: Tables 1-4 at 48k and 80k, every variant, 3 repeats (~10 min, estimated)
#   paper_large   issue 12: Tables 1-4 at 112k and 144k, every variant, 3 repeats (~15 min, estimated)
#   paper_all1    issue 12: Tables 1-4 at 48k-144k, every variant, one round (~7 min, estimated)
#   paper_all3    issue 12: the same file resumed to 3 rounds (adds what paper_all1 left; ~12 min more)
#   paper144k_all3  issue 12: 144k, every variant, 3 rounds: the targets' medians of 3 (~6 min; estimate 7.4)
#   max_hf        issues 12-13: hf's maximum context, bracketed (~8 min, estimated; ~2 from mom.predict's
#                 maximum once branch next/session7 is merged)
#   families      issue 12: qwen2.5-7b and mistral-nemo-12b, hf vs mom, 32k-128k, bf16 verdict (~17 min, estimated)
#   families_qwen, families_nemo  the same, one model each (~7 and ~10.5 min, estimated)
#   max_offload   issue 12: hf-offload's maximum (transformers' offloaded cache, not predicted),
#                 walked down from 524,288: mom.predict of its nearest analogue (offload="stream",
#                 no mini-sequences, no trim: 29.58 GiB at 128k, measured hf-offload 30.07) passes
#                 458,752 and runs out at 475,136 in an MLP, its reserve 11 GiB above the allocated;
#                 the failing tries end in the first layer's MLP (seconds); one passing run with
#                 32 tokens of decode at ~9 s each (~8 min)
#   peers         issue 12: transformers' offloaded and static caches beside mom at 4k and 128k (~9 min, estimated)
#   max_std_chunked  issues 12-13: standard's and hf-chunked's maxima, each from mom.predict's
#                 (147,456 and 311,296 predicted; ~4.3 min estimated)
#   max_paper     issue 12: mom-paper's maximum context, bracketed (~13 min, estimated; ~5 from mom.predict's
#                 maximum once branch next/session7 is merged)
#   million       issue 14: 1,081,344 tokens with 32 decoded (~13 min)
#   predict       issue 13: predict_accuracy.py, predicted vs measured peak/TTFT/decode (~9 min)
#   predict_qwen  issue 13: the same check on a family the calibration never saw: qwen2.5-7b at 32k
#                 and 128k, hf, mom-auto and mom-paper, decode at fresh lengths at 32k and 128k in 2 rounds
#                 (~3 min)
#   predict_nemo  the same for mistral-nemo-12b (~6 min, estimated)
#   predict_presets  issue 13: the four presets never measured (llama-3.2-1b, llama-3.2-3b, qwen3-8b,
#                 mistral-7b) at 32k and 128k, hf and mom-auto, decode at fresh 128k lengths (~8 min,
#                 estimated): head_dim 64 (the 1B/3B), q/k norms (qwen3) are shapes the fit never saw
#   prefill_sweep  issue 13: TTFT below 64k, where mom.predict comes out low (hf -10% at 32k, -18% at
#                 4k; qwen2.5-7b's mom-auto -28% at 32k, 0.3 s slower than its hf and mom-paper): llama-3.1-8b
#                 at 4k-64k and qwen2.5-7b at 32k and 64k, mom-auto first, then hf, mom-paper and mom-none
#                 (mini-sequences without a mom cache: is the outlier the resident cache's path or the
#                 pieces'), 2 new tokens, no decode check (~4 min, estimated)
#   max_mom       issues 12-14: mom's maximum context: one step above mom's own host guard (refused
#                 at once), then mom.predict's maximum (1,114,112 predicted; ~13.5 min)
#   decode_split  issue 13: eager decode's wall step against the GPU's kernel time per step,
#                 hf (with and without the 2D mask), mom-none, mom-eager at 4k and 128k (~4 min)
#   decode_cudnn  issue 13/15: decode_split at lengths never decoded before (--fresh), with sdpa's
#                 default backends and without cuDNN: is the first-time-length cost cuDNN's plans (~8 min)
#   graph_probe   issue 15: the graph-decode GPU tests alone, then decode_speed for hf and mom
#                 (graph) at never-decoded lengths, 2 rounds (~5 min): a quick look at a new step
#   fused_probe   issue 15: decode_speed for hf, hf static+compile and mom (graph, fused Triton
#                 kernels) at never-decoded lengths, 3 rounds, and mom-torch-kernels (the same step
#                 with torch's kernels) once (~7 min, estimated): what the fusion buys, against the
#                 peers; run it after gpu_tests, which check the fused step first
#   placement_exact  issue 14: K/V placed on GPU and host vs offload none, 376,832 tokens (~6 min)
# Each stage writes its log (and JSON) in DIR as it goes; `poll` waits for the stages and
# copies DIR's files to a folder ($OUT).
#
#   setsid nohup bash benchmarks/gpu_session.sh run /tmp/sess gpu_tests decode_speed > /tmp/sess.log 2>&1 < /dev/null &
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
    for name in "${@:3}"; do
        case $name in
        gpu_tests) stage gpu_tests python3 -m pytest -o addopts="" -p no:cacheprovider -m gpu -rA \
            --durations=0 -k "not cuda_oom" tests/engine tests/memory ;;
        decode_speed) stage decode_speed python3 benchmarks/decode_speed.py \
            --variants hf,hf-static-compile,mom,mom-eager,mom-stream --once mom-eager,mom-stream \
            --out "$dir/decode_speed.json" ;;
        decode_speed_fresh) stage decode_speed_fresh python3 benchmarks/decode_speed.py \
            --variants hf,hf-static-compile,mom,mom-eager,mom-stream --once mom-stream --fresh \
            --out "$dir/decode_speed_fresh.json" ;;
        graph_probe) stage graph_probe bash -c "python3 -m pytest -o addopts='' -p no:cacheprovider -m gpu -rA \
            -s -k 'varlen or graph_decode' tests/engine; python3 benchmarks/decode_speed.py --variants hf,mom \
            --once none --rounds 2 --fresh --out $dir/graph_probe.json" ;;
        fused_probe) stage fused_probe python3 benchmarks/decode_speed.py \
            --variants hf,hf-static-compile,mom,mom-torch-kernels --once mom-torch-kernels --rounds 3 --fresh \
            --out "$dir/fused_probe.json" ;;
        paper144k) stage paper144k python3 benchmarks/paper_tables.py --contexts 144000 --variants hf,mom \
            --out "$dir/paper144k.json" ;;
        paper_small) stage paper_small python3 benchmarks/paper_tables.py --contexts 48000,80000 \
            --out "$dir/paper_small.json" ;;
        paper_large) stage paper_large python3 benchmarks/paper_tables.py --contexts 112000,144000 \
            --out "$dir/paper_large.json" ;;
        paper_all1) stage paper_all1 python3 benchmarks/paper_tables.py --repeats 1 --out "$dir/paper_tables.json" ;;
        paper144k_all3) stage paper144k_all3 python3 benchmarks/paper_tables.py --contexts 144000 --repeats 3 \
            --out "$dir/paper144k_all3.json" ;;
        paper_all3) stage paper_all3 python3 benchmarks/paper_tables.py --repeats 3 --out "$dir/paper_tables.json" ;;
        max_hf) stage max_hf python3 benchmarks/max_context.py --variants hf --out "$dir/max_hf.json" ;;
        families) stage families python3 benchmarks/families.py --out "$dir/families.json" ;;
        families_qwen|families_nemo) model=$([ $name = families_qwen ] && echo qwen2.5-7b || echo mistral-nemo-12b)
            stage $name python3 benchmarks/families.py --model $model --out "$dir/$name.json" ;;
        max_offload) stage max_offload python3 benchmarks/max_context.py --variants hf-offload \
            --start-at hf-offload=524288 --walk-steps 8 --out "$dir/max_offload.json" ;;
        peers) stage peers python3 benchmarks/peers.py --out "$dir/peers.json" ;;
        max_std_chunked) stage max_std_chunked python3 benchmarks/max_context.py --variants standard,hf-chunked \
            --out "$dir/max_std_chunked.json" ;;
        max_paper) stage max_paper python3 benchmarks/max_context.py --variants mom-paper --out "$dir/max_paper.json" ;;
        placement_exact) stage placement_exact python3 benchmarks/placement_exact.py --context 376832 \
            --out "$dir/placement_exact.json" ;;
        predict) stage predict python3 benchmarks/predict_accuracy.py --fresh --out "$dir/predict_accuracy.json" ;;
        predict_qwen|predict_nemo) model=$([ $name = predict_qwen ] && echo qwen2.5-7b || echo mistral-nemo-12b)
            stage $name python3 benchmarks/predict_accuracy.py --model $model --contexts 32768,131072 \
            --variants hf,mom-auto,mom-paper --decode-contexts 32768,131072 --decode-rounds 2 --fresh --budget-s 330 \
            --out "$dir/$name.json" ;;
        predict_presets) for model in llama-3.2-1b llama-3.2-3b qwen3-8b mistral-7b; do
                stage predict_$model python3 benchmarks/predict_accuracy.py --model $model --contexts 32768,131072 \
                --variants hf,mom-auto --decode-contexts 131072 --decode-rounds 2 --fresh --budget-s 150 \
                --out "$dir/predict_$model.json"; done ;;
        prefill_sweep) stage prefill_sweep bash -c "python3 benchmarks/predict_accuracy.py --model llama-3.1-8b \
            --contexts 4096,8192,16384,32768,49152,65536 --variants mom-auto,hf,mom-paper,mom-none \
            --new-tokens 2 --decode-contexts '' --budget-s 240 --out $dir/prefill_sweep_llama.json; \
            python3 benchmarks/predict_accuracy.py --model qwen2.5-7b --contexts 32768,65536 \
            --variants mom-auto,hf,mom-paper,mom-none --new-tokens 2 --decode-contexts '' --budget-s 150 \
            --out $dir/prefill_sweep_qwen.json" ;;
        max_mom) stage max_mom python3 benchmarks/max_context.py --variants mom --out "$dir/max_mom.json" ;;
        decode_split) stage decode_split python3 benchmarks/decode_split.py --out "$dir/decode_split.json" ;;
        decode_cudnn) stage decode_cudnn bash -c "python3 benchmarks/decode_split.py --fresh --rounds 2 \
            --out $dir/decode_fresh.json && python3 benchmarks/decode_split.py --fresh --rounds 2 --sdpa no-cudnn \
            --out $dir/decode_fresh_nocudnn.json" ;;
        million) stage million python3 benchmarks/million.py --out "$dir/million.json" ;;
        *) echo "unknown stage $name" >> "$dir/stages" ;;
        esac
    done
    echo "$(date +%s) all done" >> "$dir/stages"
elif [ "$mode" = poll ]; then
    limit=$3 out=$4 waited=0
    while [ $waited -lt "$limit" ] && ! grep -q "all done" "$dir/stages" 2>/dev/null; do
        sleep 10; waited=$((waited + 10))
        cp "$dir"/* "$out/" 2>/dev/null  # a command cut off by the lease still brings back what is there
    done
    cat "$dir/stages"; nvidia-smi --query-gpu=memory.used --format=csv,noheader; free -g | head -2
    cp "$dir"/* "$out/"
    tail -n 5 "$dir"/*.log
fi
