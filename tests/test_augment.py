"""ADA augmentation pipeline (training/augment.py): presets, exact per-op checks, statistics, gradients, pickling."""

import math
import pickle

import numpy as np
import pytest
import torch

from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import grid_sample_gradfix
from training import augment
from training.augment import AugmentPipe, augpipe_specs

#----------------------------------------------------------------------------
# Helpers.

def z_of(percentile):
    """Standard normal quantile (what debug_percentile turns a N(0, 1) draw into)."""
    return math.sqrt(2) * torch.erfinv(torch.tensor(2 * percentile - 1, dtype=torch.float64)).item()

def percentile_of(z):
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))

def analytic(fn, size=32, channels=3, batch=1):
    """Image [batch, channels, size, size] with pixel values fn(x, y) in centred pixel coordinates
    (x right, y down, origin at the image centre); channel k gets fn(x, y) shifted by k / 2."""
    c = (size - 1) / 2
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float64) - c, torch.arange(size, dtype=torch.float64) - c, indexing='ij')
    img = torch.stack([fn(x, y) + k / 2 for k in range(channels)])
    return img[None].repeat(batch, 1, 1, 1).to(torch.float32)

def smooth(x, y):
    return torch.sin(0.25 * x + 0.15 * y) + 0.5 * torch.cos(0.2 * y - 0.1 * x)

def inner(t, m=6):
    return t[..., m:-m, m:-m]

def rgb(batch=4, size=32, channels=3):
    return torch.randn(batch, channels, size, size)

#----------------------------------------------------------------------------
# Construction, presets, buffers.

def test_preset_table():
    blit, geom = {'xflip', 'rotate90', 'xint'}, {'scale', 'rotate', 'aniso', 'xfrac'}
    color = {'brightness', 'contrast', 'lumaflip', 'hue', 'saturation'}
    expected = {
        'blit': blit, 'geom': geom, 'color': color, 'filter': {'imgfilter'}, 'noise': {'noise'}, 'cutout': {'cutout'},
        'bg': blit | geom, 'bgc': blit | geom | color, 'bgcf': blit | geom | color | {'imgfilter'},
        'bgcfn': blit | geom | color | {'imgfilter', 'noise'}, 'bgcfnc': blit | geom | color | {'imgfilter', 'noise', 'cutout'},
    }
    assert set(augpipe_specs) == set(expected)
    for name, ops in expected.items():
        assert augpipe_specs[name] == {op: 1 for op in ops}, name

def test_defaults_and_buffers():
    pipe = AugmentPipe()
    assert pipe.xint_max == 0.125 and pipe.scale_std == 0.2 and pipe.rotate_max == 1 and pipe.aniso_std == 0.2
    assert pipe.xfrac_std == 0.125 and pipe.brightness_std == 0.2 and pipe.contrast_std == 0.5 and pipe.hue_max == 1
    assert pipe.saturation_std == 1 and pipe.imgfilter_bands == [1, 1, 1, 1] and pipe.imgfilter_std == 1
    assert pipe.noise_std == 0.1 and pipe.cutout_size == 0.5
    assert list(pipe.parameters()) == []
    buffers = dict(pipe.named_buffers())
    assert list(buffers) == ['p', 'Hz_geom', 'Hz_fbank']
    assert buffers['p'].shape == () and buffers['p'].item() == 1
    assert buffers['Hz_geom'].shape == (12,) and buffers['Hz_fbank'].shape == (4, 43)
    assert all(b.dtype == torch.float32 for b in buffers.values())

def test_wavelet_constants_are_orthogonal_lowpass_filters():
    for h in [augment._SYM2_DEC_LO, augment._SYM6_DEC_LO]:
        h = np.asarray(h)
        assert abs(h.sum() - np.sqrt(2)) < 1e-12
        r = np.correlate(h, h, 'full')[h.size - 1:]  # Autocorrelation at lags 0, 1, 2, ...
        assert abs(r[0] - 1) < 1e-12 and np.abs(r[2::2]).max() < 1e-10  # Orthogonal to even shifts.
    assert len(augment._SYM2_DEC_LO) == 4 and len(augment._SYM6_DEC_LO) == 12

