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
PAIRS=$OUT/pairs/challenge
mkdir -p "$OUT/eval" "$OUT/train"

train() {  # stage init
  local stage=$1 init=${2:-}
  local args=(--config "recipes/rewriter/$stage.yaml" --profile cpu -o "$RUNS/$stage")
  [ -n "$init" ] && args+=(--set "model.init=$init")
  case $stage in
    sft) args+=(--set "data.train=$PAIRS/sft.jsonl") ;;
    pro) args+=(--set "data.train=$PAIRS/pro.jsonl") ;;
    ppo|grpo) args+=(--set "data.train=$OUT/pairs/challenge.records.jsonl"
                     --set "reward.candidates.cache=$RUNS/reward-pool.pt") ;;
  esac
  [ -f "$RUNS/$stage/model/lumir_rewriter.json" ] || $LUMIR train rewriter "${args[@]}"
  cp "$RUNS/$stage/log.jsonl" "$OUT/train/$stage.log.jsonl"
  [ -f "$RUNS/$stage/result.json" ] && cp "$RUNS/$stage/result.json" "$OUT/train/$stage.result.json"
}

evaluate() {  # split name rewriter-spec|none
  local split=$1 name=$2 rewriter=$3
  local out="$OUT/eval/$split-$name.json"
  [ -f "$out" ] && return 0
  if [ "$rewriter" = none ]; then
    $PY benchmarks/mgqre_eval.py --split "$split" --name "$name" --out "$out"
  else
    $PY benchmarks/mgqre_eval.py --split "$split" --name "$name" --rewriter "$rewriter" --out "$out"
  fi
}

for step in "${@:-sft pro ppo eval}"; do
  for s in $step; do
    case $s in
      sft) train sft; evaluate holdout sft "trained:$RUNS/sft/model" ;;
      pro) train pro "$RUNS/sft/model"; evaluate holdout sft-pro "trained:$RUNS/pro/model" ;;
      ppo) train ppo "$RUNS/pro/model"; evaluate holdout sft-pro-ppo "trained:$RUNS/ppo/model" ;;
      grpo) train grpo "$RUNS/pro/model"; evaluate holdout sft-pro-grpo "trained:$RUNS/grpo/model" ;;
      eval)
        evaluate test original none
        evaluate test sft "trained:$RUNS/sft/model"
        evaluate test sft-pro "trained:$RUNS/pro/model"
        evaluate test sft-pro-ppo "trained:$RUNS/ppo/model"
        ;;
      *) echo "unknown step $s" >&2; exit 2 ;;
    esac
  done
done
