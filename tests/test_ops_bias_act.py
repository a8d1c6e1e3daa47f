"""Tests for torch_utils.ops.bias_act and torch_utils.ops.fma (CPU, reference path).

Values and first derivatives are compared with the activation formulas written out in NumPy;
higher-order gradients with torch.autograd.gradcheck / gradgradcheck in float64.
"""

import numpy as np
import pytest
import torch

from torch_utils.ops import bias_act
from torch_utils.ops import fma

#----------------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures('single_thread')

#----------------------------------------------------------------------------
# NumPy formulas.

SELU_SCALE = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717
SQRT2 = np.sqrt(2.0)

ACTS = ['linear', 'relu', 'lrelu', 'tanh', 'sigmoid', 'elu', 'selu', 'softplus', 'swish']
DEF_GAIN = {'linear': 1, 'relu': SQRT2, 'lrelu': SQRT2, 'tanh': 1, 'sigmoid': 1, 'elu': 1, 'selu': 1, 'softplus': 1, 'swish': SQRT2}
DEF_ALPHA = {'lrelu': 0.2}

def np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))

def np_act(z, act, alpha):
    if act == 'linear':
        return z.copy()
    if act == 'relu':
        return np.maximum(z, 0.0)
    if act == 'lrelu':
        return np.where(z >= 0, z, alpha * z)
    if act == 'tanh':
        return np.tanh(z)
    if act == 'sigmoid':
        return np_sigmoid(z)
    if act == 'elu':
        return np.where(z > 0, z, np.expm1(z))
    if act == 'selu':
        return SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * np.expm1(z))
    if act == 'softplus':
        return np.log1p(np.exp(z))
    if act == 'swish':
        return z * np_sigmoid(z)
    raise AssertionError(act)

def np_act_deriv(z, act, alpha):
    if act == 'linear':
        return np.ones_like(z)
    if act == 'relu':
        return (z > 0).astype(np.float64)
    if act == 'lrelu':
        return np.where(z > 0, 1.0, alpha)
    if act == 'tanh':
        return 1.0 - np.tanh(z) ** 2
    if act == 'sigmoid':
        s = np_sigmoid(z)
        return s * (1.0 - s)
    if act == 'elu':
        return np.where(z > 0, 1.0, np.exp(z))
    if act == 'selu':
        return SELU_SCALE * np.where(z > 0, 1.0, SELU_ALPHA * np.exp(z))
    if act == 'softplus':
        return np_sigmoid(z)
    if act == 'swish':
        s = np_sigmoid(z)
        return s + z * s * (1.0 - s)
    raise AssertionError(act)

def np_bias_act(x, b, dim, act, alpha=None, gain=None, clamp=None):
    alpha = DEF_ALPHA.get(act, 0.0) if alpha is None else alpha
    gain = DEF_GAIN[act] if gain is None else gain
    z = x if b is None else x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    y = gain * np_act(z, act, alpha)
    if clamp is not None:
        y = np.clip(y, -clamp, clamp)
    return y

def kink_free_preact(shape, seed):
    """Pre-activations at least 0.05 away from 0 (the kink of relu/lrelu/elu/selu)."""
    rng = np.random.RandomState(seed)
    mag = rng.uniform(0.05, 2.5, size=shape)
    sign = np.where(rng.rand(*shape) < 0.5, -1.0, 1.0)
    return mag * sign

def pick_clamp(y):
    """A clamp level with a clear gap to every |y| that still clamps roughly a quarter of the values."""
    v = np.unique(np.abs(y).ravel())
    gaps = np.diff(v)
    lo = int(len(v) * 0.6)
    i = lo + int(np.argmax(gaps[lo:]))
    assert gaps[i] > 1e-4
    return float((v[i] + v[i + 1]) / 2)

#----------------------------------------------------------------------------
# Values.

