"""SPHInX (inversion/sphinx.py), the synthesis network's `const_input`, the `cs:` / `gauss:` operators
and `invert.py --method sphinx`, on tiny generators (CPU, small step budgets)."""

import json
import math

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F

import legacy
from inversion import common, sphinx
from inversion.operators import CompressedSensing, load_measurements, parse_degradation
from metrics.restoration import LPIPS
from training import networks
from training import qc as qc_surgery

pytestmark = pytest.mark.usefixtures('single_thread')

#----------------------------------------------------------------------------
# Fixtures.

def tiny32():
    """`init:tiny32` (32 px, w_dim 64, num_ws 8, 64 channels) with the noise strengths of a trained
    network (0.1; a fresh network has 0, which would make B do nothing)."""
    G = legacy.init_network('tiny32')['G_ema']
    with torch.no_grad():
        for name, p in G.synthesis.named_parameters():
            if name.endswith('noise_strength'):
                p.fill_(0.1)
    return G


@pytest.fixture(scope='module')
def G32():
    return tiny32()


@pytest.fixture(scope='module')
def lpips_alex():
    torch.manual_seed(0)
    return LPIPS(net='alex', pnet_rand=True)


@pytest.fixture(scope='module')
def ood_target():
    """Not a face: the astronaut's helmet and shoulder, a crop of a scikit-image sample, at 32 px."""
    import skimage.data
    crop = skimage.data.astronaut()[0:256, 128:384].astype(np.float32) / 255
    t = torch.from_numpy(crop).permute(2, 0, 1)[None]
    return F.interpolate(t, size=(32, 32), mode='area') * 2 - 1


FIT = dict(steps=150, lr=0.01, content_lr=0.01, noise_lr=0.01)  # a short budget: the official 1e-3 needs ~5000 steps


def wplus_projection(G, target, lpips_module, steps, lr=0.1):
    """The W+ baseline with the same loss and budget: Adam on one W+ code from w_avg (MSE + 1.5 LPIPS)."""
    lp = common.safe_lpips(lpips_module)
    w_avg, _ = common.estimate_w_stats(G)
    w = w_avg.reshape(1, 1, -1).repeat(1, G.synthesis.num_ws, 1).clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    for _ in range(steps):
        x = G.synthesis(w, noise_mode='const', force_fp32=True)
        loss = (x - target).square().mean() + 1.5 * lp(x, target).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach()


@pytest.fixture(scope='module')
def ood_fits(G32, lpips_alex, ood_target):
    out = sphinx.invert(G32, ood_target, None, lpips_alex, seed=0, **FIT)
    w = wplus_projection(G32, ood_target, lpips_alex, FIT['steps'])
    return out, w

#----------------------------------------------------------------------------
# Heads, schedule, synthesis input.

def test_head_shapes_and_parameter_counts(G32):
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(sphinx.StyleProjectionHead(14, 512)) == 1_239_072  # spec 3: encoder 168,352 + 14 x 76,480
    assert count(sphinx.StyleProjectionHead(18, 512)) == 1_544_992
    assert count(sphinx.StyleProjectionHead(14, 512).encoder) == 168_352
    assert count(sphinx.ContentProjectionHead(512)) == 70_048      # spec 4
    torch.manual_seed(0)
    head = sphinx.StyleProjectionHead(14, 512)
    z = torch.randn(256, 14, 512)
    with torch.no_grad():
        ws = head(z)
        assert ws.shape == (256, 14, 512)
        assert 0.05 < float(ws.std()) < 0.1          # spec 3: per-element std ~0.073 at init
        assert float(ws.std(0).mean()) < 0.03         # ... and almost insensitive to z+ (~0.014)
        z2 = z[:1].clone()
        z2[0, 3] += 1                                 # rows never mix: only row 3 moves
        moved = (head(z2) - head(z[:1])).abs().amax(-1)[0]
        assert moved[3] > 0 and torch.count_nonzero(moved) == 1
        assert float(ws.norm(dim=-1).mean()) == pytest.approx(1.65, rel=0.1)
        S = [sphinx.ContentProjectionHead(512)(torch.randn(64, 8, 4, 4)) for _ in range(8)]
        assert S[0].shape == (64, 512, 4, 4)
        assert 0.9 < np.mean([float(x.std()) for x in S]) < 1.25  # spec 4: ~1.14 (one head); 1.04 on average
    model = sphinx.SphinxModel.for_generator(G32)
    num_ws = G32.synthesis.num_ws
    assert model.settings['num_ws'] == num_ws == 8 and model.settings['channels'] == G32.synthesis.b4.out_channels
    assert len(model.noise) == num_ws - 1 and [n.shape[0] for n in model.noise] == [4, 8, 8, 16, 16, 32, 32]
    z, s = model.sample(3)
    assert z.shape == (3, num_ws, G32.w_dim) and s.shape == (3, 8, 4, 4)
    ws, S = model.latents(z, s)
    assert ws.shape == (3, num_ws, G32.w_dim) and S.shape == (3, 64, 4, 4)


