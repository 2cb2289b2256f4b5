# The front door: `make demo`, `make test`, `make lint`, `make bench`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-pure lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The compiled core sits beside its sources (an editable install): rebuild what changed, so a
# test never runs a stale extension in place of an edited source. Cython skips unchanged files.
CORE_SOURCES := setup.py $(wildcard kafkaupstream/*/*.py kafkaupstream/*/*.pxd)
CORE := $(VENV)/.core-built

$(CORE): $(STAMP) $(CORE_SOURCES)
	$(PY) setup.py --quiet build_ext --inplace
	$(VENV)/bin/kafkaupstream --version
	touch $(CORE)

install: $(CORE)

demo: $(CORE)
	$(VENV)/bin/kafkaupstream-harness demo

# The whole suite on the compiled core, then again on pure Python (KAFKAUPSTREAM_NO_EXTENSIONS)
# the unit tests and the integration tests that serve requests (README: Development).
PURE_TESTS := tests/unit tests/integration/test_runner_rpc.py \
	tests/integration/test_kafka_plugin.py tests/integration/test_fuzz_runner.py \
	tests/integration/test_hostile_clients.py tests/integration/test_replay.py \
	tests/integration/test_stale_tokens.py

# pytest exits 5 when it collected nothing: that is a failure, not a pass.
test: $(CORE)
	$(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; \
	if [ $$status -ne 0 ]; then exit $$status; fi; \
	KAFKAUPSTREAM_NO_EXTENSIONS=1 $(PY) -m pytest $(PURE_TESTS) $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

# Only the pure-Python half of `make test`.
test-pure: $(CORE)
	KAFKAUPSTREAM_NO_EXTENSIONS=1 $(PY) -m pytest $(PURE_TESTS) $(PYTEST_ARGS)

lint: $(CORE)
	$(VENV)/bin/ruff check kafkaupstream harness tests
	$(VENV)/bin/ruff format --check kafkaupstream harness tests
	$(VENV)/bin/mypy

bench: $(CORE)
	$(PY) -m harness.bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find kafkaupstream \( -name '*.so' -o -name '*.c' \) -delete
