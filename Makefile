# The developer interface: CI calls these targets instead of repeating commands.
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python

.PHONY: help venv build test lint typecheck bench bench-quick demo wheels check-dist reliability reliability-long fuzz sanitize valgrind clean

help:
	@echo "targets: venv build test lint typecheck bench bench-quick demo wheels check-dist reliability reliability-long fuzz sanitize valgrind clean"

$(VPY):
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip

venv: $(VPY)
	$(VPY) -m pip install -q -e '.[test]'

build: venv
	$(VPY) setup.py build_ext --inplace

test: venv
	$(VPY) -m pytest

lint: venv
	$(VPY) -m pip install -q ruff
	$(VPY) -m ruff check shmipc tests
	$(VPY) -m ruff format --check shmipc tests || true

typecheck: venv
	$(VPY) -m pip install -q mypy
	$(VPY) -m mypy shmipc

bench: venv
	$(VPY) -m shmipc bench

bench-quick: venv
	$(VPY) -m shmipc bench --quick

demo: venv
	$(VPY) -m shmipc chat

wheels:
	bash .ci/wheels.sh

check-dist: $(VPY)
	$(VPY) -m pip install -q build
	rm -rf dist
	$(VPY) -m build --sdist --outdir dist .
	$(VPY) .ci/check_sdist.py dist/*.tar.gz

reliability: venv
	$(VPY) -m shmipc.reliability --quick

reliability-long: venv
	$(VPY) -m pip install -q -e '.[test,fuzz]'
	$(VPY) -m shmipc.reliability --long --json reliability-long.json

fuzz: venv
	$(VPY) -m pip install -q -e '.[test,fuzz]'
	$(VPY) -m shmipc.reliability --only fuzz

sanitize: $(VPY)
	SHMIPC_SANITIZE=1 $(VPY) -m pip install -q -e '.[test]'
	LD_PRELOAD=$$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 $(VPY) -m pytest -p no:cacheprovider

valgrind: venv
	$(VPY) -m shmipc.reliability --long --only sanitizers

clean:
	rm -rf build dist *.egg-info shmipc/*.so .pytest_cache wheelhouse