def test_official_lr_schedule():
    steps = 5000
    lr = [1e-3 * sphinx.lr_ramp(i / steps) for i in (0, 125, 250, 3750, 4000, 4500, 4999)]
    assert lr[0] == 0 and lr[1] == pytest.approx(5e-4) and lr[2] == lr[3] == pytest.approx(1e-3)
    assert lr[4] == pytest.approx(9.05e-4, abs=1e-6) and lr[5] == pytest.approx(3.45e-4, abs=1e-6) and lr[6] < 1e-8


def test_fit_schedules_only_style_head_by_default(G32, lpips_alex, ood_target):
    _, hist = sphinx.fit(G32, ood_target, None, lpips_alex, steps=4)
    assert hist['lr'][0] == 0.0 and hist['lr_content'] == [1e-3] * 4 and len(hist['loss']) == 4  # official (bug 11.1)
    _, hist = sphinx.fit(G32, ood_target, None, lpips_alex, steps=4, schedule='all')
    assert hist['lr_content'] == hist['lr'] and hist['lr'][0] == 0.0
    with pytest.raises(ValueError, match='schedule'):
        sphinx.fit(G32, ood_target, None, lpips_alex, steps=1, schedule='fast')


@pytest.mark.parametrize('qc', [False, True])
def test_const_input_reproduces_constant_bit_identically(qc):
    G = legacy.init_network('tiny32')['G_ema']
    if qc:
        G = qc_surgery.convert_to_qc(dict(G=G, G_ema=G, D=None), q_dim=4)['G_ema'].eval()
    ws = G.mapping(torch.randn(3, G.z_dim), None)
    const = G.synthesis.b4.const
    with torch.no_grad():
        ref = G.synthesis(ws, noise_mode='const')
        batched = G.synthesis(ws, noise_mode='const', const_input=const.unsqueeze(0).repeat(3, 1, 1, 1))
        shared = G.synthesis(ws, noise_mode='const', const_input=const)
        other = G.synthesis(ws, noise_mode='const', const_input=torch.randn(3, *const.shape))
        assert torch.equal(ref, batched) and torch.equal(ref, shared)
        assert not torch.allclose(ref, other)
        if qc:
            q = torch.rand(3, 4)
            assert torch.equal(G.synthesis(ws, q=q, noise_mode='const'),
                               G.synthesis(ws, q=q, noise_mode='const', const_input=const))
        with pytest.raises(AssertionError):
            G.synthesis(ws, const_input=torch.zeros(3, 5, 4, 4))
    out = sphinx.invert(G, torch.zeros(2, 3, 32, 32), None, None, steps=2, num_draws=2)  # batch: one fit per image
    assert out.restored.shape == (2, 3, 32, 32) and len(out.models) == 2 and out.q is None

#----------------------------------------------------------------------------
# The poster's claims, on the tiny generator.

