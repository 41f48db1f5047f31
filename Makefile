# medyate-mcu: set-up, demo and tests. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Debian packages the toolchain needs (installed when missing, as root).
SYSTEM_PACKAGES := gcc make clang gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm openocd espeak-ng

.PHONY: install system-packages demo kws-demo test lint clean

install: $(STAMP) system-packages

# torch is pinned and installed first: that exact pin resolves to the local CPU wheel.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

system-packages:
	@tools/ensure-system-packages.sh $(SYSTEM_PACKAGES)

# The main job on the bundled default model: compile it for a 300 kB budget, build the C engine
# for this machine, train it on the embedded data, then check it against the host reference.
DEMO_DIR := build/demo
demo: install
	$(BIN)/medyate-mcu compile --budget 300kB -o $(DEMO_DIR)
	$(MAKE) -C $(DEMO_DIR) host
	$(DEMO_DIR)/medyate_train
	$(BIN)/medyate-mcu verify $(DEMO_DIR)

# Keyword spotting on a new voice (docs/kws.md): the bundled DS-CNN, fine-tuned on a voice it never
# heard, for the nRF52840-DK's RAM, with int8 samples; the host engine prints the test accuracy
# before (epoch 0) and after, then the C engine is checked against the host reference.
KWS_DIR := build/kws
kws-demo: install
	$(BIN)/medyate-mcu compile ds-cnn-kws --data kws-newvoice --board nrf52840-dk --budget auto \
		--sample-format int8 --embed-data 320 -o $(KWS_DIR)
	$(MAKE) -C $(KWS_DIR) host
	$(KWS_DIR)/medyate_train
	$(BIN)/medyate-mcu verify $(KWS_DIR)

lint: install
	$(BIN)/ruff check medyate_mcu tests tools

# pytest-xdist: one worker per core, at most 4 (most tests run one single-threaded compiler, QEMU
# or trainer: on 2 cores the suite takes 11 min instead of 19.6). One file: `$(BIN)/pytest -q FILE`.
test: lint
	$(BIN)/pytest -q -n auto --maxprocesses=4

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
