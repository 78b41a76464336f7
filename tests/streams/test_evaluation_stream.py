"""The evaluation loop end to end on the real broker, against independent oracles.

One seeded log (model-a ranks better than model-b) through a worker with the
evaluation stage on. Checked: the routing record's counts and the cumulative metrics
equal a plain-Python recomputation from the final labels on the ``labels`` topic; the
better model gets the traffic; every evaluation record the stage published at a
label watermark ``T`` equals what a fresh evaluator gives at ``T`` from the labels the
stream published (so the stage never advanced before it had every label below
``T``); and ``freshet replay`` over the same log ends with the same records.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from evaluation import Evaluator
from freshet.generator import GeneratorConfig, generate, write_jsonl
from freshet.topics import create_topics
from streams.evaluation import OUTPUT_TOPICS, OutputsTail
from streams.replay import read_jsonl, replay_files
from tests.streams.support import ROOT, consume, produce_log, running_worker, settings_env
from tests.streams.test_features_stream import make_settings
from tests.streams.test_labels_stream import LABEL_ENV, finals

pytestmark = pytest.mark.integration

EVAL_ENV = {**LABEL_ENV, "FRESHET_EVALUATION_INTERVAL_MS": "200",
            "FRESHET_DRIFT_REFERENCE_SIZE": "300"}
EVAL_TOPICS = list(OUTPUT_TOPICS.values())


def auc(pairs: list[tuple[float, int]]) -> float | None:
    """ROC AUC by counting (ties half): the oracle, O(n^2) on purpose."""
    pos = [s for s, y in pairs if y == 1]
    neg = [s for s, y in pairs if y == 0]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def oracle_metrics(labels: list[dict[str, Any]], t: int) -> dict[str, dict[str, Any]]:
    """Per model, from final labels with prediction_ts < t: counts, CTR, AUC, log-loss."""
    by_model: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for rec in labels:
        if rec["prediction_ts"] < t:
            by_model[rec["model_id"]].append((rec["score"], rec["label"]))
    out = {}
    for model, pairs in by_model.items():
        eps = 1e-15
        loss = sum(-math.log(min(max(s, eps), 1 - eps)) if y else
                   -math.log(1 - min(max(s, eps), 1 - eps)) for s, y in pairs) / len(pairs)
        clicks = sum(y for _, y in pairs)
        out[model] = {"impressions": len(pairs), "clicks": clicks, "ctr": clicks / len(pairs),
                      "auc": auc(pairs), "log_loss": loss}
    return out


def by_watermark(records: dict[str, list[dict[str, Any]]]) -> dict[int, list[tuple[str, Any]]]:
    """Evaluation records grouped by the label watermark they were made at."""
    out: dict[int, list[tuple[str, Any]]] = defaultdict(list)
    for topic, recs in records.items():
        for rec in recs:
            if topic == "model_metrics" and rec.get("kind") != "evaluation":
                continue  # the workers' click-delay records share the topic
            out[rec["label_watermark_ms"]].append((topic, rec))
    return out


def canon(topic: str, rec: dict[str, Any]) -> tuple[str, bytes]:
    return topic, orjson.dumps(rec, option=orjson.OPT_SORT_KEYS)


def last_per_key(recs: list[dict[str, Any]], key: str) -> dict[Any, dict[str, Any]]:
    out = {}
    for rec in recs:
        out[rec.get(key) if key != "metrics" else (rec["model_id"], rec["window"])] = rec
    return out


def test_evaluation_loop_matches_the_oracles(kafka_bootstrap: str, unique_prefix: str,
                                             tmp_path: Path) -> None:
    settings = make_settings(kafka_bootstrap, unique_prefix, tmp_path / "data", **EVAL_ENV)
    create_topics(settings)
    plain = GeneratorConfig(seed=23, users=50, items=40, predictions=4_000)
    pred_ts = sorted(r.ts for r in generate(plain) if r.topic == "predictions" and r.ts)
    drift_at = pred_ts[len(pred_ts) // 2]  # halfway: the logged user_ctr_prior shifts
    records = list(generate(replace(plain, drift_at_ms=drift_at, drift_feature_shift=3.0,
                                    drift_noise=1.5)))
    n_pred = sum(1 for r in records if r.topic == "predictions")
    newest = max(r.ts for r in records if r.topic == "predictions" and r.ts is not None)

    def done(got: dict[str, list[Any]]) -> bool:
        if len(finals(got["labels"])) < n_pred or not got["model_routing"]:
            return False
        marks = [orjson.loads(m.value())["label_watermark_ms"] for m in got["model_routing"]]
        return len(set(marks)) >= 2 and marks[-1] > newest  # every label has matured

    with running_worker(settings, tmp_path / "worker.log") as worker:
        # all at once: produced in pieces, the idle advance between them would close
        # some labels before their clicks came, which replay (no wall clock) never does
        produce_log(settings, records)
        got = consume(settings, ["labels", "training_examples", *EVAL_TOPICS], done,
                      timeout_s=240, worker=worker)
        # GET /routing serves the latest routing record (the worker follows the topic)
        last_routing = orjson.loads(got["model_routing"][-1].value())
        served = None
        deadline = time.monotonic() + 30
        while served != last_routing and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{settings.web_port}/routing", timeout=5) as resp:
                    served = orjson.loads(resp.read())
            except urllib.error.HTTPError as exc:  # 503 until the worker has read one
                assert exc.code == 503
            time.sleep(0.2)
        assert served == last_routing
    labels = list(finals(got["labels"]).values())
    values = {t: [orjson.loads(m.value()) for m in got[t]] for t in EVAL_TOPICS}

    # the last routing record counts exactly the final labels, per model
    routing = values["model_routing"][-1]
    t_last = routing["label_watermark_ms"]
    want = oracle_metrics(labels, t_last)
    assert routing["models"] == {m: {"clicks": w["clicks"], "impressions": w["impressions"]}
                                 for m, w in want.items()}
    assert sum(w["impressions"] for w in want.values()) == n_pred
    assert math.isclose(sum(routing["weights"].values()), 1.0, rel_tol=1e-12)
    # model-a is the better ranker (less score noise): higher CTR, AUC and the traffic
    assert want["model-a"]["ctr"] > want["model-b"]["ctr"]
    assert want["model-a"]["auc"] > want["model-b"]["auc"]
    assert routing["weights"]["model-a"] > 0.9 > routing["weights"]["model-b"]

    # cumulative metrics at t_last equal the oracle's
    metrics = {r["model_id"]: r for r in values["model_metrics"]
               if r.get("kind") == "evaluation" and r["window"] == "all"
               and r["label_watermark_ms"] == t_last}
    assert metrics.keys() == want.keys()
    for model, w in want.items():
        m = metrics[model]
        assert (m["impressions"], m["clicks"]) == (w["impressions"], w["clicks"])
        for field in ("ctr", "auc", "log_loss"):
            assert math.isclose(m[field], w[field], rel_tol=1e-9), (model, field)
        assert m["ctr_low"] < m["ctr"] < m["ctr_high"]

    # the injected drift: the shifted feature is flagged, the others not; the first
    # trigger naming it comes after the drift began
    psi = {r["subject"]: r for r in values["drift"] if r["label_watermark_ms"] == t_last
           and r["kind"] == "psi"}
    assert psi["logged.user_ctr_prior"]["drifted"]
    assert not psi["logged.item_popularity"]["drifted"]
    naming = [h for r in values["retrain_triggers"] for h in r["history"]
              for reason in h["reasons"] if reason["reason"] == "drift" and any(
                  x["subject"] == "psi:logged.user_ctr_prior" for x in reason["subjects"])]
    assert naming, "no retrain trigger named the drifted feature"
    assert min(r["prediction_ts"] for r in naming) >= drift_at

    # every published T: the stage's records equal a fresh evaluator's from the labels
    examples = [orjson.loads(m.value()) for m in got["training_examples"]]
    fresh = Evaluator(settings.eval_config())
    for rec in labels:
        fresh.add_label(rec)
    for rec in examples:
        fresh.add_training_example(rec)
    published = by_watermark(values)
    assert len(published) >= 2, "the stage published at one label watermark only"
    for t in sorted(published):
        mine = sorted(canon(OUTPUT_TOPICS[o.topic], orjson.loads(orjson.dumps(o.record)))
                      for o in fresh.advance(t))
        assert mine == sorted(canon(topic, rec) for topic, rec in published[t]), t

    # replay of the same log ends with the same records (label watermark aside); the
    # drift of freshet's own snapshot features may differ (their as-of differs by design)
    write_jsonl(records, tmp_path / "in")
    replay_files(tmp_path / "in" / "predictions.jsonl", tmp_path / "in" / "clicks.jsonl",
                 tmp_path / "out", settings, progress=False)

    def strip(rec: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in rec.items() if k != "label_watermark_ms"}

    replayed_metrics = [r for r in read_jsonl(tmp_path / "out" / "model-metrics.jsonl")
                        if r.get("kind") == "evaluation"]
    for name, key in (("model_metrics", "metrics"), ("model_comparisons", "model_a"),
                      ("model_routing", "method")):
        live = last_per_key([r for r in values[name] if r.get("label_watermark_ms") == t_last],
                            key)
        file = (replayed_metrics if name == "model_metrics" else
                read_jsonl(tmp_path / "out" / f"{name.replace('_', '-')}.jsonl"))
        replay = last_per_key(file, key)
        assert {k: strip(v) for k, v in live.items()} == {k: strip(v) for k, v in replay.items()}


def json_of(rec: Any) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads(rec.value)
    return value


def _stats(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as resp:
            doc: dict[str, Any] = orjson.loads(resp.read())
            return doc
    except OSError:
        return None


def test_the_outputs_tail_starts_right_after_its_topics_are_created(
        kafka_bootstrap: str, unique_prefix: str, tmp_path: Path) -> None:
    """Just-created topics answer "unknown partition" to an offsets query for a moment
    (seen: a `freshet evaluate` started with its topics died there, silently to its
    caller); the tail asks again and starts at each (empty) topic's end."""
    for attempt in range(3):  # each on topics created a moment before
        fresh = make_settings(kafka_bootstrap, f"{unique_prefix}{attempt}-",
                              tmp_path / str(attempt), **EVAL_ENV)
        create_topics(fresh)
        tail = OutputsTail(fresh)
        try:
            assert sorted({tp.topic for tp in tail.consumer.assignment()}) == sorted(
                fresh.topic(t) for t in ("model_routing", "model_metrics", "retrain_triggers"))
            tail.poll()
            assert tail.routing is None and tail.summary() == {}
        finally:
            tail.close()


