# kldrift: `make demo` runs the local demo, `make test` runs every test. Both set up first (idempotent).
.PHONY: setup demo test test-fast lint bench clean-local
VENV := .venv
BIN := $(VENV)/bin

setup:
	@bash scripts/setup.sh

demo: setup
	@$(BIN)/kldrift demo

lint: setup
	$(BIN)/ruff check kldrift tests benchmarks examples
	$(BIN)/ruff format --check kldrift tests benchmarks examples
	$(BIN)/mypy

test: setup lint
	@bash scripts/test.sh

test-fast: setup
	$(BIN)/pytest -m "not services"

bench: setup
	$(BIN)/python -m benchmarks.run

clean-local:
	-$(BIN)/kldrift local kafka stop
