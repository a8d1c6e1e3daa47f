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

# Main job: build the embedded face dataset (4 faces held out), train the tiny config on CPU,
# fine-tune it into a QC-StyleGAN, render sharp | degraded pairs, then restore a degraded held-out
# face with the trained networks (about 10 minutes on 2 cores). See README.md.
demo: venv
	$(PY) dataset_tool.py --source builtin:lfw-faces --dest out/data/lfw32.zip --resolution 32 --max-images 96
	rm -rf out/data/heldout
	$(PY) dataset_tool.py --source builtin:lfw-faces --dest out/data/heldout --resolution 32 --skip-images 96
	$(PY) train.py --outdir out/runs --data out/data/lfw32.zip --cfg tiny --kimg 20 --snap 4 --device cpu --workers 1
	$(PY) train.py --outdir out/runs --data out/data/lfw32.zip --cfg tiny --kimg 2 --snap 1 --device cpu --workers 1 \
		--qc --resume "$$(ls -t out/runs/*-tiny-kimg20/network-snapshot-*.pkl | head -n 1)"
	$(PY) generate.py --network "$$(ls -t out/runs/*-qc/network-snapshot-*.pkl | head -n 1)" --seeds 0-15 --grid --outdir out/demo --device cpu
	$(PY) invert.py --network "$$(ls -t out/runs/*-qc/network-snapshot-*.pkl | head -n 1)" --method qc \
		--target out/data/heldout/00000/img00000000.png --ground-truth out/data/heldout/00000/img00000000.png \
		--synthesize-degradation --operator sr:2+denoise:S --steps 100,100 --lpips-backbone random --no-encoder-ok \
		--outdir out/demo/restore --device cpu
	@echo "Pictures to open:"
	@ls -d "$$(ls -td out/runs/*-tiny-kimg20 | head -n 1)"/fakes0*.png | tail -n 1
	@ls -d "$$(ls -td out/runs/*-qc | head -n 1)"/fakes_degraded0*.png | tail -n 1
	@echo out/demo/grid.png
	@ls out/demo/restore/*_panel.png

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
