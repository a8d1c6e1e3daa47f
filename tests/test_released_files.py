"""Released files of the field load: QC-StyleGAN pSp DoubleEncoder checkpoints, pSp IR-SE50
GradualStyle encoders, `G_teacher_*.pth.tar` state dicts, model-zoo names for files fetched by
hand, and TensorFlow StyleGAN2 pickles.

Checkpoints are built from the fixtures' key names and shapes (`shared/fixtures/psp/`). To keep
files small, each tensor is a strided view of a small random buffer (torch saves the buffer and
the strides), and encoders are built on the meta device and assigned those views. Outputs are
compared with a functional forward written here from the fixtures' forward semantics.
"""

import json
import math
import os
import pickle
import sys
import types

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import dnnlib
import dnnlib.zoo
import legacy
from training import encoders
from training import networks
from training import qc as qc_surgery
from training import released
from training import tf_convert

# `../shared/fixtures/psp` beside the checkout, or $QCGAN_FIXTURES/psp (as tests/test_augment_official.py).
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(os.environ.get('QCGAN_FIXTURES', os.path.join(os.path.dirname(_REPO), 'shared', 'fixtures')), 'psp')

def _fixture(name):
    path = os.path.join(FIXTURES, name)
    if not os.path.isfile(path):
        pytest.skip(f'fixture {path} not available')
    with open(path) as f:
        return json.load(f)

#----------------------------------------------------------------------------
# Cheap tensors with given shapes.

_STRIDE_STEPS = [1, 3, 7, 2, 5]

def _cheap(name, shape, dtype, gen):
    if dtype == 'int64':
        return torch.tensor(0, dtype=torch.int64)
    if len(shape) == 0:
        return torch.rand([], generator=gen) * 0.1
    if 'running_var' in name:
        return torch.rand(shape, generator=gen) + 0.5
    if len(shape) == 1:
        value = torch.randn(shape, generator=gen) * 0.1
        return value + 1 if name.endswith(('bn1.weight', 'bn2.weight')) or '.1.weight' in name else value
    fan_in = int(np.prod(shape[1:]))
    strides = list(reversed(_STRIDE_STEPS[:len(shape)]))
    size = sum((d - 1) * s for d, s in zip(shape, strides)) + 1
    base = torch.randn([size], generator=gen) / math.sqrt(fan_in)
    return base.as_strided(shape, strides)

def _state_dict(shapes, dtypes, seed=0, prefix=None):
    gen = torch.Generator().manual_seed(seed)
    return {k: _cheap(k, v, dtypes.get(k, 'float32'), gen) for k, v in shapes.items() if prefix is None or k.startswith(prefix)}

#----------------------------------------------------------------------------
# Functional references written from the fixtures' forward text.

def _bn(sd, p, x):
    return F.batch_norm(x, sd[p + 'running_mean'], sd[p + 'running_var'], sd[p + 'weight'], sd[p + 'bias'], False, 0.0, 1e-5)

def _ref_resnet34_encoder(sd, p, x):
    """ResNetEncoderUsingLastLayerIntoW: conv1 7x7 s2, bn1, PReLU, resnet34 layer1..4 (body.0-15), avgpool, EqualLinear."""
    x = F.prelu(_bn(sd, p + 'bn1.', F.conv2d(x, sd[p + 'conv1.weight'], stride=2, padding=3)), sd[p + 'relu.weight'])
    for i in range(16):
        b = f'{p}body.{i}.'
        stride = 2 if i in (3, 7, 13) else 1
        y = F.relu(_bn(sd, b + 'bn1.', F.conv2d(x, sd[b + 'conv1.weight'], stride=stride, padding=1)))
        y = _bn(sd, b + 'bn2.', F.conv2d(y, sd[b + 'conv2.weight'], padding=1))
        short = _bn(sd, b + 'downsample.1.', F.conv2d(x, sd[b + 'downsample.0.weight'], stride=stride)) if b + 'downsample.0.weight' in sd else x
        x = F.relu(y + short)
    x = F.adaptive_avg_pool2d(x, 1).reshape(x.shape[0], -1)
    return F.linear(x, sd[p + 'linear.weight'] / math.sqrt(512), sd[p + 'linear.bias'])

