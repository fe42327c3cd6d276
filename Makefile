# baker: `make demo` bakes the demo image, `make test` runs the whole suite (QEMU end-to-end included).
VENV       ?= .venv
PY         := $(VENV)/bin/python
BAKER      := $(VENV)/bin/baker
BASE_IMAGE  = $(shell scripts/build-base-image --print-path)
export BAKER_BASE_IMAGE ?= $(BASE_IMAGE)
# the base image's sha256sum line sits beside it: the demo build verifies the base like any download
export BAKER_BASE_CHECKSUM ?= file:$(BAKER_BASE_IMAGE).sha256

.PHONY: setup base-image demo test test-unit test-slow lint bench clean

setup: $(VENV)/.done
$(VENV)/.done: pyproject.toml scripts/deps-debian.txt scripts/setup-host
	scripts/setup-host
	touch $@

base-image: setup
	scripts/build-base-image

demo: setup base-image
	$(BAKER) build templates/debian-12-nginx.yaml

test: setup base-image
	$(PY) -m pytest -m "not slow" -q

test-unit: setup
	$(PY) -m pytest -m "not e2e and not slow" -q

test-slow: setup base-image
	$(PY) -m pytest -m slow -q

lint: setup
	$(VENV)/bin/ruff check baker tests bench

bench: setup base-image
	$(PY) bench/run.py

clean:
	rm -rf images/*/ .pytest_cache