def test_evaluator_in_its_own_process_survives_sigkill(kafka_bootstrap: str,
                                                      unique_prefix: str,
                                                      tmp_path: Path) -> None:
    """FRESHET_EVALUATION_LEADER=process: only `freshet evaluate` leads; killed with
    SIGKILL and restarted it continues from its checkpoint, and the worker's /stats
    shows its figures (the worker follows the outputs)."""
    # no idle advance while the test pauses between the halves (it would make the second
    # half's first events late); the second half's own event time carries T on
    env = {**EVAL_ENV, "FRESHET_IDLE_ADVANCE_MS": "120000"}
    settings = make_settings(kafka_bootstrap, unique_prefix, tmp_path / "data", **env,
                             FRESHET_EVALUATION_LEADER="process")
    create_topics(settings)
    records = list(generate(GeneratorConfig(seed=31, users=50, items=20, predictions=2_000)))
    half = len(records) // 2
    proc_env = settings_env(settings)
    log_path = tmp_path / "evaluator.log"

    def evaluator() -> subprocess.Popen[bytes]:
        out = open(log_path, "ab")  # noqa: SIM115 (closed with the process)
        return subprocess.Popen([sys.executable, "-m", "freshet.cli", "evaluate"], cwd=ROOT,
                                env=proc_env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)

    proc = evaluator()
    try:
        with running_worker(settings, tmp_path / "worker.log") as worker:
            produce_log(settings, records[:half])
            before = consume(settings, ["model_routing"], lambda g: bool(g["model_routing"]),
                             timeout_s=120, worker=worker)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            t_kill = max(orjson.loads(m.value())["label_watermark_ms"]
                         for m in before["model_routing"])
            proc = evaluator()
            produce_log(settings, records[half:])

            def done(got: dict[str, list[Any]]) -> bool:
                # the restarted leader went on past where the killed one was
                marks = [orjson.loads(m.value())["label_watermark_ms"]
                         for m in got["model_routing"]]
                return bool(marks) and marks[-1] > t_kill + 60_000

            done.explain = lambda g: f"killed at T {t_kill}"  # type: ignore[attr-defined]
            consume(settings, ["model_routing"], done, timeout_s=180, worker=worker)
            doc = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the worker's tail catches up
                doc = _stats(settings.web_port)
                ev = (doc or {}).get("evaluation") or {}
                if (ev.get("routing") or {}).get("label_watermark_ms", 0) > t_kill + 60_000:
                    break
                time.sleep(0.3)
            assert doc is not None
            ev = doc["evaluation"]
            assert ev["leader"] is False  # the worker only follows the outputs
            marks = [ev["routing"]["label_watermark_ms"],
                     *(m["label_watermark_ms"] for m in ev["models"].values())]
            pred_ts = {json_of(r)["prediction_id"]: json_of(r)["ts"] for r in records
                       if r.topic == "predictions" and r.malformed is None}
            need = {pid for pid, ts in pred_ts.items() if ts < max(marks)}
            got = consume(settings, ["labels"], lambda g: need <= set(finals(g["labels"])),
                          timeout_s=120, worker=worker)
    except AssertionError as exc:  # what the evaluator said is the likely reason
        raise AssertionError(f"{exc}\nevaluator (exit code {proc.poll()}):\n"
                             f"{log_path.read_text()[-4000:]}") from None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    labels = list(finals(got["labels"]).values())
    # what the worker shows equals the oracle at the label watermark each record is as of
    routing = ev["routing"]
    want = oracle_metrics(labels, routing["label_watermark_ms"])
    assert routing["models"] == {m: {"clicks": w["clicks"], "impressions": w["impressions"]}
                                 for m, w in want.items()}
    for model, summary in ev["models"].items():
        w = oracle_metrics(labels, summary["label_watermark_ms"])[model]
        assert (summary["impressions"], summary["clicks"]) == (w["impressions"], w["clicks"])
        assert math.isclose(summary["auc"], w["auc"], rel_tol=1e-9)
    text = log_path.read_text()
    assert "evaluation: leader (from the start)" in text
    assert "evaluation: leader (from a checkpoint)" in text  # the restart resumed
