#!/bin/bash
# Issue 16 measurements (LAMP on lumir-mini), in order, each heavy step under the shared lock; resumable: a finished
# step (runs/lamp/logs2/NAME.done) is skipped, the knowledge jsonl files append and resume.
# First stage: lumir train embedder --config recipes/mini/flickr8k.yaml --set data.holdout=1900 -o runs/lamp/first_stage_2100
cd "$(dirname "$0")/.."
mkdir -p runs/lamp/knowledge
[ -f runs/lamp/first_stage_2100/model/config.json ] || .venv/bin/lumir train embedder --config recipes/mini/flickr8k.yaml \
  --set data.holdout=1900 -o runs/lamp/first_stage_2100
# the caption lists: first caption of each test photo, of train_4k photos 2,100-3,999, the other test captions
.venv/bin/python - <<'PY'
import json
from pathlib import Path
from lumir.data.flickr8k import load_flickr8k
from lumir.eval.tasks import default_data_root
root, out = default_data_root(None) / "flickr8k", Path("runs/lamp/knowledge")
_, test = load_flickr8k(root, "test_1k")
images, train = load_flickr8k(root, "train_4k")
keep = {it.id for it in images[2100:4000]}
lists = {"captions_test_first": [c for c in test if c.id.endswith("#0")],
         "captions_train_first_2100": [c for c in train if c.id.endswith("#0") and c.meta["image"] in keep],
         "captions_test_rest": [c for c in test if not c.id.endswith("#0")]}
for name, items in lists.items():
    (out / f"{name}.jsonl").write_text("".join(json.dumps({"id": c.id, "text": c.text}) + "\n" for c in items))
PY
[ -f runs/lamp/knowledge/test_1k_first.jsonl ] || cp benchmarks/results/lamp/knowledge/test_1k_first.jsonl runs/lamp/knowledge/
B=benchmarks/lamp_flickr8k.py
L=runs/lamp/logs2; mkdir -p $L
K=runs/lamp/knowledge
step() {  # name, command...
  local name=$1; shift
  [ -f "$L/$name.done" ] && return 0
  echo "$(date +%T) start $name" >> $L/queue.log
  if flock /tmp/lumir-heavy.lock "$@" > "$L/$name.log" 2>&1; then touch "$L/$name.done"; echo "$(date +%T) done $name" >> $L/queue.log
  else echo "$(date +%T) FAILED $name" >> $L/queue.log; fi
}
KNOW=(.venv/bin/lumir augment knowledge --llm qwen-coder --mode joint --llm-cache runs/lamp/llm-cache.sqlite)
# 1. no-LLM rows first (they need no knowledge): rule-based triplets, and visual prompts only
step train_rules .venv/bin/python $B train --variant rules --set train.batching=random
step test_rules .venv/bin/python $B test --variant rules
step train_no_knowledge .venv/bin/python $B train --variant no_knowledge --set train.batching=random
step test_no_knowledge .venv/bin/python $B test --variant no_knowledge
# 1b. the batching chosen on the holdout (first_stage, now the recipe default): its test rows
step train_rules-fsb .venv/bin/python $B train --variant rules --set train.batching=first_stage --tag=-fsb
step test_rules-fsb .venv/bin/python $B test --variant rules --tag=-fsb
step train_no_knowledge-fsb .venv/bin/python $B train --variant no_knowledge --tag=-fsb
step test_no_knowledge-fsb .venv/bin/python $B test --variant no_knowledge --tag=-fsb
# 2. LLM knowledge: the test queries, then one caption per training photo
step know_test_first "${KNOW[@]}" $K/captions_test_first.jsonl -o $K/test_1k_first.jsonl
step know_train_first "${KNOW[@]}" $K/captions_train_first_2100.jsonl -o $K/train_4k.jsonl
# 3. the full model and the LLM-knowledge ablations
for v in full triplets_only states_only handcrafted cat one_stage combined; do
  step train_$v .venv/bin/python $B train --variant $v
  step test_$v .venv/bin/python $B test --variant $v
done
# 4. knowledge for the other 4,000 test captions (standard 5,000-caption image->text), then i2t over all captions
step know_test_rest "${KNOW[@]}" $K/captions_test_rest.jsonl -o $K/test_1k_rest.jsonl
echo "$(date +%T) queue finished" >> $L/queue.log
