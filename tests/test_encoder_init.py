"""Encoders as the start of PTI and NGD (inversion/methods.py `init`): run() hands the encoder's W / W+
code of the observation to the methods that can start from it, the optimisation's first latent is
that code, and methods that cannot use an encoder refuse it in one line (registry and invert.py)."""

import json
import os

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import legacy
from inversion import common
from inversion import methods
from inversion import ngd
from inversion.operators import parse_degradation
from metrics import provenance
from training import encoders
from training import networks

pytestmark = pytest.mark.usefixtures('single_thread')

RES = 16

#----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def G():
    torch.manual_seed(0)
    return networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=RES, img_channels=3,
                              mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=16)).eval()

def _encoder(G, w_space, seed=1):
    """A tiny-backbone encoder for G with random weights, its offsets scaled up so its code is far from w_avg."""
    torch.manual_seed(seed)
    enc = encoders.PSPEncoder.for_generator(G, backbone='tiny', w_space=w_space, input_size=32, backbone_weights='none')
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if name.startswith('w_head') and name.endswith('bias'):
                p.add_(torch.randn(p.shape))
    return encoders.EncoderWrapper(enc, G=G)

@pytest.fixture(scope='module')
def obs():
    deg = parse_degradation('sr:2', RES)
    y = torch.rand([2, 3, RES // 2, RES // 2], generator=torch.Generator().manual_seed(3)) * 2 - 1
    return deg, y

def _code(enc, G, y):
    w, _ = enc.encode(common.to_image_size(None, y, G.synthesis.img_resolution))
    return w

class _Recorder:
    """Wraps an optimizer class; records a copy of the first parameter each time one is built (the start latent)."""

    def __init__(self, cls):
        self.cls, self.starts = cls, []

    def __call__(self, params, *args, **kwargs):
        params = list(params)
        first = params[0]['params'][0] if isinstance(params[0], dict) else params[0]
        self.starts.append(first.detach().clone())
        return self.cls(params, *args, **kwargs)

#----------------------------------------------------------------------------

def test_registry_says_which_methods_take_an_encoder():
    assert {name: methods.accepts_encoder(name) for name in ('pti', 'ngd', 'qc', 'cri', 'dgp')} == \
        dict(pti=True, ngd=True, qc=True, cri=False, dgp=False)
    assert methods.get('pti').init == 'w_init' and methods.get('ngd').init == 'w_init' and methods.get('qc').init is None
    for name in ('cri', 'dgp'):
        with pytest.raises(methods.MethodError) as err:
            methods.check_encoder(name)
        assert str(err.value) == (f'--method {name} cannot start from an encoder; drop --encoder, or use a method that '
                                  f'can: ' + ', '.join(n for n in methods.METHODS if methods.accepts_encoder(n)))

@pytest.mark.parametrize('w_space', ['w', 'w+'])
def test_pti_pivot_starts_from_the_encoder_code(G, obs, w_space, monkeypatch):
    deg, y = obs
    enc = _encoder(G, 'w+')
    code = _code(enc, G, y)
    assert code.shape == (2, G.num_ws, 16) and (code - G.mapping.w_avg).abs().max() > 0.5
    lpips = methods.build_lpips_modules(['pti'], random_backbone=True)
    # Step 0: the pivot optimisation's first latent is the code (the mean of its rows in W).
    rec = _Recorder(torch.optim.Adam)
    monkeypatch.setattr(torch.optim, 'Adam', rec)
    out = methods.run(method='pti', G=G, target=y, degradation=deg, lpips=lpips, steps=methods.parse_steps('pti', '3,1'),
                      encoder=enc, space=w_space)
    start = code if w_space == 'w+' else code.mean(dim=1)
    assert torch.equal(rec.starts[0], start)
    assert len(out.history['pivot']['loss']) == 3 and out.ws.shape == (2, G.num_ws, 16)
    # With no pivot steps the pivot is the code itself (pSp + PTI tuning).
    out0 = methods.run(method='pti', G=G, target=y, degradation=deg, lpips=lpips, steps=methods.parse_steps('pti', '0,0'),
                       encoder=enc, space=w_space)
    assert torch.equal(out0.ws, start if w_space == 'w+' else start.unsqueeze(1).repeat(1, G.num_ws, 1))
    # Without an encoder PTI still starts from its own w_avg estimate.
    rec.starts.clear()
    methods.run(method='pti', G=G, target=y, degradation=deg, lpips=lpips, steps=methods.parse_steps('pti', '1,0'), space=w_space)
    w_avg = common.estimate_w_stats(G)[0].reshape(1, 16)
    assert torch.allclose(rec.starts[0].reshape(-1, 16), w_avg.expand(rec.starts[0].reshape(-1, 16).shape))

@pytest.mark.parametrize('w_space', ['w', 'w+'])
def test_ngd_phases_start_from_the_encoder_code(G, obs, w_space, monkeypatch):
    deg, y = obs
    enc = _encoder(G, w_space)
    code = _code(enc, G, y)
    lpips = methods.build_lpips_modules(['ngd'], random_backbone=True)
    rec = _Recorder(ngd.NGD)
    monkeypatch.setattr(ngd, 'NGD', rec)
    # Phase W from the W code (a W+ code: the mean of its rows); phase W+ from the code (W+) or phase W's end (W).
    out = methods.run(method='ngd', G=G, target=y, degradation=deg, lpips=lpips, steps=methods.parse_steps('ngd', '0,2,1'),
                      encoder=enc)
    w_start = code.mean(dim=1) if w_space == 'w+' else code
    assert torch.equal(rec.starts[0], w_start)
    assert torch.equal(rec.starts[1], code if w_space == 'w+' else code.unsqueeze(1).repeat(1, G.num_ws, 1))
    assert [len(h['loss']) for h in out.history.values()] == [0, 2, 1]
    # The first loss is the loss at the start; phase W's moves carry into phase W+ (W+ code shifted by them).
    rec.starts.clear()
    out = methods.run(method='ngd', G=G, target=y, degradation=deg, lpips=lpips, steps=methods.parse_steps('ngd', '2,1,0'),
                      encoder=enc)
    loss_fn = ngd._loss_fn(common.safe_lpips(lpips['vgg']))  # pylint: disable=protected-access
    with torch.no_grad():
        at_code = loss_fn(common.degrade(deg, common.LatentGenerator(G)(w_start)), y)
    assert out.history['w']['loss'][0] == pytest.approx(float(at_code.mean()), rel=1e-5)
    moved = rec.starts[1] - (code if w_space == 'w+' else code.unsqueeze(1))
    assert moved.abs().max() > 0 and torch.allclose(moved, moved[:, :1].expand_as(moved), atol=1e-6)
    # steps 0,0,0: the result is the code (lifted to W++).
    out = methods.run(method='ngd', G=G, target=y, degradation=deg, lpips=lpips, steps=methods.parse_steps('ngd', '0'),
                      encoder=enc)
    assert torch.equal(out.ws, common.LatentGenerator(G).to_wpp(code))

def test_run_refuses_an_encoder_for_methods_that_cannot_use_one(G, obs):
    deg, y = obs
    enc = _encoder(G, 'w')
    for name in ('cri', 'dgp'):
        with pytest.raises(methods.MethodError, match=f'--method {name} cannot start from an encoder'):
            methods.run(method=name, G=G, target=y, degradation=deg, encoder=enc)

def test_initial_latent_shapes():
    code = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    assert torch.equal(common.initial_latent(code, 'w', 3, 4, 'cpu'), code.mean(dim=1))
    assert torch.equal(common.initial_latent(code[:, 0], 'w+', 3, 4, 'cpu'), code[:, :1].repeat(1, 3, 1))
    with pytest.raises(ValueError, match=r'\[N, 4\] \(W\) or \[N, 3, 4\] \(W\+\), got \[2, 5, 4\]'):
        common.initial_latent(torch.zeros([2, 5, 4]), 'w', 3, 4, 'cpu')

#----------------------------------------------------------------------------
# invert.py

@pytest.fixture(scope='module')
def files(G, tmp_path_factory):
    folder = tmp_path_factory.mktemp('encinit')
    net = str(folder / 'G.pkl')
    legacy.save_network_pkl(dict(G_ema=G), net)
    enc = _encoder(G, 'w+').encoder
    enc_path = str(folder / 'enc.pt')
    encoders.save_encoder_checkpoint(enc_path, enc, network=net)
    target = str(folder / 't.png')
    PIL.Image.fromarray((np.random.RandomState(0).rand(RES, RES, 3) * 255).astype(np.uint8)).save(target)
    return dict(net=net, enc=enc_path, target=target, code=_code(_encoder(G, 'w+'), G, common.load_target(target, RES)[0]))

def _invert(files, outdir, *extra):
    import invert  # pylint: disable=import-outside-toplevel
    return CliRunner().invoke(invert.main, ['--network', files['net'], '--target', files['target'], '--encoder', files['enc'],
                                            '--outdir', str(outdir), '--device', 'cpu', '--lpips-backbone', 'random'] + list(extra))

@pytest.mark.parametrize('method, steps', [('pti', '0,0'), ('ngd', '0')])
def test_invert_cli_starts_pti_and_ngd_from_the_encoder(files, tmp_path, method, steps):
    extra = ['--w-space', 'w+'] if method == 'pti' else []
    r = _invert(files, tmp_path, '--method', method, '--steps', steps, *extra)
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert 'ignored' not in r.output
    ws = np.load(tmp_path / 't_latents.npz')['ws']
    if method == 'ngd':  # W++: every filter's code is the row's
        assert ws.ndim == 4 and (ws == ws[:, :, :1]).all()
        ws = ws[:, :, 0]
    np.testing.assert_allclose(ws, files['code'].numpy(), rtol=0, atol=1e-6)
    with open(tmp_path / 'results.json') as f:  # the encoder file is in the run's provenance
        settings = json.load(f)['provenance']['settings']
    assert settings['encoder'] == dict(path=os.path.abspath(files['enc']), sha256=provenance.sha256_prefix(files['enc']))

def test_invert_cli_pti_w_space_note(files, tmp_path):
    r = _invert(files, tmp_path, '--method', 'pti', '--steps', '0,0')
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert 'Note: the encoder gives W+ codes; with --w-space w the pivot starts from the mean of their rows' in r.output
    ws = np.load(tmp_path / 't_latents.npz')['ws']
    np.testing.assert_allclose(ws, files['code'].mean(dim=1, keepdim=True).expand(-1, ws.shape[1], -1).numpy(), atol=1e-6)

@pytest.mark.parametrize('method', ['cri', 'dgp'])
def test_invert_cli_refuses_encoder_in_one_line(files, tmp_path, method):
    r = _invert(files, tmp_path / 'out', '--method', method, '--steps', '1')
    assert r.exit_code == 2, r.output + repr(r.exception)
    errors = [line for line in r.output.splitlines() if line.startswith('Error')]
    assert errors == [f'Error: --encoder: --method {method} cannot start from an encoder; drop --encoder, or use a method '
                      f'that can: ' + ', '.join(n for n in methods.METHODS if methods.accepts_encoder(n))], r.output
    assert 'Traceback' not in r.output and not (tmp_path / 'out').exists()