def _ref_irse50_body(sd, p, x):
    """input_layer + 24 bottleneck_IR_SE units; returns (c1, c2, c3) = outputs of body 6, 20, 23."""
    x = F.prelu(_bn(sd, p + 'input_layer.1.', F.conv2d(x, sd[p + 'input_layer.0.weight'], padding=1)), sd[p + 'input_layer.2.weight'])
    taps = {}
    for i in range(24):
        b = f'{p}body.{i}.'
        stride = 2 if i in (0, 3, 7, 21) else 1
        if b + 'shortcut_layer.0.weight' in sd:
            short = _bn(sd, b + 'shortcut_layer.1.', F.conv2d(x, sd[b + 'shortcut_layer.0.weight'], stride=stride))
        else:
            short = x[:, :, ::stride, ::stride]
        r = _bn(sd, b + 'res_layer.0.', x)
        r = F.prelu(F.conv2d(r, sd[b + 'res_layer.1.weight'], padding=1), sd[b + 'res_layer.2.weight'])
        r = _bn(sd, b + 'res_layer.4.', F.conv2d(r, sd[b + 'res_layer.3.weight'], stride=stride, padding=1))
        s = F.relu(F.conv2d(r.mean([2, 3], keepdim=True), sd[b + 'res_layer.5.fc1.weight']))
        r = r * torch.sigmoid(F.conv2d(s, sd[b + 'res_layer.5.fc2.weight']))
        x = r + short
        taps[i] = x
    return taps[6], taps[20], taps[23]

def _ref_gradual(sd, x):
    p = 'encoder.'
    c1, c2, c3 = _ref_irse50_body(sd, p, x)
    def style(i, feat):
        k = 0
        while f'{p}styles.{i}.convs.{k}.weight' in sd:
            feat = F.leaky_relu(F.conv2d(feat, sd[f'{p}styles.{i}.convs.{k}.weight'], sd[f'{p}styles.{i}.convs.{k}.bias'], stride=2, padding=1), 0.01)
            k += 2
        return F.linear(feat.reshape(-1, 512), sd[f'{p}styles.{i}.linear.weight'] / math.sqrt(512), sd[f'{p}styles.{i}.linear.bias'])
    latents = [style(i, c3) for i in range(3)]
    p2 = F.interpolate(c3, size=c2.shape[-2:], mode='bilinear', align_corners=True) + F.conv2d(c2, sd[p + 'latlayer1.weight'], sd[p + 'latlayer1.bias'])
    latents += [style(i, p2) for i in range(3, 7)]
    p1 = F.interpolate(p2, size=c1.shape[-2:], mode='bilinear', align_corners=True) + F.conv2d(c1, sd[p + 'latlayer2.weight'], sd[p + 'latlayer2.bias'])
    latents += [style(i, p1) for i in range(7, 18)]
    return torch.stack(latents, dim=1)

def _close(a, b, tol=1e-4):
    scale = float(b.abs().max()) + 1e-6
    assert float((a - b).abs().max()) <= tol * scale, float((a - b).abs().max()) / scale

#----------------------------------------------------------------------------
# QC-StyleGAN DoubleEncoder.

