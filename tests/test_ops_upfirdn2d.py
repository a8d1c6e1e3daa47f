"""Tests for torch_utils.ops.upfirdn2d and torch_utils.ops.conv2d_resample (CPU, reference path).

Every result is compared against an independent NumPy/SciPy computation written from the
definition (zero insertion after each pixel, pad/crop, true 'valid' convolution, keep every
down-th sample starting at 0), never against the implementation itself.
"""

import itertools

import numpy as np
import pytest
import scipy.signal
import torch

from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import conv2d_resample
from torch_utils.ops import upfirdn2d

#----------------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures('single_thread')

#----------------------------------------------------------------------------
# Independent NumPy reference.

def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)

def _quad(p):
    if isinstance(p, int):
        return (p, p, p, p)
    if len(p) == 2:
        return (p[0], p[0], p[1], p[1])
    return tuple(p)

def np_pad_crop(img, px0, px1, py0, py1):
    """Zero-pad (positive) or crop (negative) the last two axes."""
    lead = [(0, 0)] * (img.ndim - 2)
    img = np.pad(img, lead + [(max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))])
    h, w = img.shape[-2:]
    return img[..., max(-py0, 0) : h - max(-py1, 0), max(-px0, 0) : w - max(-px1, 0)]

def np_conv_valid(img, k):
    """True 2-D convolution in 'valid' mode over the last two axes (tap loop, no library conv)."""
    kh, kw = k.shape
    h, w = img.shape[-2:]
    oh, ow = h - kh + 1, w - kw + 1
    assert oh >= 1 and ow >= 1
    out = np.zeros(img.shape[:-2] + (oh, ow))
    for a in range(kh):
        for b in range(kw):
            out += k[a, b] * img[..., kh - 1 - a : kh - 1 - a + oh, kw - 1 - b : kw - 1 - b + ow]
    return out

def np_upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """upfirdn2d from the definition. x: float64 array [N,C,H,W]; f: None, 1-D (separable) or 2-D."""
    upx, upy = _pair(up)
    downx, downy = _pair(down)
    px0, px1, py0, py1 = _quad(padding)
    n, c, h, w = x.shape
    u = np.zeros((n, c, h * upy, w * upx))
    u[:, :, ::upy, ::upx] = x  # each pixel followed by up-1 zeros
    u = np_pad_crop(u, px0, px1, py0, py1)
    if f is None:
        f = np.ones((1, 1), dtype=np.float32)
    f = np.asarray(f)
    # The filter (float32 by contract) is scaled by gain ** (ndim / 2) in its own precision, so a
    # separable filter contributes sqrt(gain) per pass; emulate that rounding exactly.
    f = (f * f.dtype.type(gain ** (f.ndim / 2))).astype(np.float64)
    k = np.outer(f, f) if f.ndim == 1 else f
    if flip_filter:
        k = k[::-1, ::-1]
    y = np_conv_valid(u, k)
    return y[:, :, ::downy, ::downx]

def scipy_upfirdn_axis(x, h, up, down, p0, p1, axis, flip_filter=False):
    """One axis of upfirdn2d built on scipy.signal.upfirdn (full convolution of the zero-inserted signal).

    Valid output j of the padded signal is full[j + len(h) - 1 - p0] (zero outside the full range).
    """
    h = np.asarray(h, dtype=np.float64)
    if flip_filter:
        h = h[::-1]
    n = x.shape[axis]
    full = np.moveaxis(scipy.signal.upfirdn(h, x, up=up, down=1, axis=axis), axis, -1)
    length = n * up + p0 + p1 - len(h) + 1
    idx = np.arange(length) + len(h) - 1 - p0
    ok = (idx >= 0) & (idx < full.shape[-1])
    out = np.zeros(full.shape[:-1] + (length,))
    out[..., ok] = full[..., idx[ok]]
    return np.moveaxis(out[..., ::down], -1, axis)

def scipy_upfirdn2d_separable(x, f1d, up=1, down=1, padding=0, flip_filter=False, gain=1):
    upx, upy = _pair(up)
    downx, downy = _pair(down)
    px0, px1, py0, py1 = _quad(padding)
    y = scipy_upfirdn_axis(x, f1d, upx, downx, px0, px1, axis=3, flip_filter=flip_filter)
    y = scipy_upfirdn_axis(y, f1d, upy, downy, py0, py1, axis=2, flip_filter=flip_filter)
    return y * gain