def test_activation_table():
    assert set(bias_act.activation_funcs) == set(ACTS)
    for act in ACTS:
        spec = bias_act.activation_funcs[act]
        assert np.isclose(float(spec.def_gain), DEF_GAIN[act]), act
        assert np.isclose(float(spec.def_alpha), DEF_ALPHA.get(act, 0.0)), act

@pytest.mark.parametrize('act', ACTS)
def test_bias_act_default_gain_and_alpha(act):
    rng = np.random.RandomState(0)
    x = rng.randn(2, 3, 4, 5) * 2
    b = rng.randn(3)
    y = bias_act.bias_act(torch.from_numpy(x), torch.from_numpy(b), act=act)
    assert y.dtype == torch.float64 and tuple(y.shape) == x.shape
    np.testing.assert_allclose(y.numpy(), np_bias_act(x, b, 1, act), rtol=1e-12, atol=1e-12)

@pytest.mark.parametrize('act', ACTS)
def test_bias_act_custom_alpha_gain_clamp(act):
    rng = np.random.RandomState(1)
    x = rng.randn(3, 4, 5) * 2
    b = rng.randn(4)
    y = bias_act.bias_act(torch.from_numpy(x), torch.from_numpy(b), act=act, alpha=0.1, gain=1.7, clamp=0.9, impl='ref')
    ref = np_bias_act(x, b, 1, act, alpha=0.1, gain=1.7, clamp=0.9)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12, atol=1e-12)
    assert float(y.abs().max()) <= 0.9

def test_bias_act_clamp_after_gain():
    # relu(0.9) = 0.9 < 1, but sqrt(2) * 0.9 = 1.27 > 1: the clamp acts on the scaled value.
    y = bias_act.bias_act(torch.tensor([0.9, 0.5, -3.0], dtype=torch.float64), act='relu', clamp=1.0)
    np.testing.assert_allclose(y.numpy(), [1.0, 0.5 * SQRT2, 0.0], rtol=1e-14)
    y = bias_act.bias_act(torch.tensor([-5.0, 5.0, 0.25], dtype=torch.float64), act='linear', gain=2, clamp=1.0)
    np.testing.assert_allclose(y.numpy(), [-1.0, 1.0, 0.5], rtol=1e-14)

def test_bias_act_lrelu_alpha():
    x = torch.tensor([-2.0, -0.5, 0.5, 3.0], dtype=torch.float64)
    np.testing.assert_allclose(bias_act.bias_act(x, act='lrelu').numpy(), SQRT2 * np.array([-0.4, -0.1, 0.5, 3.0]), rtol=1e-14)
    np.testing.assert_allclose(bias_act.bias_act(x, act='lrelu', alpha=0.5, gain=1).numpy(), [-1.0, -0.25, 0.5, 3.0], rtol=1e-14)

@pytest.mark.parametrize('dim', [0, 1, 2])
@pytest.mark.parametrize('act', ['linear', 'lrelu', 'swish'])
def test_bias_act_bias_dim(dim, act):
    rng = np.random.RandomState(2)
    x = rng.randn(2, 3, 4)
    b = rng.randn(x.shape[dim]) * 3
    y = bias_act.bias_act(torch.from_numpy(x), torch.from_numpy(b), dim=dim, act=act)
    np.testing.assert_allclose(y.numpy(), np_bias_act(x, b, dim, act), rtol=1e-12, atol=1e-12)
    # The bias must really be broadcast along `dim` (not along another axis of a different length).
    other = np_bias_act(x, None, dim, act)
    assert not np.allclose(y.numpy(), other)

def test_bias_act_bias_dim_last_of_4d():
    rng = np.random.RandomState(3)
    x = rng.randn(2, 2, 3, 5)
    b = rng.randn(5)
    y = bias_act.bias_act(torch.from_numpy(x), torch.from_numpy(b), dim=3, act='tanh', gain=3)
    np.testing.assert_allclose(y.numpy(), np_bias_act(x, b, 3, 'tanh', gain=3), rtol=1e-12, atol=1e-12)

