#!/usr/bin/env bash
# MGQRe §3.5 on lumir-mini: retrain the heads with random query rewriting (p = 0.6), the rewrites made once by the
# frozen rewriter (REWRITER, default the SFT rewriter, best of the trained stages on the holdout) for the first
# caption of the first N train_4k photos (N=1000: rewriting all 20,000 captions costs hours on 2 CPU cores; the
# other captions keep no rewrite). Then score the retrained heads on the 1K test, with and without the rewriter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python; LUMIR=.venv/bin/lumir
RUNS=${RUNS:-runs/mgqre}; OUT=benchmarks/results/mgqre
REWRITER=${REWRITER:-$RUNS/sft/model}; N=${N:-1000}
[ -f "$RUNS/train_queries.jsonl" ] || $PY - "$N" "$RUNS/train_queries.jsonl" <<'PYEOF'
import json, sys
from lumir.data.flickr8k import load_flickr8k
from lumir.eval.tasks import default_data_root
n, out = int(sys.argv[1]), sys.argv[2]
_, caps = load_flickr8k(default_data_root() / "flickr8k", "train_4k")
seen, rows = set(), []
for c in caps:
    if c.meta["image"] not in seen and len(seen) < n:
        seen.add(c.meta["image"]); rows.append({"id": c.id, "text": c.text})
open(out, "w").write("".join(json.dumps(r) + "\n" for r in rows))
PYEOF
[ -f "$RUNS/train_rewrites.jsonl" ] || $LUMIR rewrite "$RUNS/train_queries.jsonl" -o "$RUNS/train_rewrites.jsonl" \
  --rewriter "{type: trained, path: $REWRITER, batch_size: 32}"
[ -f "$RUNS/mini-rw/model/config.json" ] || $LUMIR train embedder --config recipes/mini/flickr8k.yaml \
  --set "data.rewrites={path: $RUNS/train_rewrites.jsonl, p: 0.6}" -o "$RUNS/mini-rw"
for name in original sft; do
  out="$OUT/eval/test-retrained-p0.6-$name.json"
  [ -f "$out" ] && continue
  args=(--split test --embedder "mini:$RUNS/mini-rw/model" --name "retrained-p0.6-$name" --out "$out")
  [ "$name" = sft ] && args+=(--rewriter "{type: trained, path: $REWRITER, batch_size: 32}")
  $PY benchmarks/mgqre_eval.py "${args[@]}"
done