def test_geometric_filter_buffer():
    f = AugmentPipe().Hz_geom.double()
    assert abs(f.sum().item() - 1) < 1e-6
    np.testing.assert_allclose(f.numpy(), np.asarray(augment._SYM6_DEC_LO) / np.sqrt(2), atol=1e-7)

def test_filter_bank_sums_to_impulse_and_splits_frequencies():
    bank = AugmentPipe().Hz_fbank.double()
    impulse = torch.zeros(43, dtype=torch.float64)
    impulse[21] = 1
    assert (bank.sum(dim=0) - impulse).abs().max() < 1e-6
    assert (bank - bank.flip(1)).abs().max() < 1e-7  # Zero phase.
    dc = bank.sum(dim=1)
    nyquist = (bank * (-1.0) ** (torch.arange(43) - 21)).sum(dim=1)  # Response to (-1)^n around the centre tap.
    assert abs(dc[0] - 1) < 1e-6 and dc[1:].abs().max() < 1e-6  # Only the lowest band passes DC.
    assert abs(nyquist[3] - 1) < 1e-6 and nyquist[:3].abs().max() < 1e-6  # Only the highest passes Nyquist.

#----------------------------------------------------------------------------
# Every preset: shape/dtype/device, finiteness, p = 0, determinism.

@pytest.mark.parametrize('geom_mode', ['official', 'exact-copy'])
@pytest.mark.parametrize('channels', [1, 3])
@pytest.mark.parametrize('preset', sorted(augpipe_specs))
def test_preset_shapes_and_p0_identity(preset, channels, geom_mode):
    pipe = AugmentPipe(**augpipe_specs[preset], geom_mode=geom_mode)
    x = rgb(channels=channels)
    y = pipe(x)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert torch.isfinite(y).all()
    assert not torch.equal(y, x) or preset == 'noise'  # p = 1 changes something (almost surely).

    d1 = pipe(x, debug_percentile=0.3)
    d2 = pipe(x, debug_percentile=0.3)
    assert torch.isfinite(d1).all() and torch.equal(d1, d2)

    pipe.p.copy_(torch.as_tensor(0))
    if geom_mode == 'exact-copy' or not any(augpipe_specs[preset].get(op) for op in ['xflip', 'rotate90', 'xint', 'scale']):
        assert torch.equal(pipe(x), x)
    else:  # The official pipe resamples even when no op fires: perfect reconstruction up to rounding.
        assert (pipe(x) - x).abs().max() < 1e-4

def test_geom_mode_is_checked():
    with pytest.raises(ValueError, match='geom_mode'):
        AugmentPipe(xflip=1, geom_mode='blit')

def test_float64_and_small_images():
    pipe = AugmentPipe(**augpipe_specs['bgcfnc'])
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    for dp in [None, 0.2, 0.7]:
        y = pipe(x, debug_percentile=dp)
        assert y.dtype == torch.float64 and y.shape == x.shape and torch.isfinite(y).all()
    # The 43-tap image filter pads by 21 > 15 pixels: several reflection rounds, still identity at 0.5.
    f = AugmentPipe(imgfilter=1)
    assert torch.equal(f(x, debug_percentile=0.5), x)
    assert torch.isfinite(f(x)).all()

def test_non_square_images():
    x = torch.randn(2, 3, 32, 16)
    for preset in ['bgcfnc', 'blit']:
        for dp in [None, 0.3, 0.9]:
            y = AugmentPipe(**augpipe_specs[preset])(x, debug_percentile=dp)
            assert y.shape == x.shape and torch.isfinite(y).all()

#----------------------------------------------------------------------------
# Pixel blitting: exact copies with geom_mode='exact-copy'; the official mode resamples (tested against
# the official outputs in test_augment_official.py).

