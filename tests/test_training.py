"""Training loop and train.py: weights change, snapshots, exact resume, multi-process, bad input."""

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import dnnlib
import legacy
import train
from torch_utils import training_stats
from training import training_loop
from training.loss import StyleGAN2Loss

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#----------------------------------------------------------------------------

def loop_kwargs(data, run_dir, aug='ada', **overrides):
    """training_loop kwargs for a very small network on 16x16 data (fast on CPU)."""
    _desc, args = train.setup_training_loop_kwargs(data=data, cfg='tiny', aug=aug, workers=0, device='cpu', batch=8)
    args.G_kwargs.z_dim = args.G_kwargs.w_dim = 16
    args.G_kwargs.synthesis_kwargs.update(channel_base=128, channel_max=16)
    args.D_kwargs.update(channel_base=128, channel_max=16)
    args.D_reg_interval = 4  # exercise R1 in short runs
    args.run_dir = str(run_dir)
    args.image_grid_size = [4, 2]
    args.kimg_per_tick = 1000
    args.pop('device_type')
    args.update(overrides)
    os.makedirs(args.run_dir, exist_ok=True)
    return args

def run_loop(args, **kwargs):
    training_stats.reset()
    return training_loop.training_loop(device=torch.device('cpu'), log_fn=lambda *a, **k: None, **dict(args, **kwargs))

def params_of(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}

#----------------------------------------------------------------------------

def test_few_iterations_change_weights_and_write_outputs(faces16, tmp_path):
    args = loop_kwargs(faces16, tmp_path / 'run')
    torch.manual_seed(0)
    result = run_loop(args, max_steps=3, network_snapshot_ticks=1, image_snapshot_ticks=1)
    names = set(os.listdir(tmp_path / 'run'))
    assert {'reals.png', 'fakes_init.png', 'stats.jsonl', 'checkpoint.pt'} <= names
    assert any(n.startswith('network-snapshot-') for n in names) and any(n.startswith('fakes0') for n in names)
    assert any(n.startswith('events.out.tfevents') for n in names)

    with open(result.snapshot_pkl, 'rb') as f:
        snap = legacy.load_network_pkl(f)
    assert set(snap) >= {'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'}
    assert snap['training_set_kwargs']['path'] == faces16
    assert all(torch.equal(p, q) for p, q in zip(result.G.parameters(), snap['G'].parameters()))
    # More steps from the same seed move the weights further (G and D both train).
    one = run_loop(loop_kwargs(faces16, tmp_path / 'one'), max_steps=1, network_snapshot_ticks=None, image_snapshot_ticks=None)
    for name in ['G', 'D']:
        pairs = list(zip(one[name].parameters(), result[name].parameters()))
        changed = sum(not torch.equal(p, q) for p, q in pairs)
        assert changed > 0.8 * len(pairs), name

    lines = [json.loads(line) for line in open(tmp_path / 'run' / 'stats.jsonl')]
    assert 'Loss/G/loss' in lines[-1] and np.isfinite(lines[-1]['Loss/D/loss']['mean'])
    assert lines[-1]['Progress/kimg']['mean'] == pytest.approx(0.024)

