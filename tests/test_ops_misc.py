"""Tests for conv2d_gradfix, grid_sample_gradfix, torch_utils.misc and torch_utils.training_stats (CPU)."""

import itertools
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torch_utils import misc
from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import grid_sample_gradfix

#----------------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures('single_thread')

@pytest.fixture
def gradfix_on(monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, 'enabled', True)
    monkeypatch.setattr(conv2d_gradfix, 'weight_gradients_disabled', False)

@pytest.fixture
def gridfix_on(monkeypatch):
    monkeypatch.setattr(grid_sample_gradfix, 'enabled', True)

def randn(*shape, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_(grad)

#----------------------------------------------------------------------------
# conv2d_gradfix

_CONV_CFGS = [
    dict(stride=1, padding=0, dilation=1, groups=1),
    dict(stride=2, padding=1, dilation=1, groups=2),
    dict(stride=[1, 2], padding=[2, 0], dilation=[2, 1], groups=1),
]
_TCONV_CFGS = [
    dict(stride=1, padding=0, output_padding=0, groups=1),
    dict(stride=2, padding=1, output_padding=1, groups=2),
    dict(stride=[2, 3], padding=[0, 1], output_padding=[1, 2], groups=1),
]

@pytest.mark.parametrize('cfg', _CONV_CFGS)
@pytest.mark.parametrize('use_bias', [False, True])
def test_conv2d_gradfix_matches_functional(gradfix_on, cfg, use_bias):
    x = randn(2, 4, 7, 6, seed=1, grad=True)
    w = randn(6, 4 // cfg['groups'], 3, 2, seed=2, grad=True)
    b = randn(6, seed=3, grad=True) if use_bias else None
    y = conv2d_gradfix.conv2d(x, w, b, **cfg)
    x2, w2 = x.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    b2 = b.detach().clone().requires_grad_(True) if use_bias else None
    y2 = F.conv2d(x2, w2, b2, **cfg)
    np.testing.assert_allclose(y.detach().numpy(), y2.detach().numpy(), rtol=0, atol=1e-12)
    dy = randn(*y.shape, seed=4)
    grads = torch.autograd.grad(y, [t for t in (x, w, b) if t is not None], dy)
    grads2 = torch.autograd.grad(y2, [t for t in (x2, w2, b2) if t is not None], dy)
    for g, g2 in zip(grads, grads2):
        np.testing.assert_allclose(g.numpy(), g2.numpy(), rtol=0, atol=1e-11)

@pytest.mark.parametrize('cfg', _TCONV_CFGS)
def test_conv_transpose2d_gradfix_matches_functional(gradfix_on, cfg):
    x = randn(2, 4, 4, 5, seed=5, grad=True)
    w = randn(4, 6 // cfg['groups'], 3, 3, seed=6, grad=True)
    b = randn(6, seed=7, grad=True)
    y = conv2d_gradfix.conv_transpose2d(x, w, b, **cfg)
    y2 = F.conv_transpose2d(x.detach(), w.detach(), b.detach(), **cfg)
    assert y.shape == y2.shape
    np.testing.assert_allclose(y.detach().numpy(), y2.numpy(), rtol=0, atol=1e-12)
    x2, w2 = x.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    dy = randn(*y.shape, seed=8)
    gx, gw = torch.autograd.grad(y, [x, w], dy)
    gx2, gw2 = torch.autograd.grad(F.conv_transpose2d(x2, w2, b.detach(), **cfg), [x2, w2], dy)
    np.testing.assert_allclose(gx.numpy(), gx2.numpy(), rtol=0, atol=1e-11)
    np.testing.assert_allclose(gw.numpy(), gw2.numpy(), rtol=0, atol=1e-11)

@pytest.mark.parametrize('transpose', [False, True])
def test_no_weight_gradients(gradfix_on, transpose):
    op = conv2d_gradfix.conv_transpose2d if transpose else conv2d_gradfix.conv2d
    ref_op = F.conv_transpose2d if transpose else F.conv2d
    x = randn(1, 2, 5, 5, seed=9, grad=True)
    w = randn(2, 2, 3, 3, seed=10, grad=True)
    b = randn(2, seed=11, grad=True)
    with conv2d_gradfix.no_weight_gradients():
        y = op(x, w, b, padding=1)
        (y * y).sum().backward()
    assert w.grad is None
    x2, w2, b2 = (t.detach().clone().requires_grad_(True) for t in (x, w, b))
    y2 = ref_op(x2, w2, b2, padding=1)
    (y2 * y2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), x2.grad.numpy(), rtol=0, atol=1e-11)
    np.testing.assert_allclose(b.grad.numpy(), b2.grad.numpy(), rtol=0, atol=1e-11)
    # Outside the context the weight gradient comes back (the flag is restored on exit).
    assert not conv2d_gradfix.weight_gradients_disabled
    x.grad = None
    y = op(x, w, b, padding=1)
    (y * y).sum().backward()
    assert w.grad is not None
    np.testing.assert_allclose(w.grad.numpy(), w2.grad.numpy(), rtol=0, atol=1e-11)

def test_no_weight_gradients_disable_false_and_nesting(gradfix_on):
    x = randn(1, 1, 4, 4, seed=12, grad=True)
    w = randn(1, 1, 3, 3, seed=13, grad=True)
    with conv2d_gradfix.no_weight_gradients(disable=False):
        conv2d_gradfix.conv2d(x, w).sum().backward()
    assert w.grad is not None
    w.grad = None
    with conv2d_gradfix.no_weight_gradients():
        with conv2d_gradfix.no_weight_gradients(disable=False):
            conv2d_gradfix.conv2d(x, w).sum().backward()  # the outer context still disables
        assert conv2d_gradfix.weight_gradients_disabled
    assert w.grad is None
    assert not conv2d_gradfix.weight_gradients_disabled

def test_no_weight_gradients_restores_flag_on_exception(gradfix_on):
    with pytest.raises(RuntimeError):
        with conv2d_gradfix.no_weight_gradients():
            raise RuntimeError('boom')
    assert not conv2d_gradfix.weight_gradients_disabled

def _r1_weight_grads(x, w1, w2, transpose, use_context):
    """R1-style penalty: |d out / d x|^2, then backward to the weights."""
    op = conv2d_gradfix.conv_transpose2d if transpose else conv2d_gradfix.conv2d
    ctx = conv2d_gradfix.no_weight_gradients() if use_context else torch.enable_grad()
    h = torch.nn.functional.softplus(op(x, w1, padding=1, stride=(2 if transpose else 1)))
    out = (conv2d_gradfix.conv2d(h, w2, padding=1) ** 2).sum()
    with ctx:
        (gx,) = torch.autograd.grad(out, [x], create_graph=True)
    penalty = gx.square().sum()
    return torch.autograd.grad(penalty, [w1, w2, x])

@pytest.mark.parametrize('transpose', [False, True])
def test_r1_double_backward_matches_functional(monkeypatch, transpose):
    x = randn(1, 2, 4, 4, seed=14, grad=True)
    w1 = randn(3, 2, 3, 3, seed=15, grad=True) if not transpose else randn(2, 3, 3, 3, seed=15, grad=True)
    w2 = randn(2, 3, 3, 3, seed=16, grad=True)
    monkeypatch.setattr(conv2d_gradfix, 'enabled', False)
    ref = _r1_weight_grads(x, w1, w2, transpose, use_context=False)
    monkeypatch.setattr(conv2d_gradfix, 'enabled', True)
    for use_context in [False, True]:
        got = _r1_weight_grads(x, w1, w2, transpose, use_context=use_context)
        for g, r in zip(got, ref):
            assert float(r.abs().max()) > 1e-6
            np.testing.assert_allclose(g.numpy(), r.numpy(), rtol=1e-10, atol=1e-10)

@pytest.mark.parametrize('transpose', [False, True])
def test_conv2d_gradfix_gradgradcheck(gradfix_on, transpose):
    x = randn(1, 2, 3, 3, seed=17, grad=True)
    w = randn(2, 2, 2, 2, seed=18, grad=True)
    b = randn(2, seed=19, grad=True)
    if transpose:
        fn = lambda x, w, b: conv2d_gradfix.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1)
    else:
        fn = lambda x, w, b: conv2d_gradfix.conv2d(x, w, b, stride=1, padding=1)
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))

