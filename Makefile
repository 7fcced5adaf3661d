# The two commands of the README:
#   make lab   - install everything on a fresh Debian 12 machine and bring up the 1-node lab
#   make test  - install everything and run every test
SPEC ?= examples/lab-1node.yaml
LAB ?= demo
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup deps venv lab lab-down test test-unit lint bench

setup: deps venv

deps:
	bash contrib/install-deps.sh

venv:
	bash contrib/setup-venv.sh

lab: setup
	novanet lab up --spec $(SPEC) --name $(LAB) --replace
	novanet lab status --name $(LAB)
	novanet lab probe --name $(LAB) -o table

lab-down:
	novanet lab down --name $(LAB)

test: setup
	bash contrib/run-tests.sh

test-unit: venv
	$(VENV)/bin/pytest -m "not root" -q

lint: venv
	$(VENV)/bin/ruff check novanet_core plugins tests bench

bench: setup
	$(VENV)/bin/python -m bench.run_all