def _qc_psp_checkpoint(path, fixture, w_dim=512, q_dim=16, output_size=256, w_avg=None, seed=0):
    shapes = dict(fixture['state_dict'])
    shapes['encoder.content_encoder.linear.weight'] = [w_dim, 512]
    shapes['encoder.content_encoder.linear.bias'] = [w_dim]
    shapes['encoder.quality_encoder.linear.weight'] = [q_dim, 512]
    shapes['encoder.quality_encoder.linear.bias'] = [q_dim]
    sd = _state_dict(shapes, fixture['dtypes_not_float32'], seed=seed, prefix='encoder.' if w_dim != 512 else None)
    opts = dict(fixture['checkpoint']['opts']['all_fields'])
    opts.update(q_dim=q_dim, output_size=output_size, n_styles=int(math.log2(output_size)) * 2 - 2)
    w_avg = torch.randn([w_dim]) if w_avg is None else w_avg
    ckpt = dict(state_dict=sd, opts=opts, optimizer=dict(state={}, param_groups=[dict(lr=1e-4, params=[0])]),
                latent_avg=torch.cat([w_avg, torch.zeros([q_dim])]))
    torch.save(ckpt, path)
    return ckpt

def test_qc_double_encoder_released_checkpoint(tmp_path):
    fixture = _fixture('qc_psp_double_encoder.json')
    path = str(tmp_path / 'ffhq_psp.pt')
    ckpt = _qc_psp_checkpoint(path, fixture)
    assert len(ckpt['state_dict']) == fixture['checkpoint']['state_dict']['n_keys']
    assert os.path.getsize(path) < 40e6  # strided views keep the test file small
    wrapper = encoders.load_encoder(path)
    enc = wrapper.encoder
    assert (wrapper.w_dim, wrapper.q_dim, wrapper.num_ws, wrapper.w_space) == (512, 16, 14, 'w')
    assert wrapper.released['kind'] == 'DoubleEncoder' and wrapper.network == 'ffhq_256x256.pkl'
    n_params = sum(p.numel() for p in enc.parameters())
    assert n_params == fixture['checkpoint']['state_dict']['encoder_params']
    assert not any(t.is_meta for t in list(enc.parameters()) + list(enc.buffers()))
    # Forward semantics: codes = cat(content(x), quality(x)) + latent_avg (run at 64 px: fully convolutional).
    x = torch.rand([2, 3, 64, 64], generator=torch.Generator().manual_seed(1)) * 2 - 1
    sd = ckpt['state_dict']
    with torch.no_grad():
        ref = torch.cat([_ref_resnet34_encoder(sd, 'encoder.content_encoder.', x),
                         _ref_resnet34_encoder(sd, 'encoder.quality_encoder.', x)], dim=1) + ckpt['latent_avg']
        w, q = enc.encode_w(x), enc.encode_q(x)
        _w0, q0 = enc(x, skip_q=True)
    assert w.shape == (2, 512) and q.shape == (2, 16)
    _close(torch.cat([w, q], dim=1), ref)
    assert torch.equal(q0, torch.zeros([2, 16]))  # skip_q: the q tail is latent_avg's zeros
    # A generator of another kind is refused with one line naming both.
    with pytest.raises(encoders.EncoderMismatchError, match='w_dim 512, q_dim 16, num_ws 14'):
        encoders.load_encoder(path, G=_tiny_qc())

def _tiny_stock(seed=0):
    torch.manual_seed(seed)
    return networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                              mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=16))

def _tiny_qc_net():
    G = _tiny_stock()
    D = networks.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=16)
    net = qc_surgery.convert_to_qc(dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=None), q_dim=4, seed=0)
    net.pop('G_teacher', None)
    return net

def _tiny_qc():
    return _tiny_qc_net()['G_ema']

