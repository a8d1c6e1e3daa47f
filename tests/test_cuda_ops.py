"""CUDA kernels of upfirdn2d and bias_act against their reference implementations (needs a GPU).

Ground truth is the reference path (impl='ref') evaluated in float64, so the comparison does not
depend on TF32/cuDNN settings and the only tolerance needed is the rounding of the dtype under
test. Values, first-order gradients and second-order gradients (gradient of the gradient) are
compared; gradcheck/gradgradcheck run on the CUDA path in float64.
"""

import pytest
import torch

from torch_utils import custom_ops
from torch_utils.ops import bias_act
from torch_utils.ops import upfirdn2d

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='CUDA kernels need a CUDA GPU'),
]

DEVICE = torch.device('cuda')

# Tolerance per dtype, relative to max(1, max |expected|): the rounding of the dtype with a margin.
# Half inputs accumulate in float, so their error is dominated by the final (and, for separable
# filters, intermediate) rounding to half.
TOL = {torch.float16: 4e-3, torch.float32: 2e-5, torch.float64: 1e-9}

#----------------------------------------------------------------------------

@pytest.fixture(scope='module', autouse=True)
def plugins_built():
    # impl='cuda' silently falls back to the reference path when a build fails, which would make
    # every comparison below pass trivially; insist that the kernels really are in use.
    if not upfirdn2d._init():
        pytest.fail(f'upfirdn2d CUDA plugin is unavailable: {custom_ops.plugin_failure("upfirdn2d_plugin")}')
    if not bias_act._init():
        pytest.fail(f'bias_act CUDA plugin is unavailable: {custom_ops.plugin_failure("bias_act_plugin")}')

def _assert_close(actual, expected, dtype, what):
    assert actual is not None and expected is not None, what
    assert tuple(actual.shape) == tuple(expected.shape), f'{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}'
    a = actual.detach().to(torch.float64)
    e = expected.detach().to(torch.float64)
    assert torch.isfinite(a).all(), f'{what}: non-finite values from the CUDA path'
    tol = TOL[dtype]
    scale = max(1.0, e.abs().max().item()) if e.numel() else 1.0
    torch.testing.assert_close(a, e, rtol=tol, atol=tol * scale, msg=lambda m: f'{what}: {m}')

def _or_zeros(grad, like):
    return torch.zeros_like(like) if grad is None else grad

#----------------------------------------------------------------------------
# upfirdn2d

def _filter(kind, seed):
    """float32 filter on DEVICE: 2-D [fh, fw] or separable 1-D [taps]."""
    gen = torch.Generator().manual_seed(seed)
    name, *args = kind
    if name == 'rand2d':   # arbitrary non-symmetric taps: catches flips and transposes
        fh, fw = args
        return torch.randn([fh, fw], generator=gen).to(DEVICE)
    if name == 'setup':    # through setup_filter, as the networks build them
        taps, kwargs = args
        return upfirdn2d.setup_filter(taps, device=DEVICE, **kwargs)
    if name == 'rand1d':   # separable random positive taps (setup_filter normalizes them)
        taps, = args
        return upfirdn2d.setup_filter(torch.rand([taps], generator=gen) + 0.25, device=DEVICE, separable=True)
    raise ValueError(name)

