"""bench/gpu_check.sh must not rot: its CPU dry run (GPU_CHECK_DRY_RUN=1) runs every stage at the
smallest size, skips the GPU-only ones with a line saying so, and writes the JSON and Markdown."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path):
    env = dict(os.environ, GPU_CHECK_DRY_RUN='1', PYTHON=sys.executable, OMP_NUM_THREADS='1')
    proc = subprocess.run(['bash', os.path.join(ROOT, 'bench', 'gpu_check.sh'), str(tmp_path / 'gc')], env=env,
                          capture_output=True, text=True, timeout=1500, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'build: SKIPPED: no GPU' in proc.stdout and 'tests: SKIPPED: no GPU' in proc.stdout
    report = json.load(open(tmp_path / 'gc' / 'gpu_check.json'))
    assert report['dry_run'] and report['ok']
    status = {s['name']: s['status'] for s in report['stages']}
    assert status == dict(env='pass', build='skipped', tests='skipped', train='pass', invert='pass', speed='pass')
    assert [r['workload'] for r in report['speed']['rows']] == ['G', 'GD', 'GD-qc']
    assert all(r['img_per_s'] > 0 for r in report['speed']['rows'])
    md = (tmp_path / 'gc' / 'gpu_check.md').read_text()
    assert '| train | pass |' in md and '| GD-qc | 16 | 1 | ref-fp32 |' in md
    assert list((tmp_path / 'gc' / 'invert').rglob('*.png'))  # the restoration wrote its images
