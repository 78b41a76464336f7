# freshet: the two commands in the README are `make run` and `make test`.
# Everything they need is installed here: a virtualenv with the pinned Python
# packages, the Apache Kafka jars (by Maven, on first broker start), and Debian's
# docker-compose for validating docker-compose.yml.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test test-restart venv tools lint kafka-start kafka-stop clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

# docker-compose (Debian's package) validates docker-compose.yml in the tests.
tools:
	@command -v docker-compose >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's docker-compose (validates docker-compose.yml)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; \
	  else echo "warning: docker-compose missing; install Debian's docker-compose package"; fi; }

run: venv
	$(BIN)/freshet run $(ARGS)

test: venv tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Only the SIGKILL restart tests (they are part of `make test` too).
test-restart: venv
	$(BIN)/python -m pytest -m restart tests/streams

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy --strict events features labels engine evaluation training streams freshet

kafka-start: venv
	$(BIN)/freshet kafka start

kafka-stop: venv
	$(BIN)/freshet kafka stop

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