# (id, filter, up, down, padding, flip_filter, gain)
UPFIRDN_CASES = [
    ('identity1x1',     ('rand2d', 1, 1),                          1, 1, 0, False, 2.0),
    ('upsample2d',      ('setup', [1, 3, 3, 1], {}),               2, 1, [2, 1, 2, 1], False, 4.0),
    ('downsample2d',    ('setup', [1, 3, 3, 1], {}),               1, 2, [1, 1, 1, 1], False, 1.0),
    ('filter2d',        ('setup', [1, 3, 3, 1], {}),               1, 1, [2, 1, 2, 1], False, 1.0),
    ('3x3_flip',        ('rand2d', 3, 3),                          1, 1, 1, True, 1.0),
    ('5x3_aniso',       ('rand2d', 5, 3),                          [2, 1], [1, 2], [1, 2, 3, 0], False, 1.5),
    ('2x2_up3',         ('rand2d', 2, 2),                          3, 1, [1, 1, 1, 1], False, 1.0),
    ('4x4_down3',       ('rand2d', 4, 4),                          1, 3, 2, True, 0.5),
    ('7x7_up2_down2',   ('rand2d', 7, 7),                          2, 2, 3, False, 1.0),
    ('8x8_up4',         ('rand2d', 8, 8),                          4, 1, [4, 3, 4, 3], False, 16.0),
    ('6x6_down4',       ('rand2d', 6, 6),                          1, 4, [1, 2, 1, 2], True, 1.0),
    ('12x12_large',     ('rand2d', 12, 12),                        1, 1, 6, True, 1.0),
    ('crop_negative',   ('rand2d', 3, 3),                          2, 1, [-1, 2, 0, -2], False, 1.0),
    ('row_1x9',         ('rand2d', 1, 9),                          1, 1, [4, 4, 0, 0], False, 1.0),
    ('col_9x1',         ('rand2d', 9, 1),                          1, 2, [0, 0, 4, 4], True, 1.0),
    ('up5_down3',       ('rand2d', 5, 5),                          5, 3, 2, False, 1.0),
    ('sep8_up2',        ('rand1d', 8),                             2, 1, [4, 3, 4, 3], False, 4.0),
    ('sep12_down2',     ('rand1d', 12),                            1, 2, [5, 5, 5, 5], False, 1.0),
    ('sep24_flip',      ('rand1d', 24),                            1, 1, [12, 11, 12, 11], True, 2.0),
    ('sep4_up2_down2',  ('setup', [1, 3, 3, 1], {'separable': True}), 2, 2, 1, False, 1.0),
    ('sep1tap',         ('setup', [2.0], {'separable': True, 'normalize': False}), 1, 1, 0, False, 1.0),
]

def _upfirdn(x, f, case, impl):
    _, _, up, down, padding, flip, gain = case
    return upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain, impl=impl)

def _upfirdn_value_and_grads(x, f, case, impl, dy, w):
    """Output, gradient wrt x for output gradient dy, and the gradient of <grad_x, w> wrt dy."""
    x = x.detach().clone().requires_grad_(True)
    dy = dy.detach().clone().requires_grad_(True)
    y = _upfirdn(x, f, case, impl)
    gx, = torch.autograd.grad(y, x, dy, create_graph=True)
    gdy, = torch.autograd.grad(gx, dy, w)  # the op is linear, so this is the op applied to w
    return y, gx, gdy

@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last], ids=['nchw', 'nhwc'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16], ids=['fp32', 'fp16'])
@pytest.mark.parametrize('case', UPFIRDN_CASES, ids=[c[0] for c in UPFIRDN_CASES])
def test_upfirdn2d_matches_reference(case, dtype, memory_format):
    torch.manual_seed(0)
    f = _filter(case[1], seed=1)
    x = torch.randn([2, 5, 10, 13], device=DEVICE).to(dtype).contiguous(memory_format=memory_format)

    expected = _upfirdn(x.double(), f, case, 'ref')
    dy = torch.randn(expected.shape, device=DEVICE).to(dtype)
    w = torch.randn(x.shape, device=DEVICE).to(dtype)
    y, gx, gdy = _upfirdn_value_and_grads(x, f, case, 'cuda', dy, w)
    y_ref, gx_ref, gdy_ref = _upfirdn_value_and_grads(x.double(), f, case, 'ref', dy.double(), w.double())

    assert y.dtype == dtype and gx.dtype == dtype
    if memory_format == torch.channels_last and x.shape[1] > 1:
        assert y.is_contiguous(memory_format=torch.channels_last), 'output lost the channels_last layout'
    _assert_close(y, y_ref, dtype, 'output')
    _assert_close(gx, gx_ref, dtype, 'gradient wrt x')
    _assert_close(gdy, gdy_ref, dtype, 'second-order gradient wrt dy')

