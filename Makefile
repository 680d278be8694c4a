# Two commands matter: `make run` (the embedded default) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test venv lock proto lint format-check migrate demo bench clean

# Installs exactly the locked tree (every package pinned, with hashes). Edit requirements*.txt, then
# `make lock` regenerates the lock files from them; a test fails while a pin and the lock disagree.
$(STAMP): requirements-dev.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements-dev.lock
	touch $(STAMP)

venv: $(STAMP)

# requirements-dev.lock: the whole tree (runtime, tests, tooling), what make and CI install.
# requirements.lock: the runtime part of the same resolution, what the image installs (deploy/Dockerfile).
# The runtime lock starts from the development one, so both pin the same versions. Existing pins are kept
# unless a requirement changed; LOCK_ARGS=--upgrade moves everything to the newest allowed.
PIP_COMPILE := $(PY) -m piptools compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links $(LOCK_ARGS)
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m piptools --version >/dev/null 2>&1 || $(PY) -m pip install --quiet "$$(grep -i '^pip-tools==' requirements-dev.txt)"
	$(PIP_COMPILE) --output-file requirements-dev.lock requirements-dev.txt
	cp requirements-dev.lock requirements.lock
	$(PIP_COMPILE) --output-file requirements.lock requirements.txt

migrate: venv
	$(PY) manage.py migrate --noinput

demo: migrate
	$(PY) manage.py seed_demo

run: demo
	@echo ""
	@echo "Open http://127.0.0.1:8000/ and sign in as a demo person (sandbox): trade between two browser windows."
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