def test_sphinx_beats_wplus_projection_on_ood_image(G32, lpips_alex, ood_target, ood_fits):
    out, w = ood_fits
    lp = common.safe_lpips(lpips_alex)
    with torch.no_grad():
        x_w = G32.synthesis(w, noise_mode='const', force_fp32=True)
        mse_s, mse_w = float((out.restored - ood_target).square().mean()), float((x_w - ood_target).square().mean())
        lp_s, lp_w = float(lp(out.restored, ood_target)), float(lp(x_w, ood_target))
    print(f'OOD at {FIT["steps"]} steps: SPHInX MSE {mse_s:.4f} LPIPS {lp_s:.4f}; W+ MSE {mse_w:.4f} LPIPS {lp_w:.4f}')
    assert mse_s < mse_w and lp_s < lp_w
    assert out.restored.shape == ood_target.shape and out.q is None and out.G is G32
    assert out.uncertainty.shape == (1, 1, 32, 32) and float(out.uncertainty.min()) >= 0
    assert out.content.shape == (1, 64, 4, 4) and out.ws.shape == (1, 8, 64)
    hist = out.history['fit']
    assert hist['loss'][-1] < 0.5 * hist['loss'][0]


def test_draws_vary_far_less_than_perturbed_wplus(G32, ood_fits):
    """8 fresh (z+, s) draws of the fit vs 8 perturbations of the projected W+ code at the same
    scale: z+ ~ N(0, I) is one prior std of SPHInX's input, so W+ gets one prior std of W
    (w_std / sqrt(w_dim) per coordinate)."""
    out, w = ood_fits
    model = out.models[0]
    imgs, _, _ = model.draws(G32, 8, seed=11)
    _, w_std = common.estimate_w_stats(G32)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        perturbed = w + w_std / math.sqrt(G32.w_dim) * torch.randn([8, *w.shape[1:]], generator=gen)
        x_w = G32.synthesis(perturbed, noise_mode='const', force_fp32=True)
    spread_s = float(imgs.std(0, unbiased=False).mean())
    spread_w = float(x_w.std(0, unbiased=False).mean())
    print(f'spread over 8 draws: SPHInX {spread_s:.4f}, W+ perturbed {spread_w:.4f}')
    assert spread_s < 0.25 * spread_w
    # The result is the mean of the draws; the uncertainty map their per-pixel spread.
    summary = sphinx.summarize(G32, model, num_draws=8, seed=11)
    assert torch.allclose(summary['image'], imgs.mean(0, keepdim=True), atol=1e-6)
    assert summary['spread'] == pytest.approx(spread_s, rel=1e-5)
    one = sphinx.summarize(G32, model, num_draws=8, result='draw', seed=11)
    assert torch.equal(one['image'], imgs[:1])


def test_compressed_sensing_beats_back_projection(G32):
    with torch.no_grad():
        ws = common.sample_ws(G32, 1, seed=3).unsqueeze(1).repeat(1, G32.synthesis.num_ws, 1)
        x = G32.synthesis(ws, noise_mode='const', force_fp32=True).clamp(-1, 1)
    deg = parse_degradation('cs:0.1', 32, seed=0)
    y = deg.true(x)
    assert y.shape == (1, deg.m) and deg.m == 307
    out = sphinx.invert(G32, y, deg, None, steps=60, lr=0.01, content_lr=0.01, noise_lr=0.01)
    mse_s = float((out.restored - x).square().mean())
    mse_bp = float((deg.back_project(y).clamp(-1, 1) - x).square().mean())
    print(f'cs:0.1: SPHInX MSE {mse_s:.4f}, back-projection MSE {mse_bp:.4f}')
    assert mse_s < 0.5 * mse_bp
    assert out.loss.shape == (1,)

#----------------------------------------------------------------------------
# Operators.

