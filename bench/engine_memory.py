"""Does the engine's memory stay flat over a soak-like log? (No broker, no worker shell.)

    .venv/bin/python bench/engine_memory.py [--chunks 30] [--changelog on] [--json FILE]

Feeds the soak's log (``bench/soak.py``: chunks of ``--chunk-predictions`` from the
project generator, 20k users and 2k items coming back in every chunk, each chunk a
minute of event time after the previous one) through the engine's partitions as
``freshet replay`` wires them (:class:`streams.replay.Replay`), in batches of
``--batch`` records, outputs and changelog deltas dropped. After every chunk: this
process's RSS (``VmRSS``). With ``--changelog on`` the partitions make their changelog
deltas as a worker's do. Separates the engine's own memory from the rest of a worker
(consumers, producer, local store, web server): ``bench/soak.py`` measures the whole.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench._supervise import rss_kib  # noqa: E402
from engine import InputBatch  # noqa: E402
from freshet.gc_tuning import tune_gc  # noqa: E402
from freshet.generator import GeneratorConfig, generate  # noqa: E402
from freshet.settings import Settings  # noqa: E402
from streams.replay import Replay  # noqa: E402


def rss_mib() -> float:
    kib = rss_kib(os.getpid())
    if kib is None:
        raise RuntimeError("no VmRSS in /proc/self/status")
    return kib / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=30)
    ap.add_argument("--chunk-predictions", type=int, default=50_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=2_000)
    ap.add_argument("--batch", type=int, default=2_000, help="records per engine batch")
    ap.add_argument("--changelog", choices=("on", "off"), default="on")
    ap.add_argument("--json", type=Path, help="write every figure to this file")
    args = ap.parse_args(argv)
    settings = Settings(evaluation_enabled=False)
    tune_gc(settings.gc_young_threshold)
    # with a changelog, as a worker's partitions: deltas made (and dropped here)
    rep = Replay(settings, changelog=args.changelog == "on")
    start_ts = GeneratorConfig().start_ts_ms
    offsets = {0: 0, 1: 0}
    series: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for k in range(args.chunks):
        records = list(generate(GeneratorConfig(
            seed=1 + k, users=args.users, items=args.items, predictions=args.chunk_predictions,
            start_ts_ms=start_ts, malformed_fraction=0.001)))
        start_ts = max(r.ts for r in records if r.ts is not None) + 60_000
        for i in range(0, len(records), args.batch):
            part = records[i:i + args.batch]
            src = [1 if r.topic == "predictions" else 0 for r in part]
            offs = []
            for s in src:
                offs.append(offsets[s])
                offsets[s] += 1
            rep.run_batch(InputBatch(np.array(src, dtype=np.int8),
                                     np.array(offs, dtype=np.int64), [None] * len(part),
                                     [r.value for r in part]), lambda outs: None)
        series.append({"chunk": k, "events": sum(offsets.values()), "rss_mib": round(rss_mib(), 1)})
        print(json.dumps(series[-1]), flush=True)
    half = len(series) // 2
    base, end = series[half]["rss_mib"], series[-1]["rss_mib"]
    doc = {"changelog": args.changelog, "chunks": args.chunks, "events": sum(offsets.values()),
           "seconds": round(time.perf_counter() - t0, 1),
           "rss_mid_mib": base, "rss_end_mib": end,
           "growth_second_half_pct": round((end - base) / base * 100, 2), "series": series}
    print(json.dumps({k: v for k, v in doc.items() if k != "series"}))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
