# The two commands of the README: `make demo` and `make test`.
# Everything lives inside the checkout: .venv/ and .airflow/ (both git-ignored).
PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
export AIRFLOW_HOME ?= $(CURDIR)/.airflow

.PHONY: install browser demo test lint typecheck unit docs screenshots bench clean fidelity-venv fidelity distributed-deps distributed-ci test-distributed install-af32 mutation

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv || true
	if [ -x $(BIN)/uv ]; then \
	  $(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[test,testing,docs,cli]'; \
	else \
	  $(BIN)/python -m pip install --quiet -e '.[test,testing,docs,cli]'; \
	fi
	touch $@

install: $(VENV)/.installed

# Debian's chromium for tests/browser (installed only where missing; the tests skip where it cannot be).
browser:
	bash scripts/install_browser.sh

demo: install
	$(BIN)/python scripts/demo.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install browser
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest --cov --cov-report=term $(PYTEST_ARGS)

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $(CURDIR)/site

# The fidelity tier (tests/fidelity): the same scenarios against the stand-in and against IceProd 3.2.43's
# own server code, run from a Python 3.12 venv in .fidelity-venv/ (built here, idempotently). `make unit`
# runs it too (the tier builds the venv itself, or skips when no Python >= 3.12 exists).
fidelity-venv:
	scripts/fidelity_venv.sh

fidelity: install fidelity-venv
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest tests/fidelity -p no:cacheprovider $(PYTEST_ARGS)


test: lint typecheck unit distributed-ci docs

# The distributed tier (tests/distributed): Postgres, Redis, Celery workers, two triggerers, all on
# loopback. Debian's postgresql and redis-server are installed here when missing.
distributed-deps:
	bash scripts/install-distributed-deps.sh

# Its reduced scenario set, part of `make test` (so of CI).
distributed-ci: install distributed-deps
	ICEPROD_DISTRIBUTED=ci PATH="$(BIN):$$PATH" $(BIN)/python -m pytest tests/distributed -p no:cacheprovider -q -rs

# Both ends of the supported Airflow range: the oldest 3.2.x allowed by pyproject, in its own venv.
VENV32 := $(CURDIR)/.venv-af32
BIN32 := $(VENV32)/bin
$(VENV32)/.installed: pyproject.toml tests/distributed/constraints-airflow-3.2.txt | install
	$(BIN)/uv venv --quiet --allow-existing --python $(BIN)/python $(VENV32)
	$(BIN)/uv pip install --quiet --python $(BIN32)/python -e '.[test,testing]' 'apache-airflow==3.2.*' \
	  -c tests/distributed/constraints-airflow-3.2.txt
	touch $@

install-af32: $(VENV32)/.installed

# The full distributed set plus the production-like tests, on the newest Airflow (.venv) and the
# oldest allowed 3.2.x (.venv-af32). Figures of the run go to docs/scale.md.
test-distributed: install install-af32 distributed-deps
	for bin in $(BIN) $(BIN32); do \
	  ICEPROD_DISTRIBUTED=full ICEPROD_DISTRIBUTED_WRITE=$(CURDIR)/docs/scale.md PATH="$$bin:$$PATH" \
	    $$bin/python -m pytest tests/production tests/distributed -p no:cacheprovider -q -rs || exit 1; \
	done

# Re-take the screenshots in docs/img/ (connection form, Test result, extra link) with the browser tests.
screenshots: install browser
	ICEPROD_SCREENSHOTS=$(CURDIR)/docs/img PATH="$(BIN):$$PATH" $(BIN)/python -m pytest tests/browser -q -p no:cacheprovider

# Benchmarks write their results into docs/performance.md. The dbt Cloud provider is installed only
# here, so the import-cost benchmark can put its operator module side by side with ours.
bench: install
	$(BIN)/uv pip install --quiet --python $(BIN)/python apache-airflow-providers-dbt-cloud || true
	PATH="$(BIN):$$PATH" $(BIN)/python benchmarks/trigger_scale.py --gc-freeze --gc-collect --write docs/performance.md
	for b in import_cost standin_throughput hook_throughput token_grants event_watchers; do \
	  PATH="$(BIN):$$PATH" $(BIN)/python benchmarks/$$b.py --write docs/performance.md || exit 1; \
	done
	PATH="$(BIN):$$PATH" $(BIN)/python benchmarks/trigger_scale.py --datasets 10000 --coalesced-only --gc-freeze --gc-collect --write docs/performance.md

# Mutation testing (mutmut) of the modules named in scripts/mutation.py, each against its own tests.
# Not part of `make test`: it takes minutes per module. MODULES="waiting auth.cache" picks some.
mutation: install
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[test,testing,docs,cli,mutation]' \
	  || $(BIN)/python -m pip install --quiet -e '.[test,testing,docs,cli,mutation]'
	PATH="$(BIN):$$PATH" $(BIN)/python scripts/mutation.py $(MODULES)

clean:
	rm -rf $(VENV) $(VENV32) $(CURDIR)/.fidelity-venv $(CURDIR)/.airflow site .pytest_cache .mypy_cache .ruff_cache .coverage .mutation
