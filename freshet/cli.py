"""The ``freshet`` command line: one entry point for every operation."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from freshet.settings import Settings, SettingsError

log = logging.getLogger("freshet")


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise SystemExit(f"freshet: {exc}") from None


def _local_kafka(settings: Settings):  # type: ignore[no-untyped-def]
    from freshet.kafka_local import LocalKafka

    host, _, port = settings.bootstrap_servers.split(",")[0].rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        raise SystemExit(
            f"freshet: FRESHET_KAFKA_BOOTSTRAP={settings.bootstrap_servers} is not a local "
            "address; the local launcher only runs a broker on 127.0.0.1")
    return LocalKafka(home=(settings.data_dir / "kafka").resolve(), port=int(port))


def cmd_kafka(args: argparse.Namespace) -> int:
    from freshet.kafka_local import LauncherError

    settings = _settings()
    kafka = _local_kafka(settings)
    try:
        if args.action == "start":
            pid = kafka.start()
            print(f"Apache Kafka {kafka.status()['version']} running on {kafka.bootstrap} "
                  f"(pid {pid}, data in {kafka.home})")
        elif args.action == "stop":
            print("stopped" if kafka.stop() else "not running")
        else:
            status = kafka.status()
            print(json.dumps(status, indent=2))
            return 0 if status["running"] else 3
    except LauncherError as exc:
        print(f"freshet kafka {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from freshet.topics import create_topics

    for name, state in sorted(create_topics(_settings()).items()):
        print(f"{name}: {state}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from freshet.memory_trim import limit_arenas
    from freshet.topics import create_topics
    from streams.app import create_app
    from streams.startup import StartupError, prepare_worker

    settings = _settings()
    limit_arenas(settings.malloc_arena_max)  # before any client starts its threads
    try:
        lock = prepare_worker(settings)  # the data folder is ours, the broker answers
    except StartupError as exc:
        raise SystemExit(f"freshet worker: {exc}") from None
    create_topics(settings)  # idempotent: inputs, outputs and the app's internal topics
    app = create_app(settings)
    app.freshet_lock = lock  # type: ignore[attr-defined]  # held while the process lives
    level = (args.loglevel or settings.log_level).lower()
    level = {"warning": "warn", "critical": "crit"}.get(level, level)  # Faust's names
    sys.argv = ["freshet", "worker", "--loglevel", level]
    app.main()
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """The evaluation stage alone: joins the leader election, evaluates when elected."""
    import logging
    import signal
    import threading

    from freshet.gc_tuning import tune_gc
    from freshet.memory_trim import limit_arenas, start_trimming
    from freshet.topics import create_topics
    from streams.evaluation import EvaluationStage
    from streams.startup import FolderLock, StartupError, wait_for_broker

    settings = _settings()
    limit_arenas(settings.malloc_arena_max)  # before any client starts its threads
    logging.basicConfig(level=(args.loglevel or settings.log_level).upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lock = FolderLock(settings.data_dir / "evaluation" / "evaluator.lock", "evaluator")
    holder = lock.acquire()
    if holder is not None:
        raise SystemExit(f"freshet evaluate: {settings.data_dir / 'evaluation'} is in use by "
                         f"{holder}: give each evaluator its own FRESHET_DATA_DIR")
    try:
        wait_for_broker(settings)
    except StartupError as exc:
        raise SystemExit(f"freshet evaluate: {exc}") from None
    create_topics(settings)
    tune_gc(settings.gc_young_threshold)
    start_trimming(settings.malloc_trim_interval_ms)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stage = EvaluationStage(settings, lead=True)
    stage.start(on_crash=lambda exc: stop.set())
    stop.wait()
    stage.stop()
    lock.release()
    return 1 if stage.error is not None else 0


def cmd_generate(args: argparse.Namespace) -> int:
    from freshet.generator import GeneratorConfig, generate, write_jsonl

    try:
        config = GeneratorConfig(seed=args.seed, users=args.users, items=args.items,
                                 predictions=args.predictions,
                                 malformed_fraction=args.malformed_fraction,
                                 max_disorder_ms=args.max_disorder_ms,
                                 models=tuple(m for m in args.models.split(",") if m),
                                 **({"start_ts_ms": args.start_ts_ms} if args.start_ts_ms else {}))
    except ValueError as exc:
        raise SystemExit(f"freshet generate: {exc}") from None
    if args.to == "jsonl":
        counts = write_jsonl(generate(config), Path(args.out))
        print(json.dumps({"out": args.out, **counts}))
        return 0
    from freshet.producer import produce

    settings = _settings()
    topics = {name: settings.topic(name) for name in ("clicks", "predictions")}
    from tqdm import tqdm

    with tqdm(desc="producing", unit="ev", disable=not sys.stderr.isatty()) as bar:
        def progress(n: int) -> None:
            bar.update(n - bar.n)

        sent = produce(generate(config), settings.bootstrap_servers, topics=topics,
                       rate=args.rate, extra_config=settings.kafka_client_config(),
                       on_progress=progress)
    print(json.dumps({"produced": sent, "bootstrap": settings.bootstrap_servers}))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from freshet.gc_tuning import tune_gc
    from streams.replay import replay_files

    settings = _settings()
    tune_gc(settings.gc_young_threshold)
    summary = replay_files(Path(args.predictions), Path(args.clicks), Path(args.out),
                           settings, progress=not args.no_progress)
    rate = summary.events / summary.seconds if summary.seconds else 0.0
    print(json.dumps({"events": summary.events, "seconds": round(summary.seconds, 3),
                      "events_per_s": round(rate), "out": args.out,
                      "written": summary.written}))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import os
    import time

    from freshet.demo import run_demo

    settings = _settings()
    if not os.environ.get("FRESHET_TOPIC_PREFIX") and not os.environ.get("FRESHET_APP_ID"):
        # Each demo run gets topics and a consumer group of its own, so a backlog
        # left by an earlier run never mixes into this one's event time.
        run_id = time.strftime("run%Y%m%d%H%M%S")
        settings = settings.with_(topic_prefix=f"{run_id}.", app_id=f"freshet-{run_id}")
        os.environ["FRESHET_TOPIC_PREFIX"] = settings.topic_prefix
        os.environ["FRESHET_APP_ID"] = settings.app_id
        print(f"this run's topics are prefixed {settings.topic_prefix!r}", flush=True)
    return run_demo(settings, duration_s=args.duration, rate=args.rate, seed=args.seed,
                    keep_kafka=args.keep_kafka, drift_after_min=args.drift_after_min)


def cmd_settings(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from freshet.settings import env_name

    settings = _settings()
    for key, value in asdict(settings).items():
        shown = "***" if key == "sasl_password" and value else value
        print(f"{env_name(key):36} {shown}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="freshet", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("kafka", help="start/stop/status of the local Apache Kafka (KRaft)")
    p.add_argument("action", choices=("start", "stop", "status"))
    p.set_defaults(func=cmd_kafka)

    p = sub.add_parser("topics", help="create freshet's topics on the broker")
    p.add_argument("action", choices=("create",))
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser("worker", help="run a stream worker (same as faust -A streams.app worker)")
    p.add_argument("--loglevel", default=None)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("generate", help="generate a seeded event log (to Kafka or JSONL)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--items", type=int, default=100)
    p.add_argument("--predictions", type=int, default=5_000)
    p.add_argument("--malformed-fraction", type=float, default=0.0)
    p.add_argument("--max-disorder-ms", type=int, default=2_000,
                   help="delivery order may lag event-time order by this much")
    p.add_argument("--models", default="model-a,model-b", help="comma-separated model ids")
    p.add_argument("--start-ts-ms", type=int, default=None, help="event time of the first event")
    p.add_argument("--to", choices=("kafka", "jsonl"), default="kafka")
    p.add_argument("--out", default="var/events", help="folder for --to jsonl")
    p.add_argument("--rate", type=float, default=None, help="events/s (default: max)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("replay", help="run the same definitions over JSONL files")
    p.add_argument("--predictions", required=True, help="predictions JSONL file")
    p.add_argument("--clicks", required=True, help="clicks JSONL file")
    p.add_argument("--out", required=True, help="output folder (DIR/<topic>.jsonl)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("run", help="local broker + topics + worker + generator, live summary")
    p.add_argument("--duration", type=float, default=None, help="seconds (default: Ctrl-C)")
    p.add_argument("--rate", type=float, default=2_000.0, help="generator events/s")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep-kafka", action="store_true", help="leave the broker running")
    p.add_argument("--drift-after-min", type=float, default=180.0,
                   help="event-time minutes before the generator injects a drift (0: none)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("evaluate", help="the evaluation stage in a process of its own")
    p.add_argument("--loglevel", default=None, help="debug, info, warning, error")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("settings", help="show the effective FRESHET_* settings")
    p.set_defaults(func=cmd_settings)

    from freshet.train_cli import add_parser as add_train_parser  # freshet train

    add_train_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``freshet`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
