# baker: `make demo` bakes the demo image, `make test` runs the whole suite (QEMU end-to-end included).
VENV       ?= .venv
PY         := $(VENV)/bin/python
BAKER      := $(VENV)/bin/baker
BASE_IMAGE  = $(shell scripts/build-base-image --print-path)
export BAKER_BASE_IMAGE ?= $(BASE_IMAGE)
# the base image's sha256sum line sits beside it: the demo build verifies the base like any download
export BAKER_BASE_CHECKSUM ?= file:$(BAKER_BASE_IMAGE).sha256

.PHONY: setup base-image demo images test test-unit test-slow lint bench bench-scaling bench-layers \
        bench-checkpoint clean FORCE

setup: $(VENV)/.done
$(VENV)/.done: pyproject.toml scripts/deps-debian.txt scripts/setup-host
	scripts/setup-host
	touch $@

base-image: setup
	scripts/build-base-image

demo: setup base-image
	$(BAKER) build templates/debian-12-nginx.yaml

# `make images` bakes every template whose inputs changed: each build writes a Make rule (artifacts:
# template, scripts, uploads, base image) to $(IMAGES_DIR)/<template>.d, included below, so a second
# run does nothing and touching one script rebuilds only the images that use it. `make -j2 images`
# builds two at once (each output has its own lock; a layer builds its stale parent first and a
# second build of the same output queues behind it). NIGHTLY=1 runs baker for every template anyway:
# `--if-changed` then also sees what Make cannot (a new upstream image behind a checksum URL) and
# skips the rest in well under a second each. See docs/nightly.md.
# A template with `builds:` is one target per build, $(IMAGES_DIR)/<name>-<build>/manifest.json:
# `baker deps --makefile` lists them in $(IMAGES_DIR)/<template>.mk (remade when the template changes,
# included only for image goals), with the variables the build rule below reads.
TEMPLATE_DIR    ?= templates
IMAGES_DIR      ?= images
IMAGE_TEMPLATES ?= $(wildcard $(TEMPLATE_DIR)/*.yaml)
BUILD_FLAGS     ?=

ifneq ($(filter images $(IMAGES_DIR)/%,$(MAKECMDGOALS)),)
-include $(patsubst $(TEMPLATE_DIR)/%.yaml,$(IMAGES_DIR)/%.mk,$(IMAGE_TEMPLATES))
endif
IMAGE_MANIFESTS  = $(patsubst $(TEMPLATE_DIR)/%.yaml,$(IMAGES_DIR)/%/manifest.json,\
                     $(filter-out $(IMAGE_TEMPLATES_WITH_BUILDS),$(IMAGE_TEMPLATES)))

images: $(IMAGE_MANIFESTS) $(IMAGE_BUILD_MANIFESTS)

$(IMAGES_DIR)/%/manifest.json: $(TEMPLATE_DIR)/%.yaml $(if $(NIGHTLY),FORCE) | $(VENV)/.done
	$(BAKER) build --if-changed --wait-lock --plain --deps-file $(IMAGES_DIR)/$*.d -o $(IMAGES_DIR)/$* $(BUILD_FLAGS) $<
	@touch -c $@

$(IMAGES_DIR)/%.mk: $(TEMPLATE_DIR)/%.yaml | $(VENV)/.done
	$(BAKER) deps --makefile $@ --images-dir $(IMAGES_DIR) $<

ifneq ($(IMAGE_BUILD_MANIFESTS),)
$(IMAGE_BUILD_MANIFESTS): $(if $(NIGHTLY),FORCE) | $(VENV)/.done
	$(BAKER) build --if-changed --wait-lock --plain --only $(IMAGE_BUILD_ONLY) --deps-file $(@D).d -o $(@D) $(BUILD_FLAGS) $(IMAGE_BUILD_TEMPLATE)
	@touch -c $@
endif

# the installer ISO the netinst template boots (built from Debian's netboot package)
images/debian-12-netinst.iso: scripts/make-netinst-iso
	scripts/make-netinst-iso
ifeq ($(TEMPLATE_DIR),templates)
$(IMAGES_DIR)/debian-12-netinst/manifest.json: images/debian-12-netinst.iso
endif

FORCE:

-include $(wildcard $(IMAGES_DIR)/*.d)

test: setup base-image
	$(PY) -m pytest -m "not slow" -q

test-unit: setup
	$(PY) -m pytest -m "not e2e and not slow" -q

test-slow: setup base-image
	$(PY) -m pytest -m slow -q

lint: setup
	$(VENV)/bin/ruff check baker tests bench

# plain script vs Packer vs baker on one base image, then the nine-export demo: BENCH_FLAGS=--quick (one
# run each) or --runs N; results in bench/results/. Installs Debian's packer package when missing.
BENCH_FLAGS ?=
bench: setup base-image
	$(PY) bench/run.py $(BENCH_FLAGS)

# 1, 2 and 4 builds at a time over one template's four builds (1 vCPU, 1024 MiB each): wall time,
# per-build time, QEMU and process-tree memory, MemAvailable, load. SCALING_FLAGS="--jobs 1,2
# --builds 2 --cpus 2 --memory 2048 ..."; results in bench/results/scaling-*.json. On a quiet host.
SCALING_FLAGS ?=
bench-scaling: setup base-image
	$(PY) bench/scaling.py $(SCALING_FLAGS)

# an app layer from zero (golden base first) vs on an up-to-date golden base; a full bake vs one
# resumed from checkpoints when only the last provisioner changed
bench-layers: setup base-image
	$(PY) bench/layers_bench.py
bench-checkpoint: setup base-image
	$(PY) bench/checkpoint_bench.py

clean:
	rm -rf images/*/ .pytest_cache
