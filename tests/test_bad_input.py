"""Bad input gets one clear line: no traceback, exit code 2 for usage errors and 1 for runtime failures,
and no partial file or empty run folder left behind. Also: concurrent runs into one --outdir, and the
permissions of what the tools write.

The table `CASES` lists every bad input of issue 13; each row runs one CLI in-process (click's CliRunner).
"""

import errno
import multiprocessing
import os
import pickle
import stat
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import dnnlib
import legacy

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#----------------------------------------------------------------------------
# Inputs shared by the cases.

class Ctx:
    def __init__(self, tmp_path, faces16):
        self.tmp = tmp_path
        self.faces16 = faces16
        self.out = str(tmp_path / 'out')
        self.net = str(tmp_path / 'net.pkl')
        legacy.save_network_pkl(legacy.init_network('tiny32'), self.net)
        self.target = str(tmp_path / 'target.png')
        PIL.Image.fromarray(np.random.RandomState(0).randint(0, 256, [32, 32, 3], dtype=np.uint8)).save(self.target)
        self.images = tmp_path / 'images'
        self.images.mkdir()
        for i in range(2):
            PIL.Image.fromarray(np.full([24, 24, 3], 40 * i, np.uint8)).save(self.images / f'{i}.png')
        self.text = tmp_path / 'notes.pkl'
        self.text.write_text('these are not network weights')
        blob = open(self.net, 'rb').read()
        self.truncated = tmp_path / 'truncated.pkl'
        self.truncated.write_bytes(blob[:len(blob) // 2])
        self.foreign = tmp_path / 'foreign.pkl'
        self.foreign.write_bytes(pickle.dumps({'weights': [1, 2, 3]}))
        self.a_file = tmp_path / 'a_file'
        self.a_file.write_text('x')

def _train(ctx, *extra):
    import train
    return train.main, ['--outdir', ctx.out, '--data', ctx.faces16, '--cfg', 'tiny', '--device', 'cpu', '--workers', '0', *extra]

def _qc_train(ctx, *extra):
    return _train(ctx, '--qc', '--resume', ctx.net, *extra)

def _generate(ctx, *extra, net=None):
    import generate
    return generate.generate_main, ['--network', net or ctx.net, '--seeds', '0', '--outdir', ctx.out, '--device', 'cpu', *extra]

def _invert(ctx, *extra, net=None):
    import invert
    return invert.main, ['--network', net or ctx.net, '--target', ctx.target, '--outdir', ctx.out, '--device', 'cpu',
                         '--method', 'ngd', '--steps', '1', '--lpips-backbone', 'random', *extra]

def _dataset_tool(ctx, *extra, dest=None):
    import dataset_tool
    return dataset_tool.dataset_tool_main, ['--source', str(ctx.images), '--dest', dest or str(ctx.tmp / 'out' / 'd.zip'), *extra]

def _train_encoder(ctx, *extra):
    import train_encoder
    return train_encoder.main, ['--outdir', ctx.out, '--network', ctx.net, '--data', 'generator', '--device', 'cpu',
                                '--backbone-weights', 'none', '--lpips-backbone', 'random', '--input-size', '64', '--workers', '0', *extra]

def _legacy(ctx, *extra, dest=None):
    return legacy.convert_network_pickle, ['--source', ctx.net, '--dest', dest or str(ctx.tmp / 'out' / 'x.safetensors'), *extra]

def _bench_restore(ctx, *extra):
    from bench import restore
    return restore.main, ['--network', ctx.net, '--data', str(ctx.images), '--outdir', ctx.out, '--device', 'cpu',
                          '--methods', 'ngd', '--tasks', 'sr', '--levels', 'XS', '--num-images', '1', '--steps', '1',
                          '--lpips-backbone', 'random', '--no-niqe', '--no-pfid', *extra]

def _no_write_access(monkeypatch, ctx):
    """Simulate a folder without write permission (the tests may run as root, where chmod does not bind)."""
    target = os.path.abspath(ctx.tmp / 'locked')
    os.makedirs(target, exist_ok=True)
    real = os.access
    monkeypatch.setattr(os, 'access', lambda path, mode, *a, **k: False if os.path.abspath(path) == target and mode & os.W_OK else real(path, mode, *a, **k))
    return os.path.join(target, 'out')

def _disk_full(monkeypatch, _ctx):
    """Every fsync of a new file reports a full disk (as a write on a full file system does)."""
    def full(_fd):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(os, 'fsync', full)

def _offline_without_weights(monkeypatch, ctx):
    monkeypatch.setenv('DNNLIB_OFFLINE', '1')
    monkeypatch.setenv('TORCH_HOME', str(ctx.tmp / 'empty-torch-home'))

# id, (ctx, monkeypatch) -> (command, args), exit code, text expected in the Error line
CASES = [
    # Unwritable --outdir / --dest (checked before any work).
    ('train-outdir-is-a-file', lambda c, m: _train(c, '--outdir', str(c.a_file / 'runs')), 1, 'is not a folder'),
    ('train-outdir-no-permission', lambda c, m: _train(c, '--outdir', _no_write_access(m, c)), 1, 'permission denied'),
    ('generate-outdir-no-permission', lambda c, m: _generate(c, '--outdir', _no_write_access(m, c)), 1, 'permission denied'),
    ('invert-outdir-is-a-file', lambda c, m: _invert(c, '--outdir', str(c.a_file / 'o')), 1, 'is not a folder'),
    ('train_encoder-outdir-no-permission', lambda c, m: _train_encoder(c, '--outdir', _no_write_access(m, c)), 1, 'permission denied'),
    ('dataset_tool-dest-no-permission', lambda c, m: _dataset_tool(c, dest=os.path.join(_no_write_access(m, c), 'd.zip')), 1, 'permission denied'),
    ('legacy-dest-is-a-folder', lambda c, m: _legacy(c, dest=str(c.tmp)), 1, 'is a folder'),
    ('bench_restore-outdir-is-a-file', lambda c, m: _bench_restore(c, '--outdir', str(c.a_file / 'o')), 1, 'is not a folder'),
    # Full disk, for every writer.
    ('train-disk-full', lambda c, m: (_disk_full(m, c), _train(c, '--kimg', '1'))[1], 1, 'disk is full'),
    ('generate-disk-full', lambda c, m: (_disk_full(m, c), _generate(c))[1], 1, 'disk is full'),
    ('invert-disk-full', lambda c, m: (_disk_full(m, c), _invert(c))[1], 1, 'disk is full'),
    ('dataset_tool-disk-full', lambda c, m: (_disk_full(m, c), _dataset_tool(c, '--resolution', '16'))[1], 1, 'disk is full'),
    ('train_encoder-disk-full', lambda c, m: (_disk_full(m, c), _train_encoder(c, '--steps', '1'))[1], 1, 'disk is full'),
    ('legacy-disk-full', lambda c, m: (_disk_full(m, c), _legacy(c))[1], 1, 'disk is full'),
    ('bench_restore-disk-full', lambda c, m: (_disk_full(m, c), _bench_restore(c))[1], 1, 'disk is full'),
    # Missing, truncated or foreign --network in invert.py.
    ('invert-network-missing', lambda c, m: _invert(c, net=str(c.tmp / 'missing.pkl')), 1, 'not found'),
    ('invert-network-truncated', lambda c, m: _invert(c, net=str(c.truncated)), 1, 'truncated'),
    ('invert-network-foreign-pickle', lambda c, m: _invert(c, net=str(c.foreign)), 1, 'G_ema'),
    ('invert-network-text-file', lambda c, m: _invert(c, net=str(c.text)), 1, 'not a readable network pickle'),
    ('invert-network-dataset-zip', lambda c, m: _invert(c, net=c.faces16), 1, 'a zip file, not a network file'),
    # Datasets whose resolution is not a power of two; dataset_tool limits.
    ('train-data-not-power-of-two', lambda c, m: _train(c, '--data', str(c.images)), 1, 'power of two'),
    ('dataset_tool-resolution-not-power-of-two', lambda c, m: _dataset_tool(c, '--resolution', '48'), 2, 'not a power of two'),
    ('dataset_tool-resolution-too-large', lambda c, m: _dataset_tool(c, '--resolution', '16384'), 2, 'above the limit of 8192'),
    # --resume of a file that is not a network.
    ('train-resume-text-file', lambda c, m: _train(c, '--resume', str(c.text)), 1, 'not a network file'),
    ('train-resume-dataset-zip', lambda c, m: _train(c, '--resume', c.faces16), 1, 'a zip file, not a network file'),
    ('train-resume-truncated', lambda c, m: _train(c, '--resume', str(c.truncated)), 1, 'truncated'),
    ('train-resume-missing', lambda c, m: _train(c, '--resume', str(c.tmp / 'missing.pkl')), 1, 'not found'),
    # Numbers that are NaN, negative or out of range.
    ('train-gamma-nan', lambda c, m: _train(c, '--gamma', 'nan'), 2, "'--gamma'"),
    ('train-gamma-negative', lambda c, m: _train(c, '--gamma', '-1'), 2, "'--gamma'"),
    ('train-gamma-inf', lambda c, m: _train(c, '--gamma', 'inf'), 2, "'--gamma'"),
    ('train-kd-weight-nan', lambda c, m: _qc_train(c, '--kd-weight', 'nan'), 2, "'--kd-weight'"),
    ('train-kd-weight-negative', lambda c, m: _qc_train(c, '--kd-weight', '-3'), 2, "'--kd-weight'"),
    ('train-p-out-of-range', lambda c, m: _train(c, '--aug', 'fixed', '--p', '1.5'), 2, "'--p'"),
    ('train-target-nan', lambda c, m: _train(c, '--target', 'nan'), 2, "'--target'"),
    ('train-qc-blocks-0', lambda c, m: _qc_train(c, '--qc-blocks', '0'), 2, "'--qc-blocks'"),
    ('train-kimg-0', lambda c, m: _train(c, '--kimg', '0'), 2, "'--kimg'"),
    ('generate-trunc-nan', lambda c, m: _generate(c, '--trunc', 'nan'), 2, "'--trunc'"),
    ('generate-trunc-negative', lambda c, m: _generate(c, '--trunc', '-0.5'), 2, "'--trunc'"),
    ('generate-trunc-above-1', lambda c, m: _generate(c, '--trunc', '1.5'), 2, "'--trunc'"),
    ('train_encoder-lr-nan', lambda c, m: _train_encoder(c, '--lr', 'nan'), 2, "'--lr'"),
    ('train_encoder-lr-zero', lambda c, m: _train_encoder(c, '--lr', '0'), 2, "'--lr'"),
    ('train_encoder-lr-negative', lambda c, m: _train_encoder(c, '--lr', '-1e-4'), 2, "'--lr'"),
    ('train_encoder-weight-negative', lambda c, m: _train_encoder(c, '--l2', '-1'), 2, "'--l2'"),
    ('train_encoder-trunc-nan', lambda c, m: _train_encoder(c, '--trunc', 'nan'), 2, "'--trunc'"),
    # Blur with a non-positive sigma (or kernel size).
    ('invert-blur-sigma-zero', lambda c, m: _invert(c, '--degradation', 'blur:gauss:0'), 2, 'sigma must be a positive number'),
    ('invert-blur-sigma-negative', lambda c, m: _invert(c, '--degradation', 'blur:gauss:-2'), 2, 'sigma must be a positive number'),
    ('invert-blur-box-zero', lambda c, m: _invert(c, '--degradation', 'blur:box:0'), 2, 'box size must be at least 1'),
    # Options the network cannot use.
    ('generate-class-on-unconditional', lambda c, m: _generate(c, '--class', '0'), 2, 'unconditional'),
    ('generate-q-on-plain', lambda c, m: _generate(c, '--q', 'seed:1'), 2, 'no quality code'),
    ('generate-q-random-on-plain', lambda c, m: _generate(c, '--q', 'random'), 2, 'no quality code'),
    ('invert-method-qc-on-plain', lambda c, m: _invert(c, '--method', 'qc'), 2, 'only for QC-StyleGAN'),
    ('invert-encoder-with-dgp', lambda c, m: _invert(c, '--method', 'dgp', '--encoder', str(c.text)), 2, '--method dgp cannot start from an encoder'),
    ('bench_restore-encoder-without-qc', lambda c, m: _bench_restore(c, '--encoder', str(c.text)), 2, '--encoder is only used by the qc method'),
    # Pretrained weights missing while offline.
    ('invert-lpips-weights-offline', lambda c, m: (_offline_without_weights(m, c), _invert(c, '--lpips-backbone', 'pretrained'))[1], 1, 'DNNLIB_OFFLINE'),
    ('train_encoder-resnet-weights-missing', lambda c, m: _train_encoder(c, '--backbone-weights', str(c.tmp / 'missing-resnet34.pth')), 1, 'not found'),
    ('train_encoder-id-weights-missing', lambda c, m: _train_encoder(c, '--id-weight', '0.1', '--id-weights', str(c.tmp / 'missing-ir50.pt')), 1, 'file not found'),
    ('train_encoder-id-weights-not-given', lambda c, m: _train_encoder(c, '--id-weight', '0.1'), 1, '--id-weights'),
]

@pytest.mark.parametrize('case', CASES, ids=[case[0] for case in CASES])
def test_bad_input_gives_one_line(case, tmp_path, faces16, monkeypatch):
    _name, build, code, expected = case
    monkeypatch.delenv('QCGAN_TRUST_PICKLE', raising=False)
    ctx = Ctx(tmp_path, faces16)
    before = _tree(tmp_path)
    command, args = build(ctx, monkeypatch)
    result = CliRunner().invoke(command, args)
    monkeypatch.undo()
    output = result.output
    assert 'Traceback' not in output, output[-3000:]
    assert isinstance(result.exception, SystemExit) or result.exception is None, repr(result.exception)
    assert result.exit_code == code, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith('Error:')]
    assert len(errors) == 1, output[-3000:]
    assert expected in errors[0], errors[0]
    # Nothing partial: no temporary files, no run folder or outputs.
    added = sorted(_tree(tmp_path) - before)
    leftovers = [p for p in added if p.endswith('.tmp') or '.tmp' in os.path.basename(p) or (os.path.isfile(p) and os.path.getsize(p) == 0)]
    assert leftovers == [], leftovers
    out = tmp_path / 'out'
    if out.exists():
        assert [p for p in _tree(out) if os.path.isfile(p)] == [], _tree(out)
        assert all(not os.listdir(p) == [] or p == str(out) for p in _tree(out) if os.path.isdir(p)), _tree(out)

def _tree(root):
    found = set()
    for folder, dirs, files in os.walk(root):
        found.update(os.path.join(folder, d) for d in dirs)
        found.update(os.path.join(folder, f) for f in files)
    return found

#----------------------------------------------------------------------------
# Run folders.

def _make_run_dir_worker(args):
    outdir, desc, barrier = args
    barrier.wait()
    return dnnlib.util.make_run_dir(outdir, desc)

def test_make_run_dir_is_atomic_across_processes(tmp_path):
    ctx = multiprocessing.get_context('fork')
    num = 8
    with ctx.Manager() as manager:
        barrier = manager.Barrier(num)
        with ctx.Pool(num) as pool:
            dirs = pool.map(_make_run_dir_worker, [(str(tmp_path), f'desc{i % 3}', barrier) for i in range(num)])
    numbers = sorted(int(os.path.basename(d)[:5]) for d in dirs)
    assert numbers == list(range(num))
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(d) for d in dirs)  # no leftover reservations

