# secure-data: two set-up commands.
#   make demo [SOURCE=<yolo dataset dir>] [CONF='<json params>'] [EXECUTOR=celery]   run the whole chain end to end
#        (EXECUTOR=celery: Redis + PostgreSQL from Debian, three Celery workers: sanitize, gpu, train)
#   make test [TEST_WORKERS=n]               run the whole test suite (n pytest-xdist processes, default 2)
# Both create a project-local virtualenv (.venv) on first use and reuse it afterwards.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pytest-xdist processes for `make test` (one test file stays in one process: module fixtures such as a
# live Airflow + OpenBao lab run once); 0 runs everything in the calling process.
TEST_WORKERS ?= 2
export YOLO_OFFLINE := 1
export YOLO_CONFIG_DIR := $(CURDIR)/.cache/ultralytics

.PHONY: demo test lint install clean bench

install: $(STAMP)

$(STAMP): pyproject.toml testkit/pyproject.toml constraints.txt scripts/bootstrap.sh
	PYTHON=$(PYTHON) sh scripts/bootstrap.sh $(VENV)
	touch $@

demo: $(STAMP)
	$(if $(filter celery,$(EXECUTOR)),sh scripts/system-deps.sh)
	$(BIN)/python scripts/demo.py $(if $(SOURCE),--source "$(SOURCE)") $(if $(CONF),--conf '$(CONF)') $(if $(EXECUTOR),--executor "$(EXECUTOR)")

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) lint
	sh scripts/system-deps.sh
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .cache out .pytest_cache .ruff_cache
