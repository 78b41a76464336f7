"""``freshet replay`` speed by garbage-collector setting, on one seeded log.

    .venv/bin/python bench/replay_gc.py [--events 200000] [--young 700,50000]
                                        [--evaluation off] [--repeat 2] [--json FILE]

Writes the bench log (``bench/features.py``'s ``world``: 20k users, 2k items) once as
JSON lines, then runs ``freshet replay`` over it once per ``FRESHET_GC_YOUNG_THRESHOLD``
value (700 is CPython's default), ``--repeat`` times each, alternating, in fresh
processes; reports events/s (best and every run), max RSS, and checks that every
setting wrote byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.features import world  # noqa: E402
from freshet.generator import generate, write_jsonl  # noqa: E402


def run_once(logdir: Path, out: Path, young: int, evaluation: bool) -> dict[str, Any]:
    """One ``freshet replay`` process: its rate, max RSS and output digest."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "FRESHET_GC_YOUNG_THRESHOLD": str(young),
           "FRESHET_EVALUATION_ENABLED": str(evaluation).lower()}
    cmd = [str(ROOT / ".venv" / "bin" / "freshet"), "replay",
           "--predictions", str(logdir / "predictions.jsonl"),
           "--clicks", str(logdir / "clicks.jsonl"), "--out", str(out), "--no-progress"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False,
                          timeout=3_600)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"replay failed ({proc.returncode}): {proc.stderr[-800:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    digest = hashlib.sha256()
    for f in sorted(out.iterdir()):
        digest.update(f.name.encode())
        digest.update(f.read_bytes())
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"events": summary["events"], "seconds": summary["seconds"],
            "events_per_s": summary["events_per_s"], "process_seconds": round(wall, 2),
            # ru_maxrss of children is the max over all of them: only a rise is this run's
            "max_rss_mib_at_least": round(max(rss, before) / 1024),
            "digest": digest.hexdigest()[:16]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--young", default="700,50000",
                        help="comma-separated FRESHET_GC_YOUNG_THRESHOLD values")
    parser.add_argument("--evaluation", choices=("on", "off"), default="off")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    youngs = [int(x) for x in args.young.split(",") if x]
    work = ROOT / "var" / f"bench-replay-gc-{time.strftime('%H%M%S')}"
    logdir = work / "in"
    counts = write_jsonl(generate(world(args.events)), logdir)
    runs: dict[int, list[dict[str, Any]]] = {y: [] for y in youngs}
    try:
        for _ in range(args.repeat):
            for young in youngs:
                run = run_once(logdir, work / "out", young, args.evaluation == "on")
                runs[young].append(run)
                print(f"young {young:>9,}: {run['events_per_s']:>8,} ev/s "
                      f"({run['seconds']:.2f} s in replay)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    digests = {r["digest"] for rs in runs.values() for r in rs}
    result = {"events": sum(counts.values()), "evaluation": args.evaluation,
              "load": os.getloadavg(), "identical_outputs": len(digests) == 1,
              "best_events_per_s": {str(y): max(r["events_per_s"] for r in rs)
                                    for y, rs in runs.items()},
              "runs": {str(y): rs for y, rs in runs.items()}}
    for young, best in result["best_events_per_s"].items():
        print(f"best, young {int(young):>9,}: {best:>8,} ev/s")
    print("outputs identical across settings:", result["identical_outputs"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
