"""Inversion methods (PTI, CRI, NGD, DGP, QC), editing and invert.py on a tiny generator with
targets it generated itself (ground truth known). CPU, small step counts."""

import json
import re

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F

import invert
import legacy
from inversion import common, cri, dgp, editing, ngd, pti, qc
from inversion.operators import parse_degradation
from metrics.restoration import LPIPS
from training import networks
from training import qc as qc_surgery

#----------------------------------------------------------------------------
# Fixtures.

def tiny_network(seed=0):
    torch.manual_seed(seed)
    G = networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                           mapping_kwargs=dict(num_layers=2),
                           synthesis_kwargs=dict(channel_base=256, channel_max=32)).eval()
    D = networks.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=256, channel_max=32).eval()
    with torch.no_grad():
        G.mapping.w_avg.copy_(common.sample_ws(G, 200, seed=1).mean(0))
    return dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=None)


@pytest.fixture(scope='module')
def net():
    return tiny_network()


@pytest.fixture(scope='module')
def qc_net():
    data = qc_surgery.convert_to_qc(tiny_network(), q_dim=4)
    data['G_ema'].eval()
    return data


@pytest.fixture(scope='module')
def lpips_module():
    torch.manual_seed(0)
    return LPIPS(net='alex', pnet_rand=True)


@pytest.fixture(scope='module')
def gt(net):
    """Ground-truth images G(w*) with w* a mapped sample (the batch has two images)."""
    G = net['G_ema']
    w = common.sample_ws(G, 2, seed=7)
    with torch.no_grad():
        return G.synthesis(w.unsqueeze(1).repeat(1, G.synthesis.num_ws, 1), noise_mode='const', force_fp32=True)


def mse(a, b):
    return float((a - b).square().mean())


def start_image(G, n=2):
    with torch.no_grad():
        return common.LatentGenerator(G)(G.mapping.w_avg.reshape(1, -1).repeat(n, 1))

#----------------------------------------------------------------------------
# common.

def test_latent_generator_spaces_agree(net):
    G = net['G_ema']
    gen = common.LatentGenerator(G)
    w = common.sample_ws(G, 2, seed=3)
    with torch.no_grad():
        a = gen(w)
        b = gen(gen.to_ws(w))
        wpp = gen.to_wpp(w)
        c = gen(wpp)
        wpp_moved = wpp.clone()
        wpp_moved[:, :, 0] += 0.5  # only the first filter of every layer gets another code
        d = gen(wpp_moved)
    assert wpp.shape == (2, G.synthesis.num_ws, G.synthesis.max_filters, G.w_dim)
    assert torch.equal(a, b) and torch.allclose(a, c, atol=1e-5)  # W++ with repeated rows = W+
    assert not torch.allclose(a, d, atol=1e-3)


def test_load_image_modes(tmp_path):
    rgba = np.zeros([10, 20, 4], np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 128
    PIL.Image.fromarray(rgba, 'RGBA').save(tmp_path / 'a.png')
    arr, notices = common.load_image(tmp_path / 'a.png')
    assert arr.shape == (10, 20, 3) and any('alpha' in n for n in notices)
    PIL.Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16 % 65536).astype(np.uint16)).save(tmp_path / 'b.png')
    t, notices = common.load_target(tmp_path / 'b.png', size=16)
    assert t.shape == (1, 3, 16, 16) and float(t.min()) >= -1 and float(t.max()) <= 1
    assert any('16-bit' in n for n in notices) and any('resized' in n for n in notices)
    (tmp_path / 'bad.png').write_bytes(b'not an image')
    with pytest.raises(ValueError, match='cannot read'):
        common.load_image(tmp_path / 'bad.png')
    with pytest.raises(ValueError, match='no images'):
        common.list_images(tmp_path / 'empty') if (tmp_path / 'empty').mkdir() is None else None

#----------------------------------------------------------------------------
# NGD.

