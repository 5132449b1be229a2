#!/usr/bin/env bash
# An LLM becomes an embedder (LamRA Table 5 in miniature) on 2 CPU cores: SmolLM2-135M-Instruct with LamRA's
# one-word (EOL) prompt, zero-shot vs after LoRA contrastive training; all-MiniLM-L6-v2 as the reference.
#   Flickr8k caption->caption: test_1k, first 250 photos (250 queries, 1,000 pool captions).
#   SciFact: the 300 test queries over a 1,000-abstract pool (every judged abstract + random others, seeded).
# Training (fixed a priori, no tuning on test): recipes/embedder/lamra_stage1.yaml --profile cpu (caption pairs),
# recipes/embedder/lamra_stage2.yaml --profile cpu (SciFact train, from stage I) and the same without stage I.
# Resumable: a finished JSON or model folder is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
LUMIR=${LUMIR:-.venv/bin/lumir}
OUT=benchmarks/results/llm_embedder
RUNS=${RUNS:-runs/embedder}
mkdir -p "$OUT"
SMOL=$($PY -c 'from lumir.rewrite.artifact import base_model_folder as b; print(b("smollm2"))')

run_eval() {  # name embedder task extra...
  local name=$1 emb=$2 task=$3; shift 3
  [[ -f $OUT/$name.json ]] && return 0
  $PY benchmarks/llm_embedder.py --embedder "$emb" --task "$task" "$@" -o "$OUT/$name.json"
}
F8K=(--task f8k-captions --split test --limit 250)
SCI=(--task scifact --split test --pool 1000)

run_eval minilm_f8k minilm "${F8K[1]}" "${F8K[@]:2}"
run_eval minilm_scifact minilm "${SCI[1]}" "${SCI[@]:2}"
run_eval smollm2_zeroshot_f8k "mllm:$SMOL" "${F8K[1]}" "${F8K[@]:2}" --max-length 32 --chat off
run_eval smollm2_zeroshot_scifact "mllm:$SMOL" "${SCI[1]}" "${SCI[@]:2}" --max-length 64 --chat off

[[ -d $RUNS/lamra_stage1_cpu/model ]] || \
  $LUMIR train embedder --config recipes/embedder/lamra_stage1.yaml --profile cpu -o "$RUNS/lamra_stage1_cpu"
cp "$RUNS/lamra_stage1_cpu/result.json" "$OUT/train_stage1.json"
run_eval smollm2_stage1_f8k "mllm:$RUNS/lamra_stage1_cpu/model" "${F8K[1]}" "${F8K[@]:2}" --max-length 32 --chat off

[[ -d $RUNS/scifact_only_cpu/model ]] || \
  $LUMIR train embedder --config recipes/embedder/lamra_stage2.yaml --profile cpu -o "$RUNS/scifact_only_cpu" \
    --set model.init=null --set model.path=smollm2 \
    --set 'model.lora={r: 16, alpha: 32, dropout: 0.05, target_modules: [q_proj, k_proj, v_proj, o_proj]}'
cp "$RUNS/scifact_only_cpu/result.json" "$OUT/train_scifact_only.json"
run_eval smollm2_scifact_only_scifact "mllm:$RUNS/scifact_only_cpu/model" "${SCI[1]}" "${SCI[@]:2}" --max-length 64 --chat off

[[ -d $RUNS/lamra_stage2_cpu/model ]] || \
  $LUMIR train embedder --config recipes/embedder/lamra_stage2.yaml --profile cpu -o "$RUNS/lamra_stage2_cpu" \
    --set "model.init=$RUNS/lamra_stage1_cpu/model"
cp "$RUNS/lamra_stage2_cpu/result.json" "$OUT/train_stage2.json"
run_eval smollm2_stage12_scifact "mllm:$RUNS/lamra_stage2_cpu/model" "${SCI[1]}" "${SCI[@]:2}" --max-length 64 --chat off
run_eval smollm2_stage1_scifact "mllm:$RUNS/lamra_stage1_cpu/model" "${SCI[1]}" "${SCI[@]:2}" --max-length 64 --chat off
