"""The main job (`make demo` = demo.py) at a reduced size, its random-feature metric, the cpu32
preset and the restoration report."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import train
from inversion import report
from metrics import metric_main
from metrics import metric_utils
from metrics import random_features
from training import networks

from conftest import REPO_ROOT

pytestmark = pytest.mark.usefixtures('single_thread')

#----------------------------------------------------------------------------
# The random-feature detector and metrics.

def test_random_features_fixed_and_discriminative():
    a, b = random_features.RandomConvFeatures(), random_features.RandomConvFeatures()
    assert all(torch.equal(x, y) for x, y in zip(a.buffers(), b.buffers()))  # seeded: the same network every time
    gen = torch.Generator().manual_seed(0)
    imgs = (torch.rand([6, 3, 32, 32], generator=gen) * 255).to(torch.uint8)
    feats = a(imgs)
    assert feats.shape == (6, a.feature_dim) and feats.dtype == torch.float32
    # Grey repeated to RGB and a 64-px version of the same picture land close; a different picture does not.
    big = torch.nn.functional.interpolate(imgs.float(), scale_factor=2, mode='nearest').to(torch.uint8)
    same = (a(big) - feats).norm(dim=1) / feats.norm(dim=1)
    other = (a(imgs.roll(1, 0)) - feats).norm(dim=1) / feats.norm(dim=1)
    assert float(same.max()) < 0.35 < float(other.min())


def test_random_feature_metrics_registered_and_offline(tmp_path):
    for name in ['rfkid1k_full', 'rffid1k_full', 'rfkid100_full', 'rffid100_full']:
        assert metric_main.is_valid_metric(name)
    det = metric_utils.get_feature_detector(random_features.RANDOM_CONV_URL)  # built from code, no download
    assert isinstance(det, random_features.RandomConvFeatures)
    with pytest.raises(metric_utils.DetectorError, match='unknown built-in'):
        metric_utils.get_feature_detector('builtin:nope')


def _faces_zip(tmp_path, n=32):
    import dataset_tool
    path = str(tmp_path / 'faces.zip')
    dataset_tool.convert_dataset(source='builtin:lfw-faces', dest=path, max_images=n, resolution=32, transform=None,
                                 resize_filter='lanczos', channels=1)
    return path


def test_rfkid_ranks_generators(tmp_path):
    """The metric of a random generator is far above that of a 'generator' that replays real faces."""
    data = _faces_zip(tmp_path)
    kwargs = dict(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=False, xflip=False)
    G = networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=1,
                           mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=256, channel_max=16))
    bad = metric_main.calc_metric('rfkid100_full', G=G, dataset_kwargs=kwargs, device='cpu', cache=False).results.rfkid100_full

    from metrics.metric_utils import open_dataset
    reals = torch.from_numpy(np.stack([open_dataset(kwargs)[i][0] for i in range(32)])).float() / 127.5 - 1

    class Replay(torch.nn.Module):
        z_dim, c_dim, img_resolution, img_channels = 4, 0, 32, 1

        def forward(self, z, c, **_kwargs):
            idx = (z[:, 0].abs() * 1000).long() % reals.shape[0]
            return reals[idx]

    good = metric_main.calc_metric('rfkid100_full', G=Replay(), dataset_kwargs=kwargs, device='cpu', cache=False).results.rfkid100_full
    assert good < 0.05 * bad

#----------------------------------------------------------------------------
# Grey -> RGB network surgery.

def test_grey_to_rgb_is_exact():
    from training import channels
    kw = dict(c_dim=0, img_resolution=16, img_channels=1, channel_base=256, channel_max=16)
    G = networks.Generator(z_dim=8, w_dim=8, mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=256, channel_max=16),
                           c_dim=0, img_resolution=16, img_channels=1).eval()
    D = networks.Discriminator(**kw).eval()
    with torch.no_grad():  # non-trivial ToRGB biases
        for name, p in G.named_parameters():
            if 'torgb.bias' in name:
                p.add_(0.3)
    out = channels.grey_to_rgb(dict(G=G, D=D, G_ema=G, training_set_kwargs=dict(path='grey.zip'), augment_pipe=None))
    assert 'training_set_kwargs' not in out and out['G'].img_channels == 3 and out['D'].img_channels == 3
    z = torch.randn([3, 8])
    grey = G(z, None, noise_mode='const')
    rgb = out['G_ema'](z, None, noise_mode='const')
    assert rgb.shape == (3, 3, 16, 16) and torch.equal(rgb, grey.repeat(1, 3, 1, 1))
    torch.testing.assert_close(out['D'](rgb, None), D(grey, None), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='1-channel'):
        channels.module_to_rgb(networks.Discriminator(**dict(kw, img_channels=2)))

#----------------------------------------------------------------------------
# The cpu32 preset and the report helpers.

def test_cpu32_preset(tmp_path):
    data = _faces_zip(tmp_path, n=8)
    _desc, args = train.setup_training_loop_kwargs(data=data, cfg='cpu32', workers=0, device='cpu')
    assert args.batch_size == 32 and args.G_kwargs.mapping_kwargs.num_layers == 2
    assert args.loss_kwargs.pl_weight == 0 and args.loss_kwargs.style_mixing_prob == 0 and args.ada_kimg == 20
    _desc, tiny = train.setup_training_loop_kwargs(data=data, cfg='tiny', workers=0, device='cpu')
    assert 'pl_weight' not in tiny.loss_kwargs and tiny.get('ada_kimg') is None  # the tiny preset is unchanged


def test_report_table_and_panel():
    rec = lambda p, l, obs: dict(psnr=p, ssim=0.5, lpips=l, observation=dict(psnr=obs, ssim=0.4, lpips=0.3))
    results = {'qc': dict(images={'heldout0': rec(25, 0.1, 20), 'generated-seed1': rec(30, 0.05, 21)}),
               'ngd': dict(images={'heldout0': dict(psnr=18, ssim=0.3, lpips=0.4), 'generated-seed1': dict(psnr=22, ssim=0.5, lpips=0.2)})}
    table = report.group_scores(results, {'held-out': 'heldout', 'generated': 'generated-'})
    assert table['held-out']['observation']['psnr'] == 20 and table['generated']['qc']['psnr'] == 30
    assert report.beats_observation(table, 'qc') == {'held-out': True, 'generated': True}
    assert report.beats_observation(table, 'ngd') == {'held-out': False, 'generated': True}
    text = report.format_table(table, ['qc', 'ngd'])
    assert 'NOT better' in text and 'restored: qc' in text
    grid = report.labelled_grid([[np.zeros([8, 8, 1], np.uint8), np.full([8, 8, 3], 255, np.uint8)]],
                                col_labels=['a', 'b'], row_labels=['r'], scale=4)
    assert grid.dtype == np.uint8 and grid.shape[2] == 3 and grid.shape[0] >= 32 and grid.shape[1] >= 64

#----------------------------------------------------------------------------
# The invert.py options the demo uses, and the baseline its report compares with.

def _qc_network_and_target(tmp_path):
    import PIL.Image
    import legacy
    from test_inversion_methods import tiny_network  # pylint: disable=import-error
    from training import qc as qc_surgery
    data = qc_surgery.convert_to_qc(tiny_network(), q_dim=4)
    legacy.save_network_pkl({k: v for k, v in data.items() if k != 'G_teacher'}, str(tmp_path / 'qc.pkl'))
    PIL.Image.fromarray((np.random.RandomState(0).rand(16, 16, 3) * 255).astype(np.uint8)).save(tmp_path / 't.png')
    return ['--network', str(tmp_path / 'qc.pkl'), '--target', str(tmp_path / 't.png'), '--device', 'cpu',
            '--lpips-backbone', 'random']


def test_invert_tuning_options_reach_the_methods(tmp_path, monkeypatch):
    from click.testing import CliRunner
    import invert
    seen = []
    real = invert.methods.run

    def spy(**kwargs):
        seen.append(kwargs)
        return real(**kwargs)
    monkeypatch.setattr(invert.methods, 'run', spy)
    base = _qc_network_and_target(tmp_path) + ['--no-encoder-ok']
    r = CliRunner().invoke(invert.main, base + ['--method', 'qc', '--steps', '1,2', '--tune-lr', '2e-3', '--lpips-stop', '0',
                                                '--outdir', str(tmp_path / 'a')])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert seen[-1]['tune_lr'] == 2e-3 and seen[-1]['lpips_stop'] is None  # 0: every tuning step runs
    r = CliRunner().invoke(invert.main, base + ['--method', 'qc', '--steps', '1,1', '--outdir', str(tmp_path / 'b')])
    assert r.exit_code == 0 and 'tune_lr' not in seen[-1] and 'lpips_stop' not in seen[-1]  # the references' defaults
    r = CliRunner().invoke(invert.main, base + ['--method', 'ngd', '--steps', '1', '--lr-scale', '4', '--outdir', str(tmp_path / 'c')])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert seen[-1]['lr_scale'] == 4
    n = len(seen)
    r = CliRunner().invoke(invert.main, base + ['--method', 'qc', '--steps', '1,1', '--lr-scale', '4', '--outdir', str(tmp_path / 'd')])
    assert r.exit_code == 2 and '--lr-scale applies to --method ngd' in r.output and len(seen) == n
    r = CliRunner().invoke(invert.main, base + ['--method', 'ngd', '--steps', '1,1,1', '--stop-every', '5', '--outdir', str(tmp_path / 'e')])
    assert r.exit_code == 2 and '--stop-every applies to --method pti, qc' in r.output and len(seen) == n


def test_observation_baseline_is_bilinear(tmp_path):
    """results.json scores the observation upsampled bilinearly (the panel shows its pixels, nearest)."""
    from click.testing import CliRunner
    import torch.nn.functional as F
    import invert
    from inversion import common, operators
    from metrics import restoration
    args = _qc_network_and_target(tmp_path) + ['--method', 'ngd', '--steps', '1', '--operator', 'sr:2', '--synthesize-degradation',
                                               '--ground-truth', str(tmp_path / 't.png'), '--outdir', str(tmp_path / 'o')]
    r = CliRunner().invoke(invert.main, args)
    assert r.exit_code == 0, r.output + repr(r.exception)
    rec = json.loads((tmp_path / 'o' / 'results.json').read_text())['images']['t']
    x, _ = common.load_target(str(tmp_path / 't.png'), size=16)
    y = operators.parse_degradation('sr:2', 16).true(x)
    up = F.interpolate(y, size=(16, 16), mode='bilinear', align_corners=False)
    assert rec['observation']['psnr'] == pytest.approx(float(restoration.psnr(up, x, data_range=2)[0]), abs=1e-4)
    nearest = float(restoration.psnr(F.interpolate(y, size=(16, 16), mode='nearest'), x, data_range=2)[0])
    assert abs(rec['observation']['psnr'] - nearest) > 0.01

#----------------------------------------------------------------------------
# The whole demo at a reduced size.

def test_demo_quick(tmp_path):
    """demo.py --size quick: every stage runs; the generator metric falls from init, and a restoration
    beats the observation (PSNR and LPIPS) on generator-made targets, where the ground truth is known."""
    outdir = tmp_path / 'demo'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'demo.py'), '--size', 'quick', '--outdir', str(outdir),
                           '--device', 'cpu'], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((outdir / 'summary.json').read_text())
    metric = summary['metric_by_kimg']
    assert metric[0][0] == 0 and metric[-1][0] > 0
    assert metric[-1][1] < 0.5 * metric[0][1]
    for method in ['qc', 'ngd']:
        results = json.loads((outdir / f'restore-{method}' / 'results.json').read_text())
        assert results['method'] == method and len(results['images']) >= 5
        assert all('observation' in rec and 'psnr' in rec for rec in results['images'].values())
    assert results['encoder'] is None and json.loads((outdir / 'restore-qc' / 'results.json').read_text())['encoder']
    assert any(summary['beats_observation'][m]['generated'] for m in ['qc', 'ngd'])
    assert (outdir / 'restoration.png').is_file()
    tail = proc.stdout.strip().splitlines()[-12:]
    assert any('observation (upsampled)' in line for line in tail) and any('restoration.png' in line for line in tail)
    # Rerunning replaces the outputs cleanly.
    assert 'Replacing' not in proc.stdout

#----------------------------------------------------------------------------