def test_two_training_runs_started_at_once_both_train(tmp_path, faces16):
    script = ('import sys, train, torch\n'
              'from training import training_loop\n'
              'torch.set_num_threads(1)\n'
              'real = training_loop.training_loop\n'
              'training_loop.training_loop = lambda **kw: real(**dict(kw, max_steps=2))\n'
              'sys.argv = ["train.py"] + sys.argv[1:]\n'
              'train.main()\n')
    args = ['--outdir', str(tmp_path / 'runs'), '--data', faces16, '--cfg', 'tiny', '--device', 'cpu', '--workers', '0',
            '--batch', '4', '--snap', '1', '--kimg', '1', '--aug', 'noaug']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env.pop('QCGAN_TRUST_PICKLE', None)
    procs = [subprocess.Popen([sys.executable, '-c', script, *args], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-3000:]
    runs = sorted(os.listdir(tmp_path / 'runs'))
    assert len(runs) == 2 and runs[0].startswith('00000-') and runs[1].startswith('00001-'), runs
    for run in runs:
        names = os.listdir(tmp_path / 'runs' / run)
        assert 'checkpoint.pt' in names and any(n.startswith('network-snapshot-') for n in names), names

def test_failed_start_leaves_no_run_folder(tmp_path, faces16, monkeypatch):
    import train
    from training import training_loop
    def failing_loop(**kwargs):
        raise legacy.NetworkLoadError('simulated failure at start')
    monkeypatch.setattr(training_loop, 'training_loop', failing_loop)
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path / 'runs'), '--data', faces16, '--cfg', 'tiny', '--device', 'cpu', '--workers', '0'])
    assert result.exit_code == 1 and 'simulated failure at start' in result.output, result.output
    assert os.listdir(tmp_path / 'runs') == []

