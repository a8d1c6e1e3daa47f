#!/usr/bin/env bash
# GPU readiness in one run, for a machine with one NVIDIA GPU and a preinstalled PyTorch >= 2.4
# (no internet needed). Stages, each with its own time limit (8 minutes in all on a GPU):
#   env        python/torch/GPU versions; installs lpips/albumentations (and their pure-Python
#              dependencies) from wheels in $WHEELS (default: ./wheels or ./.whl) if missing
#   build      builds the bias_act and upfirdn2d CUDA kernels (torch_utils/custom_ops)
#   tests      pytest -m cuda (kernels vs the reference ops, FP16 blocks)
#   train      a short CUDA training run (tiny config, 1 kimg, on the embedded LFW faces)
#   invert     an NGD restoration with the trained network on CUDA
#   speed      the GPU speed table: G, GD, GD-qc at 256 px, ref vs CUDA ops, fp32/fp16/bf16, compile
# Writes $OUT/gpu_check.json (every stage: status, seconds, log tail; the speed rows) and
# $OUT/gpu_check.md (the same as tables). Exit status 0 when every stage that ran passed.
#
# Usage:  bench/gpu_check.sh [OUT]                     (default OUT: out/gpu-check; or `make gpu-check`)
#         GPU_CHECK_DRY_RUN=1 bench/gpu_check.sh OUT   CPU dry run: every stage at the smallest size,
#                                                      the GPU-only stages skipped with a line saying so
# Environment: PYTHON (default: .venv/bin/python if present, else python3), WHEELS, GPU_CHECK_DRY_RUN.
set -u
cd "$(dirname "$0")/.."
OUT="${1:-out/gpu-check}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
DRY="${GPU_CHECK_DRY_RUN:-0}"
STAGES="$OUT/stages.tsv"
export OUT PYTHON DRY
: > "$STAGES"
export PYTHONUNBUFFERED=1

if [ "$DRY" = "1" ]; then
    DEVICE=cpu; RES=16; DATA_RES=16; BATCH=1; SPEED_ARGS="--arch tiny --resolutions 16 --batches 1 --variants ref-fp32 --min-seconds 0.01 --extra-steps 1 --no-isolate"
    INV_STEPS=1,1,1; TRAIN_ARGS="--kimg 1 --batch 8"
    echo "gpu_check: DRY RUN on CPU (GPU_CHECK_DRY_RUN=1): smallest sizes; GPU-only stages are skipped"
else
    DEVICE=cuda; RES=256; DATA_RES=32; BATCH=4
    SPEED_ARGS="--resolutions 256 --batches 4 --variants ref-fp32,cuda-fp32,cuda-fp16,cuda-bf16,cuda-fp16-compile --min-seconds 0.3 --no-isolate"
    INV_STEPS=50,50,50; TRAIN_ARGS="--kimg 1"
fi

# limit GPU_SECONDS DRY_RUN_SECONDS: a stage's time limit (the GPU limits add up to 480 s; a CPU dry
# run on a shared machine gets more).
limit() { if [ "$DRY" = "1" ]; then echo "$2"; else echo "$1"; fi; }

# stage NAME LIMIT_SECONDS COMMAND...: runs the command with a time limit, logs to $OUT/NAME.log.
stage() {
    local name="$1" limit="$2"; shift 2
    local t0=$SECONDS
    echo "== $name (limit ${limit}s)"
    timeout "$limit" bash -c '"$@"' _ "$@" > "$OUT/$name.log" 2>&1  # bash -c: the stages may be functions
    local rc=$?
    local status=pass
    if [ $rc -eq 124 ]; then status=timeout; elif [ $rc -ne 0 ]; then status=fail; fi
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - t0))" "$rc" >> "$STAGES"
    echo "   $status in $((SECONDS - t0))s (log: $OUT/$name.log)"
    [ $status = pass ] || tail -n 15 "$OUT/$name.log"
}
skip() {
    printf '%s\tskipped\t0\t-\t%s\n' "$1" "$2" >> "$STAGES"
    echo "== $1: SKIPPED: $2"
}