@pytest.mark.parametrize('matrix', ['circulant', 'gaussian'])
def test_cs_operator_is_one_seeded_linear_map(matrix):
    deg = parse_degradation(f'cs:0.25:{matrix}', 16, seed=5)
    assert isinstance(deg, CompressedSensing) and deg.m == int(0.25 * 3 * 16 * 16) and not deg.is_image
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    y = deg(x)
    assert torch.equal(deg.true(x), y)
    assert torch.equal(parse_degradation(f'cs:0.25:{matrix}', 16, seed=5)(x), y)
    assert not torch.allclose(parse_degradation(f'cs:0.25:{matrix}', 16, seed=6)(x), y)
    a, b = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    assert torch.allclose(deg(2 * a - b), 2 * deg(a) - deg(b), atol=1e-4)
    u = torch.randn(4, deg.m)
    assert float((y * u).sum()) == pytest.approx(float((x * deg.adjoint(u)).sum()), rel=1e-4, abs=1e-3)
    energy = (deg(a).square().sum(1) / a.flatten(1).square().sum(1)).mean()
    assert 0.5 < float(energy) < 1.5  # E||Ax||^2 = ||x||^2 (a missing 1/sqrt(m) would be 192x)
    assert deg.to_image_size(y, 32).shape == (4, 3, 32, 32)
    x.requires_grad_(True)
    deg(x).square().sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_gauss_operator_and_compositions():
    deg = parse_degradation('gauss:0.2', 64, seed=1)
    x = torch.zeros(1, 3, 64, 64)
    noise = deg.true(x) - x
    assert float(noise.std()) == pytest.approx(0.2, rel=0.05)
    assert torch.equal(deg.true(x), parse_degradation('gauss:0.2', 64, seed=1).true(x))
    assert not torch.equal(deg(x), deg(x))  # f-hat: fresh noise every call
    comp = parse_degradation('sr:2+gauss:0.1+cs:0.5', 32)
    assert comp.name == 'sr:2:bicubic+gauss:0.1+cs:0.5' and comp.ops[-1].shape == (3, 16, 16) and not comp.is_image
    assert comp(torch.zeros(2, 3, 32, 32)).shape == (2, 384)
    assert comp.to_image_size(comp.true(torch.zeros(2, 3, 32, 32)), 32).shape == (2, 3, 32, 32)
    for spec, match in (('cs:0', r'\(0, 1\]'), ('cs:1.5', r'\(0, 1\]'), ('cs:-0.1', r'\(0, 1\]'), ('cs:0.1+sr:2', 'last'),
                        ('cs:0.1+cs:0.2', 'last'), ('cs:0.1:dct', 'unknown matrix'), ('gauss:-1', 'std'),
                        ('cs:0.00001', 'no measurement')):
        with pytest.raises(ValueError, match=match):
            parse_degradation(spec, 32)
    from inversion.operators import Compose
    with pytest.raises(ValueError, match='last'):
        Compose([CompressedSensing(0.1, 32), parse_degradation('jpeg:50', 32)], reorder=False)


def test_measurement_files(tmp_path):
    deg = parse_degradation('cs:0.1', 32)
    np.save(tmp_path / 'ok.npy', np.zeros(deg.m, np.float32))
    np.save(tmp_path / 'bad.npy', np.zeros(deg.m + 1, np.float32))
    assert load_measurements(str(tmp_path / 'ok.npy'), deg).shape == (1, deg.m)
    with pytest.raises(ValueError, match=f'bad.npy holds {deg.m + 1} values.*takes {deg.m}'):
        load_measurements(str(tmp_path / 'bad.npy'), deg)
    with pytest.raises(ValueError, match='need a cs'):
        load_measurements(str(tmp_path / 'ok.npy'), parse_degradation('sr:2', 32))

#----------------------------------------------------------------------------
# Saved fits and OOD editing.

