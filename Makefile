# Tether: `make run` starts the server, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Claude Code version the tests drive (PROTOCOLS.md was observed with it).
CLAUDE_CODE_VERSION ?= 2.1.328
# Codex CLI version the tests drive (PROTOCOLS.md 3.3 and tests/fixtures/codex were observed with it).
CODEX_VERSION ?= 0.171.0
# Gemini CLI version the ACP tests drive (PROTOCOLS.md section 4.3 was observed with it).
GEMINI_CLI_VERSION ?= 0.61.0
# axe-core version the browser tests inject into the page (accessibility check).
AXE_CORE_VERSION ?= 4.14.1
# es-check version that checks the ECMAScript level of the pages' scripts (tests/static).
ES_CHECK_VERSION ?= 9.9.1

.PHONY: run test lint bench install install-test claude-code codex-cli gemini-cli axe-core es-check clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e . --group test
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	@echo "Tether: starting (agent: $${TETHER_AGENT:-local}, store: $${TETHER_STORE:-sqlite}); it prints its login URL when ready; Ctrl-C stops it"
	@if [ -n "$${TETHER_PROJECT_ROOTS}" ]; then echo "Tether: sessions may be opened in folders under $${TETHER_PROJECT_ROOTS}"; else echo "Tether: each session gets its own empty folder; to open sessions in your projects, set TETHER_PROJECT_ROOTS (absolute folders separated by ':'), e.g. TETHER_PROJECT_ROOTS=$$HOME/src make run"; fi
	@TETHER_STORE=$${TETHER_STORE:-sqlite} $(VENV)/bin/gunicorn -c gunicorn.conf.py

test: install-test .tools/.claude-code-$(CLAUDE_CODE_VERSION) .tools/.codex-$(CODEX_VERSION) \
		.tools/.gemini-cli-$(GEMINI_CLI_VERSION) \
		.tools/.axe-core-$(AXE_CORE_VERSION) .tools/.es-check-$(ES_CHECK_VERSION)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# Benchmarks print figures and a ratio against a baseline measured in the same run;
# they are never part of `make test`.
$(VENV)/.installed-bench: $(VENV)/.installed-test pyproject.toml
	$(PY) -m pip install --quiet -e . --group bench
	touch $@

# About 26 minutes; bench/README.md says what each prints. bench.cluster needs Debian's
# redis-server (it starts a private one on a free port; the Redis on 6379 is never touched).
bench: install-test $(VENV)/.installed-bench
	$(PY) -m bench.latency
	$(PY) -m bench.store --store redis
	$(PY) -m bench.fanout --mix --replay
	@if [ "$$(ulimit -Hn)" = unlimited ] || [ "$$(ulimit -Hn)" -ge 11000 ]; then \
		$(PY) -m bench.fanout --clients 10000 --rates 10 --transports sse,ws --peers node; \
	else \
		echo "bench: 10,000 clients skipped: the open-file hard limit is $$(ulimit -Hn)"; \
	fi
	$(PY) -m bench.longpoll
	$(PY) -m bench.reconnect
	$(PY) -m bench.agent_path
	$(PY) -m bench.append_lag
	$(PY) -m bench.cluster

# The pinned Claude Code CLI, for the tests that drive it (installed under .tools/).
claude-code: .tools/.claude-code-$(CLAUDE_CODE_VERSION)

.tools/.claude-code-$(CLAUDE_CODE_VERSION):
	npm install --silent --no-audit --no-fund --prefix .tools @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION)
	touch $@

# The pinned Codex CLI, for the tests that drive `codex app-server` (installed under .tools/).
codex-cli: .tools/.codex-$(CODEX_VERSION)

.tools/.codex-$(CODEX_VERSION):
	npm install --silent --no-audit --no-fund --prefix .tools @openai/codex@$(CODEX_VERSION)
	touch $@

# The pinned Gemini CLI, for the tests that drive `gemini --acp` (installed under .tools/).
gemini-cli: .tools/.gemini-cli-$(GEMINI_CLI_VERSION)

.tools/.gemini-cli-$(GEMINI_CLI_VERSION):
	npm install --silent --no-audit --no-fund --prefix .tools @google/gemini-cli@$(GEMINI_CLI_VERSION)
	touch $@

# The pinned axe-core, injected into pages by the browser tests (installed under .tools/).
axe-core: .tools/.axe-core-$(AXE_CORE_VERSION)

.tools/.axe-core-$(AXE_CORE_VERSION):
	npm install --silent --no-audit --no-fund --prefix .tools axe-core@$(AXE_CORE_VERSION)
	touch $@

# The pinned es-check, run by tests/static/test_es_levels.py (installed under .tools/).
es-check: .tools/.es-check-$(ES_CHECK_VERSION)

.tools/.es-check-$(ES_CHECK_VERSION):
	npm install --silent --no-audit --no-fund --prefix .tools es-check@$(ES_CHECK_VERSION)
	touch $@

clean:
	rm -rf $(VENV) .tools .pytest_cache data
