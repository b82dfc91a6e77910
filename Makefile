# disengage: build helpers. `make demo` and `make test` do all set-up themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=

.PHONY: system-deps tracker console demo test chaos lint typecheck unit integration bench bench-quality bench-learners bench-uci bench-forward bench-scaleout bench-hotspots bench-collector infra-up infra-down clean docs

# The virtualenv, with the package in editable mode and every extra the tests use.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,plot,bench]'
	touch $(STAMP)

## Live demo: simulator -> detector in-process, no Kafka, Redis or Docker, with the
## marketing console on http://127.0.0.1:8480/ (built first when npm is there; opened
## when a desktop browser is). Without npm the demo runs in the terminal alone.
demo: $(STAMP)
	@command -v npm >/dev/null && $(MAKE) --no-print-directory console \
		|| echo "npm not found: the demo runs without its console (make system-deps installs nodejs)"
	$(BIN)/disengage demo $(ARGS)

## Whole test suite: lint, types, unit + doctests, then integration tests on a
## real Kafka broker and Redis server started (and always stopped) by infra.py.
test: $(STAMP) lint typecheck system-deps tracker console
	$(BIN)/python deploy/local/infra.py run -- $(BIN)/python -m pytest $(ARGS)

## The browser tracker: npm packages from the lock, strict type check, bundle, 5 KB budget.
tracker: system-deps
	cd tracker && npm ci --no-audit --no-fund && npm run typecheck && npm run build && npm run size

## The marketing console's page: npm packages from the lock (Chart.js), strict type check, bundle.
console:
	cd console && npm ci --no-audit --no-fund && npm run typecheck && npm run build

## The chaos suite alone (also part of `make test`): eleven faults on a private broker and Redis.
chaos: $(STAMP) system-deps
	$(BIN)/python deploy/local/infra.py run -- $(BIN)/python -m pytest -q tests/integration/test_chaos.py $(ARGS)

## Debian packages the tests need (redis-server, kcat, prometheus, chromium, nodejs), when missing.
system-deps:
	bash deploy/local/system_deps.sh

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

## Pure-core tests only (no infrastructure).
unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration" $(ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py $(ARGS)

## Detection quality on every dataset (simulator, independent generator, real samples): one table.
bench-quality: $(STAMP)
	$(BIN)/python benchmarks/bench_quality.py $(ARGS)

## Trust-model learners (linear, forests, Hoeffding trees, production) under the evaluate protocol.
bench-learners: $(STAMP)
	$(BIN)/python benchmarks/trust_learners.py $(ARGS)

bench-uci: $(STAMP)
	$(BIN)/python benchmarks/uci_trust_models.py $(ARGS)

## Webhook forwarder: backlog alerts/s vs a bare aiohttp loop, live latency (real Kafka + Redis).
bench-forward: $(STAMP) system-deps
	$(BIN)/python deploy/local/infra.py run -- $(BIN)/python benchmarks/bench_forward.py $(ARGS)

## Two workers on 8 partitions + one trainer: events/s per worker, one model version, prefix AUC vs the replay.
bench-scaleout: $(STAMP) system-deps
	$(BIN)/python deploy/local/infra.py run -- $(BIN)/python benchmarks/bench_scaleout.py $(ARGS)

## HTTP collector: events/s through it into Kafka vs a bare producer loop, p99 request time.
bench-collector: $(STAMP) system-deps
	$(BIN)/python deploy/local/infra.py run -- $(BIN)/python benchmarks/bench_collector.py $(ARGS)

## Hotspot incidents with the traffic split over 1, 2, 4 and 8 partitions (the 1/N price).
bench-hotspots: $(STAMP)
	$(BIN)/python benchmarks/bench_hotspots_partitions.py $(ARGS)

infra-up:
	@$(PYTHON) deploy/local/infra.py start

infra-down:
	@$(PYTHON) deploy/local/infra.py stop --all

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info

## Regenerate the README's configuration table from stream/settings.py.
docs: $(STAMP)
	$(BIN)/python -c "import re,pathlib; from stream.settings import markdown_table as c; from stream.metrics import markdown_table as m; p=pathlib.Path('README.md'); s=p.read_text(); s=re.sub(r'(<!-- config:start -->\n).*?(\n<!-- config:end -->)', lambda x: x.group(1)+c()+x.group(2), s, flags=re.S); s=re.sub(r'(<!-- metrics:start -->\n).*?(\n<!-- metrics:end -->)', lambda x: x.group(1)+m()+x.group(2), s, flags=re.S); p.write_text(s)"
