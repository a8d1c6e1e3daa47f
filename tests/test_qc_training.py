"""QC-StyleGAN fine-tuning: what is trained, snapshots and grids, exact resume, CLI, generate.py."""

import os

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import legacy
from training import qc as qc_surgery
import train
from torch_utils import training_stats
from training import training_loop

#----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def stock16(stock16_pkl):
    """A small plain StyleGAN2 network pickle (random weights) to fine-tune (see conftest.py)."""
    return stock16_pkl

def qc_args(data, resume, run_dir, **overrides):
    _desc, args = train.setup_training_loop_kwargs(data=data, cfg='tiny', aug='ada', workers=0, device='cpu', batch=8,
                                                   qc=True, resume=resume, q_dim=4, train_blocks=2)
    args.pop('device_type')
    args.run_dir = str(run_dir)
    args.image_grid_size = [4, 2]
    args.kimg_per_tick = 1000
    args.D_reg_interval = 4
    args.update(overrides)
    os.makedirs(args.run_dir, exist_ok=True)
    return args

def run_loop(args, **kwargs):
    training_stats.reset()
    return training_loop.training_loop(device=torch.device('cpu'), log_fn=lambda *a, **k: None, **dict(args, **kwargs))

#----------------------------------------------------------------------------

def test_qc_steps_train_only_the_last_blocks_and_both_discriminators(faces16, stock16, tmp_path):
    start = qc_surgery.load_qc_network(stock16, q_dim=4, seed=0)
    result = run_loop(qc_args(faces16, stock16, tmp_path / 'run'), max_steps=3, network_snapshot_ticks=1, image_snapshot_ticks=1)
    G0 = dict(start['G'].named_parameters())
    for name, p in result.G.named_parameters():
        trained_block = name.startswith(('synthesis.b8.', 'synthesis.b16.'))
        if not trained_block:
            assert torch.equal(p, G0[name]), f'{name} should be frozen'
    changed = [name for name, p in result.G.named_parameters() if not torch.equal(p, G0[name])]
    assert any('convq' in n for n in changed) and any('b16.conv1' in n for n in changed) and any('b8.conv0' in n for n in changed)
    assert not torch.equal(result.G.mapping.w_avg, start["G"].mapping.w_avg)  # frozen weights, but w_avg keeps tracking (as released)
    # G_ema as released: EMA for b16 and b8 without its conv0; every other parameter copied from G.
    ema_names = qc_surgery.qc_ema_parameter_names(result.G)
    G_params = dict(result.G.named_parameters())
    for name, p in result.G_ema.named_parameters():
        if name not in ema_names:
            assert torch.equal(p, G_params[name]), f'{name} should be copied into G_ema'
    assert torch.equal(result.G_ema.synthesis.b8.conv0.weight, result.G.synthesis.b8.conv0.weight)
    assert not torch.equal(result.G_ema.synthesis.b16.conv1.weight, result.G.synthesis.b16.conv1.weight)
    for name, module in [('D', result.D), ('D_degraded', result.loss.D_degraded)]:
        before = dict(start[name].named_parameters())
        assert sum(not torch.equal(p, before[n]) for n, p in module.named_parameters()) > 0.8 * len(before), name

    files = set(os.listdir(tmp_path / 'run'))
    assert {'reals.png', 'reals_degraded.png', 'fakes_init.png', 'fakes_degraded_init.png', 'checkpoint.pt'} <= files
    assert any(f.startswith('fakes_degraded0') for f in files)
    with open(result.snapshot_pkl, 'rb') as f:
        snap = legacy.load_network_pkl(f)
    assert qc_surgery.is_qc_network(snap) and snap['G_ema'].q_dim == 4
    assert snap['training_set_kwargs']['degradation'] == 'qc_stylegan_train'
    # Degraded reals really differ from the sharp ones.
    sharp = np.asarray(PIL.Image.open(tmp_path / 'run' / 'reals.png'), dtype=np.float32)
    degraded = np.asarray(PIL.Image.open(tmp_path / 'run' / 'reals_degraded.png'), dtype=np.float32)
    assert np.abs(sharp - degraded).mean() > 2

def test_qc_exact_resume(faces16, stock16, tmp_path):
    full = run_loop(qc_args(faces16, stock16, tmp_path / 'a'), max_steps=5, image_snapshot_ticks=None, network_snapshot_ticks=None)
    first = run_loop(qc_args(faces16, stock16, tmp_path / 'b'), max_steps=3, image_snapshot_ticks=None, network_snapshot_ticks=1000)
    resumed = run_loop(qc_args(faces16, stock16, tmp_path / 'c'), max_steps=2, image_snapshot_ticks=None,
                       network_snapshot_ticks=None, resume_checkpoint=first.checkpoint)
    for a, b in [(full.G, resumed.G), (full.D, resumed.D), (full.loss.D_degraded, resumed.loss.D_degraded), (full.G_ema, resumed.G_ema)]:
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert torch.equal(full.loss.pl_degraded_mean, resumed.loss.pl_degraded_mean)