def out_size(n, up, p0, p1, fsize, down):
    return (n * up + p0 + p1 - fsize + down) // down

def f64(t):
    return t.detach().to(torch.float64).numpy()

def f32(t):
    """Float32 filter taps as a NumPy array (the reference scales them in float32, like the contract says)."""
    assert t.dtype == torch.float32
    return t.detach().numpy().copy()

def rand_x(shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)

def rand_filter(shape, seed=1):
    """Non-symmetric float32 filter."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float32) + 0.25)

#----------------------------------------------------------------------------
# Sanity of the helpers themselves (against scipy's own convolution).

def test_helper_conv_matches_scipy_convolve2d():
    rng = np.random.RandomState(0)
    img = rng.randn(6, 7)
    k = rng.randn(3, 2)
    np.testing.assert_allclose(np_conv_valid(img, k), scipy.signal.convolve2d(img, k, mode='valid'), rtol=0, atol=1e-12)

def test_helper_scipy_and_numpy_references_agree():
    x = np.random.RandomState(1).randn(1, 2, 4, 5)
    f = np.array([1.0, 3.0, 2.0, 0.5])
    for up, down, pad in [(1, 1, 0), (2, 1, [2, 1, 0, -1]), (3, 2, [-2, 4, 1, 1]), ([2, 3], [1, 2], [5, 0, 0, 5])]:
        for flip in [False, True]:
            a = np_upfirdn2d(x, f, up, down, pad, flip)
            b = scipy_upfirdn2d_separable(x, f, up, down, pad, flip)
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)

#----------------------------------------------------------------------------
# setup_filter

def test_setup_filter_1331_outer_product():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    assert f.dtype == torch.float32 and tuple(f.shape) == (4, 4)
    expected = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0
    np.testing.assert_allclose(f.numpy(), expected, rtol=0, atol=1e-7)

def test_setup_filter_no_normalize():
    f = upfirdn2d.setup_filter([1, 2, 3], normalize=False)
    np.testing.assert_array_equal(f.numpy(), np.outer([1, 2, 3], [1, 2, 3]))

def test_setup_filter_flip_2d_non_symmetric():
    raw = np.array([[1.0, 2.0, 0.0], [4.0, 5.0, 7.0]])
    f = upfirdn2d.setup_filter(raw, flip_filter=True)
    np.testing.assert_allclose(f.numpy(), raw[::-1, ::-1] / raw.sum(), rtol=1e-6)
    f = upfirdn2d.setup_filter(raw, flip_filter=False)
    np.testing.assert_allclose(f.numpy(), raw / raw.sum(), rtol=1e-6)

def test_setup_filter_flip_separable():
    raw = np.arange(1.0, 9.0)  # 8 taps -> separable automatically
    f = upfirdn2d.setup_filter(raw, flip_filter=True)
    assert f.ndim == 1
    np.testing.assert_allclose(f.numpy(), raw[::-1] / raw.sum(), rtol=1e-6)

@pytest.mark.parametrize('gain', [2.0, 3.0, 0.5])
def test_setup_filter_gain(gain):
    f2 = upfirdn2d.setup_filter([1, 2, 1], gain=gain)  # 2-D: gain ** 1
    np.testing.assert_allclose(f2.numpy(), np.outer([1, 2, 1], [1, 2, 1]) / 16.0 * gain, rtol=1e-6)
    f1 = upfirdn2d.setup_filter([1, 2, 1], gain=gain, separable=True)  # 1-D: gain ** 0.5
    np.testing.assert_allclose(f1.numpy(), np.array([1, 2, 1]) / 4.0 * np.sqrt(gain), rtol=1e-6)

def test_setup_filter_scalar_and_none():
    for f in [upfirdn2d.setup_filter(None), upfirdn2d.setup_filter(5.0), upfirdn2d.setup_filter(torch.tensor(2.0))]:
        assert f.dtype == torch.float32 and tuple(f.shape) == (1, 1)
        assert float(f[0, 0]) == 1.0
    f = upfirdn2d.setup_filter(None, gain=4)
    assert float(f[0, 0]) == 4.0

def test_setup_filter_separable_rule():
    assert tuple(upfirdn2d.setup_filter(np.ones(7)).shape) == (7, 7)
    assert tuple(upfirdn2d.setup_filter(np.ones(8)).shape) == (8,)
    assert tuple(upfirdn2d.setup_filter(np.ones(12)).shape) == (12,)
    assert tuple(upfirdn2d.setup_filter(np.ones(8), separable=False).shape) == (8, 8)
    assert tuple(upfirdn2d.setup_filter(np.ones(4), separable=True).shape) == (4,)
    assert tuple(upfirdn2d.setup_filter(np.ones([3, 2])).shape) == (3, 2)
    f = upfirdn2d.setup_filter(np.arange(1.0, 9.0))
    np.testing.assert_allclose(f.numpy(), np.arange(1.0, 9.0) / 36.0, rtol=1e-6)

def test_setup_filter_dtype():
    for src in [torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64), np.array([1, 2, 1]), [[1, 2], [3, 4]]]:
        assert upfirdn2d.setup_filter(src).dtype == torch.float32

@pytest.mark.parametrize('make', [
    lambda: torch.arange(1.0, 9.0),                    # separable float32 tensor (as_tensor aliases it)
    lambda: torch.arange(1.0, 7.0).reshape(2, 3),      # 2-D float32 tensor
    lambda: np.arange(1.0, 9.0, dtype=np.float32),     # float32 NumPy array (shares memory too)
], ids=['tensor1d', 'tensor2d', 'numpy32'])
def test_setup_filter_does_not_modify_caller_filter(make):
    src = make()
    as_np = lambda a: a.numpy().astype(np.float64) if isinstance(a, torch.Tensor) else a.astype(np.float64)
    before = as_np(src)
    f = upfirdn2d.setup_filter(src, normalize=True, flip_filter=True, gain=3)
    np.testing.assert_array_equal(as_np(src), before)
    np.testing.assert_allclose(f.numpy().ravel(), (before[::-1, ::-1] if before.ndim == 2 else before[::-1]).ravel()
                               / before.sum() * 3 ** (before.ndim / 2), rtol=1e-6)

#----------------------------------------------------------------------------
# upfirdn2d vs the NumPy definition.

_UPS = [1, 2, 3, 4, [2, 1], [1, 3]]
_DOWNS = [1, 2, 3, 4, [1, 2], [3, 1]]
_PADS = [0, 2, [1, 3], [3, 0, -1, 2], [-1, 2, 4, -2], [0, -1, 0, -1]]
_FILTERS = [(3, 3), (4, 4), (2, 5), (5, 2), (1, 1), (4,), (8,)]

def _valid(h, w, up, down, pad, fshape):
    upx, upy = _pair(up)
    downx, downy = _pair(down)
    px0, px1, py0, py1 = _quad(pad)
    fh, fw = (fshape[0], fshape[0]) if len(fshape) == 1 else fshape
    return out_size(w, upx, px0, px1, fw, downx) >= 1 and out_size(h, upy, py0, py1, fh, downy) >= 1

def _cases():
    cases = []
    for i, (up, down, pad, fshape) in enumerate(itertools.product(_UPS, _DOWNS, _PADS, _FILTERS)):
        if i % 5 != 0:  # a deterministic 1-in-5 subset of the full product keeps the runtime small
            continue
        flip = (i // 5) % 2 == 1
        if _valid(5, 6, up, down, pad, fshape):
            cases.append((up, down, pad, fshape, flip))
    return cases

@pytest.mark.parametrize('up,down,pad,fshape,flip', _cases())
def test_upfirdn2d_matches_definition_fp64(up, down, pad, fshape, flip):
    x = rand_x([2, 3, 5, 6])
    f = rand_filter(fshape)
    y = upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=flip, impl='ref')
    ref = np_upfirdn2d(f64(x), f32(f), up, down, pad, flip)
    assert y.dtype == torch.float64
    assert tuple(y.shape) == ref.shape
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-10)

def test_upfirdn2d_case_count():
    # Guard against the parametrisation silently collapsing to nothing.
    assert len(_cases()) >= 150
    assert any(c[4] for c in _cases()) and any(not c[4] for c in _cases())

@pytest.mark.parametrize('up,down,pad,flip', [
    (1, 1, 0, False), (2, 1, [2, 1, 2, 1], True), (1, 2, [1, 1, 1, 1], False), (3, 2, [-1, 3, 0, 2], True),
    ([2, 3], [3, 1], [4, 0, 1, -1], False), (4, 4, [5, 5, 5, 5], True),
])
def test_upfirdn2d_separable_matches_scipy_upfirdn(up, down, pad, flip):
    x = rand_x([1, 2, 9, 8])
    f = rand_filter([8])  # 8 taps: stays 1-D, two passes
    y = upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=flip, impl='ref')
    ref = scipy_upfirdn2d_separable(f64(x), f64(f), up, down, pad, flip)
    assert tuple(y.shape) == ref.shape
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-10)

def test_upfirdn2d_separable_equals_outer_product_filter():
    x = rand_x([1, 2, 6, 5])
    f1 = upfirdn2d.setup_filter([1, 2, 5, 3, 1, 1, 4, 2])
    assert f1.ndim == 1
    f2 = upfirdn2d.setup_filter([1, 2, 5, 3, 1, 1, 4, 2], separable=False)
    a = upfirdn2d.upfirdn2d(x, f1, up=2, down=1, padding=[4, 3, 2, 5], impl='ref')
    b = upfirdn2d.upfirdn2d(x, f2, up=2, down=1, padding=[4, 3, 2, 5], impl='ref')
    assert a.shape == b.shape == (1, 2, 12, 10)
    np.testing.assert_allclose(a.numpy(), np_upfirdn2d(f64(x), f32(f1), 2, 1, [4, 3, 2, 5]), rtol=0, atol=1e-10)
    np.testing.assert_allclose(b.numpy(), np_upfirdn2d(f64(x), f32(f2), 2, 1, [4, 3, 2, 5]), rtol=0, atol=1e-10)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-6)  # taps normalised in float32 differ slightly

@pytest.mark.parametrize('fshape', [(3, 3), (4,), (8,)])
def test_upfirdn2d_gain_exact_power_of_two(fshape):
    # gain 4: 2-D filters are scaled by 4, separable passes by 2 each -- exact in float32.
    x = rand_x([1, 2, 5, 5])
    f = rand_filter(fshape)
    y = upfirdn2d.upfirdn2d(x, f, up=2, down=1, padding=3, gain=4, impl='ref')
    ref = np_upfirdn2d(f64(x), f32(f), 2, 1, 3, gain=4)
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-10)

@pytest.mark.parametrize('gain', [3.0, 0.3])
@pytest.mark.parametrize('fshape', [(3, 2), (5,)])
def test_upfirdn2d_gain_general(gain, fshape):
    x = rand_x([1, 2, 5, 5])
    f = rand_filter(fshape)
    y = upfirdn2d.upfirdn2d(x, f, up=1, down=2, padding=[1, 2, 2, 1], gain=gain, impl='ref')
    ref = np_upfirdn2d(f64(x), f32(f), 1, 2, [1, 2, 2, 1], gain=gain)
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-10)

@pytest.mark.parametrize('up,down,pad', [(1, 1, 0), (2, 1, 1), (3, 2, [0, 1, -1, 2]), (1, 3, [2, 0, 0, 2])])
def test_upfirdn2d_none_filter(up, down, pad):
    x = rand_x([2, 1, 4, 5])
    y = upfirdn2d.upfirdn2d(x, None, up=up, down=down, padding=pad, gain=2, impl='ref')
    ref = np_upfirdn2d(f64(x), None, up, down, pad, gain=2)
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-12)

def test_upfirdn2d_none_filter_is_pure_zero_insertion():
    x = torch.arange(1.0, 7.0, dtype=torch.float64).reshape(1, 1, 2, 3)
    y = upfirdn2d.upfirdn2d(x, None, up=2, impl='ref')
    expected = np.array([[1, 0, 2, 0, 3, 0], [0] * 6, [4, 0, 5, 0, 6, 0], [0] * 6], dtype=np.float64)
    np.testing.assert_array_equal(y[0, 0].numpy(), expected)

def test_upfirdn2d_hand_computed_1d():
    # x = [1, 2, 3] along width, f = [1, 10] (true convolution), no padding: [1*10+2*1, 2*10+3*1].
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).reshape(1, 1, 1, 3)
    f = torch.tensor([[1.0, 10.0]])
    y = upfirdn2d.upfirdn2d(x, f, impl='ref')
    np.testing.assert_array_equal(y.flatten().numpy(), [12.0, 23.0])
    y = upfirdn2d.upfirdn2d(x, f, flip_filter=True, impl='ref')  # correlation
    np.testing.assert_array_equal(y.flatten().numpy(), [21.0, 32.0])
    # up=2 inserts the zero AFTER each sample: [1,0,2,0,3,0] -> conv [1,10]: [10, 2, 20, 3, 30].
    y = upfirdn2d.upfirdn2d(x, f, up=[2, 1], impl='ref')
    np.testing.assert_array_equal(y.flatten().numpy(), [10.0, 2.0, 20.0, 3.0, 30.0])
    # down=2 keeps indices 0, 2, 4 of that.
    y = upfirdn2d.upfirdn2d(x, f, up=[2, 1], down=[2, 1], impl='ref')
    np.testing.assert_array_equal(y.flatten().numpy(), [10.0, 20.0, 30.0])

@pytest.mark.parametrize('up,down,pad,fshape,flip', [
    (2, 1, [2, 1, 2, 1], (4, 4), False), (1, 2, [1, 1, 1, 1], (4, 4), True), (3, 4, [-1, 2, 3, 0], (3, 2), True), (2, 2, 3, (8,), False),
])
def test_upfirdn2d_fp32(up, down, pad, fshape, flip):
    x = rand_x([2, 3, 6, 5], dtype=torch.float32)
    f = rand_filter(fshape)
    f = f / f.sum()
    y = upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=flip, impl='ref')
    assert y.dtype == torch.float32
    ref = np_upfirdn2d(f64(x), f32(f), up, down, pad, flip)
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-5)

def test_upfirdn2d_fp16():
    x = rand_x([1, 2, 5, 6], dtype=torch.float16)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    y = upfirdn2d.upfirdn2d(x, f, up=2, down=1, padding=[2, 1, 2, 1], gain=4, impl='ref')
    assert y.dtype == torch.float16
    ref = np_upfirdn2d(f64(x), f32(f), 2, 1, [2, 1, 2, 1], gain=4)
    np.testing.assert_allclose(y.double().numpy(), ref, rtol=0, atol=1e-2 * np.abs(ref).max())

def test_upfirdn2d_default_impl_on_cpu_matches_ref():
    x = rand_x([1, 2, 5, 5])
    f = rand_filter([4, 4])
    y = upfirdn2d.upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1])  # impl='cuda' default, CPU -> ref path
    ref = np_upfirdn2d(f64(x), f32(f), 2, 1, [2, 1, 2, 1])
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-10)

@pytest.mark.parametrize('h,w,up,down,pad,fshape', [
    (7, 5, 1, 1, 0, (3, 3)), (7, 5, 2, 1, [2, 1, 2, 1], (4, 4)), (7, 5, 1, 2, 1, (4, 4)), (7, 5, [3, 1], [1, 2], [0, 1, 2, 3], (2, 5)),
    (9, 4, 4, 3, [-2, -1, 0, 1], (5,)), (6, 6, 1, 4, 0, (1, 1)),
])
def test_upfirdn2d_output_shape_formula(h, w, up, down, pad, fshape):
    x = torch.zeros([3, 2, h, w])
    f = torch.ones(fshape)
    y = upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=pad, impl='ref')
    upx, upy = _pair(up)
    downx, downy = _pair(down)
    px0, px1, py0, py1 = _quad(pad)
    fh, fw = (fshape[0], fshape[0]) if len(fshape) == 1 else fshape
    assert tuple(y.shape) == (3, 2, out_size(h, upy, py0, py1, fh, downy), out_size(w, upx, px0, px1, fw, downx))

@pytest.mark.parametrize('h,w,up,down,pad,fshape', [
    (4, 2, 1, 1, 0, (4, 4)),          # width: 2 - 4 + 1 < 1
    (3, 4, 1, 1, 0, (4, 4)),          # height exactly 0
    (4, 3, 1, 2, 0, (4, 4)),          # zero-length before downsampling
    (4, 4, 1, 1, [-2, -2, 0, 0], (1, 1)),  # cropped away entirely
    (4, 4, 2, 1, [0, 0, -8, 0], (1, 1)),
])
def test_upfirdn2d_empty_output_raises(h, w, up, down, pad, fshape):
    x = torch.zeros([1, 1, h, w])
    with pytest.raises(ValueError):
        upfirdn2d.upfirdn2d(x, torch.ones(fshape), up=up, down=down, padding=pad, impl='ref')

#----------------------------------------------------------------------------
# filter2d / upsample2d / downsample2d

def _wrapper_pad(kind, fw, fh, factor_x=1, factor_y=1):
    """Padding added by the wrappers, from the reference table."""
    if kind == 'filter':
        return [fw // 2, (fw - 1) // 2, fh // 2, (fh - 1) // 2]
    if kind == 'up':
        return [(fw + factor_x - 1) // 2, (fw - factor_x) // 2, (fh + factor_y - 1) // 2, (fh - factor_y) // 2]
    return [(fw - factor_x + 1) // 2, (fw - factor_x) // 2, (fh - factor_y + 1) // 2, (fh - factor_y) // 2]

def test_wrapper_padding_examples_from_spec():
    assert _wrapper_pad('up', 4, 4, 2, 2) == [2, 1, 2, 1]
    assert _wrapper_pad('down', 4, 4, 2, 2) == [1, 1, 1, 1]

_WRAP_FILTERS = [[1, 3, 3, 1], [1, 2, 1], [1, 4, 6, 4, 1], 'rand43', 'rand8']

def _make_wrap_filter(spec):
    if spec == 'rand43':
        return rand_filter([4, 3], seed=5)
    if spec == 'rand8':
        return upfirdn2d.setup_filter(rand_filter([8], seed=6).numpy())
    return upfirdn2d.setup_filter(spec)

def _fsize(f):
    return (f.shape[0], f.shape[0]) if f.ndim == 1 else (f.shape[1], f.shape[0])  # (fw, fh)

@pytest.mark.parametrize('fspec', _WRAP_FILTERS)
@pytest.mark.parametrize('flip', [False, True])
def test_filter2d(fspec, flip):
    f = _make_wrap_filter(fspec)
    fw, fh = _fsize(f)
    x = rand_x([1, 2, 6, 7])
    y = upfirdn2d.filter2d(x, f, flip_filter=flip, gain=2, impl='ref')
    assert tuple(y.shape) == (1, 2, 6, 7)
    ref = np_upfirdn2d(f64(x), f32(f), 1, 1, _wrapper_pad('filter', fw, fh), flip, gain=2)
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-10)
    # Extra user padding adds to the size-preserving padding.
    y = upfirdn2d.filter2d(x, f, padding=[1, 0, 2, 1], flip_filter=flip, impl='ref')
    assert tuple(y.shape) == (1, 2, 9, 8)
    p = np.add(_wrapper_pad('filter', fw, fh), [1, 0, 2, 1]).tolist()
    np.testing.assert_allclose(y.numpy(), np_upfirdn2d(f64(x), f32(f), 1, 1, p, flip), rtol=0, atol=1e-10)

@pytest.mark.parametrize('fspec', _WRAP_FILTERS)
@pytest.mark.parametrize('up', [2, 3, [2, 1]])
def test_upsample2d(fspec, up):
    f = _make_wrap_filter(fspec)
    fw, fh = _fsize(f)
    upx, upy = _pair(up)
    x = rand_x([1, 2, 4, 5])
    y = upfirdn2d.upsample2d(x, f, up=up, impl='ref')
    assert tuple(y.shape) == (1, 2, 4 * upy, 5 * upx)
    ref = np_upfirdn2d(f64(x), f32(f), up, 1, _wrapper_pad('up', fw, fh, upx, upy), gain=upx * upy)
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-10)

@pytest.mark.parametrize('fspec', _WRAP_FILTERS)
@pytest.mark.parametrize('down', [2, 3, [1, 2]])
def test_downsample2d(fspec, down):
    f = _make_wrap_filter(fspec)
    fw, fh = _fsize(f)
    downx, downy = _pair(down)
    x = rand_x([1, 2, 12, 6])
    y = upfirdn2d.downsample2d(x, f, down=down, flip_filter=True, impl='ref')
    assert tuple(y.shape) == (1, 2, 12 // downy, 6 // downx)
    ref = np_upfirdn2d(f64(x), f32(f), 1, down, _wrapper_pad('down', fw, fh, downx, downy), flip_filter=True)
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-10)

def test_downsample2d_user_padding_is_relative_to_input():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = rand_x([1, 1, 8, 8])
    y = upfirdn2d.downsample2d(x, f, padding=2, impl='ref')
    assert tuple(y.shape) == (1, 1, 6, 6)
    ref = np_upfirdn2d(f64(x), f32(f), 1, 2, [3, 3, 3, 3])
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-10)

@pytest.mark.parametrize('fspec', [[1, 3, 3, 1], [1, 2, 1], [1, 4, 6, 4, 1], [1, 1], 'rand8'])
def test_wrappers_preserve_dc(fspec):
    f = _make_wrap_filter(fspec)
    fw, _ = _fsize(f)
    x = torch.full([1, 1, 12, 12], 2.5, dtype=torch.float64)
    m = fw  # interior margin (in output pixels) that the zero padding cannot reach
    y = upfirdn2d.filter2d(x, f, impl='ref')
    np.testing.assert_allclose(y[..., m:-m, m:-m].numpy(), 2.5, rtol=0, atol=1e-6)
    y = upfirdn2d.upsample2d(x, f, up=2, impl='ref')
    np.testing.assert_allclose(y[..., 2 * m:-2 * m, 2 * m:-2 * m].numpy(), 2.5, rtol=0, atol=1e-6)
    y = upfirdn2d.downsample2d(x, f, down=2, impl='ref')
    np.testing.assert_allclose(y[..., m:-m, m:-m].numpy(), 2.5, rtol=0, atol=1e-6)
    # ...and the border does see the zero padding (for a filter wider than 1 tap).
    assert abs(float(upfirdn2d.filter2d(x, f, impl='ref')[0, 0, 0, 0]) - 2.5) > 1e-3

#----------------------------------------------------------------------------
# Gradients of upfirdn2d.

@pytest.mark.parametrize('up,down,pad,fshape,flip', [
    (1, 1, 1, (3, 3), False), (2, 1, [2, 1, 2, 1], (4, 4), True), (1, 2, [1, 1, 0, 2], (4, 4), False),
    (3, 2, [-1, 2, 1, 0], (3, 2), True), ([2, 1], [1, 3], [0, 3, 3, 4], (8,), False),
])
def test_upfirdn2d_gradcheck(up, down, pad, fshape, flip):
    x = rand_x([1, 1, 3, 4]).requires_grad_(True)
    f = rand_filter(fshape)
    fn = lambda x: upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=1.5, impl='ref')
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))

def test_upfirdn2d_gradient_is_adjoint():
    # <upfirdn(x), v> == <x, grad>: the gradient must be the exact adjoint of the forward map.
    x = rand_x([1, 1, 5, 4]).requires_grad_(True)
    f = rand_filter([3, 4])
    y = upfirdn2d.upfirdn2d(x, f, up=2, down=3, padding=[1, 2, -1, 3], impl='ref')
    v = rand_x(y.shape, seed=3)
    (g,) = torch.autograd.grad((y * v).sum(), x)
    # Build the adjoint from the NumPy definition: column j of the matrix is the response to e_j.
    xs = f64(x)
    basis = np.eye(xs.size).reshape([xs.size] + list(xs.shape))
    mat = np.stack([np_upfirdn2d(b, f32(f), 2, 3, [1, 2, -1, 3]).ravel() for b in basis], axis=1)
    np.testing.assert_allclose(g.numpy().ravel(), mat.T @ v.numpy().ravel(), rtol=0, atol=1e-10)

#----------------------------------------------------------------------------
# conv2d_resample vs the generic sequence computed in NumPy.

def np_conv_group(x, w, groups, flip_weight):
    """Valid grouped 2-D convolution (flip_weight=False) or correlation (True)."""
    n, cin, h, wd = x.shape
    cout, cpg, kh, kw = w.shape
    assert cin == cpg * groups and cout % groups == 0
    opg = cout // groups
    out = np.zeros((n, cout, h - kh + 1, wd - kw + 1))
    for o in range(cout):
        g = o // opg
        for ci in range(cpg):
            k = w[o, ci]
            if flip_weight:
                k = k[::-1, ::-1]  # correlation = convolution with the flipped kernel
            out[:, o] += np_conv_valid(x[:, g * cpg + ci], k)
    return out

def np_conv2d_resample(x, w, f, up, down, padding, groups, flip_weight, flip_filter):
    if f is None:
        fw = fh = 1
    else:
        fh, fw = (f.shape[0], f.shape[0]) if f.ndim == 1 else f.shape
    px0, px1, py0, py1 = _quad(padding)
    if up > 1:
        px0 += (fw + up - 1) // 2; px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2; py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2; px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2; py1 += (fh - down) // 2
    if up > 1:
        x = np_upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], flip_filter=flip_filter, gain=up ** 2)
    else:
        x = np_pad_crop(x, px0, px1, py0, py1)
    x = np_conv_group(x, w, groups, flip_weight)
    if down > 1:
        x = np_upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x

_CR_PADS = [0, 1, -1, [1, 0, 2, 1], [-1, 1, 0, -1], [-2, 1, -1, 0]]

def _cr_cases():
    cases = []
    for k, (up, down), pad, groups, fshape in itertools.product([1, 3], [(1, 1), (1, 2), (2, 1), (2, 2)], _CR_PADS, [1, 2], [(4, 4), (3, 5)]):
        for flip_weight, flip_filter in [(True, False), (False, True)]:
            cases.append((k, up, down, pad, groups, fshape, flip_weight, flip_filter))
    return cases

@pytest.mark.parametrize('k,up,down,pad,groups,fshape,flip_weight,flip_filter', _cr_cases())
def test_conv2d_resample_matches_generic(k, up, down, pad, groups, fshape, flip_weight, flip_filter):
    x = rand_x([2, 4, 6, 6], seed=10)
    w = rand_x([4, 4 // groups, k, k], seed=11)
    f = rand_filter(fshape, seed=12)
    f = f / f.sum()
    y = conv2d_resample.conv2d_resample(x, w, f=f, up=up, down=down, padding=pad, groups=groups,
                                        flip_weight=flip_weight, flip_filter=flip_filter)
    ref = np_conv2d_resample(f64(x), f64(w), f32(f), up, down, pad, groups, flip_weight, flip_filter)
    assert tuple(y.shape) == ref.shape
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-10)

@pytest.mark.parametrize('up,down,pad', [(2, 1, 0), (1, 2, 1), (2, 2, [0, 1, 1, 0])])
def test_conv2d_resample_separable_filter_and_none(up, down, pad):
    x = rand_x([1, 2, 6, 6], seed=20)
    w = rand_x([3, 2, 3, 3], seed=21)
    f = upfirdn2d.setup_filter(rand_filter([8], seed=22).numpy())
    assert f.ndim == 1
    y = conv2d_resample.conv2d_resample(x, w, f=f, up=up, down=down, padding=pad, flip_filter=True)
    ref = np_conv2d_resample(f64(x), f64(w), f32(f), up, down, pad, 1, True, True)
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-10)
    y = conv2d_resample.conv2d_resample(x, w, f=None, up=up, down=down, padding=pad)
    ref = np_conv2d_resample(f64(x), f64(w), None, up, down, pad, 1, True, False)
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-10)

def test_conv2d_resample_plain_equals_torch_conv():
    x = rand_x([1, 3, 5, 5])
    w = rand_x([2, 3, 3, 3], seed=4)
    y = conv2d_resample.conv2d_resample(x, w, padding=1)
    np.testing.assert_allclose(y.numpy(), torch.nn.functional.conv2d(x, w, padding=1).numpy(), rtol=0, atol=1e-12)
    y = conv2d_resample.conv2d_resample(x, w, padding=1, flip_weight=False)
    np.testing.assert_allclose(y.numpy(), torch.nn.functional.conv2d(x, w.flip([2, 3]), padding=1).numpy(), rtol=0, atol=1e-12)

_GRAD_PATHS = [  # (k, up, down, pad): one per code path
    (1, 1, 2, 0),               # 1x1 + down
    (1, 2, 1, 0),               # 1x1 + up
    (3, 1, 2, 1),               # down only
    (3, 2, 1, 1),               # up only (transposed conv)
    (3, 2, 2, 0),               # up + down
    (3, 1, 1, 1),               # plain conv
    (3, 1, 1, [1, 0, 0, 2]),    # generic (asymmetric padding)
]

@pytest.mark.parametrize('k,up,down,pad', _GRAD_PATHS)
@pytest.mark.parametrize('groups,flip_weight', [(1, True), (2, False)])
def test_conv2d_resample_gradcheck(k, up, down, pad, groups, flip_weight):
    x = rand_x([1, 2, 3, 3], seed=30).requires_grad_(True)
    w = rand_x([2, 2 // groups, k, k], seed=31).requires_grad_(True)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    fn = lambda x, w: conv2d_resample.conv2d_resample(x, w, f=f, up=up, down=down, padding=pad, groups=groups, flip_weight=flip_weight)
    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))

@pytest.mark.parametrize('k,up,down,pad', [(3, 2, 1, 1), (3, 1, 2, 1), (1, 2, 1, 0)])
def test_conv2d_resample_gradgradcheck_with_gradfix_enabled(monkeypatch, k, up, down, pad):
    monkeypatch.setattr(conv2d_gradfix, 'enabled', True)
    x = rand_x([1, 2, 3, 3], seed=40).requires_grad_(True)
    w = rand_x([2, 2, k, k], seed=41).requires_grad_(True)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    fn = lambda x, w: conv2d_resample.conv2d_resample(x, w, f=f, up=up, down=down, padding=pad)
    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))

#----------------------------------------------------------------------------