def test_saved_fit_rerenders_and_edits(G32, lpips_alex, ood_target, ood_fits, tmp_path):
    out, _ = ood_fits
    model = out.models[0]
    sphinx.save_fit(str(tmp_path / 'fit.pt'), model, run=dict(steps=FIT['steps']))
    loaded, state = sphinx.load_fit(str(tmp_path / 'fit.pt'), G=G32)
    assert state['run']['steps'] == FIT['steps']
    assert torch.equal(sphinx.summarize(G32, loaded, 4, seed=1)['image'], sphinx.summarize(G32, model, 4, seed=1)['image'])
    with pytest.raises(ValueError, match='another generator'):
        sphinx.load_fit(str(tmp_path / 'fit.pt'), G=legacy.init_network('tiny64')['G_ema'])
    (tmp_path / 'junk.pt').write_bytes(b'not a fit')
    with pytest.raises(ValueError, match='cannot read'):
        sphinx.load_fit(str(tmp_path / 'junk.pt'))
    # Interpolation: the end frames are the fits' mean renders.
    model_b, _ = sphinx.fit(G32, torch.flip(ood_target, [3]), None, lpips_alex, steps=3)
    frames = sphinx.interpolate(G32, model, model_b, frames=5, num_draws=4, seed=2)
    assert frames.shape == (5, 3, 32, 32)
    _, ws_a, S_a = model.draws(G32, 4, seed=2)
    end = sphinx.render(G32, ws_a.mean(0, keepdim=True), S_a.mean(0, keepdim=True), list(model.noise))
    assert torch.allclose(frames[0], end[0], atol=1e-5) and not torch.allclose(frames[0], frames[-1])
    # Rotate walk: the alphas pushed apart by the hinge, unit rows, 2 (K - 1) + 1 frames.
    trained, alpha, direction, hist = sphinx.learn_attribute(G32, model, ood_target, None, lpips_alex, 'rotate',
                                                             (0, 22.5, 45), steps=4, attribute_lr=0.1)
    assert alpha.shape == (2,) and float(alpha[1] - alpha[0]) > 0 and len(hist['loss']) == 4
    assert torch.allclose(direction.norm(dim=1), torch.ones(8), atol=1e-5)
    frames, alphas = sphinx.attribute_walk(G32, trained, alpha, direction)
    assert frames.shape == (5, 3, 32, 32) and alphas[0] == 0 and alphas[2] == pytest.approx(float(alpha[0]))
    with pytest.raises(ValueError, match='attribute'):
        sphinx.learn_attribute(G32, model, ood_target, None, lpips_alex, 'smile')


def test_rotate_and_hinge():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.equal(sphinx.rotate(x, 90), torch.rot90(x, 1, dims=(2, 3)))
    assert torch.equal(sphinx.rotate(x, 0), x)
    assert sphinx.rotate(torch.ones(1, 1, 8, 8), 45)[0, 0, 0, 0] == 0  # corners: mid-grey 0
    assert float(sphinx.monotonic_hinge(torch.tensor([0.5]))) == pytest.approx(1.5)
    assert float(sphinx.monotonic_hinge(torch.tensor([1.0, 2.0, 5.0]))) == pytest.approx(1.0 + 1.0 + 0.0 + 0.0 + 0.0)

#----------------------------------------------------------------------------
# invert.py and bench/restore.py.

def tiny16():
    torch.manual_seed(0)
    G = networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=32)).eval()
    return dict(G=G, G_ema=G)


@pytest.fixture(scope='module')
def cli_files(tmp_path_factory):
    root = tmp_path_factory.mktemp('sphinx_cli')
    legacy.save_network_pkl(tiny16(), str(root / 'net.pkl'))
    (root / 'targets').mkdir()
    rng = np.random.RandomState(0)
    for name in ('a', 'b'):
        PIL.Image.fromarray((rng.rand(20, 20, 3) * 255).astype(np.uint8)).save(root / 'targets' / f'{name}.png')
    PIL.Image.fromarray((rng.rand(20, 20, 3) * 255).astype(np.uint8)).save(root / 'other.png')
    PIL.Image.fromarray((rng.rand(24, 20, 3) * 255).astype(np.uint8)).save(root / 'other_size.png')
    return root


def _invert(args):
    from click.testing import CliRunner
    import invert
    return CliRunner().invoke(invert.main, [str(a) for a in args] + ['--device', 'cpu', '--lpips-backbone', 'random'])


