"""Markdown tables of the MGQRe benchmarks from their JSON results (benchmarks/results/mgqre/).

Usage:
    python benchmarks/mgqre_report.py            # Table 3 rows, pair statistics, training logs, samples
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path("benchmarks/results/mgqre")


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def recall_rows(split: str) -> list[str]:
    rows = [
        "| row | T→I R@1 | R@5 | R@10 | I→T R@1 | R@5 | R@10 | Rsum | rewritten / fallbacks | ms/query |",
        "|:---|---:|---:|---:|---:|---:|---:|---:|:---|---:|",
    ]
    for path in sorted((RESULTS / "eval").glob(f"{split}-*.json")):
        data = _load(path)
        if data is None:
            continue
        tasks = data["tasks"]
        t2i = next(v for k, v in tasks.items() if k.endswith("/t2i"))
        i2t = next(v for k, v in tasks.items() if k.endswith("/i2t"))
        m1 = t2i["stages"]["first_stage"]["metrics"]
        m2 = i2t["stages"]["first_stage"]["metrics"]
        rsum = 100 * sum(m1[k] + m2[k] for k in ("R@1", "R@5", "R@10"))
        stats = t2i.get("rewrite_stats") or {}
        fb = stats.get("fallbacks") or {}
        rw = f"{stats.get('rewritten', '—')} / {sum(fb.values()) if fb else 0}" if stats else "—"
        ms = t2i.get("rewrite_ms_per_query")
        name = path.stem.removeprefix(f"{split}-")
        rows.append(
            f"| {name} | {100 * m1['R@1']:.1f} | {100 * m1['R@5']:.1f} | {100 * m1['R@10']:.1f} | "
            f"{100 * m2['R@1']:.1f} | {100 * m2['R@5']:.1f} | {100 * m2['R@10']:.1f} | {rsum:.1f} | {rw} | "
            f"{ms:.0f} |"
            if ms is not None
            else f"| {name} | {100 * m1['R@1']:.1f} | {100 * m1['R@5']:.1f} | {100 * m1['R@10']:.1f} | "
            f"{100 * m2['R@1']:.1f} | {100 * m2['R@5']:.1f} | {100 * m2['R@10']:.1f} | {rsum:.1f} | {rw} | — |"
        )
    return rows


def pair_stats() -> list[str]:
    rows = [
        "| records | queries | low / high | low made high | turns | blurred kept | SFT pairs | PRO lists | "
        "LLM calls | wall (s) | attempt outcomes |",
        "|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---|",
    ]
    for path in sorted((RESULTS / "pairs").glob("*/stats.json")):
        s = json.loads(path.read_text())
        rows.append(
            f"| {path.parent.name} | {s['queries']} | {s['low_quality']} / {s['high_quality']} | "
            f"{s['low_made_high']} ({s['low_made_high_share']}) | {s['turns']} | {s['blurred_kept']} | "
            f"{s['sft_pairs']} | {s['pro_lists']} | {s['llm_calls']} | {s['seconds']} | "
            f"{', '.join(f'{k} {v}' for k, v in s['attempt_status'].items())} |"
        )
    return rows


def samples(split: str = "test") -> list[str]:
    out = []
    for path in sorted((RESULTS / "eval").glob(f"{split}-*.json")):
        data = _load(path)
        if not data or not data.get("samples"):
            continue
        out += [
            f"\n{path.stem} (rank of the photo before → after):\n",
            "| original | rewritten | rank |",
            "|:---|:---|:---|",
        ]
        out += [
            f"| {s['original']} | {s['rewritten']} | {s['rank_before']} → {s['rank_after']} |" for s in data["samples"]
        ]
    return out


def main() -> None:
    print("## test\n")
    print("\n".join(recall_rows("test")))
    print("\n## holdout\n")
    print("\n".join(recall_rows("holdout")))
    print("\n## pairs\n")
    print("\n".join(pair_stats()))
    print("\n".join(samples()))


if __name__ == "__main__":
    main()
