# The two commands of the README:
#   make lab   - install everything on a fresh Debian 12 machine and bring up the 1-node lab
#   make test  - install everything and run every test
SPEC ?= examples/lab-1node.yaml
LAB ?= demo
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup deps venv cni image image-base prepare lab lab-down test test-unit lint bench test-long

setup: deps venv

# The CNI binary the runtime executes on a node: a static C program (cni/), no Python on the host.
# Installed into the venv's prefix, where `novanet install-cni` takes it from (the image's is
# /opt/novanet/libexec/novanet/novanet-cni).
CNI_SRC := cni/novanet-cni.c cni/json.c cni/json.h
CNI_CFLAGS := -Os -static -s -Wall -Wextra -Werror -std=gnu11
cni: $(VENV)/libexec/novanet/novanet-cni

build/novanet-cni: $(CNI_SRC)
	mkdir -p build
	gcc $(CNI_CFLAGS) -o $@ cni/novanet-cni.c cni/json.c

$(VENV)/libexec/novanet/novanet-cni: build/novanet-cni
	install -D -m 0755 $< $@

# The node image (localhost/novanet:<version>), built here from Debian's and PyPI's packages
# (its wheels are made with the venv's pip).
image: deps cni venv
	bash contrib/image/build.sh

image-base: deps
	bash contrib/image/build.sh --base

deps:
	bash contrib/install-deps.sh

venv:
	bash contrib/setup-venv.sh

lab: setup cni
	novanet lab up --spec $(SPEC) --name $(LAB) --replace
	novanet lab status --name $(LAB)
	novanet lab probe --name $(LAB) -o table

lab-down:
	novanet lab down --name $(LAB)

# Everything make test needs. The venv (PyPI) and the image's base root filesystem (the Debian
# mirror) are independent downloads, made side by side; then the image on them.
prepare: deps
	$(MAKE) --no-print-directory -j3 --output-sync=line venv cni image-base
	$(MAKE) --no-print-directory image

test: prepare
	bash contrib/run-tests.sh

# The long forms: tests marked long (full Service matrix in every routing mode, ...), then every
# fuzz target for 5 minutes with both engines and a 30-minute chaos soak on a 3-node lab
# (docs/reliability.md). Needs root; over an hour.
test-long: setup
	bash contrib/run-tests.sh --run-long -m long
	$(VENV)/bin/python -m bench.fuzz --engine both --seconds 300
	$(VENV)/bin/python -m bench.soak --minutes 30

test-unit: venv
	$(VENV)/bin/pytest -m "not root" -q

lint: venv
	$(VENV)/bin/ruff check novanet_core plugins tests bench contrib conftest.py

bench: setup
	$(VENV)/bin/python -m bench.run_all