def test_qc_psp_checkpoint_works_with_invert_qc(tmp_path):
    """A released-format DoubleEncoder for a small QC generator drives invert.py --method qc."""
    import invert
    fixture = _fixture('qc_psp_double_encoder.json')
    net = _tiny_qc_net()
    G = net['G_ema']
    legacy.save_network_pkl(net, str(tmp_path / 'qc.pkl'))
    enc_path = str(tmp_path / 'small_psp.pt')
    _qc_psp_checkpoint(enc_path, fixture, w_dim=16, q_dim=4, output_size=16, w_avg=G.mapping.w_avg.clone())
    wrapper = encoders.load_encoder(enc_path, G=G)
    w, q = wrapper.encode(torch.zeros([1, 3, 16, 16]))
    assert w.shape == (1, 16) and q.shape == (1, 4)
    PIL.Image.fromarray((np.random.RandomState(0).rand(16, 16, 3) * 255).astype(np.uint8)).save(tmp_path / 't.png')
    out = tmp_path / 'out'
    r = CliRunner().invoke(invert.main, [
        '--network', str(tmp_path / 'qc.pkl'), '--target', str(tmp_path / 't.png'), '--method', 'qc',
        '--encoder', enc_path, '--steps', '1', '--outdir', str(out), '--device', 'cpu', '--lpips-backbone', 'random'])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert (out / 't_restored.png').is_file()

#----------------------------------------------------------------------------
# pSp GradualStyleEncoder (IR-SE50).

def _gradual_checkpoint(path, fixture, seed=0):
    sd = _state_dict(fixture['state_dict'], fixture['dtypes_not_float32'], seed=seed)
    opts = dict(fixture['checkpoint']['opts']['all_fields'])
    ckpt = dict(state_dict=sd, opts=opts, latent_avg=torch.randn([1, 512]).repeat(18, 1) + torch.randn([18, 1]))
    torch.save(ckpt, path)
    return ckpt

