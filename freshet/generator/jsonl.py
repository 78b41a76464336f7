"""JSON lines files of generated records: :func:`write_jsonl` and :func:`read_jsonl`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from freshet.generator.records import TOPICS, GeneratedRecord


def write_jsonl(records: Iterable[GeneratedRecord], out_dir: Path) -> dict[str, int]:
    """Write each topic's values, one per line, to ``out_dir/<topic>.jsonl``.

    Keys and event times are not written (a value holds its ``user_id`` and ``ts``).
    Returns the number of lines written per topic.

    >>> import tempfile
    >>> from freshet.generator import GeneratorConfig, generate
    >>> with tempfile.TemporaryDirectory() as d:
    ...     counts = write_jsonl(generate(GeneratorConfig(predictions=10)), Path(d))
    ...     first = next(read_jsonl(Path(d) / "predictions.jsonl"))
    >>> counts["predictions"], first.startswith(b'{"prediction_id":')
    (10, True)
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = dict.fromkeys(TOPICS, 0)
    with (out_dir / "predictions.jsonl").open("wb") as preds, \
            (out_dir / "clicks.jsonl").open("wb") as clicks:
        files = {"predictions": preds, "clicks": clicks}
        for record in records:
            out = files.get(record.topic)
            if out is None:
                raise ValueError(f"unknown topic {record.topic!r}; expected one of {TOPICS}")
            if b"\n" in record.value:
                raise ValueError(f"a {record.topic} value contains a newline; JSON lines"
                                 " cannot hold it")
            out.write(record.value)
            out.write(b"\n")
            counts[record.topic] += 1
    return counts


def read_jsonl(path: Path) -> Iterator[bytes]:
    """Yield each line of ``path`` without its newline: the values :func:`write_jsonl` wrote.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = (Path(d) / "x.jsonl").write_bytes(b'{"a":1}\\nnot json\\n')
    ...     list(read_jsonl(Path(d) / "x.jsonl"))
    [b'{"a":1}', b'not json']
    """
    with Path(path).open("rb") as lines:
        for line in lines:
            yield line[:-1] if line.endswith(b"\n") else line