def test_continued_run_names_do_not_chain():
    assert dnnlib.util.continued_run_desc('/r/00003-faces16-tiny/checkpoint.pt') == 'faces16-tiny-continued'
    assert dnnlib.util.continued_run_desc('/r/00007-faces16-tiny-continued/checkpoint.pt') == 'faces16-tiny-continued'

def test_stale_tmp_files_are_removed(tmp_path):
    (tmp_path / '.checkpoint.pt.abc123.tmp').write_bytes(b'partial')
    (tmp_path / '.network-snapshot-000004.pkl.x1.tmp').write_bytes(b'partial')
    (tmp_path / 'keep.tmp.png').write_bytes(b'png')
    removed = dnnlib.util.remove_stale_tmp_files(str(tmp_path))
    assert len(removed) == 2 and sorted(os.listdir(tmp_path)) == ['keep.tmp.png']

#----------------------------------------------------------------------------
# Permissions of written files: 0666 & ~umask, like any other file.

@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)

def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)

def test_written_files_have_normal_modes(tmp_path, faces16, umask022):
    import dataset_tool
    import generate
    from torch_utils import image_utils
    data = legacy.init_network('tiny32')
    legacy.save_network_pkl(data, str(tmp_path / 'network-snapshot-000000.pkl'))
    legacy.save_weights(data, str(tmp_path / 'net.safetensors'))
    image_utils.save_image_grid(torch.zeros([4, 3, 8, 8]), str(tmp_path / 'fakes000000.png'), grid_size=(2, 2))
    dataset_tool.convert_dataset(source='builtin:lfw-faces', dest=str(tmp_path / 'd.zip'), max_images=2, resolution=16)
    dataset_tool.convert_dataset(source='builtin:lfw-faces', dest=str(tmp_path / 'dfolder'), max_images=2, resolution=16)
    result = CliRunner().invoke(generate.generate_main, ['--network', str(tmp_path / 'net.safetensors'), '--seeds', '0',
                                                         '--outdir', str(tmp_path / 'gen'), '--device', 'cpu', '--grid'])
    assert result.exit_code == 0, result.output
    with dnnlib.util.atomic_write(str(tmp_path / 'results.json'), 'w') as f:
        f.write('{}')
    for name in ['network-snapshot-000000.pkl', 'net.safetensors', 'fakes000000.png', 'd.zip', 'gen/seed0000.png', 'gen/grid.png', 'results.json']:
        assert _mode(tmp_path / name) == 0o644, (name, oct(_mode(tmp_path / name)))
    assert _mode(tmp_path / 'dfolder') == 0o755
    assert _mode(tmp_path / 'dfolder' / 'dataset.json') == 0o644
    old = os.umask(0o077)
    try:
        legacy.save_network_pkl(data, str(tmp_path / 'private.pkl'))
    finally:
        os.umask(old)
    assert _mode(tmp_path / 'private.pkl') == 0o600  # the umask is honoured, not overridden