def test_psp_gradual_style_encoder_released_checkpoint(tmp_path):
    fixture = _fixture('psp_gradual_style_encoder_ffhq.json')
    path = str(tmp_path / 'psp_ffhq_encode.pt')
    ckpt = _gradual_checkpoint(path, fixture)
    wrapper = encoders.load_encoder(path)
    enc = wrapper.encoder
    assert (wrapper.w_dim, wrapper.q_dim, wrapper.num_ws, wrapper.w_space) == (512, 0, 18, 'w+')
    assert sum(p.numel() for p in enc.parameters()) == fixture['checkpoint']['state_dict']['encoder_params']
    x = torch.rand([1, 3, 32, 32], generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        ref = _ref_gradual(ckpt['state_dict'], x) + ckpt['latent_avg'].unsqueeze(0)
        w = enc.encode_w(x)
    assert w.shape == (1, 18, 512)
    _close(w, ref)
    # The learn_in_w variant loads; the W+ linear variant is refused with one line naming what is supported.
    variant = fixture['variants']['BackboneEncoderUsingLastLayerIntoW']
    sd = _state_dict(variant['encoder_state_dict'], variant.get('dtypes_not_float32', {}), seed=3)
    opts = dict(fixture['checkpoint']['opts']['all_fields'], encoder_type='BackboneEncoderUsingLastLayerIntoW', learn_in_w=True)
    torch.save(dict(state_dict=sd, opts=opts, latent_avg=torch.randn([1, 512])), tmp_path / 'w.pt')
    w_enc = encoders.load_encoder(str(tmp_path / 'w.pt'))
    assert (w_enc.w_space, w_enc.num_ws) == ('w', 18)
    opts['encoder_type'] = 'BackboneEncoderUsingLastLayerIntoWPlus'
    torch.save(dict(state_dict={'encoder.linear.weight': torch.zeros(2, 2)}, opts=opts, latent_avg=None), tmp_path / 'wp.pt')
    with pytest.raises(encoders.EncoderError, match='GradualStyleEncoder') as err:
        encoders.load_encoder(str(tmp_path / 'wp.pt'))
    assert '\n' not in str(err.value)

def _invert_cli(args):
    import invert  # pylint: disable=import-outside-toplevel
    r = CliRunner().invoke(invert.main, args + ['--device', 'cpu', '--lpips-backbone', 'random'])
    assert r.exit_code == 0, r.output + repr(r.exception)
    return r.output

def _target(path, size):
    from inversion import common  # pylint: disable=import-outside-toplevel
    return common.load_target(path, size=size)[0]

def _latents(outdir, stem='t'):
    ws = np.load(os.path.join(outdir, f'{stem}_latents.npz'))['ws']
    if ws.ndim == 4:  # NGD's W++: every filter's code is its row's after 0 steps
        assert (ws == ws[:, :, :1]).all()
        ws = ws[:, :, 0]
    return torch.from_numpy(ws)

def test_psp_gradual_style_encoder_initialises_pti_and_ngd(tmp_path):
    """A released-format pSp GradualStyleEncoder (IR-SE50, W+) for a 64 px, w_dim 512 generator (10 styles) starts
    invert.py --method pti (the pivot) and --method ngd (phase W from the mean of its rows, W+ from the code)."""
    fixture = _fixture('psp_gradual_style_encoder_ffhq.json')
    torch.manual_seed(0)
    G = networks.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=64, img_channels=3,
                           mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=256, channel_max=8)).eval()
    net = str(tmp_path / 'G.pkl')
    legacy.save_network_pkl(dict(G_ema=G), net)
    num_ws = G.num_ws
    shapes = {k: v for k, v in fixture['state_dict'].items() if k.startswith('encoder.') and
              not (k.startswith('encoder.styles.') and int(k.split('.')[2]) >= num_ws)}
    opts = dict(fixture['checkpoint']['opts']['all_fields'], output_size=64, n_styles=num_ws)
    enc_path = str(tmp_path / 'psp_encode.pt')
    torch.save(dict(state_dict=_state_dict(shapes, fixture['dtypes_not_float32'], seed=4), opts=opts,
                    latent_avg=torch.randn([num_ws, 512], generator=torch.Generator().manual_seed(5))), enc_path)
    PIL.Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype(np.uint8)).save(tmp_path / 't.png')
    wrapper = encoders.load_encoder(enc_path, G=G)
    assert wrapper.released['kind'] == 'GradualStyleEncoder' and (wrapper.w_space, wrapper.num_ws) == ('w+', num_ws)
    code, _ = wrapper.encode(_target(str(tmp_path / 't.png'), 64))
    assert code.shape == (1, num_ws, 512) and float(code.std(dim=1).mean()) > 0.1  # rows differ
    base = ['--network', net, '--target', str(tmp_path / 't.png'), '--encoder', enc_path]
    _invert_cli(base + ['--method', 'pti', '--w-space', 'w+', '--steps', '0,0', '--outdir', str(tmp_path / 'pti')])
    _close(_latents(tmp_path / 'pti'), code, tol=1e-5)
    _invert_cli(base + ['--method', 'ngd', '--steps', '0', '--outdir', str(tmp_path / 'ngd')])
    _close(_latents(tmp_path / 'ngd'), code, tol=1e-5)

def test_qc_psp_checkpoint_initialises_pti_and_ngd(tmp_path):
    """The QC DoubleEncoder's w (not q) starts pti/ngd on its QC network (the sharp branch)."""
    fixture = _fixture('qc_psp_double_encoder.json')
    net = _tiny_qc_net()
    G = net['G_ema']
    legacy.save_network_pkl(net, str(tmp_path / 'qc.pkl'))
    enc_path = str(tmp_path / 'small_psp.pt')
    _qc_psp_checkpoint(enc_path, fixture, w_dim=16, q_dim=4, output_size=16, w_avg=G.mapping.w_avg.clone())
    PIL.Image.fromarray((np.random.RandomState(0).rand(16, 16, 3) * 255).astype(np.uint8)).save(tmp_path / 't.png')
    w, _ = encoders.load_encoder(enc_path, G=G).encode(_target(str(tmp_path / 't.png'), 16))
    base = ['--network', str(tmp_path / 'qc.pkl'), '--target', str(tmp_path / 't.png'), '--encoder', enc_path]
    for method, steps in (('pti', '0,0'), ('ngd', '0')):
        _invert_cli(base + ['--method', method, '--steps', steps, '--outdir', str(tmp_path / method)])
        _close(_latents(tmp_path / method), w.unsqueeze(1).expand(-1, G.num_ws, -1), tol=1e-5)