def test_exact_resume_matches_uninterrupted_run(faces16, tmp_path):
    # ADA is active (p starts at 0.1 and adapts every 4 steps), R1 runs every 4 steps, PL every 4.
    # target 0.01 is no mean of 32 signs, so every adjustment moves p (with target 0 a tie leaves it in place).
    ada = dict(ada_kimg=1, ada_target=0.01, augment_p=0.1)
    # Uninterrupted: 9 steps.
    full = run_loop(loop_kwargs(faces16, tmp_path / 'a', **ada), max_steps=9, image_snapshot_ticks=None, network_snapshot_ticks=None)
    # Interrupted after 5 steps (checkpoint written at the end, one step into an ADA interval), then 4 more.
    first = run_loop(loop_kwargs(faces16, tmp_path / 'b', **ada), max_steps=5, image_snapshot_ticks=None, network_snapshot_ticks=1000)
    assert first.checkpoint is not None and first.cur_nimg == 40
    resumed = run_loop(loop_kwargs(faces16, tmp_path / 'c', **ada), max_steps=4, image_snapshot_ticks=None,
                       network_snapshot_ticks=None, resume_checkpoint=first.checkpoint)
    assert resumed.cur_nimg == full.cur_nimg == 72
    for name in ['G', 'D', 'G_ema']:
        a = params_of(full[name])
        b = params_of(resumed[name])
        assert all(torch.equal(a[k], b[k]) for k in a), f'{name} differs after resume'
    assert torch.equal(full.G.mapping.w_avg, resumed.G.mapping.w_avg)
    assert float(full.augment_pipe.p) == float(resumed.augment_pipe.p)
    assert float(first.augment_pipe.p) != pytest.approx(0.1)  # ADA adjusted p during the run
    assert torch.equal(full.loss.pl_mean, resumed.loss.pl_mean) and float(full.loss.pl_mean) > 0
    # A run that lost the state (weights only, as the reference resume does) ends elsewhere.
    weights_only = run_loop(loop_kwargs(faces16, tmp_path / 'd', **ada, resume_pkl=first.snapshot_pkl), max_steps=4,
                            image_snapshot_ticks=None, network_snapshot_ticks=None)
    assert not all(torch.equal(p, q) for p, q in zip(weights_only.G.parameters(), full.G.parameters()))

def test_ada_moves_p_toward_target(faces16, tmp_path):
    up = run_loop(loop_kwargs(faces16, tmp_path / 'up', ada_target=-1.0, ada_kimg=1), max_steps=8,
                  image_snapshot_ticks=None, network_snapshot_ticks=None)
    assert float(up.augment_pipe.p) == pytest.approx(2 * 8 * 4 / 1000)  # two adjustments of batch*interval/(ada_kimg*1000)
    down = run_loop(loop_kwargs(faces16, tmp_path / 'down', ada_target=1.0, ada_kimg=1, augment_p=0.2), max_steps=8,
                    image_snapshot_ticks=None, network_snapshot_ticks=None)
    assert float(down.augment_pipe.p) == pytest.approx(0.2 - 2 * 8 * 4 / 1000)

class NaNLoss:
    """A loss that poisons G after its first phase, to exercise the divergence guard."""
    def __init__(self, device, G, D, augment_pipe=None, **kwargs):
        self.inner = StyleGAN2Loss(device, G, D, augment_pipe, **kwargs)
        self.G = G
    def accumulate_gradients(self, **kwargs):
        self.inner.accumulate_gradients(**kwargs)
        with torch.no_grad():
            self.G.synthesis.b4.conv1.weight.fill_(float('nan'))
    def state_dict(self):
        return self.inner.state_dict()

def test_divergence_stops_without_writing_a_bad_snapshot(faces16, tmp_path, monkeypatch):
    monkeypatch.setenv('QCGAN_TRUST_PICKLE', '1')  # the loss class lives in this test module, not in training/
    args = loop_kwargs(faces16, tmp_path / 'nan', aug='noaug')
    args.loss_kwargs.class_name = 'test_training.NaNLoss'
    with pytest.raises(training_loop.TrainingDiverged, match='non-finite'):
        run_loop(args, max_steps=2, network_snapshot_ticks=1)
    assert not any(n.endswith('.pkl') for n in os.listdir(tmp_path / 'nan'))

def test_disk_full_during_snapshot_leaves_nothing_partial(faces16, tmp_path, monkeypatch):
    args = loop_kwargs(faces16, tmp_path / 'full', aug='noaug')
    def failing_save(data, path):
        with dnnlib.util.atomic_write(path, 'wb') as f:
            f.write(b'partial data')
            raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(legacy, 'save_network_pkl', failing_save)
    with pytest.raises(training_loop.SnapshotWriteError, match='disk is full'):
        run_loop(args, max_steps=1, network_snapshot_ticks=1)
    leftovers = [n for n in os.listdir(tmp_path / 'full') if n.endswith(('.pkl', '.tmp', '.pt'))]
    assert leftovers == []

#----------------------------------------------------------------------------
# Several processes (gloo on CPU).