def test_ngd_step_moves_each_code_by_lr():
    a = torch.randn([3, 5, 8], requires_grad=True)
    b = torch.randn([2, 4], requires_grad=True)
    a0, b0 = a.detach().clone(), b.detach().clone()
    opt = ngd.NGD([a, b], lr=0.03)
    ((a ** 3).sum() + (b * torch.tensor([1.0, 0, 0, 0])).sum() * 0 + (b[0] ** 2).sum()).backward()
    opt.step()
    assert torch.allclose((a.detach() - a0).norm(dim=-1), torch.full([3, 5], 0.03), atol=1e-6)
    moved = (b.detach() - b0).norm(dim=-1)
    assert abs(float(moved[0]) - 0.03) < 1e-6 and float(moved[1]) == 0  # zero gradient: no step


@pytest.mark.parametrize('spec', ['sr:4', 'inpaint:M'])
def test_ngd_restores(net, gt, lpips_module, spec):
    G = net['G_ema']
    deg = parse_degradation(spec, 16)
    y = deg.true(gt)
    res = ngd.invert(G, y, deg, lpips_module, steps=(12, 8, 8), lrs=(0.2, 0.05, 0.05))
    losses = res.history['w']['loss'] + res.history['w+']['loss'] + res.history['w++']['loss']
    assert float(res.loss.mean()) < losses[0]
    assert res.restored.shape == gt.shape and res.ws.ndim == 4  # ends in the filter-wise W++ space
    assert mse(res.restored, gt) < mse(start_image(G), gt)

#----------------------------------------------------------------------------
# PTI.

@pytest.mark.parametrize('spec', ['sr:4', 'inpaint:M'])
def test_pti_restores(net, gt, lpips_module, spec):
    G = net['G_ema']
    deg = parse_degradation(spec, 16)
    y = deg.true(gt)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    res = pti.invert(G, y, deg, lpips_module, pivot_steps=25, tune_steps=15, pivot_lr=0.1, tune_lr=3e-3,
                     lpips_stop=None, locality=(spec == 'sr:4'))
    assert res.history['tune']['loss'][-1] < res.history['tune']['loss'][0]
    assert res.history['pivot']['lpips'][-1] < res.history['pivot']['lpips'][0]
    assert mse(res.restored, gt) < mse(start_image(G), gt)
    assert res.G is not G
    for k, v in G.state_dict().items():  # the original generator is untouched
        assert torch.equal(v, before[k]), k

#----------------------------------------------------------------------------
# CRI.

def test_cri_chooses_nearest_centroid_and_restores(net, gt, lpips_module):
    G = net['G_ema']
    deg = parse_degradation('inpaint:M', 16)
    y = deg.true(gt)
    centroids = cri.cluster_latents(G, num_samples=60, num_clusters=5, seed=0)
    assert centroids.shape == (5, 16)
    torch.manual_seed(1)
    vgg = LPIPS(net='vgg', pnet_rand=True)
    index, dist = cri.select_centroids(G, centroids, y, vgg)
    gen = common.LatentGenerator(G)
    with torch.no_grad():  # Algorithm 1: VGG relu4_3 of the (undegraded) centroid images vs the input's, L2, argmin
        up = lambda x: F.interpolate(x, size=(32, 32), mode='bilinear', align_corners=False)  # 16 px net -> 32 px
        for n in range(2):
            t = vgg.features(up(y[n:n + 1]))[3].flatten()
            manual = [float((vgg.features(up(gen(centroids[k:k + 1])))[3].flatten() - t).norm()) for k in range(5)]
            assert int(index[n]) == int(np.argmin(manual))
            assert np.allclose(dist[n].numpy(), manual, rtol=1e-4)
    res = cri.invert(G, y, deg, lpips_module, vgg=vgg, centroids=centroids, offset_steps=25, offset_lr=0.05,
                     tune_steps=10, tune_lr=3e-3, lpips_stop=None)
    assert res.history['offset']['loss'][-1] < res.history['offset']['loss'][0]
    with torch.no_grad():
        start = gen(centroids[index])
    assert mse(res.restored, gt) < mse(start, gt)