@pytest.mark.parametrize('view', ['strided', 'transposed'])
def test_upfirdn2d_non_contiguous_input(view):
    torch.manual_seed(0)
    base = torch.randn([2, 3, 12, 16], device=DEVICE)
    x = base[:, :, 1:-1, ::2] if view == 'strided' else base.transpose(2, 3)
    assert not x.is_contiguous()
    f = _filter(('rand2d', 3, 4), seed=2)
    case = ('nc', None, 2, 1, [2, 1, 1, 2], False, 1.0)
    _assert_close(_upfirdn(x, f, case, 'cuda'), _upfirdn(x.double(), f, case, 'ref'), torch.float32, 'output')

@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last], ids=['nchw', 'nhwc'])
def test_upfirdn2d_large_tensor(memory_format):
    # Many blocks: exercises the grid-stride loop and realistic network sizes.
    torch.manual_seed(0)
    x = torch.randn([4, 64, 96, 128], device=DEVICE).contiguous(memory_format=memory_format)
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device=DEVICE)
    for fn, kwargs in [(upfirdn2d.upsample2d, {}), (upfirdn2d.downsample2d, {}), (upfirdn2d.filter2d, {})]:
        y = fn(x, f, impl='cuda', **kwargs)
        y_ref = fn(x.double(), f, impl='ref', **kwargs)
        _assert_close(y, y_ref, torch.float32, fn.__name__)

@pytest.mark.parametrize('case', [UPFIRDN_CASES[i] for i in [1, 2, 5, 13, 17]], ids=lambda c: c[0])
def test_upfirdn2d_gradcheck(case):
    torch.manual_seed(0)
    f = _filter(case[1], seed=3)
    x = torch.randn([1, 2, 6, 7], device=DEVICE, dtype=torch.float64, requires_grad=True)
    fn = lambda x: _upfirdn(x, f, case, 'cuda')
    assert torch.autograd.gradcheck(fn, [x])
    assert torch.autograd.gradgradcheck(fn, [x])

def test_upfirdn2d_plugin_argument_checks():
    plugin = upfirdn2d._plugin
    x = torch.randn([1, 2, 4, 4], device=DEVICE)
    f = torch.ones([3, 3], device=DEVICE)
    with pytest.raises(RuntimeError, match='empty'):
        plugin.upfirdn2d(x, torch.ones([6, 6], device=DEVICE), 1, 1, 1, 1, 0, 0, 0, 0, False, 1.0)
    with pytest.raises(RuntimeError, match='float32'):
        plugin.upfirdn2d(x, f.double(), 1, 1, 1, 1, 1, 1, 1, 1, False, 1.0)
    with pytest.raises(RuntimeError, match='rank 4'):
        plugin.upfirdn2d(x[0], f, 1, 1, 1, 1, 1, 1, 1, 1, False, 1.0)
    with pytest.raises(RuntimeError, match='up factors'):
        plugin.upfirdn2d(x, f, 0, 1, 1, 1, 1, 1, 1, 1, False, 1.0)

#----------------------------------------------------------------------------
# bias_act

# (id, shape, dim, memory_format)
BIAS_ACT_LAYOUTS = [
    ('nchw_dim1',  [2, 6, 5, 7], 1, torch.contiguous_format),
    ('nhwc_dim1',  [2, 6, 5, 7], 1, torch.channels_last),
    ('nhwc_dim3',  [2, 6, 5, 7], 3, torch.channels_last),
    ('fc_dim1',    [8, 17], 1, torch.contiguous_format),
    ('3d_dim2',    [4, 3, 9], 2, torch.contiguous_format),
    ('4d_dim0',    [5, 4, 3, 2], 0, torch.contiguous_format),
    ('1d_dim0',    [33], 0, torch.contiguous_format),
]

# (id, use_bias, alpha, gain, clamp)
BIAS_ACT_SETTINGS = [
    ('plain',            False, None, None, None),
    ('bias_clamp',       True,  None, None, 0.8),
    ('bias_alpha_gain',  True,  0.3,  0.7,  None),
]

ACTS = sorted(bias_act.activation_funcs.keys())