def test_bias_act_without_bias_and_identity():
    rng = np.random.RandomState(4)
    x = torch.from_numpy(rng.randn(2, 3, 2, 2))
    np.testing.assert_array_equal(bias_act.bias_act(x).numpy(), x.numpy())
    np.testing.assert_allclose(bias_act.bias_act(x, act='softplus').numpy(), np.log1p(np.exp(x.numpy())), rtol=1e-12)

@pytest.mark.parametrize('act', ['relu', 'sigmoid', 'swish'])
def test_bias_act_fp32(act):
    rng = np.random.RandomState(5)
    x = rng.randn(2, 3, 4, 4).astype(np.float32)
    b = rng.randn(3).astype(np.float32)
    y = bias_act.bias_act(torch.from_numpy(x), torch.from_numpy(b), act=act, clamp=1.1)
    assert y.dtype == torch.float32
    ref = np_bias_act(x.astype(np.float64), b.astype(np.float64), 1, act, clamp=1.1)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-6, atol=1e-6)

def test_bias_act_unknown_activation_raises():
    with pytest.raises(ValueError):
        bias_act.bias_act(torch.zeros([2, 3]), act='gelu_but_not_really')
    with pytest.raises(ValueError):
        bias_act.bias_act(torch.zeros([2, 3]), act='ReLU', impl='ref')

#----------------------------------------------------------------------------
# Gradients.

@pytest.mark.parametrize('act', ACTS)
@pytest.mark.parametrize('use_clamp', [False, True])
def test_bias_act_first_derivative_matches_formula(act, use_clamp):
    z = kink_free_preact([2, 3, 3, 3], seed=6)
    rng = np.random.RandomState(7)
    b = rng.randn(3) * 0.3
    x = z - b.reshape(1, 3, 1, 1)
    y_np = np_bias_act(x, b, 1, act, gain=1.3)
    clamp = pick_clamp(y_np) if use_clamp else None
    xt = torch.from_numpy(x).requires_grad_(True)
    bt = torch.from_numpy(b).requires_grad_(True)
    y = bias_act.bias_act(xt, bt, act=act, gain=1.3, clamp=clamp)
    dy = rng.randn(*x.shape)
    gx, gb = torch.autograd.grad(y, [xt, bt], torch.from_numpy(dy))
    zz = x + b.reshape(1, 3, 1, 1)
    mask = np.ones_like(zz) if clamp is None else (np.abs(1.3 * np_act(zz, act, 0.2)) < clamp).astype(np.float64)
    if use_clamp and act != 'linear':
        assert 0 < mask.sum() < mask.size  # the clamp must really cut some values
    ref_gx = dy * 1.3 * np_act_deriv(zz, act, 0.2) * mask
    np.testing.assert_allclose(gx.numpy(), ref_gx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gb.numpy(), ref_gx.sum(axis=(0, 2, 3)), rtol=1e-10, atol=1e-12)

@pytest.mark.parametrize('act', ACTS)
def test_bias_act_gradcheck(act):
    z = kink_free_preact([2, 3, 2, 2], seed=8)
    b = np.array([0.1, -0.2, 0.3])
    x = z - b.reshape(1, 3, 1, 1)
    y_np = np_bias_act(x, b, 1, act, alpha=0.3, gain=1.4)
    clamp = pick_clamp(y_np)
    xt = torch.from_numpy(x).requires_grad_(True)
    bt = torch.from_numpy(b).requires_grad_(True)
    fn = lambda x, b: bias_act.bias_act(x, b, act=act, alpha=0.3, gain=1.4, clamp=clamp)
    assert torch.autograd.gradcheck(fn, (xt, bt))
    assert torch.autograd.gradgradcheck(fn, (xt, bt))