def test_training_run_files_have_normal_modes(tmp_path, faces16, umask022):
    sys.path.insert(0, os.path.join(REPO_ROOT, 'tests'))
    from test_training import loop_kwargs, run_loop
    args = loop_kwargs(faces16, tmp_path / 'run', aug='noaug')
    result = run_loop(args, max_steps=1, network_snapshot_ticks=1, image_snapshot_ticks=1)
    names = os.listdir(tmp_path / 'run')
    for name in names:
        if name.endswith(('.pkl', '.pt', '.png', '.jsonl')):
            assert _mode(tmp_path / 'run' / name) == 0o644, (name, oct(_mode(tmp_path / 'run' / name)))
    assert os.path.exists(result.checkpoint)

#----------------------------------------------------------------------------

def test_resume_continues_numbering_history_and_cleans_stale_tmp(tmp_path, faces16, monkeypatch):
    import json
    import train
    from training import training_loop
    sys.path.insert(0, os.path.join(REPO_ROOT, 'tests'))
    from test_training import loop_kwargs, run_loop
    first = tmp_path / 'runs' / '00000-faces16-tiny'
    args = loop_kwargs(faces16, first, aug='noaug', kimg_per_tick=0.008)
    args.pop('training_options', None)
    result = run_loop(args, max_steps=2, network_snapshot_ticks=1, training_options=dict(dict(args), device_type='cpu'))
    stale = first / '.checkpoint.pt.k1ll3d.tmp'
    stale.write_bytes(b'half a checkpoint')
    real = training_loop.training_loop
    monkeypatch.setattr(training_loop, 'training_loop', lambda **kw: real(**dict(kw, max_steps=4)))
    monkeypatch.delenv('QCGAN_TRUST_PICKLE', raising=False)
    out = CliRunner().invoke(train.main, ['--outdir', str(tmp_path / 'runs'), '--resume', result.checkpoint, '--device', 'cpu'])
    assert out.exit_code == 0, out.output[-3000:]
    assert not stale.exists()
    second = tmp_path / 'runs' / '00001-faces16-tiny-continued'
    assert second.is_dir(), os.listdir(tmp_path / 'runs')
    def kimgs(run):
        with open(run / 'stats.jsonl') as f:
            return [json.loads(line)['Progress/kimg']['mean'] for line in f]
    old, new = kimgs(first), kimgs(second)
    assert new[:len(old)] == old and len(new) > len(old)  # one history: the old ticks, then the new ones
    assert new == sorted(new)
    # Continuing the continued run: the next number, no "-continued-continued".
    out = CliRunner().invoke(train.main, ['--outdir', str(tmp_path / 'runs'), '--resume', str(second / 'checkpoint.pt'), '--device', 'cpu'])
    assert out.exit_code == 0, out.output[-3000:]
    assert sorted(os.listdir(tmp_path / 'runs')) == ['00000-faces16-tiny', '00001-faces16-tiny-continued', '00002-faces16-tiny-continued']
    assert kimgs(tmp_path / 'runs' / '00002-faces16-tiny-continued')[:len(new)] == new
