"""The floor under any pure-Python replay: read, parse, encode and write what replay must.

    .venv/bin/python bench/replay_floor.py [--events 2000000] [--json FILE]

Writes the bench log (``bench/features.py``'s ``world``) as JSON lines, runs
``freshet replay`` over it once (evaluation off, as the issue's figure) for its rate
and its output files, then times, in this process, the steps every replay written
in Python has to take at least once per record, with the fastest tools installed,
and no engine at all:

1. read the two input files and split them into lines;
2. parse every input line (``orjson.loads``);
3. encode every output record freshet wrote, from its parsed Python object
   (msgspec's encoder: 2.0 us per training example here, orjson's 3.8; the objects
   are built before the clock starts, 100k at a time, so building them -- which the
   engine must also do -- is not counted);
4. write the encoded records, one file per topic.

No garbage collection runs inside a timed step. The sum is a lower bound for the
work, per input event, of a replay that produces the same records in CPython; the
report gives it as a rate next to freshet's.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.features import world  # noqa: E402
from freshet.generator import generate, write_jsonl  # noqa: E402

#: Output records parsed, encoded and written at a time (all at once do not fit in memory).
CHUNK = 100_000


def _timed(step: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    gc.disable()
    try:
        t = time.perf_counter()
        out = step()
        return time.perf_counter() - t, out
    finally:
        gc.enable()


def _floor(logdir: Path, out: Path, again: Path) -> dict[str, Any]:
    inputs = [logdir / "predictions.jsonl", logdir / "clicks.jsonl"]
    read_s, lines = _timed(lambda: [line for f in inputs
                                    for line in f.read_bytes().splitlines() if line])
    parse_s, _ = _timed(lambda ls=lines: [orjson.loads(line) for line in ls])
    del lines
    again.mkdir()
    encode = msgspec.json.Encoder().encode
    encode_s = write_s = 0.0
    n_out = size = 0
    for f in sorted(out.iterdir()):
        rows = [line for line in f.read_bytes().splitlines() if line]
        with open(again / f.name, "wb") as sink:
            for start in range(0, len(rows), CHUNK):
                records = [orjson.loads(line) for line in rows[start:start + CHUNK]]
                n_out += len(records)
                took, encoded = _timed(lambda rs=records: [encode(r) for r in rs])
                encode_s += took
                took, written = _timed(lambda e=encoded, w=sink: w.write(b"\n".join(e) + b"\n"))
                write_s += took
                size += written
    return {"read": read_s, "parse": parse_s, "encode": encode_s, "write": write_s,
            "records": n_out, "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    work = ROOT / "var" / f"bench-replay-floor-{time.strftime('%H%M%S')}"
    logdir, out = work / "in", work / "out"
    try:
        counts = write_jsonl(generate(world(args.events)), logdir)
        events = sum(counts.values())
        env = {**os.environ, "FRESHET_EVALUATION_ENABLED": "false"}
        proc = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "freshet"), "replay", "--predictions",
             str(logdir / "predictions.jsonl"), "--clicks", str(logdir / "clicks.jsonl"),
             "--out", str(out), "--no-progress"],
            capture_output=True, text=True, env=env, check=True, timeout=3_600)
        freshet = json.loads(proc.stdout.strip().splitlines()[-1])
        floor = _floor(logdir, out, work / "again")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    steps = {k: round(floor[k], 2) for k in ("read", "parse", "encode", "write")}
    total = sum(floor[k] for k in steps)
    result = {
        "events": events, "output_records": floor["records"], "output_bytes": floor["bytes"],
        "load": os.getloadavg(),
        "freshet_replay_events_per_s": freshet["events_per_s"],
        "freshet_replay_seconds": freshet["seconds"],
        "floor_seconds": {**steps, "total": round(total, 2)},
        "floor_events_per_s": round(events / total),
        "floor_us_per_event": round(1e6 * total / events, 2),
        "freshet_us_per_event": round(1e6 * freshet["seconds"] / events, 2),
    }
    print(f"{events:,} events in, {floor['records']:,} records out "
          f"({floor['bytes'] / 1e9:.2f} GB)")
    print("floor: " + " + ".join(f"{k} {v:.2f} s" for k, v in steps.items())
          + f" = {total:.2f} s = {result['floor_events_per_s']:,} events/s "
          f"({result['floor_us_per_event']} us/event)")
    print(f"freshet replay: {freshet['events_per_s']:,} events/s "
          f"({result['freshet_us_per_event']} us/event)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