#----------------------------------------------------------------------------
# DGP.

def test_dgp_restores_sr(net, gt, lpips_module):
    G, D = net['G_ema'], net['D']
    deg = parse_degradation('sr:4', 16)
    y = deg.true(gt)
    feats = dgp.discriminator_features(D, gt)
    assert len(feats) == len(D.block_resolutions) + 1 and all(f.shape[0] == 2 for f in feats)
    res = dgp.invert(G, y, deg, D=D, stage_steps=(8, 8, 8), w_d=(1, 1, 0.5), w_mse=(10, 10, 50),
                     g_lrs=(1e-3, 1e-3, 5e-4), latent_lrs=(0.05, 0.02, 0.01), num_candidates=20)
    assert res.ft_nums == [2, 2, 3]
    assert res.history['mse'][-1] < res.history['mse'][0]
    assert float(res.loss.mean()) < res.history['mse'][0]
    w0 = res.history['init']
    assert len(w0['best_score']) == 2

#----------------------------------------------------------------------------
# QC.

def test_qc_recovers_q(qc_net, lpips_module):
    G = qc_net['G_ema']
    w_true = common.sample_ws(G, 2, seed=11)
    q_true = torch.randn([2, 4], generator=torch.Generator().manual_seed(3)) * 0.3
    gen = common.LatentGenerator(G)
    with torch.no_grad():
        sharp, y = gen(w_true), gen(w_true, q=q_true)
    res = qc.invert(G, y, None, lpips_module, refine_steps=60, w_lr=0.05, q_lr=0.1, tune_steps=8, tune_lr=1e-3,
                    lpips_stop=None)
    assert res.q.shape == (2, 4)
    assert float((res.q - q_true).norm()) < float(q_true.norm())
    assert res.history['refine']['loss'][-1] < res.history['refine']['loss'][0]
    assert 'stats' in res.history['tune']
    assert mse(res.restored, sharp) < mse(y, sharp) or mse(res.restored, sharp) < mse(start_image(G), sharp)


def test_qc_zero_q_fits_the_sharp_image(qc_net, lpips_module):
    """zero_q: q stays 0 (the refinement moves w only) and the tuning fits f^(G(w, 0)) to an SR observation;
    with a q that re-applies a degradation f^ already models, the fitted image is G(w, q) and the sharp one is off."""
    G = qc_net['G_ema']
    sr = parse_degradation('sr:2', 16)
    with torch.no_grad():
        y = sr(common.LatentGenerator(G)(common.sample_ws(G, 2, seed=11)))
    q_enc = torch.randn([2, 4], generator=torch.Generator().manual_seed(3)) * 0.5
    kw = dict(refine_steps=5, q_init=q_enc, tune_steps=60, tune_lr=5e-3, lpips_stop=None, locality=False)
    both = qc.invert(G, y, sr, lpips_module, **kw)
    zero = qc.invert(G, y, sr, lpips_module, zero_q=True, **kw)
    assert zero.q.shape == (2, 4) and float(zero.q.abs().max()) == 0 and torch.equal(zero.restored, zero.degraded)
    assert 'stats' not in zero.history['tune'] and 'stats' in both.history['tune']
    sharp_err = lambda res: float((sr(res.restored) - y).square().mean())
    assert sharp_err(zero) < 0.5 * sharp_err(both), (sharp_err(zero), sharp_err(both))
    assert float((sr(both.degraded) - y).square().mean()) < sharp_err(both)  # the encoder-q path fitted G(w, q)


def test_invert_cli_zero_q_only_for_qc(net, tmp_path):
    from click.testing import CliRunner
    legacy.save_network_pkl(net, str(tmp_path / 'net.pkl'))
    PIL.Image.fromarray((np.random.RandomState(0).rand(16, 16, 3) * 255).astype(np.uint8)).save(tmp_path / 't.png')
    r = CliRunner().invoke(invert.main, ['--network', str(tmp_path / 'net.pkl'), '--target', str(tmp_path / 't.png'),
                                         '--method', 'ngd', '--zero-q', '--steps', '1', '--outdir', str(tmp_path / 'out'),
                                         '--device', 'cpu', '--lpips-backbone', 'random'])
    assert r.exit_code == 2 and '--zero-q applies to --method qc, not ngd' in r.output, r.output