# env: versions, GPU, missing pure-Python packages from carried wheels.
env_stage() {
    "$PYTHON" - "$DRY" <<'EOF'
import sys, torch
print('python', sys.version.split()[0], '| torch', torch.__version__, '| CUDA build', torch.version.cuda)
major, minor = (int(v) for v in torch.__version__.split('+')[0].split('.')[:2])
assert (major, minor) >= (2, 4), f'PyTorch >= 2.4 needed, found {torch.__version__}'
if sys.argv[1] != '1':
    assert torch.cuda.is_available(), 'no CUDA device visible to PyTorch'
    print('GPU:', torch.cuda.get_device_name(0), '| capability', torch.cuda.get_device_capability(0))
EOF
    local missing
    missing=$("$PYTHON" -c "
import importlib.util as u
print(' '.join(p for p in ('lpips', 'albumentations', 'click', 'tqdm', 'psutil', 'skimage', 'sklearn', 'scipy', 'PIL', 'cv2') if u.find_spec(p) is None))")
    if [ -n "$missing" ]; then
        local wheels="${WHEELS:-}"
        [ -z "$wheels" ] && for d in wheels .whl; do [ -d "$d" ] && wheels="$d" && break; done
        if [ -n "$wheels" ]; then
            echo "installing from $wheels (no index): $missing"
            local pkgs=${missing//skimage/scikit-image}; pkgs=${pkgs//sklearn/scikit-learn}; pkgs=${pkgs//PIL/pillow}; pkgs=${pkgs//cv2/opencv-python-headless}
            # shellcheck disable=SC2086
            "$PYTHON" -m pip install --no-index --find-links "$wheels" $pkgs || return 1
        else
            echo "missing packages: $missing, and no wheels folder (WHEELS, ./wheels or ./.whl)"; return 1
        fi
    fi
    if command -v nvidia-smi > /dev/null; then nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; fi
    if command -v nvcc > /dev/null; then nvcc --version | tail -n 2; fi
    return 0
}
export -f env_stage
stage env "$(limit 30 240)" env_stage

if [ "$DRY" = "1" ]; then
    skip build "no GPU in a dry run: the CUDA kernels are not built"
    skip tests "no GPU in a dry run: the cuda-marked tests need one"
else
    stage build 150 "$PYTHON" -c "
from torch_utils.ops import bias_act, upfirdn2d
ok = bias_act._init() and upfirdn2d._init()
print('bias_act + upfirdn2d CUDA kernels:', 'built' if ok else 'FAILED')
raise SystemExit(0 if ok else 1)"
    stage tests 90 "$PYTHON" -m pytest -q -m cuda -p no:cacheprovider tests
fi

DATA="$OUT/data/lfw${DATA_RES}.zip"
export DATA DATA_RES DEVICE TRAIN_ARGS INV_STEPS
train_stage() {
    rm -rf "$OUT/data" "$OUT/runs"
    "$PYTHON" dataset_tool.py --source builtin:lfw-faces --dest "$DATA" --resolution "$DATA_RES" --max-images 64 || return 1
    # shellcheck disable=SC2086
    "$PYTHON" train.py --outdir "$OUT/runs" --data "$DATA" --cfg tiny $TRAIN_ARGS --snap 1 --metrics none --workers 1 --device "$DEVICE" || return 1
    ls "$OUT"/runs/*/network-snapshot-*.pkl
}
export -f train_stage
stage train "$(limit 60 400)" train_stage

invert_stage() {
    local net
    net=$(ls -t "$OUT"/runs/*/network-snapshot-*.pkl 2>/dev/null | head -n 1)
    [ -n "$net" ] || { echo "no network snapshot from the train stage"; return 1; }
    "$PYTHON" -c "import PIL.Image, skimage.data, numpy as np; a = (skimage.data.lfw_subset()[0] * 255).astype(np.uint8); PIL.Image.fromarray(a).convert('RGB').save('$OUT/target.png')" || return 1
    "$PYTHON" invert.py --network "$net" --target "$OUT/target.png" --method ngd --steps "$INV_STEPS" --degradation sr:2 \
        --synthesize-degradation --lpips-backbone random --outdir "$OUT/invert" --device "$DEVICE"
}
export -f invert_stage
stage invert "$(limit 40 300)" invert_stage

# shellcheck disable=SC2086
stage speed "$(limit 110 400)" "$PYTHON" bench/speed.py --device "$DEVICE" --workloads G,GD,GD-qc $SPEED_ARGS --json "$OUT/speed.json"

# Report: one JSON and one Markdown file.
"$PYTHON" - "$OUT" "$DRY" <<'EOF'
import json, os, sys, time
import torch
out, dry = sys.argv[1], sys.argv[2] == '1'
stages = []
for line in open(os.path.join(out, 'stages.tsv')):
    f = line.rstrip('\n').split('\t')
    s = dict(name=f[0], status=f[1], seconds=int(f[2]), exit_code=f[3], note=f[4] if len(f) > 4 else '')
    log = os.path.join(out, f[0] + '.log')
    s['log_tail'] = open(log, errors='replace').read()[-2000:] if os.path.exists(log) else ''
    stages.append(s)
speed_path = os.path.join(out, 'speed.json')
speed = json.load(open(speed_path)) if os.path.exists(speed_path) else None
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
report = dict(time=time.strftime('%Y-%m-%d %H:%M:%S'), dry_run=dry, torch=torch.__version__, gpu=gpu,
              ok=all(s['status'] in ('pass', 'skipped') for s in stages), stages=stages, speed=speed)
with open(os.path.join(out, 'gpu_check.json'), 'w') as f:
    json.dump(report, f, indent=2)
md = [f'# gpu_check {"(CPU dry run)" if dry else ""}', '',
      f'{report["time"]}, torch {torch.__version__}, GPU: {gpu or "none"}', '',
      '| stage | status | seconds | note |', '|---|---|---|---|']
md += [f'| {s["name"]} | {s["status"]} | {s["seconds"]} | {s["note"]} |' for s in stages]
if speed:
    md += ['', '| workload | res | batch | variant | img/s | ms/call | peak GB | vs 1st |', '|---|---|---|---|---|---|---|---|']
    for r in speed['rows']:
        md.append(f'| {r["workload"]} | {r["resolution"]} | {r["batch"]} | {r["variant"]} | {r["img_per_s"]:.2f} | '
                  f'{r["ms_per_call"]:.1f} | {r["peak_mem_gb"]:.3f} | {r.get("speedup", float("nan")):.2f}x |')
with open(os.path.join(out, 'gpu_check.md'), 'w') as f:
    f.write('\n'.join(md) + '\n')
print('\n'.join(md))
print(f'wrote {os.path.join(out, "gpu_check.json")} and {os.path.join(out, "gpu_check.md")}')
sys.exit(0 if report['ok'] else 1)
EOF