def _bias_act_value_and_grads(x, b, dy, wx, wb, impl, **kwargs):
    """Output, first-order gradients wrt (x, b), and second-order gradients of
    <grad_x, wx> + <grad_b, wb> wrt (x, b, dy). Missing gradients are zeros."""
    x = x.detach().clone().requires_grad_(True)
    b = b.detach().clone().requires_grad_(True) if b is not None else None
    dy = dy.detach().clone().requires_grad_(True)
    inputs = [x] + ([b] if b is not None else [])
    y = bias_act.bias_act(x, b, impl=impl, **kwargs)
    grads = torch.autograd.grad(y, inputs, dy, create_graph=True)
    loss = (grads[0] * wx).sum()
    if b is not None:
        loss = loss + (grads[1] * wb).sum()
    second = torch.autograd.grad(loss, inputs + [dy], allow_unused=True)
    first = [_or_zeros(g, t) for g, t in zip(grads, inputs)]
    second = [_or_zeros(g, t) for g, t in zip(second, inputs + [dy])]
    return y, first, second

@pytest.mark.parametrize('dtype', [torch.float16, torch.float32, torch.float64], ids=['fp16', 'fp32', 'fp64'])
@pytest.mark.parametrize('layout', BIAS_ACT_LAYOUTS, ids=[l[0] for l in BIAS_ACT_LAYOUTS])
@pytest.mark.parametrize('setting', BIAS_ACT_SETTINGS, ids=[s[0] for s in BIAS_ACT_SETTINGS])
@pytest.mark.parametrize('act', ACTS)
def test_bias_act_matches_reference(act, setting, layout, dtype):
    _, use_bias, alpha, gain, clamp = setting
    _, shape, dim, memory_format = layout
    torch.manual_seed(0)
    x = (torch.randn(shape, device=DEVICE) * 2).to(dtype)
    b = torch.randn([shape[dim]], device=DEVICE).to(dtype) if use_bias else None
    if b is not None:
        # Exact x == -b ties happen in fp16; at z = 0 torch's own elu/selu first and second
        # derivatives take different sides of the kink, so no kernel could match both.
        z = x.double() + b.double().reshape([-1 if i == dim else 1 for i in range(len(shape))])
        x = torch.where(z == 0, x + 0.5, x)
    if len(shape) == 4:
        x = x.contiguous(memory_format=memory_format)
    kwargs = dict(dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
    dy = torch.randn(shape, device=DEVICE).to(dtype)
    wx = torch.randn(shape, device=DEVICE).to(dtype)
    wb = torch.randn([shape[dim]], device=DEVICE).to(dtype)

    near = torch.zeros(shape, dtype=torch.bool, device=DEVICE)
    if clamp is not None:
        # Where the unclamped output lies within rounding of the clamp, whether the gradient
        # passes is a coin toss between dtypes; zero the incoming gradients there so those
        # elements contribute nothing to the other gradients (the values are still compared),
        # and leave them out of the gradient wrt dy, which is the pass/block decision itself.
        unclamped = bias_act.bias_act(x.double(), None if b is None else b.double(), impl='ref', **{**kwargs, 'clamp': None})
        near = (unclamped.abs() - clamp).abs() <= 1e-2 * clamp
        dy = dy.masked_fill(near, 0)
        wx = wx.masked_fill(near, 0)

    y, first, second = _bias_act_value_and_grads(x, b, dy, wx, wb, 'cuda', **kwargs)
    d = lambda t: None if t is None else t.double()
    y_ref, first_ref, second_ref = _bias_act_value_and_grads(d(x), d(b), d(dy), d(wx), d(wb), 'ref', **kwargs)
    second[-1] = second[-1].masked_fill(near, 0)
    second_ref[-1] = second_ref[-1].masked_fill(near, 0)

    assert y.dtype == dtype
    assert y.stride() == x.stride(), 'output layout differs from the input layout'
    _assert_close(y, y_ref, dtype, 'output')
    names = ['x', 'b', 'dy']
    for i, (g, g_ref) in enumerate(zip(first, first_ref)):
        _assert_close(g, g_ref, dtype, f'gradient wrt {names[i]}')
    for i, (g, g_ref) in enumerate(zip(second, second_ref)):
        name = names[i] if i < len(second) - 1 else 'dy'
        _assert_close(g, g_ref, dtype, f'second-order gradient wrt {name}')

@pytest.mark.parametrize('dtype', [torch.float16, torch.float32], ids=['fp16', 'fp32'])
@pytest.mark.parametrize('act', ACTS)
def test_bias_act_extreme_inputs(act, dtype):
    # Exp-based activations must saturate instead of overflowing into inf/NaN.
    # 1000 steps: no sample lands exactly on 0, the kink where torch's own derivatives disagree.
    x = torch.cat([torch.linspace(-300, 300, 1000), torch.tensor([-88.7, -80.0, -40.0, 40.0, 80.0, 88.7])])
    x = x.to(DEVICE).to(dtype)
    dy = torch.ones_like(x)
    w = torch.ones_like(x)
    y, first, second = _bias_act_value_and_grads(x, None, dy, w, None, 'cuda', dim=0, act=act)
    y_ref, first_ref, second_ref = _bias_act_value_and_grads(x.double(), None, dy.double(), w.double(), None, 'ref', dim=0, act=act)
    _assert_close(y, y_ref, dtype, 'output')
    _assert_close(first[0], first_ref[0], dtype, 'gradient wrt x')
    _assert_close(second[0], second_ref[0], dtype, 'second-order gradient wrt x')
    _assert_close(second[1], second_ref[1], dtype, 'second-order gradient wrt dy')

@pytest.mark.parametrize('act', ACTS)
def test_bias_act_gradcheck(act):
    torch.manual_seed(0)
    x = torch.randn([3, 4, 5], device=DEVICE, dtype=torch.float64)
    b = torch.randn([4], device=DEVICE, dtype=torch.float64)
    # Keep x + b away from 0, where relu/lrelu/selu have kinks that finite differences straddle.
    z = x + b[None, :, None]
    x = torch.where(z.abs() < 0.1, x + 0.3 * torch.sign(z + 1e-9), x)
    x.requires_grad_(True)
    b.requires_grad_(True)
    fn = lambda x, b: bias_act.bias_act(x, b, dim=1, act=act, impl='cuda')
    assert torch.autograd.gradcheck(fn, [x, b])
    assert torch.autograd.gradgradcheck(fn, [x, b])

def test_bias_act_clamp_blocks_gradient():
    # Clamped outputs pass no gradient; unclamped ones do.
    x = torch.tensor([-5.0, -0.1, 0.1, 5.0], device=DEVICE, requires_grad=True)
    y = bias_act.bias_act(x, dim=0, act='linear', gain=1, clamp=1.0, impl='cuda')
    y.backward(torch.ones_like(y))
    assert y.tolist() == pytest.approx([-1.0, -0.1, 0.1, 1.0])
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]

