# Quick start:  make demo   (sets up .venv, generates images on the embedded defaults)
#               make test   (sets up .venv, runs the test suite)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt | md5sum | cut -c1-12)

.PHONY: venv demo test test-cuda bench clean

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

demo: venv
	$(PY) generate.py --network init:tiny32 --seeds 0-15 --grid --outdir out/demo --device cpu

test: venv
	$(PY) -m pytest -q tests

test-cuda: venv
	$(PY) -m pytest -q tests -m cuda

bench: venv
	$(PY) bench/bench_networks.py --device auto

clean:
	rm -rf out .pytest_cache