@pytest.mark.parametrize('channels', [1, 3])
def test_xflip_exact(channels):
    pipe = AugmentPipe(xflip=1, geom_mode='exact-copy')
    x = rgb(channels=channels)
    assert torch.equal(pipe(x, debug_percentile=0.25), x)
    assert torch.equal(pipe(x, debug_percentile=0.75), x.flip(3))

@pytest.mark.parametrize('k', [0, 1, 2, 3])
def test_rotate90_exact(k):
    pipe = AugmentPipe(rotate90=1, geom_mode='exact-copy')
    x = rgb()
    assert torch.equal(pipe(x, debug_percentile=(k + 0.5) / 4), torch.rot90(x, k, dims=[2, 3]))

def test_xint_integer_translation_with_reflection():
    pipe = AugmentPipe(xint=1, geom_mode='exact-copy')
    x = rgb()
    y = pipe(x, debug_percentile=0.9)  # t = 0.8 * 0.125 * 32 = 3.2 -> 3 pixels right and down.
    assert torch.equal(y[:, :, 10, 20], x[:, :, 7, 17])
    assert torch.equal(y[:, :, 3:, 3:], x[:, :, :-3, :-3])
    assert torch.equal(y[:, :, 0, 0], x[:, :, 3, 3])  # Mirrored border (reflect, edge not repeated).
    y = pipe(x, debug_percentile=0.1)  # -3 pixels.
    assert torch.equal(y[:, :, :-3, :-3], x[:, :, 3:, 3:])

def test_blit_composition_order():
    x = rgb()
    y = AugmentPipe(**augpipe_specs['blit'], geom_mode='exact-copy')(x, debug_percentile=0.9)  # flip, then rot90 k=3, then +3 px.
    ref = torch.rot90(x.flip(3), 3, dims=[2, 3])
    assert torch.equal(y[:, :, 3:, 3:], ref[:, :, :-3, :-3])

@pytest.mark.parametrize('preset', ['blit', 'bgc'])
def test_official_and_exact_copy_draw_the_same_transforms(preset):
    # Same seed -> same draws; on smooth images the two modes then differ only by the resampling of
    # flips and quarter turns (small, see test_resample_flip_matches_exact_flip_on_smooth_images).
    x = analytic(smooth, batch=8)
    out = {}
    for mode in ['official', 'exact-copy']:
        torch.manual_seed(1)
        out[mode] = AugmentPipe(**augpipe_specs[preset], geom_mode=mode)(x)
    assert inner(out['official'] - out['exact-copy']).abs().max() < 0.05
    assert inner(out['official'] - x).abs().max() > 0.5

#----------------------------------------------------------------------------
# General geometric transformations (resampled at 2x with sym6).

def test_geom_identity_percentile_is_exact():
    x = analytic(smooth, batch=2)
    assert torch.equal(AugmentPipe(**augpipe_specs['geom'], geom_mode='exact-copy')(x, debug_percentile=0.5), x)
    assert (AugmentPipe(**augpipe_specs['geom'])(x, debug_percentile=0.5) - x).abs().max() < 1e-4

def test_resample_identity_and_integer_translation_reconstruct_exactly():
    # Upsampling by convolution and downsampling by correlation with an orthogonal wavelet filter
    # is perfect reconstruction, so these go through the resampling path without loss.
    pipe = AugmentPipe()
    x = rgb(batch=2)
    eye = torch.eye(3).expand(2, 3, 3)
    assert (pipe._resample(x, eye) - x).abs().max() < 1e-4
    shift = torch.tensor([[1., 0, -3], [0, 1, 2], [0, 0, 1]]).expand(2, 3, 3)  # Content moves +3 in x, -2 in y.
    assert (pipe._resample(x, shift) - augment._blit(x, shift)).abs().max() < 1e-4  # Borders included.
    assert augment._is_blit(shift, 32, 32).all() and augment._is_blit(eye, 32, 32).all()

def test_resample_flip_matches_exact_flip_on_smooth_images():
    # Checks the half-pixel bookkeeping of the 2x resampling (sym6 has a group delay of ~5 taps).
    x = analytic(smooth)
    flip = torch.tensor([[-1., 0, 0], [0, 1, 0], [0, 0, 1]])[None]
    assert (inner(AugmentPipe()._resample(x, flip) - x.flip(3), 4)).abs().max() < 0.03