def test_qc_cli_errors_and_dry_run(faces16, stock16, tmp_path):
    runner = CliRunner()
    out = runner.invoke(train.main, ['--outdir', str(tmp_path), '--data', faces16, '--qc', '--device', 'cpu'])
    assert out.exit_code != 0 and '--resume' in out.output
    out = runner.invoke(train.main, ['--outdir', str(tmp_path), '--data', faces16, '--q-dim', '8', '--device', 'cpu'])
    assert out.exit_code != 0 and 'need --qc' in out.output
    out = runner.invoke(train.main, ['--outdir', str(tmp_path), '--data', faces16, '--qc', '--resume', stock16,
                                     '--degradation', str(tmp_path / 'nope.json'), '--device', 'cpu'])
    assert out.exit_code != 0 and '--degradation' in out.output and 'Traceback' not in out.output
    out = runner.invoke(train.main, ['--outdir', str(tmp_path), '--data', faces16, '--qc', '--resume', stock16,
                                     '--cfg', 'tiny', '--kd-weight', '1.5', '--device', 'cpu', '--dry-run'])
    assert out.exit_code == 0, out.output
    assert 'QCStyleGAN2Loss' in out.output and '"kd_weight": 1.5' in out.output and '-qc' in out.output
    assert '"ema": "released"' in out.output
    out = runner.invoke(train.main, ['--outdir', str(tmp_path), '--data', faces16, '--qc', '--resume', stock16,
                                     '--cfg', 'tiny', '--qc-ema', 'full', '--device', 'cpu', '--dry-run'])
    assert out.exit_code == 0 and '"ema": "full"' in out.output, out.output
    out = runner.invoke(train.main, ['--outdir', str(tmp_path), '--data', faces16, '--qc-ema', 'full', '--device', 'cpu'])
    assert out.exit_code != 0 and 'need --qc' in out.output

def test_generate_qc_pairs_and_strip(stock16, tmp_path):
    import generate
    qc = qc_surgery.load_qc_network(stock16, q_dim=4)
    path = str(tmp_path / 'qc.pkl')
    legacy.save_network_pkl({k: v for k, v in qc.items() if k != 'G_teacher'}, path)
    np.save(tmp_path / 'q.npy', np.full([4], 2.0))
    runner = CliRunner()
    out = runner.invoke(generate.generate_main, ['--network', path, '--seeds', '0-1', '--outdir', str(tmp_path / 'o'),
                                                 '--q-from', 'zero', '--q-to', str(tmp_path / 'q.npy'), '--steps', '4', '--grid'])
    assert out.exit_code == 0, out.output
    files = set(os.listdir(tmp_path / 'o'))
    assert {'seed0000.png', 'seed0000_degraded.png', 'seed0000_pair.png', 'seed0000_qstrip.png', 'grid.png'} <= files
    pair = np.asarray(PIL.Image.open(tmp_path / 'o' / 'seed0000_pair.png'))
    strip = np.asarray(PIL.Image.open(tmp_path / 'o' / 'seed0000_qstrip.png'))
    assert pair.shape == (16, 32, 3) and strip.shape == (16, 64, 3)
    assert np.array_equal(strip[:, :16], np.asarray(PIL.Image.open(tmp_path / 'o' / 'seed0000.png')))  # q = 0 end is sharp
    assert not np.array_equal(pair[:, :16], pair[:, 16:])
    out = runner.invoke(generate.generate_main, ['--network', path, '--seeds', '0', '--outdir', str(tmp_path / 'x'), '--q', str(tmp_path / 'bad.npy')])
    assert out.exit_code != 0 and 'bad.npy' in out.output
    np.save(tmp_path / 'wrong.npy', np.zeros([5]))
    out = runner.invoke(generate.generate_main, ['--network', path, '--seeds', '0', '--outdir', str(tmp_path / 'x'), '--q', str(tmp_path / 'wrong.npy')])
    assert out.exit_code != 0 and 'expected [4]' in out.output
    out = runner.invoke(generate.generate_main, ['--network', stock16, '--seeds', '0', '--outdir', str(tmp_path / 'x'), '--q-seed', '3'])
    assert out.exit_code != 0 and 'no quality code' in out.output

#----------------------------------------------------------------------------

def test_qc_metrics_in_both_modes(faces16, stock16, tmp_path, monkeypatch):
    from test_metrics import TinyDetector, save_scripted
    detector = str(tmp_path / 'inception.pt')
    save_scripted(TinyDetector(), detector)
    monkeypatch.setenv('QCGAN_DETECTOR_INCEPTION', detector)
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    run_loop(qc_args(faces16, stock16, tmp_path / 'm'), max_steps=1, network_snapshot_ticks=1, image_snapshot_ticks=None,
             metrics=['fid100_full'])
    import json
    sharp = json.loads(open(tmp_path / 'm' / 'metric-fid100_full.jsonl').readline())
    degraded = json.loads(open(tmp_path / 'm' / 'metric-fid100_full_degraded.jsonl').readline())
    assert np.isfinite(sharp['results']['fid100_full']) and np.isfinite(degraded['results']['fid100_full_degraded'])
    assert sharp['results']['fid100_full'] != degraded['results']['fid100_full_degraded']

@pytest.mark.slow
def test_qc_two_process_gloo_run(faces16, stock16, tmp_path):
    """`train.py --qc --gpus 2 --device cpu`: both ranks build the QC networks, the snapshot's
    consistency check covers G, D and D_degraded."""
    args = qc_args(faces16, stock16, tmp_path / 'ddp', num_gpus=2, max_steps=2, network_snapshot_ticks=1, image_snapshot_ticks=None)
    args.device_type = 'cpu'
    torch.multiprocessing.spawn(train.subprocess_fn, args=(args, str(tmp_path)), nprocs=2)
    snaps = [n for n in os.listdir(tmp_path / 'ddp') if n.startswith('network-snapshot-')]
    assert snaps
    with open(tmp_path / 'ddp' / snaps[-1], 'rb') as f:
        assert qc_surgery.is_qc_network(legacy.load_network_pkl(f))