def test_conv2d_gradfix_gradgradcheck_inside_no_weight_gradients(gradfix_on):
    # The input gradient computed inside the context must stay differentiable w.r.t. the weight.
    x = randn(1, 1, 4, 4, seed=20, grad=True)
    w = randn(1, 1, 3, 3, seed=21, grad=True)
    def input_grad(w):
        y = torch.tanh(conv2d_gradfix.conv2d(x, w, padding=1))
        with conv2d_gradfix.no_weight_gradients():
            (gx,) = torch.autograd.grad(y.sum(), [x], create_graph=True)
        return gx
    assert torch.autograd.gradcheck(input_grad, (w,))

#----------------------------------------------------------------------------
# grid_sample_gradfix

def np_grid_sample(inp, grid):
    """Bilinear sampling, zero padding, align_corners=False, from the definition."""
    n, c, h, w = inp.shape
    _, ho, wo, _ = grid.shape
    out = np.zeros((n, c, ho, wo))
    for b, i, j in itertools.product(range(n), range(ho), range(wo)):
        ix = ((grid[b, i, j, 0] + 1) * w - 1) / 2
        iy = ((grid[b, i, j, 1] + 1) * h - 1) / 2
        x0, y0 = int(np.floor(ix)), int(np.floor(iy))
        for yy, xx in [(y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)]:
            wgt = (1 - abs(ix - xx)) * (1 - abs(iy - yy))
            if 0 <= yy < h and 0 <= xx < w:
                out[b, :, i, j] += wgt * inp[b, :, yy, xx]
    return out

