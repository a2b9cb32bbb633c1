# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FASHION_DIR ?= /usr/share/datasets/fashion-mnist
ARTIFACTS ?= artifacts
FAMILY ?= fashion
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export EDGECASCADE_ARTIFACTS := $(abspath $(ARTIFACTS))

.PHONY: demo test reliability bootstrap data haproxy kubectl perf-analyzer models proto lint typecheck clean

demo: bootstrap data $(ARTIFACTS)/$(FAMILY)/manifest.json
	$(BIN)/edgecascade demo --family $(FAMILY)

test: bootstrap data haproxy kubectl perf-analyzer $(ARTIFACTS)/fashion/manifest.json
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(MAKE) --no-print-directory typecheck
	$(BIN)/python -m pytest

# The standing reliability suite (tests/reliability): FUZZ_EXAMPLES hypothesis examples per API
# against a real agent, faults on the cloud path, a soak of SOAK_S seconds; `make test` runs it
# with a few examples and a 20 s soak. Report: reports/reliability.json.
FUZZ_EXAMPLES ?= 10000
SOAK_S ?= 1800
reliability: bootstrap data haproxy $(ARTIFACTS)/fashion/manifest.json
	EDGECASCADE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) EDGECASCADE_SOAK_S=$(SOAK_S) \
		EDGECASCADE_RELIABILITY_REPORT=reports/reliability.json \
		$(BIN)/python -m pytest -p no:cacheprovider tests/reliability

bootstrap: $(VENV)/.installed

# torch==2.13.0 (CPU) is only needed to build the imagenet family and to retrain fashion.
$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[edge,gateway,cloud,build,dev]'
	$(BIN)/pip install --quiet --no-deps foolbox==3.3.4  # the 20 ImageNet smoke photos
	touch $@

data: $(FASHION_DIR)/t10k-images-idx3-ubyte.gz

$(FASHION_DIR)/t10k-images-idx3-ubyte.gz:
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist

# The router gateway's data plane (`edgecascade router serve`).
haproxy:
	@command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq haproxy; }

# Renders deploy/k8s for the tests (`kubectl kustomize`, offline).
kubectl:
	@command -v kubectl >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq kubectl; }

# Triton's load tool (`edgecascade bench perf-analyzer`): the binary in tritonclient's manylinux
# wheel of the Triton in use; it needs libb64 (Debian) and libcudart (nvidia-cuda-runtime-cu12,
# in the dev extra), even on CPU.
PERF_ANALYZER_WHEEL := tritonclient==2.51.0
perf-analyzer: $(BIN)/perf_analyzer

$(BIN)/perf_analyzer: | bootstrap
	@dpkg -s libb64-0d >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq libb64-0d; }
	rm -rf build/perf_analyzer
	$(BIN)/pip download --quiet --no-deps --only-binary=:all: --platform manylinux1_x86_64 \
		--dest build/perf_analyzer '$(PERF_ANALYZER_WHEEL)'
	$(BIN)/python -c "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); \
		name = next(n for n in z.namelist() if n.endswith('/bin/perf_analyzer')); \
		open(sys.argv[2], 'wb').write(z.read(name))" build/perf_analyzer/*.whl $@
	chmod +x $@

$(ARTIFACTS)/%/manifest.json: $(wildcard cloud/build/families/weights/*.onnx) | bootstrap data
	$(BIN)/edgecascade models build --family $*

models: bootstrap data
	$(BIN)/edgecascade models build

proto: bootstrap
	$(BIN)/python proto/generate.py

lint: bootstrap
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# mypy --strict on the installed names: a link tree edgecascade/{edge,router,cloud,v1,client}.
TYPECHECK := build/typecheck
typecheck: bootstrap
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/edgecascade
	for f in __init__.py __main__.py v1 client; do ln -s $(CURDIR)/proto/edgecascade/$$f $(TYPECHECK)/edgecascade/$$f; done
	for d in edge router cloud; do ln -s $(CURDIR)/$$d $(TYPECHECK)/edgecascade/$$d; done
	cd $(TYPECHECK) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p edgecascade

clean:
	rm -rf $(ARTIFACTS) reports .pytest_cache build