def test_bias_act_plugin_argument_checks():
    plugin = bias_act._plugin
    x = torch.randn([2, 3, 4, 4], device=DEVICE)
    null = torch.empty([0], device=DEVICE)
    act = bias_act.activation_funcs['lrelu'].cuda_idx
    with pytest.raises(RuntimeError, match='shape'):
        plugin.bias_act(x, torch.zeros([4], device=DEVICE), null, null, null, 0, 1, act, 0.2, 1.0, -1.0)
    with pytest.raises(RuntimeError, match='dtype'):
        plugin.bias_act(x, torch.zeros([3], device=DEVICE, dtype=torch.float64), null, null, null, 0, 1, act, 0.2, 1.0, -1.0)
    with pytest.raises(RuntimeError, match='strides'):
        yref = x.contiguous(memory_format=torch.channels_last)
        plugin.bias_act(x, null, null, yref, null, 1, 1, act, 0.2, 1.0, -1.0)
    with pytest.raises(RuntimeError, match='yref'):
        plugin.bias_act(x, null, null, null, null, 1, 1, act, 0.2, 1.0, -1.0)
    with pytest.raises(RuntimeError, match='dense'):
        plugin.bias_act(x[:, :, :, ::2], null, null, null, null, 0, 1, act, 0.2, 1.0, -1.0)
    with pytest.raises(RuntimeError, match='activation'):
        plugin.bias_act(x, null, null, null, null, 0, 1, 42, 0.2, 1.0, -1.0)

#----------------------------------------------------------------------------