def test_invert_cli_zero_q(qc_net, tmp_path):
    """--zero-q reaches the QC method (q all zero in the latents), and without an operator it warns."""
    from click.testing import CliRunner
    legacy.save_network_pkl({k: v for k, v in qc_net.items() if k != 'G_teacher'}, str(tmp_path / 'qc.pkl'))
    PIL.Image.fromarray((np.random.RandomState(0).rand(16, 16, 3) * 255).astype(np.uint8)).save(tmp_path / 't.png')
    base = ['--network', str(tmp_path / 'qc.pkl'), '--target', str(tmp_path / 't.png'), '--method', 'qc', '--zero-q',
            '--steps', '2,2', '--device', 'cpu', '--lpips-backbone', 'random', '--no-encoder-ok']
    for operator, warned in (('sr:2:bicubic:matched', False), ('none', True)):
        out = tmp_path / operator.replace(':', '_')
        r = CliRunner().invoke(invert.main, base + ['--operator', operator, '--synthesize-degradation', '--outdir', str(out)])
        assert r.exit_code == 0, r.output + repr(r.exception)
        assert ('--zero-q with --operator none' in r.output) == warned, r.output
        assert float(np.abs(np.load(out / 't_latents.npz')['q']).max()) == 0
        assert json.loads((out / 'results.json').read_text())['provenance']['settings']['zero_q'] is True


def test_qc_rejects_plain_network(net, gt, lpips_module):
    with pytest.raises(ValueError, match='QC-StyleGAN'):
        qc.invert(net['G_ema'], gt, None, lpips_module)

#----------------------------------------------------------------------------
# Editing.

def test_sefa_and_direction(net, tmp_path):
    G = net['G_ema']
    dirs, values = editing.sefa_directions(G, 3)
    assert dirs.shape == (3, 16) and torch.allclose(dirs.norm(dim=1), torch.ones(3), atol=1e-5)
    assert values[0] >= values[1] >= values[2]
    np.save(tmp_path / 'd.npy', np.arange(16, dtype=np.float32))
    d = editing.load_direction(tmp_path / 'd.npy', 16)
    ws = common.LatentGenerator(G).to_ws(common.sample_ws(G, 1))
    moved = editing.apply_direction(ws, d, 2.0)
    assert torch.allclose((moved - ws)[0, 0].norm(), torch.tensor(2.0))
    np.save(tmp_path / 'bad.npy', np.zeros(5, np.float32))
    with pytest.raises(ValueError, match='shape'):
        editing.load_direction(tmp_path / 'bad.npy', 16)

#----------------------------------------------------------------------------
# invert.py.

def _write_targets(folder, net):
    folder.mkdir()
    G = net['G_ema']
    with torch.no_grad():
        img = common.LatentGenerator(G)(common.sample_ws(G, 3, seed=5))
    u8 = ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    rgba = np.concatenate([u8[0], np.full([16, 16, 1], 255, np.uint8)], axis=2)
    PIL.Image.fromarray(rgba, 'RGBA').save(folder / 'a_rgba.png')
    PIL.Image.fromarray(u8[1]).convert('L').save(folder / 'b_gray.jpg')
    PIL.Image.fromarray(u8[2].mean(2).astype(np.uint16) * 257).resize((24, 20)).save(folder / 'c_16bit.png')
    (folder / 'd_corrupt.png').write_bytes(b'\x89PNG broken')


