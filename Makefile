# The two commands of the README: `make demo` and `make test`.
# Everything lives inside the checkout: .venv/ and .airflow/ (both git-ignored).
PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
export AIRFLOW_HOME ?= $(CURDIR)/.airflow

.PHONY: install demo test lint typecheck unit docs bench mutation clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv || true
	if [ -x $(BIN)/uv ]; then \
	  $(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[test,docs,cli]'; \
	else \
	  $(BIN)/python -m pip install --quiet -e '.[test,docs,cli]'; \
	fi
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python scripts/demo.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest --cov --cov-report=term $(PYTEST_ARGS)

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $(CURDIR)/site

test: lint typecheck unit docs

# Benchmarks write their results into docs/performance.md. The dbt Cloud provider is installed only
# here, so the import-cost benchmark can put its operator module side by side with ours.
bench: install
	$(BIN)/uv pip install --quiet --python $(BIN)/python apache-airflow-providers-dbt-cloud || true
	for b in import_cost standin_throughput hook_throughput token_grants trigger_scale event_watchers; do \
	  PATH="$(BIN):$$PATH" $(BIN)/python benchmarks/$$b.py --write docs/performance.md || exit 1; \
	done

# Mutation testing (mutmut) of the modules named in scripts/mutation.py, each against its own tests.
# Not part of `make test`: it takes minutes per module. MODULES="waiting auth.cache" picks some.
mutation: install
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[test,docs,cli,mutation]' \
	  || $(BIN)/python -m pip install --quiet -e '.[test,docs,cli,mutation]'
	PATH="$(BIN):$$PATH" $(BIN)/python scripts/mutation.py $(MODULES)

clean:
	rm -rf $(VENV) $(CURDIR)/.airflow site .pytest_cache .mypy_cache .ruff_cache .coverage .mutation
