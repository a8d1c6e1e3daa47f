"""Every README command that needs only what ships with the repository runs as written.

The commands are the lines of the README's ```bash blocks (a trailing backslash joins lines).

Exclusion rule (each excluded line is listed with its reason by `test_readme_commands_are_classified`):
  1. `make ...` (the Quick start): minutes long; their fresh-clone times are measured by the integrator.
  2. Commands that read inputs the repository does not ship: the user's datasets, networks, encoders,
     image folders or directions (placeholders such as `ffhq256.zip`, `QC.pkl`, `NET`, `~/...`,
     `runs/...`), a GPU (`--device cuda`), several GPUs (`--gpus 8`, `torchrun`), downloads of official
     files (zoo names such as `ffhq256`, detector-based metrics).
  3. Too slow for the suite (`SLOW`): the benchmark tables, which run many workloads.
Everything else runs, at the smallest size the README gives, in a temporary folder, in README order
(later commands use earlier outputs), with `python` replaced by this interpreter.
"""

import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NEEDS_USER_INPUT = ['ffhq256.zip', 'QC.pkl', '~/', ' NET ', 'heldout/', 'lowres/', 'photos/', 'enc.pt', 'runs/',
                    'runs-enc/', 'smile.npy', 'degraded-reals.zip', '--gpus 8', 'torchrun', '--device cuda',
                    '--network ffhq256', '--resume ffhq256']
SLOW = {'bench/speed.py': 'speed table: many workloads x variants', 'bench/bench_training.py': 'times the training loop',
        'bench/restore.py': 'restoration benchmark over tasks and levels',
        'bench/compare_nvlabs.py': 'side-by-side timing against an NVLabs checkout (tests/test_speed_compare.py)',
        'bench/gpu_check.sh': 'minutes long; its CPU dry run is tests/test_gpu_check.py',
        'bench/ab_steps.py': 'times inversion steps at 256 px (its dry run: tests/test_speed_compare.py)',
        'bench/full_inversion.py': 'a whole inversion at 256 px (its dry run: tests/test_speed_compare.py)'}

def readme_commands():
    text = open(os.path.join(REPO, 'README.md'), encoding='utf-8').read()
    commands = []
    for block in re.findall(r'```bash\n(.*?)```', text, re.S):
        for line in block.replace('\\\n', ' ').splitlines():
            line = line.split(' #')[0].strip() if not line.strip().startswith('#') else ''
            if line:
                commands.append(' '.join(line.split()))
    return commands

def classify(command):
    """'run', or the reason it is excluded (see the module docstring)."""
    if command.startswith('make '):
        return 'Quick start: timed by the integrator'
    padded = f' {command} '
    for token in NEEDS_USER_INPUT:
        if token in padded:
            return f'needs input that does not ship with the repository ({token.strip()})'
    for script, why in SLOW.items():
        if script in command:
            return f'too slow for the suite: {why}'
    return 'run'

def test_readme_commands_are_classified():
    commands = readme_commands()
    runnable = [c for c in commands if classify(c) == 'run']
    assert len(commands) > 10 and len(runnable) >= 4, [(c, classify(c)) for c in commands]
    for c in commands:  # every python command names a script that exists
        parts = shlex.split(c)
        script = next((p for p in parts if p.endswith('.py')), None)
        if script is not None and not script.startswith('-'):
            assert os.path.isfile(os.path.join(REPO, script)), c

def test_readme_commands_run(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1', DNNLIB_OFFLINE='1')
    ran = []
    for command in readme_commands():
        if classify(command) != 'run':
            continue
        parts = shlex.split(command)
        if parts[0] in ('python', '.venv/bin/python'):
            parts = [sys.executable, os.path.join(REPO, parts[1])] + parts[2:]
        result = subprocess.run(parts, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 0, f'README command failed: {command}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}'
        ran.append(command)
    assert any('invert.py' in c for c in ran) and any('generate.py' in c for c in ran)
    # What the README says to open exists.
    for path in ['out/try/gen/grid.png', 'out/try/restore/seed0001_panel.png', 'out/try/restore/results.json']:
        assert (tmp_path / path).is_file(), path

if __name__ == '__main__':
    for cmd in readme_commands():
        print(f'{classify(cmd):70s} {cmd}')
    sys.exit(pytest.main([__file__]))