@pytest.mark.parametrize('act', ['tanh', 'sigmoid', 'elu', 'selu', 'softplus', 'swish'])
def test_bias_act_second_derivative_is_nonzero(act):
    # Smooth activations must have a real second derivative (R1 / path-length regularisation need it).
    x = torch.tensor([-0.7, 0.4, 1.3], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(bias_act.bias_act(x, act=act).sum(), x, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), x)
    eps = 1e-5
    xn = x.detach().numpy()
    gain = DEF_GAIN[act]
    fd = gain * (np_act_deriv(xn + eps, act, 0) - np_act_deriv(xn - eps, act, 0)) / (2 * eps)
    np.testing.assert_allclose(h.numpy(), fd, rtol=1e-6, atol=1e-8)
    assert abs(float(h[0])) > 1e-2  # nonzero at x = -0.7 for every smooth activation (elu/selu are linear for x > 0)

#----------------------------------------------------------------------------
# fma

_FMA_SHAPES = [
    ([2, 3], [2, 3], [2, 3]),
    ([2, 1, 3], [4, 1], [3]),
    ([4, 1], [1, 3], [2, 4, 3]),
    ([1, 3, 1, 2], [2, 1, 4, 1], [1, 1, 1, 2]),
]

@pytest.mark.parametrize('sa,sb,sc', _FMA_SHAPES)
def test_fma_values(sa, sb, sc):
    rng = np.random.RandomState(9)
    a, b, c = rng.randn(*sa), rng.randn(*sb), rng.randn(*sc)
    y = fma.fma(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c))
    np.testing.assert_allclose(y.numpy(), a * b + c, rtol=1e-14, atol=1e-14)

@pytest.mark.parametrize('sa,sb,sc', _FMA_SHAPES)
def test_fma_gradients(sa, sb, sc):
    rng = np.random.RandomState(10)
    a, b, c = (torch.from_numpy(rng.randn(*s)).requires_grad_(True) for s in (sa, sb, sc))
    assert torch.autograd.gradcheck(fma.fma, (a, b, c))
    assert torch.autograd.gradgradcheck(fma.fma, (a, b, c))
    # Gradient shapes and values against the broadcast formulas in NumPy.
    y = fma.fma(a, b, c)
    dy = rng.randn(*y.shape)
    ga, gb, gc = torch.autograd.grad(y, [a, b, c], torch.from_numpy(dy))
    def unbroadcast(g, shape):
        g = g.sum(axis=tuple(range(g.ndim - len(shape))))
        return g.sum(axis=tuple(i for i, s in enumerate(shape) if s == 1), keepdims=True)
    an, bn = a.detach().numpy(), b.detach().numpy()
    np.testing.assert_allclose(ga.numpy(), unbroadcast(dy * bn, sa), rtol=1e-12)
    np.testing.assert_allclose(gb.numpy(), unbroadcast(dy * an, sb), rtol=1e-12)
    np.testing.assert_allclose(gc.numpy(), unbroadcast(dy, sc), rtol=1e-12)

def test_fma_partial_requires_grad():
    a = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64)
    c = torch.randn(3, 1, dtype=torch.float64)
    y = fma.fma(a, b, c)
    (ga,) = torch.autograd.grad(y.sum(), [a])
    np.testing.assert_allclose(ga.numpy(), np.broadcast_to(b.numpy(), (3, 2)), rtol=1e-14)

def test_fma_zero_dim_operand():
    # addcmul accepts 0-d tensors; fma's backward must un-broadcast a gradient to shape [] too.
    a = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    c = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    y = fma.fma(a, b, c)
    np.testing.assert_allclose(y.detach().numpy(), a.detach().numpy() * b.detach().numpy() + 0.5, rtol=1e-14)
    gc = torch.autograd.grad(y.sum(), [c])[0]
    assert tuple(gc.shape) == () and float(gc) == 6.0
    s = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    (gs,) = torch.autograd.grad(fma.fma(s, b, c).sum(), [s])
    np.testing.assert_allclose(float(gs), float(b.detach().sum()), rtol=1e-14)

#----------------------------------------------------------------------------