def make_grid(n, ho, wo, seed, spread=1.1):
    rng = np.random.RandomState(seed)
    return torch.from_numpy(rng.uniform(-spread, spread, size=(n, ho, wo, 2)))

@pytest.mark.parametrize('enabled', [False, True])
def test_grid_sample_values(monkeypatch, enabled):
    monkeypatch.setattr(grid_sample_gradfix, 'enabled', enabled)
    x = randn(2, 3, 4, 5, seed=22)
    grid = make_grid(2, 3, 4, seed=23)
    y = grid_sample_gradfix.grid_sample(x, grid)
    ref = F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
    np.testing.assert_allclose(y.numpy(), ref.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(y.numpy(), np_grid_sample(x.numpy(), grid.numpy()), rtol=0, atol=1e-12)

def test_grid_sample_gradcheck_input_and_grid(gridfix_on):
    x = randn(1, 2, 3, 4, seed=24, grad=True)
    grid = make_grid(1, 2, 3, seed=25).requires_grad_(True)
    assert torch.autograd.gradcheck(grid_sample_gradfix.grid_sample, (x, grid))

def test_grid_sample_first_order_grads_match_stock(gridfix_on):
    x = randn(2, 2, 4, 4, seed=26, grad=True)
    grid = make_grid(2, 3, 3, seed=27).requires_grad_(True)
    dy = randn(2, 2, 3, 3, seed=28)
    gx, gg = torch.autograd.grad(grid_sample_gradfix.grid_sample(x, grid), [x, grid], dy)
    gx2, gg2 = torch.autograd.grad(F.grid_sample(x, grid, align_corners=False), [x, grid], dy)
    np.testing.assert_allclose(gx.numpy(), gx2.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(gg.numpy(), gg2.numpy(), rtol=0, atol=1e-12)

def test_grid_sample_gradgradcheck_input(gridfix_on):
    x = randn(1, 2, 3, 3, seed=29, grad=True)
    grid = make_grid(1, 2, 3, seed=30)
    fn = lambda x: grid_sample_gradfix.grid_sample(x, grid)
    assert torch.autograd.gradgradcheck(fn, (x,))
    fn2 = lambda x: torch.tanh(grid_sample_gradfix.grid_sample(x, grid))
    assert torch.autograd.gradgradcheck(fn2, (x,))

def _stock_input_grad(x, grid, w):
    x = x.detach().requires_grad_(True)
    y = F.grid_sample(x, grid, align_corners=False)
    out = (torch.tanh(y * w) ** 2).sum()
    (g,) = torch.autograd.grad(out, [x])
    return g

def test_grid_sample_r1_double_backward_matches_finite_differences(gridfix_on):
    # R1 through an augmentation: penalty(x) = |d D(aug(x)) / dx|^2 with D nonlinear. Its gradient
    # (a double backward through grid_sample) must match central differences of the penalty
    # computed with stock first-order gradients.
    x = randn(1, 1, 3, 3, seed=31, grad=True)
    grid = make_grid(1, 3, 2, seed=32)
    w = randn(1, 1, 3, 2, seed=33) + 1.0
    y = grid_sample_gradfix.grid_sample(x, grid)
    out = (torch.tanh(y * w) ** 2).sum()
    (g,) = torch.autograd.grad(out, [x], create_graph=True)
    np.testing.assert_allclose(g.detach().numpy(), _stock_input_grad(x, grid, w).numpy(), rtol=0, atol=1e-12)
    (dpen,) = torch.autograd.grad(g.square().sum(), [x])
    eps = 1e-6
    xf = x.detach().clone()
    fd = torch.zeros_like(xf)
    for idx in np.ndindex(*xf.shape):
        xp, xm = xf.clone(), xf.clone()
        xp[idx] += eps
        xm[idx] -= eps
        fd[idx] = (_stock_input_grad(xp, grid, w).square().sum() - _stock_input_grad(xm, grid, w).square().sum()) / (2 * eps)
    assert float(fd.abs().max()) > 1e-3
    np.testing.assert_allclose(dpen.numpy(), fd.numpy(), rtol=1e-5, atol=1e-7)

#----------------------------------------------------------------------------
# misc.assert_shape / misc.constant

def test_assert_shape():
    t = torch.zeros([2, 3, 4])
    misc.assert_shape(t, [2, 3, 4])
    misc.assert_shape(t, [None, 3, None])
    misc.assert_shape(t, [None, None, None])
    with pytest.raises(AssertionError):
        misc.assert_shape(t, [2, 3])
    with pytest.raises(AssertionError):
        misc.assert_shape(t, [2, 3, 4, 1])
    with pytest.raises(AssertionError):
        misc.assert_shape(t, [2, 3, 5])
    with pytest.raises(AssertionError):
        misc.assert_shape(t, [None, 4, 4])

def test_constant_caching_and_values():
    a = misc.constant([1, 2, 3])
    assert misc.constant([1, 2, 3]) is a
    assert a.dtype == torch.get_default_dtype()
    np.testing.assert_array_equal(a.numpy(), [1, 2, 3])
    b = misc.constant([1, 2, 3], dtype=torch.float64)
    assert b is not a and b.dtype == torch.float64
    assert misc.constant([1, 2, 4]) is not a
    c = misc.constant(0.5, shape=[2, 3])
    assert tuple(c.shape) == (2, 3) and bool((c == 0.5).all())
    assert misc.constant(0.5, shape=[2, 3]) is c
    assert misc.constant(0.5, shape=[3, 2]) is not c
    d = misc.constant(np.arange(4.0), dtype=torch.int64)
    assert d.dtype == torch.int64 and d.tolist() == [0, 1, 2, 3]

#----------------------------------------------------------------------------
# misc.copy_params_and_buffers

class _Net(torch.nn.Module):
    def __init__(self, width=4, extra=False):
        super().__init__()
        self.fc = torch.nn.Linear(3, width)
        self.register_buffer('stat', torch.zeros(width))
        if extra:
            self.register_buffer('extra', torch.zeros(2))

def test_copy_params_and_buffers_copies():
    torch.manual_seed(1)
    src, dst = _Net(), _Net()
    src.stat.fill_(7.0)
    dst.fc.weight.requires_grad_(False)
    misc.copy_params_and_buffers(src, dst)
    for name in ['fc.weight', 'fc.bias', 'stat']:
        s, d = dict(misc.named_params_and_buffers(src))[name], dict(misc.named_params_and_buffers(dst))[name]
        assert torch.equal(s, d) and s.data_ptr() != d.data_ptr()
    assert isinstance(dst.fc.weight, torch.nn.Parameter)
    assert not dst.fc.weight.requires_grad and dst.fc.bias.requires_grad  # requires_grad flags kept
    with torch.no_grad():
        src.fc.weight.add_(1.0)  # no aliasing
    assert not torch.equal(src.fc.weight, dst.fc.weight)

def test_copy_params_and_buffers_shape_mismatch_names_tensor():
    with pytest.raises(ValueError, match=r'fc\.weight|fc\.bias|stat'):
        misc.copy_params_and_buffers(_Net(width=4), _Net(width=5))

def test_copy_params_and_buffers_require_all():
    src, dst = _Net(), _Net(extra=True)
    dst.extra.fill_(3.0)
    misc.copy_params_and_buffers(src, dst)  # missing source tensors are skipped by default
    assert torch.equal(dst.fc.weight, src.fc.weight)
    assert torch.equal(dst.extra, torch.full([2], 3.0))
    with pytest.raises(ValueError, match='extra'):
        misc.copy_params_and_buffers(src, dst, require_all=True)
    misc.copy_params_and_buffers(dst, _Net(), require_all=True)  # extra source tensors are fine

#----------------------------------------------------------------------------
# misc.InfiniteSampler

class _DS:
    def __init__(self, n):
        self.n = n
    def __len__(self):
        return self.n

def take(sampler, n):
    return [int(i) for i in itertools.islice(iter(sampler), n)]

def test_infinite_sampler_unshuffled_ranks():
    ds = _DS(7)
    r0 = take(misc.InfiniteSampler(ds, rank=0, num_replicas=2, shuffle=False), 8)
    r1 = take(misc.InfiniteSampler(ds, rank=1, num_replicas=2, shuffle=False), 8)
    assert r0 == [0, 2, 4, 6, 1, 3, 5, 0]
    assert r1 == [1, 3, 5, 0, 2, 4, 6, 1]
    assert sorted(r0[:4] + r1[:3]) == list(range(7))

@pytest.mark.parametrize('n', [10, 13])
def test_infinite_sampler_two_replicas_partition_stream(n):
    ds = _DS(n)
    full = take(misc.InfiniteSampler(ds, rank=0, num_replicas=1, seed=3), 6 * n)
    r0 = take(misc.InfiniteSampler(ds, rank=0, num_replicas=2, seed=3), 3 * n)
    r1 = take(misc.InfiniteSampler(ds, rank=1, num_replicas=2, seed=3), 3 * n)
    assert r0 == full[0::2] and r1 == full[1::2]
    # Every index is covered. (Not necessarily within the first n positions: the reshuffling swap
    # wraps around and can move an already-yielded item forward, as in the reference.)
    assert set(r0) | set(r1) == set(range(n))
    # The first element of the stream is the first element of the seeded permutation.
    assert full[0] == int(np.random.RandomState(3).permutation(n)[0])

def test_infinite_sampler_seed_reproducible():
    ds = _DS(20)
    a = take(misc.InfiniteSampler(ds, seed=5), 60)
    assert a == take(misc.InfiniteSampler(ds, seed=5), 60)
    assert a != take(misc.InfiniteSampler(ds, seed=6), 60)
    assert a[:20] != list(range(20))   # shuffled
    assert a[:20] != a[20:40]          # and reshuffled over time (window_size > 0)
    assert all(0 <= i < 20 for i in a)

def test_infinite_sampler_start_idx_resumes_stream():
    ds = _DS(9)
    for rank in range(2):
        full = take(misc.InfiniteSampler(ds, rank=rank, num_replicas=2, seed=1), 40)
        resumed = take(misc.InfiniteSampler(ds, rank=rank, num_replicas=2, seed=1, start_idx=10), 35)
        assert resumed == full[5:40]   # global positions >= 10 are this rank's items 5, 6, ...

#----------------------------------------------------------------------------
# misc.print_module_summary

class _SummaryNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(3, 4)
        self.act = torch.nn.ReLU()
        self.fc2 = torch.nn.Linear(4, 2)
        self.register_buffer('scale', torch.full([5], 2.0))
    def forward(self, x):
        return self.fc2(self.act(self.fc1(x))) * self.scale[0]

class _TwoOut(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 3)
    def forward(self, x):
        y = self.fc(x)
        return y, y[:, :1].double()

def _table(text):
    return [line.split() for line in text.splitlines() if line.strip()]

def test_print_module_summary(capsys):
    torch.manual_seed(0)
    net = _SummaryNet()
    x = torch.randn(2, 3)
    out = misc.print_module_summary(net, [x])
    expected = (x @ net.fc1.weight.T + net.fc1.bias).clamp(min=0) @ net.fc2.weight.T + net.fc2.bias
    torch.testing.assert_close(out, expected * 2.0)
    rows = _table(capsys.readouterr().out)
    assert rows[0][:3] == ['_SummaryNet', 'Parameters', 'Buffers']
    by_name = {r[0]: r for r in rows}
    assert by_name['Total'][:3] == ['Total', str(3 * 4 + 4 + 4 * 2 + 2), '5']
    assert by_name['fc1'][1:4] == ['16', '-', '[2,']
    assert by_name['fc2'][1] == '10'
    assert by_name['<top-level>'][2] == '5'

def test_print_module_summary_multi_output(capsys):
    net = _TwoOut()
    out = misc.print_module_summary(net, [torch.randn(4, 2)])
    assert isinstance(out, tuple) and tuple(out[0].shape) == (4, 3) and tuple(out[1].shape) == (4, 1)
    text = capsys.readouterr().out
    assert '[4, 3]' in text and '[4, 1]' in text and 'float64' in text
    assert re.search(r'^Total\s+9\s', text, re.M)

#----------------------------------------------------------------------------
# training_stats

@pytest.fixture
def stats(monkeypatch):
    training_stats.reset()
    monkeypatch.setattr(training_stats, '_rank', 0)
    monkeypatch.setattr(training_stats, '_sync_device', None)
    yield training_stats
    training_stats.reset()

def test_stats_mean_std_num(stats):
    c = stats.Collector(regex='Loss/.*')
    vals = [1.5, -2.0, 3.25, 4.0, 0.5, 8.0]
    stats.report('Loss/a', torch.tensor(vals[:3]))
    stats.report('Loss/a', np.array(vals[3:5]))
    assert stats.report('Loss/a', vals[5]) == vals[5]  # returns its input
    c.update()
    assert c.num('Loss/a') == 6
    assert c.mean('Loss/a') == pytest.approx(np.mean(vals), rel=1e-6)
    assert c.std('Loss/a') == pytest.approx(np.std(vals), rel=1e-6)  # population std
    assert c['Loss/a'] == pytest.approx(np.mean(vals), rel=1e-6)

def test_stats_single_value_and_empty(stats):
    c = stats.Collector()
    stats.report('one', 3.0)
    stats.report('none', [])
    c.update()
    assert c.num('one') == 1 and c.mean('one') == 3.0 and c.std('one') == 0.0
    assert c.num('none') == 0 and np.isnan(c.mean('none')) and np.isnan(c.std('none'))

def test_stats_nonfinite_dropped(stats):
    c = stats.Collector()
    stats.report('x', torch.tensor([1.0, float('nan'), float('inf'), 3.0, -float('inf')]))
    c.update()
    assert c.num('x') == 2
    assert c.mean('x') == pytest.approx(2.0)
    assert c.std('x') == pytest.approx(1.0)

def test_stats_deltas_between_updates_and_keep_previous(stats):
    keep = stats.Collector(keep_previous=True)
    drop = stats.Collector(keep_previous=False)
    stats.report('a', [1.0, 2.0])
    stats.report('b', [10.0])
    keep.update(); drop.update()
    assert keep.num('a') == 2 and drop.num('a') == 2
    stats.report('a', [6.0])
    keep.update(); drop.update()
    assert keep.num('a') == 1 and keep.mean('a') == 6.0       # only the new value
    assert keep.num('b') == 1 and keep.mean('b') == 10.0      # no new values: previous stats kept
    assert drop.num('b') == 0 and np.isnan(drop.mean('b'))    # no new values: empty

def test_stats_independent_collectors(stats):
    c1, c2 = stats.Collector(), stats.Collector()
    stats.report('a', [1.0, 3.0])
    c1.update()
    stats.report('a', [5.0])
    c2.update()
    c1.update()
    assert c2.num('a') == 3 and c2.mean('a') == pytest.approx(3.0)
    assert c1.num('a') == 1 and c1.mean('a') == 5.0

def test_stats_values_before_collector_creation_are_not_collected(stats):
    stats.report('a', [100.0])
    c = stats.Collector()
    stats.report('a', [1.0])
    c.update()
    assert c.num('a') == 1 and c.mean('a') == 1.0

def test_stats_report0(stats, monkeypatch):
    c = stats.Collector()
    stats.report0('r', [2.0, 4.0])
    c.update()
    assert c.num('r') == 2 and c.mean('r') == 3.0
    monkeypatch.setattr(training_stats, '_sync_called', False)
    stats.init_multiprocessing(rank=1, sync_device=None)
    assert stats.report0('r', [7.0]) == [7.0]
    stats.report('r', [9.0])  # plain report still counts on rank 1
    c.update()
    assert c.num('r') == 1 and c.mean('r') == 9.0

def test_stats_regex_and_as_dict(stats):
    c = stats.Collector(regex=r'Loss/.*')
    stats.report('Loss/G', [1.0, 3.0])
    stats.report('Loss/D', [2.0])
    stats.report('Timing/sec', [0.1])
    stats.report('XLoss/G', [5.0])
    c.update()
    assert set(c.names()) == {'Loss/G', 'Loss/D'}
    d = c.as_dict()
    assert set(d.keys()) == {'Loss/G', 'Loss/D'}
    assert d['Loss/G'].num == 2 and d['Loss/G'].mean == pytest.approx(2.0) and d['Loss/G'].std == pytest.approx(1.0)
    assert d['Loss/D'].num == 1 and d['Loss/D'].mean == pytest.approx(2.0) and d['Loss/D'].std == 0.0
    with pytest.raises(AssertionError):
        c.mean('Timing/sec')

def test_stats_reset_forgets_everything(stats):
    c = stats.Collector()
    stats.report('a', [1.0])
    stats.reset()
    c2 = stats.Collector()
    c2.update()
    assert c2.names() == []

def test_stats_pending_moments_roundtrip(stats):
    c = stats.Collector()
    stats.report('a', [1.0, 2.0, 4.0])
    m = c.pending_moments('a')
    np.testing.assert_allclose(m.numpy(), [3.0, 7.0, 21.0])
    c.update()  # pending_moments did not consume them
    assert c.num('a') == 3
    stats.reset()
    c2 = stats.Collector()
    stats.report_moments('a', m)
    stats.report('a', [8.0])
    c2.update()
    assert c2.num('a') == 4 and c2.mean('a') == pytest.approx(15.0 / 4)

#----------------------------------------------------------------------------