def test_invert_cli_sphinx(cli_files):
    out = cli_files / 'out'
    r = _invert(['--network', cli_files / 'net.pkl', '--target', cli_files / 'targets', '--method', 'sphinx',
                 '--steps', '3', '--seed', '1', '--draws', '3', '--outdir', out, '--attribute', 'rotate',
                 '--attribute-fac', '0,30', '--interpolate', cli_files / 'other.png'])
    assert r.exit_code == 0, r.output + repr(r.exception)
    summary = json.loads((out / 'results.json').read_text())
    assert summary['method'] == 'sphinx' and sorted(summary['images']) == ['a', 'b']
    assert summary['images']['a']['draws'] == 3 and summary['images']['a']['spread'] >= 0
    for stem in ('a', 'b'):
        for suffix in ('restored.png', 'degraded.png', 'panel.png', 'latents.npz', 'sphinx.pt', 'walk_rotate.png',
                       'interp.png'):
            assert (out / f'{stem}_{suffix}').is_file(), (stem, suffix)
    widths = {name: np.asarray(PIL.Image.open(out / f'a_{name}.png')).shape[1] for name in ('panel', 'walk_rotate', 'interp')}
    # Labelled grids: observation | restored | re-degraded | uncertainty; 3 walk frames; 7 interpolation frames.
    assert widths['panel'] >= 4 * 16 and widths['walk_rotate'] >= 3 * 16 and widths['interp'] >= 7 * 16
    assert widths['interp'] > widths['panel'] > widths['walk_rotate']
    latents = np.load(out / 'a_latents.npz')
    assert latents['ws'].shape == (1, 6, 16) and latents['content'].shape == (1, 32, 4, 4) and 'noise4' in latents
    G = legacy.load_network(str(cli_files / 'net.pkl'))['G_ema']
    model, state = sphinx.load_fit(str(out / 'a_sphinx.pt'), G=G)
    assert state['run']['seed'] == 1 and state['observation'].shape == (1, 3, 16, 16)
    with torch.no_grad():
        img = sphinx.render(G, torch.from_numpy(latents['ws']), torch.from_numpy(latents['content']), list(model.noise))
    saved = np.asarray(PIL.Image.open(out / 'a_restored.png')).astype(np.float32) / 127.5 - 1
    assert np.abs(img[0].permute(1, 2, 0).clamp(-1, 1).numpy() - saved).mean() < 0.1  # the mean-W+ render ~ the mean image


def test_invert_cli_compressed_sensing(cli_files):
    out = cli_files / 'cs'
    r = _invert(['--network', cli_files / 'net.pkl', '--target', cli_files / 'targets' / 'a.png', '--method', 'sphinx',
                 '--degradation', 'cs:0.1', '--synthesize-degradation', '--steps', '2', '--outdir', out])
    assert r.exit_code == 0, r.output + repr(r.exception)
    y = np.load(out / 'a_observation.npy')
    assert y.shape == (76,) and np.load(out / 'a_degraded.npy').shape == (76,)
    assert (out / 'a_panel.png').is_file() and 'psnr' in json.loads((out / 'results.json').read_text())['images']['a']
    # The saved measurement vector is a target; every method takes it.
    for method in ('sphinx', 'pti'):
        r = _invert(['--network', cli_files / 'net.pkl', '--target', out / 'a_observation.npy', '--method', method,
                     '--degradation', 'cs:0.1', '--steps', '2', '--outdir', cli_files / f'cs_{method}'])
        assert r.exit_code == 0, r.output + repr(r.exception)
        assert (cli_files / f'cs_{method}' / 'a_observation_restored.png').is_file()


