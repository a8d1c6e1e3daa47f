"""Smoke tests for bench/restore.py at the tiniest size on CPU. Everything is built here: random
tiny generators (init:tiny32 and a QC conversion of it), random-weight LPIPS, a stand-in for the
Inception detector and NIQE models fitted from the test images; nothing is downloaded."""

import csv
import hashlib
import json
import math
import os
import re
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import legacy  # noqa: E402
from training import qc as qc_surgery  # noqa: E402
from bench import restore  # noqa: E402
from metrics import restoration  # noqa: E402

pytestmark = [pytest.mark.usefixtures('single_thread'),
              pytest.mark.filterwarnings('ignore:`torch.jit.*` is deprecated:FutureWarning')]

RES = 32

#----------------------------------------------------------------------------
# Test inputs.

class StandInInception(torch.nn.Module):
    """Same call as the NVlabs Inception TorchScript network, `detector(uint8 NCHW,
    return_features=True)`, giving 12-d features from a 2x2 colour layout and the contrast."""

    def __init__(self):
        super().__init__()
        self.register_buffer('proj', torch.randn([15, 12], generator=torch.Generator().manual_seed(1)))

    def forward(self, x, return_features: bool = True):
        x = x.to(torch.float32) / 255
        layout = torch.nn.functional.adaptive_avg_pool2d(x, [2, 2]).flatten(1)
        contrast = x.flatten(2).std(dim=2)
        return torch.cat([layout, contrast], dim=1) @ self.proj


def _make_images(folder, count=2):
    """Smooth random colour fields with some grain: textured enough for NIQE and the detector."""
    os.makedirs(folder)
    for i in range(count):
        rng = np.random.RandomState(i)
        small = rng.randint(0, 256, size=[8, 8, 3], dtype=np.uint8)
        img = np.asarray(PIL.Image.fromarray(small).resize((RES, RES), PIL.Image.BICUBIC), dtype=np.float64)
        img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
        PIL.Image.fromarray(img).save(os.path.join(folder, f'img{i}.png'))
    return folder


def _png(path):
    with PIL.Image.open(path) as img:
        return np.array(img.convert('RGB'))


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return _make_images(str(tmp_path_factory.mktemp('restore') / 'imgs'))


@pytest.fixture(scope='module')
def detector(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('det') / 'stand-in-inception.pt')
    torch.jit.save(torch.jit.script(StandInInception()), path)
    return path


@pytest.fixture(scope='module')
def niqe_model(data, tmp_path_factory):
    """A pristine model for 16 px patches fitted from the test images (passed with --niqe-patch-size 16)."""
    images = [_png(os.path.join(data, name)) for name in sorted(os.listdir(data))]
    path = str(tmp_path_factory.mktemp('niqe') / 'pristine16.npz')
    restoration.save_niqe_model(restoration.fit_niqe_model(images, patch_size=16), path)
    return path


