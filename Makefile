# riskmon: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit bench clean broker tools

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# Mosquitto (the tests' broker and the demo's), Prometheus with promtool (the deploy/
# tests) and Alertmanager with amtool (the silence tests) come from Debian's packages,
# installed when missing and installable.
broker:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || \
	  { command -v apt-get >/dev/null 2>&1 && \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; } \
	    || echo "warning: mosquitto not installed; broker tests will be skipped" >&2; }

tools: broker
	@command -v promtool >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
	    || echo "warning: prometheus/promtool not installed; their tests will be skipped" >&2; }
	@{ command -v prometheus-alertmanager >/dev/null 2>&1 && command -v amtool >/dev/null 2>&1; } || \
	  { command -v apt-get >/dev/null 2>&1 && \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-alertmanager >/dev/null; } \
	    || echo "warning: prometheus-alertmanager/amtool not installed; their tests will be skipped" >&2; }

lint: install
	$(BIN)/ruff check monitor tests bench
	$(BIN)/ruff format --check monitor tests bench
	$(BIN)/mypy

unit: install tools
	$(BIN)/riskmon check --strict rules/*.yaml
	$(BIN)/riskmon test rules/tests/*.yaml
	@# examples/pagerduty.yaml as the bridge would load it: --check, like `riskmon check`,
	@# wants every routing key it names readable, so a scratch copy gets stand-in keys
	@scratch=$$(mktemp -d) && trap 'rm -rf "$$scratch"' EXIT && \
	  cp examples/pagerduty.yaml "$$scratch/" && mkdir "$$scratch/secrets" && \
	  echo stand-in > "$$scratch/secrets/pagerduty-risk" && \
	  PAGERDUTY_WARNINGS_KEY=stand-in PAGERDUTY_ROUTING_KEY=stand-in \
	  $(BIN)/riskmon pagerduty -c "$$scratch/pagerduty.yaml" --check
	$(BIN)/pytest -q

test: lint unit

demo: install broker
	$(BIN)/riskmon demo

bench: install broker
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache state
