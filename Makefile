# Two commands matter: `make run` (the embedded default) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test venv proto lint format-check migrate demo bench clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

migrate: venv
	$(PY) manage.py migrate --noinput
	$(PY) manage.py createcachetable

demo: migrate
	$(PY) manage.py seed_demo

run: demo
	@echo ""
	@echo "Escrow API on http://127.0.0.1:8000/api/v1/  (Swagger UI: http://127.0.0.1:8000/api/v1/docs)"
	@echo "Demo tokens are above and in .demo-tokens.json. Try the lifecycle in README.md (section 'Try it')."
	@echo ""
	$(PY) manage.py serve 127.0.0.1:8000

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

proto: venv
	bash proto/generate.sh

# The benchmark (PostgreSQL on 127.0.0.1:5432 required): docs/performance.md. BENCH_ARGS="--duration 120" etc.
bench: venv
	$(PY) bench/run.py $(BENCH_ARGS)

# ruff, the import rules (pyproject.toml [tool.importlinter]), mypy with the Django and DRF stubs, then the
# formatting check last.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(MAKE) --no-print-directory format-check

format-check: venv
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) db.sqlite3 .demo-tokens.json .pytest_cache