def test_invert_cli_sphinx_bad_input(cli_files, tmp_path):
    np.save(tmp_path / 'short.npy', np.zeros(10, np.float32))
    (tmp_path / 'broken.png').write_bytes(b'\x89PNG broken')
    base = ['--network', cli_files / 'net.pkl', '--outdir', tmp_path / 'o', '--steps', '1']
    target = ['--target', cli_files / 'targets' / 'a.png']
    cases = [
        (target + ['--method', 'sphinx', '--degradation', 'cs:0'], 'must be in (0, 1]'),
        (target + ['--method', 'sphinx', '--degradation', 'cs:1.5'], 'must be in (0, 1]'),
        (target + ['--method', 'sphinx', '--degradation', 'cs:0.1+sr:2'], 'must be the last'),
        (['--target', tmp_path / 'short.npy', '--method', 'sphinx', '--degradation', 'cs:0.1'], 'holds 10 values'),
        (target + ['--method', 'sphinx', '--degradation', 'cs:0.1'], 'add --synthesize-degradation'),
        (target + ['--method', 'sphinx', '--interpolate', cli_files / 'other_size.png'], 'same size'),
        (target + ['--method', 'sphinx', '--interpolate', tmp_path / 'missing.png'], 'not found'),
        (target + ['--method', 'sphinx', '--interpolate', tmp_path / 'broken.png'], 'cannot read'),
        (target + ['--method', 'ngd', '--interpolate', cli_files / 'other.png'], 'only for --method sphinx'),
        (target + ['--method', 'pti', '--attribute', 'rotate'], 'only for --method sphinx'),
        (target + ['--method', 'sphinx', '--attribute', 'rotate', '--attribute-fac', '0'], 'at least two'),
        (target + ['--method', 'sphinx', '--attribute', 'rotate', '--degradation', 'cs:0.1', '--synthesize-degradation'],
         'image observations'),
        (target + ['--method', 'sphinx', '--encoder', tmp_path / 'enc.pt'], '--method sphinx cannot start from an encoder'),
        (target + ['--method', 'sphinx', '--sefa', '2'], 'not for --method sphinx'),
        (target + ['--method', 'sphinx', '--q-from', cli_files / 'other.png'], 'only for QC-StyleGAN'),
    ]
    for args, message in cases:
        r = _invert(base + args)
        assert r.exit_code == 2 and isinstance(r.exception, SystemExit), (args, r.output, r.exception)
        error = [line for line in r.output.splitlines() if line.startswith('Error')]
        assert len(error) == 1 and message in error[0], (args, r.output)
        assert 'Traceback' not in r.output


def test_bench_restore_runs_sphinx(cli_files, tmp_path):
    from click.testing import CliRunner
    import bench.restore as restore
    out = tmp_path / 'bench'
    r = CliRunner().invoke(restore.main, ['--network', str(cli_files / 'net.pkl'), '--data', str(cli_files / 'targets'),
                                          '--methods', 'sphinx', '--tasks', 'sr', '--levels', 'XS', '--num-images', '1',
                                          '--steps', '2', '--lpips-backbone', 'random', '--no-pfid', '--no-niqe',
                                          '--outdir', str(out), '--device', 'cpu'])
    assert r.exit_code == 0, r.output + repr(r.exception)
    rows = restore.read_rows(str(out / 'results.csv'))
    assert [(row['method'], row['task'], row['level']) for row in rows] == [('sphinx', 'sr', 'XS')]
    assert (out / 'pred' / 'sphinx' / 'sr_XS' / 'a.png').is_file()

#----------------------------------------------------------------------------

@pytest.mark.cuda
def test_sphinx_cuda(ood_target):
    if not torch.cuda.is_available():
        pytest.skip('needs CUDA')
    G = tiny32().cuda()
    ws = G.mapping(torch.randn(2, G.z_dim, device='cuda'), None)
    with torch.no_grad():
        assert torch.equal(G.synthesis(ws, noise_mode='const'), G.synthesis(ws, noise_mode='const', const_input=G.synthesis.b4.const))
    target = ood_target.cuda()
    out = sphinx.invert(G, target, None, LPIPS(net='alex', pnet_rand=True).cuda(), steps=20, lr=0.01)
    assert out.restored.is_cuda and out.uncertainty.is_cuda and torch.isfinite(out.restored).all()
    deg = parse_degradation('gauss:0.1+cs:0.1', 32, device='cuda')
    y = deg.true(target)
    out = sphinx.invert(G, y, deg, None, steps=5)
    assert out.restored.shape == (1, 3, 32, 32) and out.loss.is_cuda
