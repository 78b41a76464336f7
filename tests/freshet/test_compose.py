"""Static checks of docker-compose.yml, Dockerfile and .dockerignore.

No Docker engine is needed: ``docker-compose config`` validates and normalises the
file, and the normalised form is checked for what the stack depends on. The
``docker-compose`` command must be installed (Debian: ``apt-get install -y
docker-compose``); without it these tests fail rather than skip, so CI cannot pass
without validating the file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
POM = ROOT / "freshet" / "kafka_local" / "pom.xml"
KAFKA_VERSION = "4.3.1"
INSTALL_HINT = (
    "the `docker-compose` command is not on PATH; install Debian's docker-compose package"
    " (`sudo apt-get update && sudo apt-get install -y docker-compose`) - CI installs it"
)
_YAML_TO_JSON = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"


def _docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return exe


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    result = subprocess.run(
        [_docker_compose(), "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(f"docker-compose {' '.join(args)} failed ({result.returncode}):\n"
                    f"{result.stderr}{result.stdout}", pytrace=False)
    return result


def _yaml_to_data(text: str) -> Any:
    """Parse YAML with PyYAML, from this interpreter or from docker-compose v1's own."""
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        return yaml.safe_load(text)
    exe = Path(_docker_compose()).resolve()
    first_line = exe.read_bytes()[:200].split(b"\n", 1)[0].decode(errors="replace")
    interpreter = first_line[2:].strip().split() if first_line.startswith("#!") else []
    if interpreter and "python" in interpreter[-1]:
        result = subprocess.run([*interpreter, "-c", _YAML_TO_JSON], input=text,
                                capture_output=True, text=True, timeout=60, check=False)
        if result.returncode == 0:
            return json.loads(result.stdout)
    pytest.fail("cannot parse `docker-compose config` output: it has no JSON format and"
                " PyYAML is not importable; add pyyaml to the dev dependencies",
                pytrace=False)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """The normalised compose configuration, generator profile included."""
    as_json = _run("--profile", "generator", "config", "--format", "json", check=False)
    if as_json.returncode == 0 and as_json.stdout.lstrip().startswith("{"):  # Compose v2
        data: dict[str, Any] = json.loads(as_json.stdout)
        return data
    data = _yaml_to_data(_run("--profile", "generator", "config").stdout)  # Compose v1
    assert isinstance(data, dict)
    return data


def _ports(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(published, target) pairs, from short or long port syntax."""
    out = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.add((int(port["published"]), int(port["target"])))
        else:
            *_, published, target = str(port).split("/")[0].split(":")
            out.add((int(published), int(target)))
    return out


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def test_compose_file_is_valid() -> None:
    assert _run("config", "-q").returncode == 0
    assert _run("--profile", "generator", "config", "-q").returncode == 0


def test_generator_runs_only_under_its_profile(config: dict[str, Any]) -> None:
    default = _run("config", "--services").stdout.split()
    assert {"kafka", "topics", "worker"} <= set(default)
    assert config["services"]["generator"]["profiles"] == ["generator"]
    for name in ("kafka", "topics", "worker"):
        assert not config["services"][name].get("profiles"), name


def test_kafka_image_matches_the_pinned_release(config: dict[str, Any]) -> None:
    if POM.exists():
        pinned = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
        assert pinned is not None, f"no <kafka.version> in {POM}"
        assert pinned.group(1) == KAFKA_VERSION, "update KAFKA_VERSION with the pom"
    assert config["services"]["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"


def test_kafka_is_a_single_kraft_node(config: dict[str, Any]) -> None:
    kafka = config["services"]["kafka"]
    env = {k: str(v) for k, v in kafka["environment"].items()}
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node_id}@kafka:9093"
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    advertised = env["KAFKA_ADVERTISED_LISTENERS"]
    assert "://kafka:9092" in advertised and "://localhost:9094" in advertised
    assert ":9093" not in advertised, "the controller listener is not advertised"
    listeners = env["KAFKA_LISTENERS"].split(",")
    names = {listener.split("://")[0] for listener in listeners}
    mapped = {item.split(":")[0] for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")}
    assert names <= mapped
    assert (9094, 9094) in _ports(kafka)
    for name in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                 "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                 "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert env[name] == "1", name
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"].lower() == "false"
    health = " ".join(kafka["healthcheck"]["test"])
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in health


def test_freshet_services_use_the_repo_image(config: dict[str, Any]) -> None:
    services = config["services"]
    for name in ("topics", "worker", "generator"):
        service = services[name]
        build = service["build"]
        assert Path(build["context"]).resolve() == ROOT, name
        assert build.get("dockerfile", "Dockerfile") == "Dockerfile", name
        assert service["environment"]["FRESHET_KAFKA_BOOTSTRAP"] == "kafka:9092", name
        assert _depends_on(service)["kafka"] == "service_healthy", name
    assert _command(services["topics"])[:3] == ["freshet", "topics", "create"]


def test_worker_waits_for_topics_and_serves_web(config: dict[str, Any]) -> None:
    worker = config["services"]["worker"]
    assert _command(worker) == ["freshet", "worker"]
    assert _depends_on(worker)["topics"] == "service_completed_successfully"
    assert (6066, 6066) in _ports(worker)


def test_generator_produces_paced_traffic(config: dict[str, Any]) -> None:
    command = _command(config["services"]["generator"])
    assert command[:2] == ["freshet", "generate"]
    assert command[command.index("--to") + 1] == "kafka"
    assert float(command[command.index("--rate") + 1]) > 0


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    assert re.search(r"\bpip install (\.|/src)\b", text)
    assert lines[-1] == 'CMD ["freshet", "worker"]'


def test_dockerignore_keeps_local_state_out() -> None:
    entries = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text()
               .splitlines() if line.strip() and not line.startswith("#")}
    assert {".venv", "var", ".git", ".pytest_cache", ".mypy_cache"} <= entries
    assert "**/__pycache__" in entries
