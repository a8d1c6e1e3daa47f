# Quick start:  make demo   (sets up .venv, generates images on the embedded defaults)
#               make test   (sets up .venv, runs the test suite)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt | md5sum | cut -c1-12)

.PHONY: venv demo test test-cuda bench gpu-check clean

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

# Main job (demo.py): build the embedded grey face dataset (4 faces held out), train the cpu32 config,
# fine-tune it into a QC-StyleGAN, train its pSp encoder, then restore degraded held-out and
# generator-made faces with QC (encoder) and NGD and compare them with the observation (about
# 8 minutes on 2 cores; uses the GPU when there is one). Replaces out/demo. See README.md.
demo: venv
	$(PY) demo.py --outdir out/demo --device auto

test: venv
	$(PY) -m pytest -q tests

test-cuda: venv
	$(PY) -m pytest -q tests -m cuda

bench: venv
	$(PY) bench/speed.py --device auto --json out/speed.json

# GPU readiness on a machine with one NVIDIA GPU and a preinstalled PyTorch >= 2.4 (no internet):
# kernels, cuda tests, a short training run and inversion, the GPU speed table -> out/gpu-check/.
gpu-check:
	PYTHON=$$(test -x $(PY) && echo $(PY) || echo python3) bash bench/gpu_check.sh out/gpu-check

clean:
	rm -rf out .pytest_cache
