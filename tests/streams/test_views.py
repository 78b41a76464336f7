"""The Prometheus rendering of /stats, memory included (no broker)."""

from __future__ import annotations

import re
import time

from streams.views import cpu_seconds, render_metrics

# name{labels} value -- the text exposition format's sample lines
SAMPLE = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+]+$')


def _doc(memory: dict[str, int] | None) -> dict[str, object]:
    doc: dict[str, object] = {
        "events": {"clicks": 5, "predictions": 7}, "dead_letters": 1, "late_events": 0,
        "duplicates": 2, "features_published": {"user": 9}, "labels": {"label": 3},
        "transactions": 4, "aborted_transactions": 0, "batches": {"last": 12},
        "lag_total": 0, "watermarks": {"0": 1_000}, "click_delay": {},
        "state_keys": {"users": 11, "items": 6, "pending_predictions": 3},
        "cpu_seconds": 12.5,
    }
    if memory is not None:
        doc["memory"] = memory
    return doc


def test_memory_gauges_are_rendered_with_their_values() -> None:
    text = render_metrics(_doc({"rss_bytes": 123_456_789, "malloc_trim_released_bytes": 42}))
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert all(SAMPLE.match(line) for line in samples), samples
    assert "freshet_process_rss_bytes 123456789" in samples
    assert "freshet_malloc_trim_released_bytes_total 42" in samples
    assert "freshet_events_total{source=\"predictions\"} 7" in samples
    assert "freshet_process_cpu_seconds_total 12.5" in samples


def test_a_document_without_memory_still_renders() -> None:
    samples = [line for line in render_metrics(_doc(None)).splitlines()
               if not line.startswith("#")]
    assert not [line for line in samples if line.startswith("freshet_process_rss_bytes")]
    assert "freshet_transactions_total 4" in samples


def test_state_key_counts_are_gauges_by_state() -> None:
    samples = [line for line in render_metrics(_doc(None)).splitlines()
               if line.startswith("freshet_state_keys")]
    assert samples == ['freshet_state_keys{state="items"} 6',
                       'freshet_state_keys{state="pending_predictions"} 3',
                       'freshet_state_keys{state="users"} 11']


def test_cpu_seconds_counts_this_process_time() -> None:
    before, started = cpu_seconds(), time.process_time()
    while time.process_time() - started < 0.2:  # burn 0.2 s of CPU
        pass
    assert 0.15 <= cpu_seconds() - before <= 1.0
