# kldrift: `make demo` runs the local demo, `make test` runs every test. Both set up first (idempotent).
.PHONY: setup demo test test-fast lint bench clean-local lock lock-upgrade upgrade-check
VENV := .venv
BIN := $(VENV)/bin

setup:
	@bash scripts/setup.sh

demo: setup
	@$(BIN)/kldrift demo

lint: setup
	$(BIN)/ruff check kldrift tests benchmarks examples scripts
	$(BIN)/ruff format --check kldrift tests benchmarks examples scripts
	$(BIN)/mypy

test: setup lint
	@bash scripts/test.sh

# Unit and packaging tests and the doctests; the guard in tests/conftest.py fails any test that
# starts a broker, Prism, Flink or Prometheus.
test-fast: setup
	KLDRIFT_NO_SERVICES=1 $(BIN)/pytest -n 2 -m "unit or packaging" --durations=5

bench: setup
	$(BIN)/python -m benchmarks.run

clean-local:
	-$(BIN)/kldrift local kafka stop

# requirements/lock.txt from pyproject.toml's ranges: `lock` keeps pins the ranges still allow (after
# an edit of pyproject.toml), `lock-upgrade` takes the newest (after `make upgrade-check` passed).
lock: setup
	@bash scripts/lock.sh requirements/lock.txt

lock-upgrade: setup
	@bash scripts/lock.sh requirements/lock.txt --upgrade

# The newest versions the ranges allow, in a throwaway venv (build/upgrade): which packages moved,
# the fast tier and the pipeline tests there, what failed. The committed lock is not touched.
upgrade-check: setup
	@bash scripts/upgrade_check.sh