#----------------------------------------------------------------------------
# Released teachers (plain generator state dicts).

def test_teacher_state_dict_fixture_architecture():
    fixture = _fixture('qc_teacher_ffhq256.json')
    with torch.device('meta'):
        sd = {k: torch.empty(v) for k, v in fixture['state_dict'].items()}
    kwargs = released._generator_kwargs_from_state_dict(sd)  # pylint: disable=protected-access
    expected = fixture['constructor_kwargs']
    assert kwargs['synthesis_kwargs'] == expected['synthesis_kwargs'] and kwargs['q_dim'] == 0
    assert (kwargs['z_dim'], kwargs['w_dim'], kwargs['c_dim'], kwargs['img_resolution'], kwargs['img_channels']) == \
        (expected['z_dim'], expected['w_dim'], expected['c_dim'], expected['img_resolution'], expected['img_channels'])
    assert kwargs['mapping_kwargs']['num_layers'] == 8
    G = networks.Generator(**kwargs)
    assert {k: list(v.shape) for k, v in G.state_dict().items()} == fixture['state_dict']
    assert sum(p.numel() for p in G.parameters()) == fixture['params']

def test_teacher_pth_tar_loads_and_trains(faces16, tmp_path):
    import train
    from test_qc_training import run_loop
    stock = _tiny_stock(seed=0)
    D = networks.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=16)
    legacy.save_network_pkl(dict(G=stock, D=D, G_ema=stock, augment_pipe=None, training_set_kwargs=None), str(tmp_path / 's.pkl'))
    teacher = _tiny_stock(seed=7)
    torch.save(teacher.state_dict(), tmp_path / 'G_teacher_tiny.pth.tar')
    loaded = legacy.load_network(str(tmp_path / 'G_teacher_tiny.pth.tar'))['G_ema']
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), teacher.state_dict().values()))
    ws = teacher.eval().mapping(torch.randn([2, 16]), None)
    with torch.no_grad():  # same weights; fp16/clamp settings (4, 256) as the reference's teacher kwargs
        assert torch.allclose(loaded.synthesis(ws, noise_mode='const', force_fp32=True),
                              teacher.synthesis(ws, noise_mode='const', force_fp32=True), atol=1e-5)
    _desc, args = train.setup_training_loop_kwargs(data=faces16, cfg='tiny', aug='noaug', workers=0, device='cpu', batch=8, qc=True,
                                                   resume=str(tmp_path / 's.pkl'), q_dim=4, train_blocks=2,
                                                   teacher=str(tmp_path / 'G_teacher_tiny.pth.tar'))
    args.pop('device_type')
    args.update(run_dir=str(tmp_path / 'run'), image_grid_size=[4, 2], kimg_per_tick=1000)
    os.makedirs(args.run_dir)
    result = run_loop(args, max_steps=1, network_snapshot_ticks=None, image_snapshot_ticks=None)
    got = dict(result.loss.G_teacher.named_parameters())
    assert all(torch.equal(got[k], v) for k, v in teacher.named_parameters())
    # A file that is neither a network nor a generator state dict: one line.
    torch.save({'foo': torch.zeros(3)}, tmp_path / 'bad.pth.tar')
    with pytest.raises(legacy.NetworkLoadError, match='state dict') as err:
        legacy.load_network(str(tmp_path / 'bad.pth.tar'))
    assert '\n' not in str(err.value)

#----------------------------------------------------------------------------
# Model-zoo names of files fetched by hand.