def _rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def _invoke(args):
    result = CliRunner().invoke(restore.main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def _finite(row, keys):
    return all(math.isfinite(float(row[k])) for k in keys)

#----------------------------------------------------------------------------

def test_restore_compositions_metrics_and_resume(tmp_path, data, detector):
    outdir = str(tmp_path / 'out')
    args = ['--network', 'init:tiny32', '--data', data, '--methods', 'ngd,pti', '--tasks', 'inpaint,sr+jpeg,UA,NP',
            '--levels', 'XS', '--num-images', '2', '--steps', '2', '--lpips-backbone', 'random', '--device', 'cpu',
            '--detector', detector, '--pfid-patches-per-image', '8', '--outdir', outdir]
    output = _invoke(args)
    # 32 px images: both patch sizes are scaled down with a note; the NIQE model is fitted from the images.
    assert 'NIQE uses 16 px patches' in output and 'pFID uses 16 px patches' in output
    assert 'fitting one from the 2 held-out clean images' in output
    # Provenance: random LPIPS and the stand-in detector are recorded and marked.
    prov = json.load(open(os.path.join(outdir, 'provenance.json')))
    assert prov['network']['spec'] == 'init:tiny32' and prov['seed'] == 0
    assert {lp['backbone'] for lp in prov['lpips']} == {'random'} and prov['detectors'][0]['path'] == os.path.abspath(detector)
    assert '(random LPIPS backbone)' in output and 'not the official download' in open(os.path.join(outdir, 'results.md')).read()

    # UA is sr+jpeg: one task; NP is denoise+inpaint.
    tasks = ('inpaint', 'sr+jpeg', 'denoise+inpaint')
    rows = _rows(os.path.join(outdir, 'results.csv'))
    assert len(rows) == 2 * 2 * 3 and tuple(rows[0].keys()) == restore.FIELDS
    assert {(r['method'], r['task'], r['level']) for r in rows} == {(m, t, 'XS') for m in ('ngd', 'pti') for t in tasks}
    for r in rows:
        assert _finite(r, restore.CASE_METRICS), r
        # Per-row provenance: no network file behind init:, the random metric backbone marked as such, the seed.
        assert (r['network'], r['network_path'], r['network_sha256']) == ('init:tiny32', '', ''), r
        assert (r['lpips_net'], r['lpips_backbone'], r['lpips_sha256'], r['seed']) == ('vgg', 'random', '', '0'), r
        assert r['caveats'] == ('LPIPS-vgg from a random backbone: not comparable with published LPIPS; '
                                'network init:tiny32: freshly initialised (random weights)'), r
        with PIL.Image.open(restore.prediction_path(outdir, r['method'], r['task'], r['level'], r['image'])) as img:
            assert img.size == (RES, RES)

    summary = _rows(os.path.join(outdir, 'summary.csv'))
    assert len(summary) == 6
    for s in summary:
        assert s['n'] == '2' and s['pfid_images'] == '2' and _finite(s, restore.CASE_METRICS + ('pfid',)), s
        assert float(s['pfid']) >= 0
    md = open(os.path.join(outdir, 'results.md')).read()
    number = r' -?[0-9]+\.[0-9]+ \|'
    for method in ('ngd', 'pti'):
        for task in ('inpaint', r'sr\+jpeg \(UA\)', r'denoise\+inpaint \(NP\)'):
            assert re.search(rf'^\| {method} \| {task} \| XS \| 2 \|({number}){{7}}$', md, re.M), (method, task, md)
    with PIL.Image.open(os.path.join(outdir, 'examples.png')) as img:
        # GT | observation | ngd | pti; one row per task; cells upscaled to 256 px, labels around them
        assert img.size[0] > 4 * 256 and img.size[1] > 3 * 256 and img.size[0] < 4 * 256 + 300

    # The numbers are those of the library metrics on the saved predictions.
    gts = [_png(os.path.join(data, f'img{i}.png')) for i in range(2)]
    preds = [_png(restore.prediction_path(outdir, 'pti', 'sr+jpeg', 'XS', f'img{i}')) for i in range(2)]
    expected = restoration.patch_fid(preds, gts, patch_size=16, patches_per_image=8, detector=detector, seed=0)
    pti_ua = next(s for s in summary if (s['method'], s['task']) == ('pti', 'sr+jpeg'))
    assert float(pti_ua['pfid']) == pytest.approx(expected, rel=1e-4)
    row = next(r for r in rows if (r['image'], r['method'], r['task']) == ('img1', 'pti', 'sr+jpeg'))
    niqe = restoration.niqe(preds[1], model=os.path.join(outdir, 'niqe_model_fitted_p16.npz'), patch_size=16)
    assert float(row['niqe']) == pytest.approx(niqe, abs=1e-4)

    # Resume: nothing is rerun and the pFIDs come from summary.csv.
    csv_bytes = open(os.path.join(outdir, 'results.csv'), 'rb').read()
    preds = [restore.prediction_path(outdir, r['method'], r['task'], r['level'], r['image']) for r in rows]
    mtimes = [os.stat(p).st_mtime_ns for p in preds]
    output = _invoke(args)
    assert '0 to run, 12 already' in output and 'Ran 0 case(s)' in output and 'pFID ngd' not in output
    assert open(os.path.join(outdir, 'results.csv'), 'rb').read() == csv_bytes
    assert [os.stat(p).st_mtime_ns for p in preds] == mtimes
    assert [s['pfid'] for s in _rows(os.path.join(outdir, 'summary.csv'))] == [s['pfid'] for s in summary]

    # An interrupted run (last row missing): only that case runs, only its group's pFID is recomputed.
    lines = csv_bytes.decode().splitlines(keepends=True)
    with open(os.path.join(outdir, 'results.csv'), 'w') as f:
        f.writelines(lines[:-1])
    last = rows[-1]
    output = _invoke(args)
    assert '1 to run, 11 already' in output and 'Ran 1 case(s)' in output
    assert re.findall(r'^pFID (\S+ \S+ \S+):', output, re.M) == [f'{last["method"]} {last["task"]} {last["level"]}']
    assert len(_rows(os.path.join(outdir, 'results.csv'))) == 12


def test_restore_qc_method(tmp_path, data, niqe_model):
    qc = qc_surgery.convert_to_qc(legacy.init_network('tiny32'), q_dim=4)
    network = str(tmp_path / 'qc.pkl')
    legacy.save_network_pkl({k: v for k, v in qc.items() if k != 'G_teacher'}, network)
    outdir = str(tmp_path / 'out')
    output = _invoke(['--network', network, '--data', data, '--methods', 'qc', '--tasks', 'sr', '--levels', 'XS',
                      '--num-images', '1', '--steps', '2', '--lpips-backbone', 'random', '--lpips-net', 'alex',
                      '--niqe-model', niqe_model, '--niqe-patch-size', '16', '--no-pfid', '--device', 'cpu',
                      '--outdir', outdir])
    assert 'fitting' not in output
    rows = _rows(os.path.join(outdir, 'results.csv'))
    assert len(rows) == 1 and rows[0]['method'] == 'qc' and _finite(rows[0], restore.CASE_METRICS)
    # Provenance columns: the network file and the first 16 hex digits of its SHA-256, the metric LPIPS, the seed.
    with open(network, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    row = rows[0]
    assert (row['network'], row['network_path'], row['network_sha256']) == (network, os.path.abspath(network), digest)
    assert (row['lpips_net'], row['lpips_backbone'], row['seed']) == ('alex', 'random', '0')
    assert row['caveats'] == 'LPIPS-alex from a random backbone: not comparable with published LPIPS'
    md = open(os.path.join(outdir, 'results.md')).read()
    assert re.search(r'^\| qc \| sr \| XS \| 1 \|( [0-9.]+ \|){5} n/a \| [0-9.]+ \|$', md, re.M), md


def test_restore_upgrades_old_results_csv(tmp_path, data, niqe_model):
    outdir = tmp_path / 'out'
    outdir.mkdir()
    old_fields = ['image', 'method', 'task', 'level', 'accuracy_lpips', 'fidelity_lpips', 'psnr', 'ssim', 'seconds']
    with open(outdir / 'results.csv', 'w', newline='') as f:
        f.write(','.join(old_fields) + '\nimg0,ngd,sr,XS,0.5,0.4,20.0,0.5,1.0\n')
    output = _invoke(['--network', 'init:tiny32', '--data', data, '--methods', 'ngd', '--tasks', 'sr', '--levels', 'XS',
                      '--num-images', '2', '--steps', '1', '--lpips-backbone', 'random', '--niqe-model', niqe_model,
                      '--niqe-patch-size', '16', '--no-pfid', '--device', 'cpu', '--outdir', str(outdir)])
    assert 'older version' in output and 'Ran 1 case(s)' in output
    rows = _rows(outdir / 'results.csv')
    assert tuple(rows[0].keys()) == restore.FIELDS and [r['image'] for r in rows] == ['img0', 'img1']
    assert rows[0]['niqe'] == 'nan' and rows[0]['psnr'] == '20.0' and _finite(rows[1], restore.CASE_METRICS)
    assert all(rows[0][k] == '' for k in restore.PROVENANCE_FIELDS)  # unknown for the old row, not made up
    assert (rows[1]['network'], rows[1]['lpips_backbone'], rows[1]['seed']) == ('init:tiny32', 'random', '0')
    summary = _rows(outdir / 'summary.csv')
    assert len(summary) == 1 and float(summary[0]['niqe']) == float(rows[1]['niqe'])  # the mean of the finite values
    assert math.isnan(float(summary[0]['pfid'])) and summary[0]['pfid_images'] == '1'  # the old row has no PNG


@pytest.mark.parametrize('extra, message', [
    (['--data', 'MISSING'], 'does not exist'),
    (['--data', 'EMPTY'], 'no images'),
    (['--methods', 'ngd,foo'], 'unknown method "foo"'),
    (['--levels', 'XS,XXL'], 'unknown level "XXL"'),
    (['--tasks', 'sr+blur'], 'unknown task "sr+blur"'),
    (['--tasks', 'UX'], 'unknown task "UX"'),
    (['--tasks', 'sr+sr'], 'repeated'),
    (['--methods', 'qc'], 'needs a QC-StyleGAN network'),
    (['--niqe-model', 'NIQE'], 'smaller than --niqe-patch-size 96'),
    (['--detector', 'MISSING'], '--detector'),
    (['--pfid-ref', 'MISSING'], '--pfid-ref'),
])
def test_restore_bad_input_is_one_line(tmp_path, data, niqe_model, detector, extra, message):
    (tmp_path / 'empty').mkdir()
    subst = dict(MISSING=str(tmp_path / 'missing'), EMPTY=str(tmp_path / 'empty'), NIQE=niqe_model)
    extra = [subst.get(a, a) for a in extra]
    args = ['--network', 'init:tiny32', '--data', data, '--methods', 'ngd', '--tasks', 'sr', '--levels', 'XS',
            '--lpips-backbone', 'random', '--device', 'cpu', '--detector', detector, '--outdir', str(tmp_path / 'out')] + extra
    result = CliRunner().invoke(restore.main, args)
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output + repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith('Error')]
    assert len(errors) == 1 and message in errors[0], result.output
    assert 'Traceback' not in result.output and not (tmp_path / 'out' / 'results.csv').exists()


def test_restore_row_provenance_pretrained_and_file_backbones(tmp_path, monkeypatch):
    """The LPIPS backbone column: 'pretrained' (with the cached weights' hash when present) or the weights file's path."""
    network = tmp_path / 'net.pkl'
    network.write_bytes(b'network bytes')
    weights = tmp_path / 'vgg16-custom.pth'
    weights.write_bytes(b'weights bytes')
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty-hub'))  # no cached pretrained weights
    row = restore.row_provenance(str(network), 'pretrained', 7)
    assert row == dict(network=str(network), network_path=str(network), network_sha256=hashlib.sha256(b'network bytes').hexdigest()[:16],
                       lpips_net='alex', lpips_backbone='pretrained', lpips_sha256='', seed='7', caveats='')
    cached = restoration.lpips_backbone_path('alex')
    os.makedirs(os.path.dirname(cached))
    with open(cached, 'wb') as f:
        f.write(b'hub bytes')
    row = restore.row_provenance(str(network), 'pretrained', 7)
    assert (row['lpips_backbone'], row['lpips_sha256']) == ('pretrained', hashlib.sha256(b'hub bytes').hexdigest()[:16])
    row = restore.row_provenance(str(network), str(weights), 7)
    assert (row['lpips_backbone'], row['lpips_sha256']) == (str(weights), hashlib.sha256(b'weights bytes').hexdigest()[:16])
    assert row['caveats'] == ''