@pytest.mark.parametrize('channels', [1, 3])
def test_rotate_debug_eighth_turn(channels):
    # At percentile 0.625 the pre-rotation angle is pi/4; the post-rotation is 0 in debug mode (as in
    # the official pipe). G_inv = R(theta): out(u) = in(R(pi/4) u).
    x = analytic(smooth, channels=channels)
    y = AugmentPipe(rotate=1)(x, debug_percentile=0.625)
    c = s = math.sqrt(0.5)
    ref = analytic(lambda u, v: smooth(c * u - s * v, s * u + c * v), channels=channels)
    assert inner(y - ref).abs().max() < 0.05
    assert inner(y - x).abs().max() > 0.5

def test_scale_aniso_xfrac_match_analytic_warps():
    x = analytic(smooth)
    dp = 0.8
    z = z_of(dp)
    s = 2 ** (z * 0.2)
    y = AugmentPipe(scale=1)(x, debug_percentile=dp)
    assert inner(y - analytic(lambda u, v: smooth(u / s, v / s))).abs().max() < 0.05
    y = AugmentPipe(aniso=1)(x, debug_percentile=dp)
    assert inner(y - analytic(lambda u, v: smooth(u / s, v * s))).abs().max() < 0.05
    t = z * 0.125 * 32  # About 2.1 pixels right and down.
    y = AugmentPipe(xfrac=1)(x, debug_percentile=dp)
    assert inner(y - analytic(lambda u, v: smooth(u - t, v - t))).abs().max() < 0.05
    assert inner(y - x).abs().max() > 0.3

#----------------------------------------------------------------------------
# Colour transformations: exact against hand-derived formulas.

@pytest.mark.parametrize('channels', [1, 3])
def test_brightness_and_contrast(channels):
    x = rgb(channels=channels)
    b = 0.2 * z_of(0.3)
    y = AugmentPipe(brightness=1)(x, debug_percentile=0.3)
    assert (y - (x + b)).abs().max() < 1e-5
    assert abs((y.mean() - x.mean()).item() - b) < 1e-5
    c = 2 ** (0.5 * z_of(0.8))
    y = AugmentPipe(contrast=1)(x, debug_percentile=0.8)
    assert (y - x * c).abs().max() < 1e-5  # Scales around 0, the middle of [-1, 1].

def test_lumaflip():
    pipe = AugmentPipe(lumaflip=1)
    x = rgb()
    assert torch.equal(pipe(x, debug_percentile=0.25), x)
    y = pipe(x, debug_percentile=0.75)
    assert (y - (x - 2 * x.mean(dim=1, keepdim=True))).abs().max() < 1e-5  # Luma inverted, chroma kept.
    gray = rgb(channels=1)
    assert (pipe(gray, debug_percentile=0.75) + gray).abs().max() < 1e-5
    assert (pipe(gray.repeat(1, 3, 1, 1), debug_percentile=0.75) + gray).abs().max() < 1e-5

def test_hue_third_turn_cycles_channels():
    x = rgb()
    y = AugmentPipe(hue=1)(x, debug_percentile=5 / 6)  # theta = 2 pi / 3 about (1, 1, 1).
    errs = [(y - x[:, perm]).abs().max().item() for perm in [[2, 0, 1], [1, 2, 0]]]
    assert min(errs) < 1e-5
    assert torch.equal(AugmentPipe(hue=1)(x, debug_percentile=0.5), x)

def test_saturation():
    x = rgb()
    mean = x.mean(dim=1, keepdim=True)
    y = AugmentPipe(saturation=1)(x, debug_percentile=0.0)  # s = 2^-inf = 0: gray.
    assert (y - mean.expand_as(x)).abs().max() < 1e-5
    y = AugmentPipe(saturation=1)(x, debug_percentile=percentile_of(1.0))  # s = 2.
    assert (y - (mean + 2 * (x - mean))).abs().max() < 1e-4