def _worker(rank, args, init_file, out_dir, fail_rank):
    torch.set_num_threads(1)
    torch.distributed.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=2)
    training_stats.init_multiprocessing(rank=rank, sync_device=torch.device('cpu'))
    if rank == fail_rank:
        raise RuntimeError('simulated crash of one rank')
    result = training_loop.training_loop(rank=rank, device=torch.device('cpu'), log_fn=lambda *a, **k: None, **args)
    torch.save({name: p.detach() for name, p in result.G.named_parameters()}, os.path.join(out_dir, f'G_rank{rank}.pt'))
    torch.distributed.destroy_process_group()

@pytest.mark.slow
def test_two_process_gloo_run_keeps_ranks_identical(faces16, tmp_path):
    args = loop_kwargs(faces16, tmp_path / 'ddp', num_gpus=2, max_steps=2, network_snapshot_ticks=1, image_snapshot_ticks=None)
    torch.multiprocessing.spawn(_worker, args=(dict(args), str(tmp_path / 'init'), str(tmp_path), None), nprocs=2)
    g0 = torch.load(tmp_path / 'G_rank0.pt')
    g1 = torch.load(tmp_path / 'G_rank1.pt')
    assert all(torch.equal(g0[k], g1[k]) for k in g0)
    init_G = dnnlib.util.construct_class_by_name(**args.G_kwargs, c_dim=0, img_resolution=16, img_channels=3)
    assert any(not torch.equal(p, g0[name]) for name, p in init_G.named_parameters())
    assert any(n.startswith('network-snapshot-') for n in os.listdir(tmp_path / 'ddp'))

@pytest.mark.slow
def test_a_dying_rank_stops_the_others(faces16, tmp_path):
    args = loop_kwargs(faces16, tmp_path / 'die', num_gpus=2, max_steps=50, image_snapshot_ticks=None, network_snapshot_ticks=None)
    with pytest.raises(torch.multiprocessing.ProcessRaisedException, match='simulated crash'):
        torch.multiprocessing.spawn(_worker, args=(dict(args), str(tmp_path / 'init'), str(tmp_path), 1), nprocs=2)

#----------------------------------------------------------------------------
# train.py command line.

def test_train_cli_dry_run_and_presets(faces16, tmp_path):
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path), '--data', faces16, '--cfg', 'paper256', '--dry-run', '--device', 'cpu'])
    assert result.exit_code == 0, result.output
    assert 'Dry run' in result.output and '"r1_gamma": 1' in result.output and '"batch_size": 64' in result.output
    assert not os.listdir(tmp_path)
    _desc, args = train.setup_training_loop_kwargs(data=faces16, cfg='auto', gpus=1, device='cpu')
    assert args.batch_size == 32 and args.loss_kwargs.r1_gamma == pytest.approx(0.0002 * 16 ** 2 / 32)
    _desc, args = train.setup_training_loop_kwargs(data=faces16, cfg='cifar', device='cpu')
    assert args.loss_kwargs.pl_weight == 0 and args.D_kwargs.architecture == 'orig'
    desc, _args = train.setup_training_loop_kwargs(data=faces16, cfg='stylegan2', mirror=True, gamma=5, kimg=3, device='cpu')
    assert desc == 'faces16-mirror-stylegan2-gamma5-kimg3'

def test_train_cli_aug_geom_reaches_the_augment_pipe(faces16, tmp_path):
    _desc, args = train.setup_training_loop_kwargs(data=faces16, cfg='tiny', device='cpu')
    assert 'geom_mode' not in args.augment_kwargs  # the official execution (AugmentPipe's default)
    desc, args = train.setup_training_loop_kwargs(data=faces16, cfg='tiny', aug_geom='exact-copy', device='cpu')
    assert args.augment_kwargs.geom_mode == 'exact-copy' and desc.endswith('-geomexact-copy')
    pipe = dnnlib.util.construct_class_by_name(**args.augment_kwargs)
    assert pipe.geom_mode == 'exact-copy'
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path), '--data', faces16, '--cfg', 'tiny', '--device', 'cpu',
                                             '--aug-geom', 'exact-copy', '--dry-run'])
    assert result.exit_code == 0 and '"geom_mode": "exact-copy"' in result.output, result.output

