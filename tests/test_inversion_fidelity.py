"""Issue 14 (inversion): the methods follow their references. NGD loss levels/scale/hole noise,
PTI's 256 px pivot LPIPS, QC locality and the encoder-free flag, DGP (batched D, bilinear full-size
comparison, latent prior, frozen output ToRGB, zero holes), CRI's centroid choice, --edit after
every method, and the benchmark protocol. Tiny networks on CPU."""

import csv
import os

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import invert
import legacy
from inversion import common, dgp, editing, pti
from inversion import qc as qc_method
from inversion.losses import MultiscaleLPIPSL1
from inversion.operators import parse_degradation
from test_inversion_methods import tiny_network  # pylint: disable=import-error
from training import qc as qc_surgery

pytestmark = pytest.mark.usefixtures('single_thread')


class Recorder(torch.nn.Module):
    """A stand-in LPIPS that records its inputs and returns a differentiable per-sample MSE."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, a, b):
        self.calls.append((a.detach().clone(), b.detach().clone()))
        return (a - b).square().flatten(1).mean(1)


@pytest.fixture(scope='module')
def net():
    return tiny_network()

#----------------------------------------------------------------------------
# 6. NGD loss.

@pytest.mark.parametrize('size,lpips_sides,l1_side', [(128, [128, 64, 32], 16), (64, [64, 32], 16), (32, [32], 16),
                                                      (16, [], 16), (8, [], 8)])
def test_ngd_loss_levels_and_scale(size, lpips_sides, l1_side):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand([2, 3, size, size], generator=g) * 2 - 1, torch.rand([2, 3, size, size], generator=g) * 2 - 1
    rec = Recorder()
    loss = MultiscaleLPIPSL1(rec)
    total = loss(x, y)
    assert [a.shape[-1] for a, _ in rec.calls] == lpips_sides  # LPIPS only at sides > 16 px
    k = size // l1_side
    xs, ys = (F.avg_pool2d(x, k), F.avg_pool2d(y, k)) if k > 1 else (x, y)
    l1 = (xs - ys).abs().flatten(1).mean(1)
    lp = sum(((F.avg_pool2d(x, size // s) - F.avg_pool2d(y, size // s)) if s < size else (x - y)).square().flatten(1).mean(1)
             for s in lpips_sides) if lpips_sides else 0
    # 0.1 * L1 on [0, 1] images = 0.05 on [-1, 1] images, once, at the coarsest level
    assert torch.allclose(total, lp + 0.05 * l1, atol=1e-6)
    # the reference's 0.1 on [0, 1] images is the same term
    zero = lambda a, b: torch.zeros(a.shape[0])  # noqa: E731
    assert torch.allclose(MultiscaleLPIPSL1(zero, l1_weight=0.1)((x + 1) / 2, (y + 1) / 2), MultiscaleLPIPSL1(zero)(x, y),
                          atol=1e-6)


def test_ngd_loss_hole_noise_fresh_per_level_and_plain_l1_mean():
    size = 256
    x = torch.zeros([1, 3, size, size])
    y = torch.zeros([1, 3, size, size])
    y[..., :size // 2, :] = 1.0  # differs only in the observed half
    mask = torch.ones([1, 1, size, size])
    mask[..., size // 2:, :] = 0
    rec = Recorder()
    torch.manual_seed(0)
    total = MultiscaleLPIPSL1(rec)(x, y, mask=mask)
    assert [a.shape[-1] for a, _ in rec.calls] == [256, 128, 64, 32]
    for a, b in rec.calls:
        s = a.shape[-1]
        hole = a[..., s // 2 + 1:, :]  # fully inside the hole at every level
        assert torch.equal(a[..., s // 2:, :], b[..., s // 2:, :])  # the same field for both sides
        # fresh N(0, 1) + 0.5 at every level (a pooled full-size field would have std 1/2^level)
        assert abs(float(hole.std()) - 1) < 0.1 and abs(float(hole.mean()) - 0.5) < 0.15, (s, float(hole.std()))
        assert torch.all(a[..., :s // 2, :] == 0)  # no noise where observed
    lpips_part = sum(float((a - b).square().mean()) for a, b in rec.calls)
    # plain mean over all pixels (half of them differ by 1): 0.05 * 0.5, not normalised by the mask area (0.05 * 1)
    assert abs(float(total) - lpips_part - 0.05 * 0.5) < 1e-5

#----------------------------------------------------------------------------
# 7. PTI pivot LPIPS at 256 px.

def test_pti_pivot_lpips_downsampled(net):
    x = torch.rand([1, 3, 512, 512])
    small = pti.pivot_size(x)
    assert small.shape[-2:] == (256, 256) and torch.allclose(small, F.avg_pool2d(x, 2), atol=1e-6)
    assert pti.pivot_size(x[..., :200, :200]).shape[-1] == 200
    G = net['G_ema']
    y = torch.rand([1, 3, 16, 16]) * 2 - 1
    rec = Recorder()
    pti.invert_pivot(G, y, None, common.MinSizeLPIPS(rec, min_size=1), steps=2, lpips_size=8)  # 16 px stands in for > 256
    assert rec.calls and all(a.shape[-2:] == (8, 8) and b.shape[-2:] == (8, 8) for a, b in rec.calls)
    assert torch.allclose(rec.calls[0][1], F.avg_pool2d(y, 2), atol=1e-6)

#----------------------------------------------------------------------------
# 8. QC: locality on by default, encoder-free only on request.

def test_qc_locality_default(net, monkeypatch):
    qc = qc_surgery.convert_to_qc(tiny_network(), q_dim=4)['G_ema'].eval()
    seen = {}
    real = common.tune_generator

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)
    monkeypatch.setattr(common, 'tune_generator', spy)
    y = torch.rand([1, 3, 16, 16]) * 2 - 1
    res = qc_method.invert(qc, y, None, Recorder(), refine_steps=1, tune_steps=2, lpips_stop=None)
    assert seen['locality'] is True and len(res.history['tune']['loss']) == 2
    assert qc_method.DEFAULTS['locality'] is True


def test_invert_qc_without_encoder_needs_flag(tmp_path):
    data = qc_surgery.convert_to_qc(tiny_network(), q_dim=4)
    legacy.save_network_pkl({k: v for k, v in data.items() if k != 'G_teacher'}, str(tmp_path / 'qc.pkl'))
    PIL.Image.fromarray((np.random.RandomState(0).rand(16, 16, 3) * 255).astype(np.uint8)).save(tmp_path / 't.png')
    args = ['--network', str(tmp_path / 'qc.pkl'), '--target', str(tmp_path / 't.png'), '--method', 'qc', '--steps', '1',
            '--outdir', str(tmp_path / 'o'), '--device', 'cpu', '--lpips-backbone', 'random']
    r = CliRunner().invoke(invert.main, args)
    assert r.exit_code == 2 and 'encoder-free optimisation' in r.output and '--no-encoder-ok' in r.output
    assert not (tmp_path / 'o').exists()
    r = CliRunner().invoke(invert.main, args + ['--no-encoder-ok'])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert 'Warning' in r.output and 'encoder-free optimisation' in r.output

#----------------------------------------------------------------------------
# 9. DGP.

def test_dgp_batched_features_equal_single(net):
    D = net['D']
    imgs = torch.rand([5, 3, 16, 16]) * 2 - 1
    batched = dgp.discriminator_features(D, imgs)
    single = [dgp.discriminator_features(D, imgs[i:i + 1]) for i in range(5)]
    assert D.b4.mbstd.group_size == 4  # restored
    for k, f in enumerate(batched):
        assert torch.allclose(f, torch.cat([s[k] for s in single]), atol=1e-5)


def test_dgp_full_size_zero_holes_prior_and_frozen_torgb(net):
    G, D = net['G_ema'], net['D']
    w = common.sample_ws(G, 1, seed=7)
    with torch.no_grad():
        gt = common.LatentGenerator(G)(w)
    # Holes 0 (mid gray) on [-1, 1] images, as DGP; observed pixels unchanged.
    deg = parse_degradation('inpaint:M', 16)
    y = deg.true(gt)
    m = common.observation_mask(deg, y)
    full = dgp.to_full(y, 16, m)
    hard_hole, hard_obs = m == 0, m == 1
    assert torch.all(full.masked_select(hard_hole.expand_as(full)) == 0)
    assert torch.equal(full.masked_select(hard_obs.expand_as(full)), y.masked_select(hard_obs.expand_as(y)))
    # Low-res observations are upsampled bilinearly before D and the MSE.
    low = torch.rand([1, 3, 4, 4])
    assert torch.allclose(dgp.to_full(low, 16), F.interpolate(low, size=(16, 16), mode='bilinear', align_corners=False))
    # The output ToRGB is in no parameter group.
    last = getattr(G.synthesis, f'b{G.synthesis.img_resolution}').torgb
    ids = {id(p) for g in dgp.generator_groups(G) for p in g}
    assert not any(id(p) in ids for p in last.parameters())
    assert all(id(p) in ids for p in G.synthesis.b8.conv0.parameters())
    # A run: prior term logged, output ToRGB untouched, MSE at full size.
    deg = parse_degradation('sr:4', 16)
    y = deg.true(gt)
    res = dgp.invert(G, y, deg, D=D, stage_steps=(2,) * 5, num_candidates=30, batch=7)
    assert len(res.history['nll']) == 10 and all(v > 0 for v in res.history['nll'])
    assert len(res.history['init']['best_score']) == 1
    last_t = getattr(res.G.synthesis, f'b{G.synthesis.img_resolution}').torgb
    for a, b in zip(last.parameters(), last_t.parameters()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(G.synthesis.b8.parameters(), res.G.synthesis.b8.parameters()))
    w_avg, w_std = common.estimate_w_stats(G)
    nll = dgp.latent_nll(res.ws, w_avg, w_std / np.sqrt(G.w_dim))
    assert nll.shape == (1,)


def test_dgp_cli_small_budget(net, tmp_path):
    legacy.save_network_pkl(net, str(tmp_path / 'net.pkl'))
    PIL.Image.fromarray((np.random.RandomState(0).rand(4, 4, 3) * 255).astype(np.uint8)).save(tmp_path / 'low.png')
    out = tmp_path / 'out'
    r = CliRunner().invoke(invert.main, ['--network', str(tmp_path / 'net.pkl'), '--target', str(tmp_path / 'low.png'),
                                         '--method', 'dgp', '--degradation', 'sr:4', '--steps', '2', '--outdir', str(out),
                                         '--device', 'cpu', '--lpips-backbone', 'random', '--dgp-candidates', '40'])
    assert r.exit_code == 0, r.output + repr(r.exception)
    import json
    record = json.loads((out / 'results.json').read_text())['images']['low']
    assert 'nll' in record['history'] and (out / 'low_restored.png').is_file()

#----------------------------------------------------------------------------
# 11. --edit after every method (W++ included).

def test_apply_direction_on_wpp(net):
    G = net['G_ema']
    gen = common.LatentGenerator(G)
    wpp = gen.to_wpp(common.sample_ws(G, 2, seed=1))
    d = torch.randn([G.synthesis.num_ws, G.w_dim])
    moved = editing.apply_direction(wpp, d, 2.0)
    assert moved.shape == wpp.shape
    assert torch.allclose(moved - wpp, 2 * d[None, :, None, :].expand_as(wpp), atol=1e-6)
    ws = gen.to_ws(common.sample_ws(G, 2, seed=1))
    assert torch.allclose(editing.apply_direction(ws, d, 1.0) - ws, d[None].expand_as(ws))
    with torch.no_grad():  # W++ with repeated rows edits like W+
        assert torch.allclose(gen(editing.apply_direction(wpp, d, 1.0)), gen(editing.apply_direction(ws, d, 1.0)), atol=1e-5)
    with pytest.raises(ValueError, match='rows'):
        editing.apply_direction(common.sample_ws(G, 2), d, 1.0)


@pytest.mark.parametrize('method', ['ngd', 'pti', 'cri', 'dgp', 'qc'])
def test_invert_edit_after_every_method(net, tmp_path, method):
    data = net if method != 'qc' else qc_surgery.convert_to_qc(tiny_network(), q_dim=4)
    legacy.save_network_pkl({k: v for k, v in data.items() if k != 'G_teacher'}, str(tmp_path / 'net.pkl'))
    G = data['G_ema']
    PIL.Image.fromarray((np.random.RandomState(0).rand(16, 16, 3) * 255).astype(np.uint8)).save(tmp_path / 't.png')
    np.save(tmp_path / 'dir.npy', np.random.RandomState(1).randn(G.synthesis.num_ws, G.w_dim).astype(np.float32))
    out = tmp_path / 'out'
    args = ['--network', str(tmp_path / 'net.pkl'), '--target', str(tmp_path / 't.png'), '--method', method,
            '--steps', '1', '--outdir', str(out), '--device', 'cpu', '--lpips-backbone', 'random',
            '--edit', str(tmp_path / 'dir.npy'), '--strength', '5', '--cri-samples', '30', '--dgp-candidates', '10']
    r = CliRunner().invoke(invert.main, args + (['--no-encoder-ok'] if method == 'qc' else []))
    assert r.exit_code == 0, r.output + repr(r.exception)
    edited = np.asarray(PIL.Image.open(out / 't_edit_sharp.png'), dtype=np.float64)
    restored = np.asarray(PIL.Image.open(out / 't_restored.png'), dtype=np.float64)
    assert np.abs(edited - restored).mean() > 1
    if method == 'ngd':
        assert np.load(out / 't_latents.npz')['ws'].ndim == 4  # the edit was applied to W++ latents

#----------------------------------------------------------------------------
# 12. Benchmark protocol.

def test_bench_sr_filter_per_image_and_fidelity_at_observation_size(tmp_path):
    from bench import restore
    assert restore.task_spec('sr', 'XS') == 'sr:XS:random'
    assert restore.task_spec('sr+jpeg', 'M') == 'sr:M:random+jpeg:M'
    assert parse_degradation(restore.task_spec('sr', 'XS'), 64).true_filter == 'random'
    # the per-image draw covers the three filters over the case seeds
    x = torch.rand([1, 3, 32, 32]) * 2 - 1
    outs = {tuple(parse_degradation('sr:XS:random', 32, seed=s).true(x).flatten()[:20].tolist()) for s in range(12)}
    assert len(outs) == 3
    net = tiny_network()
    deg = parse_degradation('sr:4', 16)
    clean = net['G_ema'].synthesis(common.LatentGenerator(net['G_ema']).to_ws(common.sample_ws(net['G_ema'], 1)),
                                   noise_mode='const').detach()
    y = deg.true(clean)
    rec = Recorder()
    _, m = restore.run_case('ngd', dict(G=net['G_ema'], D=net['D']), clean, y, deg, dict(alex=None, vgg=Recorder()), rec,
                            dict(steps=(1, 1, 1)), None, 0, None)
    accuracy_call, fidelity_call = rec.calls
    assert accuracy_call[0].shape[-1] == 16 and fidelity_call[0].shape[-1] == 4 and torch.equal(fidelity_call[1], y)
    assert m['fidelity_lpips'] == pytest.approx(float((fidelity_call[0] - y).square().mean()), rel=1e-5)


def test_bench_repeatable_with_one_seed(tmp_path):
    from bench import restore
    data = tmp_path / 'imgs'
    data.mkdir()
    for i in range(2):
        PIL.Image.fromarray((np.random.RandomState(i).rand(32, 32, 3) * 255).astype(np.uint8)).save(data / f'i{i}.png')

    def run(name, seed):
        out = tmp_path / name
        r = CliRunner().invoke(restore.main, ['--network', 'init:tiny32', '--data', str(data), '--methods', 'ngd,pti',
                                              '--tasks', 'sr,inpaint', '--levels', 'XS', '--num-images', '2', '--steps', '1',
                                              '--lpips-backbone', 'random', '--no-pfid', '--no-niqe', '--device', 'cpu',
                                              '--outdir', str(out), '--seed', str(seed)])
        assert r.exit_code == 0, r.output + repr(r.exception)
        with open(out / 'results.csv', newline='') as f:
            return [{k: v for k, v in row.items() if k != 'seconds'} for row in csv.DictReader(f)]
    a, b, c = run('a', 3), run('b', 3), run('c', 4)
    assert len(a) == 8 and a == b
    assert a != c