def test_color_on_grayscale_uses_mean_row():
    # Gray images behave like RGB images with equal channels (hue and saturation do nothing there).
    pipe = AugmentPipe(**augpipe_specs['color'])
    gray = rgb(channels=1)
    for dp in [0.2, 0.75]:
        b = 0.2 * z_of(dp)
        c = 2 ** (0.5 * z_of(dp))
        sign = -1 if dp >= 0.5 else 1
        y1 = pipe(gray, debug_percentile=dp)
        y3 = pipe(gray.repeat(1, 3, 1, 1), debug_percentile=dp)
        assert (y1 - sign * c * (gray + b)).abs().max() < 1e-5
        assert (y3 - y1).abs().max() < 1e-5

#----------------------------------------------------------------------------
# Image-space filtering and corruptions.

def test_imgfilter_identity_and_band_gain():
    x = rgb()
    assert torch.equal(AugmentPipe(imgfilter=1)(x, debug_percentile=0.5), x)
    const = torch.full([2, 3, 32, 32], 0.4)
    t = 2 ** z_of(0.8)
    y = AugmentPipe(imgfilter=1, imgfilter_bands=[1, 0, 0, 0])(const, debug_percentile=0.8)
    g0 = t / math.sqrt((10 * t ** 2 + 3) / 13)  # Only the lowest band passes DC...
    assert (y - 0.4 * g0 ** 2).abs().max() < 1e-5  # ...and the 1-D filter runs along x and y.
    y = AugmentPipe(imgfilter=1, imgfilter_bands=[0, 0, 0, 1])(const, debug_percentile=0.8)
    assert (y - 0.4 / ((12 + t ** 2) / 13)).abs().max() < 1e-5
    # Boosting the highest band raises the energy of white noise.
    y = AugmentPipe(imgfilter=1, imgfilter_bands=[0, 0, 0, 1])(x, debug_percentile=0.95)
    assert y.std() > 1.5 * x.std()

def test_noise():
    const = torch.full([4, 3, 32, 32], 0.3)
    y = AugmentPipe(noise=1)(const)
    assert y.std() > 0.01 and abs(y.mean().item() - 0.3) < 0.05
    sigma = 0.1 * abs(z_of(0.9))
    y = AugmentPipe(noise=1)(const, debug_percentile=0.9)
    assert abs(y.std().item() / sigma - 1) < 0.05 and abs(y.mean().item() - 0.3) < 0.01
    assert torch.equal(y, AugmentPipe(noise=1)(const, debug_percentile=0.9))

def test_cutout():
    x = rgb() + 10  # No zeros of its own.
    y = AugmentPipe(cutout=1)(x, debug_percentile=0.5)  # Centre square of side 16.
    assert (y[:, :, 8:24, 8:24] == 0).all()
    assert (y == 0).float().mean().item() == 0.25
    mask = torch.ones(32, 32, dtype=torch.bool)
    mask[8:24, 8:24] = False
    assert torch.equal(y[:, :, mask], x[:, :, mask])
    y = AugmentPipe(cutout=1)(rgb(batch=64) + 10)
    frac = (y == 0).float().mean(dim=[1, 2, 3])
    assert (frac >= 1 / 16).all() and (frac <= 0.25).all()  # Clipped by the border at worst to a quarter.
    zeros = (y == 0).all(dim=1)  # A channel-independent axis-aligned square.
    rows, cols = zeros.any(dim=2), zeros.any(dim=1)
    assert torch.equal(zeros, rows[:, :, None] & cols[:, None, :])

#----------------------------------------------------------------------------
# Probabilities.

@pytest.mark.parametrize('p', [1.0, 0.5])
def test_xflip_statistics(p):
    pipe = AugmentPipe(xflip=1, geom_mode='exact-copy')
    pipe.p.copy_(torch.as_tensor(p))
    x = torch.randn(400, 1, 8, 8)
    y = pipe(x)
    flipped = (y == x.flip(3)).flatten(1).all(dim=1)
    same = (y == x).flatten(1).all(dim=1)
    assert torch.equal(flipped, ~same)
    # Fires with probability p, then flips with probability 1/2.
    expected = 400 * p / 2
    assert abs(flipped.sum().item() - expected) < 5 * math.sqrt(400 * (p / 2) * (1 - p / 2))