def test_manual_zoo_names_error_then_work_offline(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.setenv('DNNLIB_OFFLINE', '1')
    expected = str(tmp_path / 'cache' / 'manual' / 'ffhq_256x256.pkl')
    with pytest.raises(legacy.NetworkLoadError) as err:
        legacy.load_network('qc-ffhq256')
    message = str(err.value)
    assert 'ffhq_256x256.pkl' in message and expected in message and 'QC-StyleGAN' in message and '\n' not in message
    os.makedirs(os.path.dirname(expected))
    net = _tiny_qc_net()
    legacy.save_network_pkl(net, expected)
    assert legacy.load_network('qc-ffhq256')['G_ema'].q_dim == 4
    # Encoders: same rule.
    enc_expected = str(tmp_path / 'cache' / 'manual' / 'ffhq_psp.pt')
    with pytest.raises(encoders.EncoderError, match='ffhq_psp.pt') as err:
        encoders.load_encoder('qc-ffhq256-psp')
    assert enc_expected in str(err.value)
    _qc_psp_checkpoint(enc_expected, _fixture('qc_psp_double_encoder.json'), w_dim=16, q_dim=4, output_size=16,
                       w_avg=net['G_ema'].mapping.w_avg.clone())
    assert encoders.load_encoder('qc-ffhq256-psp', G=net['G_ema']).q_dim == 4
    for name in ['qc-ffhq256', 'qc-afhqcat512', 'qc-church256', 'qc-ffhq256-psp', 'qc-afhqcat512-psp', 'qc-church256-psp']:
        assert name in dnnlib.zoo.MANUAL_FILES

#----------------------------------------------------------------------------
# TensorFlow pickles: built here in the TF layout (no TensorFlow), converted, compared.

def _tf_vars_of_generator(G):
    """Inverse of the converter's rules: {TF name: numpy} for components mapping / synthesis + own vars."""
    mapping, synthesis, own = [], [], [('dlatent_avg', G.mapping.w_avg.numpy())]
    for name, t in G.named_parameters():
        a = t.detach().numpy()
        parts = name.split('.')
        if parts[0] == 'mapping':
            mapping.append((f'Dense{parts[1][2:]}/{parts[2]}', a.T if parts[2] == 'weight' else a))
            continue
        res = int(parts[1][1:])
        if parts[2] == 'const':
            synthesis.append(('4x4/Const/const', a[None]))
            continue
        layer = {'conv0': 'Conv0_up', 'conv1': 'Conv' if res == 4 else 'Conv1', 'torgb': 'ToRGB', 'skip': 'Skip'}[parts[2]]
        attr = '.'.join(parts[3:])
        if attr == 'weight':
            if layer in ('Conv0_up', 'Skip'):
                a = a[:, :, ::-1, ::-1]
            a = a.transpose(2, 3, 1, 0)
        elif attr == 'affine.weight':
            attr, a = 'mod_weight', a.T
        elif attr == 'affine.bias':
            attr, a = 'mod_bias', a - 1
        synthesis.append((f'{res}x{res}/{layer}/{attr}', np.array(a, order="C")))
    for name, t in G.named_buffers():
        if name.endswith('noise_const'):
            res, layer = int(name.split('.')[1][1:]), name.split('.')[2]
            k = 0 if res == 4 else (2 * int(math.log2(res)) - 5 if layer == 'conv0' else 2 * int(math.log2(res)) - 4)
            synthesis.append((f'noise{k}', t.numpy()[None, None]))
    return own, mapping, synthesis

def _tf_vars_of_discriminator(D):
    out = []
    for name, t in D.named_parameters():
        a = t.detach().numpy()
        block, layer, attr = name.split('.')
        res = int(block[1:])
        tf = {'fromrgb': 'FromRGB', 'conv0': 'Conv0', 'conv1': 'Conv1_down', 'skip': 'Skip', 'conv': 'Conv', 'fc': 'Dense0'}.get(layer)
        tf = 'Output' if layer == 'out' else f'{res}x{res}/{tf}'
        if attr == 'weight':
            a = a.T if layer in ('fc', 'out') else a.transpose(2, 3, 1, 0)
        out.append((f'{tf}/{attr}', np.array(a, order="C")))
    return out

def _write_tf_pickle(path, G, D):
    """A (G, D, Gs) pickle of `dnnlib.tflib.network.Network` objects, as TF StyleGAN2-ADA writes them."""
    tflib = types.ModuleType('dnnlib.tflib')
    network_mod = types.ModuleType('dnnlib.tflib.network')

    class Network:  # pylint: disable=too-few-public-methods
        def __init__(self, state):
            self._state = state
        def __getstate__(self):
            return self._state
    Network.__module__ = 'dnnlib.tflib.network'
    Network.__qualname__ = 'Network'
    network_mod.Network = Network
    tflib.network = network_mod
    g_kwargs = dict(latent_size=G.z_dim, label_size=0, dlatent_size=G.w_dim, resolution=G.img_resolution, num_channels=3,
                    fmap_base=64, fmap_max=16, mapping_layers=2, architecture='skip', truncation_psi=0.5)
    def net(name, kwargs, variables, components=None):
        return Network(dict(version=5, name=name, static_kwargs=kwargs, components=components or {}, variables=variables,
                            build_module_src='raise RuntimeError("never run")', build_func_name='G_main'))
    own, mapping, synthesis = _tf_vars_of_generator(G)
    def generator():
        return net('G', g_kwargs, own, dict(mapping=net('G_mapping', g_kwargs, mapping), synthesis=net('G_synthesis', g_kwargs, synthesis)))
    d_kwargs = dict(label_size=0, resolution=D.img_resolution, num_channels=3, fmap_base=64, fmap_max=16, architecture='resnet',
                    mbstd_group_size=4, mbstd_num_features=1)
    old = {k: sys.modules.get(k) for k in ['dnnlib.tflib', 'dnnlib.tflib.network']}
    sys.modules.update({'dnnlib.tflib': tflib, 'dnnlib.tflib.network': network_mod})
    try:
        with open(path, 'wb') as f:
            pickle.dump((generator(), net('D', d_kwargs, _tf_vars_of_discriminator(D)), generator()), f)
    finally:
        for k, v in old.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v

def test_tensorflow_pickle_converts(tmp_path):
    torch.manual_seed(0)
    G = networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=16))
    D = networks.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=16)
    with torch.no_grad():
        G.mapping.w_avg.normal_()
        for name, buf in G.named_buffers():
            if name.endswith('noise_const'):
                buf.normal_()
    G.eval(), D.eval()
    _write_tf_pickle(str(tmp_path / 'tf.pkl'), G, D)
    assert 'dnnlib.tflib' not in sys.modules and b'tensorflow' not in open(tmp_path / 'tf.pkl', 'rb').read()
    data = legacy.load_network(str(tmp_path / 'tf.pkl'))
    Gc, Dc = data['G_ema'], data['D']
    assert Gc.init_kwargs['synthesis_kwargs']['channel_base'] == 128
    z = torch.randn([2, 16])
    with torch.no_grad():
        assert torch.allclose(Gc(z, None, noise_mode='const', force_fp32=True), G(z, None, noise_mode='const', force_fp32=True), atol=1e-5)
        assert torch.allclose(Gc(z, None, truncation_psi=0.5, noise_mode='const'), G(z, None, truncation_psi=0.5, noise_mode='const'), atol=1e-5)
        img = torch.randn([4, 3, 16, 16])
        assert torch.allclose(Dc(img, None), D(img, None), atol=1e-5)
    # An unsupported build argument is refused with one line.
    with open(tmp_path / 'tf.pkl', 'rb') as f:
        tf_G = legacy._StubUnpickler(f).load()[0]  # pylint: disable=protected-access
    tf_G.static_kwargs['structure'] = 'linear'
    tf_G.static_kwargs['use_mystery'] = True
    with pytest.raises(tf_convert.TFConversionError, match='use_mystery'):
        tf_convert.convert_tf_generator(tf_G)
