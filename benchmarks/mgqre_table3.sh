#!/usr/bin/env bash
# MGQRe Table 3 on lumir-mini / Flickr8k, after benchmarks/mgqre_pairs.py has built the challenge pairs:
# SFT -> PRO -> PPO (CPU profiles), each stage scored on the holdout, then every final row once on the 1K test.
# Resumable: each trainer resumes from its checkpoints, each eval is skipped when its JSON exists.
#   bash benchmarks/mgqre_table3.sh [stage...]     (default: sft pro ppo eval)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
LUMIR=.venv/bin/lumir
RUNS=${RUNS:-runs/mgqre}
OUT=benchmarks/results/mgqre
PAIRS=$OUT/pairs/${PAIRS_TAG:-challenge-first200}
mkdir -p "$OUT/eval" "$OUT/train"

train() {  # stage init
  local stage=$1 init=${2:-}
  local args=(--config "recipes/rewriter/$stage.yaml" --profile cpu -o "$RUNS/$stage")
  [ -n "$init" ] && args+=(--set "model.init=$init")
  case $stage in
    # the paper's epoch counts (§4.1.3) on top of the cpu profile: the pair sets here are small
    sft) args+=(--set "data.train=$PAIRS/sft.jsonl" --set train.epochs=10) ;;
    pro) args+=(--set "data.train=$PAIRS/pro.jsonl" --set train.epochs=5) ;;
    ppo|grpo) args+=(--set "data.train=$OUT/pairs/${PAIRS_TAG:-challenge-first200}.records.jsonl"
                     --set "reward.candidates.cache=$RUNS/reward-pool.pt") ;;
  esac
  [ -f "$RUNS/$stage/model/lumir_rewriter.json" ] || $LUMIR train rewriter "${args[@]}"
  cp "$RUNS/$stage/log.jsonl" "$OUT/train/$stage.log.jsonl"
  [ -f "$RUNS/$stage/result.json" ] && cp "$RUNS/$stage/result.json" "$OUT/train/$stage.result.json"
}

evaluate() {  # split name rewriter-folder|none   (holdout: its first 250 photos' first captions)
  local split=$1 name=$2 rewriter=$3
  local out="$OUT/eval/$split-$name.json"
  local args=(--split "$split" --name "$name" --out "$out")
  [ -f "$out" ] && return 0
  [ "$split" = holdout ] && args+=(--limit 250)
  [ "$rewriter" != none ] && args+=(--rewriter "{type: trained, path: $rewriter, batch_size: 32}")
  $PY benchmarks/mgqre_eval.py "${args[@]}"
}

for step in "${@:-sft pro ppo eval}"; do
  for s in $step; do
    case $s in
      sft) evaluate holdout original none; train sft; evaluate holdout sft "$RUNS/sft/model" ;;
      pro) train pro "$RUNS/sft/model"; evaluate holdout sft-pro "$RUNS/pro/model" ;;
      ppo) train ppo "$RUNS/pro/model"; evaluate holdout sft-pro-ppo "$RUNS/ppo/model" ;;
      grpo) train grpo "$RUNS/pro/model"; evaluate holdout sft-pro-grpo "$RUNS/grpo/model" ;;
      eval)
        evaluate test original none
        evaluate test sft "$RUNS/sft/model"
        evaluate test sft-pro "$RUNS/pro/model"
        evaluate test sft-pro-ppo "$RUNS/ppo/model"
        ;;
      *) echo "unknown step $s" >&2; exit 2 ;;
    esac
  done
done