@pytest.mark.parametrize('extra, message', [
    (['--cond', '1'], 'labels'),
    (['--gpus', '2', '--batch', '7'], 'divisible'),
    (['--gpus', '3'], 'power of two'),
    (['--aug', 'fixed'], '--p'),
    (['--resume', 'nosuchnet'], 'unknown network'),
    (['--metrics', 'fid9000'], 'unknown metric'),
    (['--aug', 'noaug', '--aug-geom', 'exact-copy'], '--aug-geom cannot be specified'),
    (['--aug-geom', 'copy'], "'copy' is not one of"),
])
def test_train_cli_bad_options(faces16, tmp_path, extra, message):
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path), '--data', faces16, '--cfg', 'tiny', '--device', 'cpu'] + extra)
    assert result.exit_code != 0
    assert message in result.output and 'Traceback' not in result.output

def test_train_cli_bad_data(tmp_path):
    (tmp_path / 'empty').mkdir()
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path / 'o'), '--data', str(tmp_path / 'empty'), '--device', 'cpu'])
    assert result.exit_code != 0 and 'No image files' in result.output
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path / 'o'), '--data', str(tmp_path / 'missing.zip'), '--device', 'cpu'])
    assert result.exit_code != 0 and 'does not exist' in result.output

def test_resume_file_of_the_wrong_kind(faces16, tmp_path):
    bad = tmp_path / 'notes.pkl'
    bad.write_text('these are not network weights')
    args = loop_kwargs(faces16, tmp_path / 'r', resume_pkl=str(bad))
    with pytest.raises(legacy.NetworkLoadError, match='not a readable network pickle'):
        run_loop(args, max_steps=1)

def test_train_cli_resume_file_of_the_wrong_kind(faces16, tmp_path):
    bad = tmp_path / 'notes.pkl'
    bad.write_text('these are not network weights')
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path / 'o'), '--data', faces16, '--cfg', 'tiny', '--device', 'cpu',
                                             '--workers', '0', '--resume', str(bad)])
    assert result.exit_code == 1 and 'not a network file' in result.output
    assert 'Traceback' not in result.output
    assert not os.path.exists(tmp_path / 'o') or os.listdir(tmp_path / 'o') == []  # refused before making a run folder

def test_exact_resume_refuses_changed_options(faces16, tmp_path):
    args = loop_kwargs(faces16, tmp_path / 'src', training_options=None)
    opts = dict(args)
    result = run_loop(args, max_steps=1, network_snapshot_ticks=1, training_options=dict(opts, device_type='cpu'))
    out = CliRunner().invoke(train.main, ['--outdir', str(tmp_path / 'o'), '--data', faces16, '--resume', result.checkpoint, '--gamma', '3'])
    assert out.exit_code != 0 and '--gamma' in out.output and 'cannot change' in out.output
    out = CliRunner().invoke(train.main, ['--outdir', str(tmp_path / 'o'), '--resume', result.checkpoint, '--kimg', '1', '--dry-run'])
    assert out.exit_code == 0, out.output
    assert 'continued' in out.output and 'resume_checkpoint' in out.output

#----------------------------------------------------------------------------

@pytest.mark.slow
def test_train_py_process_entry_with_two_gloo_ranks(faces16, tmp_path):
    """The same entry point `train.py --gpus 2 --device cpu` spawns; the snapshot runs the DDP consistency check."""
    args = loop_kwargs(faces16, tmp_path / 'spawned', num_gpus=2, max_steps=2, network_snapshot_ticks=1, image_snapshot_ticks=None)
    args.device_type = 'cpu'
    torch.multiprocessing.spawn(train.subprocess_fn, args=(args, str(tmp_path)), nprocs=2)
    names = os.listdir(tmp_path / 'spawned')
    assert 'log.txt' in names and 'checkpoint.pt' in names
    assert any(n.startswith('network-snapshot-') for n in names)

@pytest.mark.slow
def test_torchrun_launch_dry_run(faces16, tmp_path):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29517',
           os.path.join(REPO_ROOT, 'train.py'), '--outdir', str(tmp_path / 'out'), '--data', faces16, '--cfg', 'tiny',
           '--device', 'cpu', '--dry-run']
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('Training options:') == 1  # printed by rank 0 only
    assert '"num_gpus": 2' in proc.stdout