def test_invert_cli_mixed_folder(net, tmp_path):
    from click.testing import CliRunner
    legacy.save_network_pkl(net, str(tmp_path / 'net.pkl'))
    _write_targets(tmp_path / 'targets', net)
    np.save(tmp_path / 'dir.npy', np.ones(16, np.float32))
    out = tmp_path / 'out'
    result = CliRunner().invoke(invert.main, [
        '--network', str(tmp_path / 'net.pkl'), '--target', str(tmp_path / 'targets'), '--method', 'ngd',
        '--degradation', 'inpaint:M', '--synthesize-degradation', '--steps', '2', '--outdir', str(out),
        '--device', 'cpu', '--lpips-backbone', 'random', '--edit', str(tmp_path / 'dir.npy'), '--sefa', '2'])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert 'd_corrupt.png' in result.output and 'Skipped 1' in result.output
    summary = json.loads((out / 'results.json').read_text())
    assert sorted(summary['images']) == ['a_rgba', 'b_gray', 'c_16bit'] and 'd_corrupt.png' in summary['skipped']
    assert 'psnr' in summary['images']['a_rgba']
    # Not a terminal (no progress bar): one line per image with its time and scores.
    assert sum(line.startswith('[') and '/4] ' in line for line in result.output.splitlines()) == 3, result.output
    assert re.search(r'\[1/4\] a_rgba: [0-9.]+ s, PSNR [0-9.]+ dB \(observation [0-9.]+\)', result.output), result.output
    for stem in ('a_rgba', 'b_gray', 'c_16bit'):
        for suffix in ('restored.png', 'degraded.png', 'panel.png', 'latents.npz', 'edit_sharp.png', 'sefa.png'):
            assert (out / f'{stem}_{suffix}').is_file(), (stem, suffix)


def test_invert_cli_bad_input(net, qc_net, tmp_path):
    from click.testing import CliRunner
    legacy.save_network_pkl(net, str(tmp_path / 'net.pkl'))
    (tmp_path / 'empty').mkdir()
    PIL.Image.fromarray(np.zeros([16, 16, 3], np.uint8)).save(tmp_path / 'x.png')
    base = ['--network', str(tmp_path / 'net.pkl'), '--outdir', str(tmp_path / 'o'), '--device', 'cpu',
            '--lpips-backbone', 'random', '--steps', '1']
    runner = CliRunner()
    r = runner.invoke(invert.main, base + ['--target', str(tmp_path / 'x.png'), '--method', 'magic'])
    assert r.exit_code != 0 and 'pti' in r.output and 'ngd' in r.output
    r = runner.invoke(invert.main, base + ['--target', str(tmp_path / 'x.png'), '--degradation', 'warp:3'])
    assert r.exit_code != 0 and 'sr' in r.output
    r = runner.invoke(invert.main, base + ['--target', str(tmp_path / 'empty')])
    assert r.exit_code != 0 and 'no images' in r.output
    r = runner.invoke(invert.main, base + ['--target', str(tmp_path / 'x.png'), '--method', 'qc'])
    assert r.exit_code != 0 and 'QC' in r.output


def test_invert_cli_qc_transfer(qc_net, tmp_path):
    from click.testing import CliRunner
    legacy.save_network_pkl({k: v for k, v in qc_net.items() if k != 'G_teacher'}, str(tmp_path / 'qc.pkl'))
    PIL.Image.fromarray((np.random.RandomState(0).rand(16, 16, 3) * 255).astype(np.uint8)).save(tmp_path / 't.png')
    PIL.Image.fromarray((np.random.RandomState(1).rand(16, 16, 3) * 255).astype(np.uint8)).save(tmp_path / 'r.png')
    out = tmp_path / 'out'
    r = CliRunner().invoke(invert.main, [
        '--network', str(tmp_path / 'qc.pkl'), '--target', str(tmp_path / 't.png'), '--method', 'qc',
        '--q-from', str(tmp_path / 'r.png'), '--steps', '2', '--outdir', str(out), '--device', 'cpu',
        '--lpips-backbone', 'random', '--save-generator', '--no-encoder-ok'])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert (out / 't_q_transfer.png').is_file() and (out / 't_q_interp.png').is_file() and (out / 't_G.pkl').is_file()
    assert 'q' in np.load(out / 't_latents.npz')