def test_rotate_probability_counts_pre_and_post():
    pipe = AugmentPipe(rotate=1)
    pipe.p.copy_(torch.as_tensor(0.5))
    x = torch.randn(400, 1, 8, 8)
    changed = ((pipe(x) - x).abs() > 1e-3).flatten(1).any(dim=1)  # Not rotated: resampled to rounding error.
    assert abs(changed.sum().item() - 200) < 50  # P(pre or post) = rotate * p.

#----------------------------------------------------------------------------
# Gradients.

def test_first_and_second_order_gradcheck_fp64():
    old = (grid_sample_gradfix.enabled, conv2d_gradfix.enabled)
    try:
        grid_sample_gradfix.enabled = True
        conv2d_gradfix.enabled = True
        pipe = AugmentPipe(**augpipe_specs['bgcf'])
        x = torch.randn(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
        fn = lambda img: pipe(img, debug_percentile=0.3)
        assert torch.autograd.gradcheck(fn, [x], eps=1e-6, atol=1e-5, fast_mode=True)
        assert torch.autograd.gradgradcheck(fn, [x], eps=1e-6, atol=1e-5, fast_mode=True)
    finally:
        grid_sample_gradfix.enabled, conv2d_gradfix.enabled = old

def test_r1_style_second_order_gradient_through_bgc():
    old = (grid_sample_gradfix.enabled, conv2d_gradfix.enabled)
    try:
        grid_sample_gradfix.enabled = True
        conv2d_gradfix.enabled = True
        pipe = AugmentPipe(**augpipe_specs['bgc'])
        weight = torch.randn(8, 3, 3, 3, requires_grad=True)
        real = torch.randn(4, 3, 16, 16).requires_grad_(True)
        logits = conv2d_gradfix.conv2d(pipe(real), weight).tanh().square().mean(dim=[1, 2, 3])
        grads, = torch.autograd.grad(logits.sum(), [real], create_graph=True)
        penalty = grads.square().sum()
        penalty.backward()
        assert torch.isfinite(grads).all() and grads.abs().sum() > 0
        assert weight.grad is not None and torch.isfinite(weight.grad).all() and weight.grad.abs().sum() > 0
        assert real.grad is not None and torch.isfinite(real.grad).all()
    finally:
        grid_sample_gradfix.enabled, conv2d_gradfix.enabled = old
    assert (grid_sample_gradfix.enabled, conv2d_gradfix.enabled) == old

#----------------------------------------------------------------------------
# Pickling and devices.

def test_pickle_round_trip():
    pipe = AugmentPipe(**augpipe_specs['bgcfnc'], xint_max=0.25)
    pipe.p.copy_(torch.as_tensor(0.37))
    x = rgb()
    clone = pickle.loads(pickle.dumps(pipe))
    assert clone.p.item() == pytest.approx(0.37) and clone.xint_max == 0.25
    assert clone.init_kwargs == pipe.init_kwargs
    assert torch.equal(clone(x, debug_percentile=0.3), pipe(x, debug_percentile=0.3))

@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_cuda_matches_cpu():
    x = rgb()
    for preset in sorted(augpipe_specs):
        pipe = AugmentPipe(**augpipe_specs[preset])
        gpu = pipe.cuda()(x.cuda(), debug_percentile=0.3)
        assert gpu.device.type == 'cuda' and gpu.dtype == x.dtype
        cpu = pipe.cpu()(x, debug_percentile=0.3)
        if preset in ['noise', 'bgcfn', 'bgcfnc']:
            continue  # The fixed-seed noise field differs between CPU and CUDA generators.
        assert (gpu.cpu() - cpu).abs().max() < 1e-3, preset
        assert torch.isfinite(pipe.cuda()(x.cuda())).all()

#----------------------------------------------------------------------------
