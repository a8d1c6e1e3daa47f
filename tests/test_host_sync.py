"""No per-step host synchronisation in the inversion loops (issue 17), counted without timing.

Every way a tensor's value reaches Python (`item`, `float`, `int`, `bool`, `tolist`, `numpy`) is
counted while a loop runs with a few steps and with more steps: the count must not grow with the
number of steps, except by the one read per checked step that the early stop of the PTI/QC tuning
needs when it is on (every `stop_every`-th step).
Reads inside `torch.optim` are not counted: Adam keeps its step counter on the CPU (not capturable),
so reading it never waits for a device.
"""

import contextlib
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from inversion import common, dgp, ngd, pti, qc
from training import networks

_READS = ('item', 'tolist', 'numpy', '__float__', '__int__', '__bool__', '__index__')


@contextlib.contextmanager
def count_host_reads():
    """Count calls of the tensor methods that copy a value to the host -> dict(n=count)."""
    counter = dict(n=0)
    originals = {name: getattr(torch.Tensor, name) for name in _READS}

    def wrap(name, fn):
        def counted(self, *args, **kwargs):
            if os.sep + os.path.join('torch', 'optim') + os.sep not in sys._getframe(1).f_code.co_filename:  # pylint: disable=protected-access
                counter['n'] += 1
            return fn(self, *args, **kwargs)
        return counted
    for name, fn in originals.items():
        setattr(torch.Tensor, name, wrap(name, fn))
    try:
        yield counter
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


class _Pool(torch.nn.Module):
    """x2 average-pooling observation (a super-resolution operator) with the Degradation API."""
    mask = None

    def forward(self, x):
        return F.avg_pool2d(x, 2)

    def true(self, x):
        return self.forward(x)


class _L2(torch.nn.Module):
    """A cheap stand-in for LPIPS: per-sample mean squared difference `[N, 1, 1, 1]`."""

    def forward(self, x, y):
        return (x - y).square().mean([1, 2, 3], keepdim=True)


@pytest.fixture(scope='module')
def G():
    torch.manual_seed(0)
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=16)).eval()
    return G.requires_grad_(False)


def _target(G):
    torch.manual_seed(1)
    return torch.rand([1, 3, 8, 8]) * 2 - 1


def _ngd_reads(G, steps):
    with count_host_reads() as c:
        out = ngd.invert(G, _target(G), _Pool(), loss_fn=lambda x, y: (x - y).abs().mean([1, 2, 3]), steps=steps)
    assert [len(out.history[p]['loss']) for p in ngd.PHASES] == [steps] * 3
    assert all(isinstance(v, float) for p in ngd.PHASES for v in out.history[p]['loss'])
    return c['n']


def test_ngd_reads_do_not_grow_with_steps(G):
    assert _ngd_reads(G, 1) == _ngd_reads(G, 4)


def _pti_reads(G, pivot_steps, tune_steps, lpips_stop):
    with count_host_reads() as c:
        out = pti.invert(G, _target(G), _Pool(), _L2(), pivot_steps=pivot_steps, tune_steps=tune_steps,
                         lpips_stop=lpips_stop)
    assert len(out.history['pivot']['lpips']) == pivot_steps and len(out.history['tune']['lpips']) == tune_steps
    assert all(isinstance(v, float) for v in out.history['pivot']['loss'] + out.history['tune']['lpips'])
    return c['n']


def test_pti_reads_do_not_grow_with_steps(G):
    assert _pti_reads(G, 1, 1, None) == _pti_reads(G, 4, 4, None)
    # The early stop reads the LPIPS once per tuning step (threshold never reached here).
    assert _pti_reads(G, 1, 4, -1.0) - _pti_reads(G, 1, 1, -1.0) == 3


def test_tune_generator_stop_every_k(G):
    ws = G.mapping.w_avg.reshape(1, 1, -1).repeat(1, G.num_ws, 1)
    target = _target(G)
    with count_host_reads() as c1:
        _G_t, h1 = common.tune_generator(G, ws, target, _Pool(), _L2(), steps=6, lpips_stop=-1.0, stop_every=1)
    with count_host_reads() as c3:
        _G_t, h3 = common.tune_generator(G, ws, target, _Pool(), _L2(), steps=6, lpips_stop=-1.0, stop_every=3)
    assert c1['n'] - c3['n'] == 4  # 6 reads vs 2 reads
    assert h1['lpips'] == h3['lpips'] and len(h1['lpips']) == 6  # the same steps, only read less often
    # A threshold above every value stops at the first checked step.
    _G_t, h = common.tune_generator(G, ws, target, _Pool(), _L2(), steps=6, lpips_stop=1e9, stop_every=3)
    assert len(h['lpips']) == 3 and len(h['loss']) == 3


@pytest.fixture(scope='module')
def D():
    torch.manual_seed(2)
    return networks.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=16,
                                  epilogue_kwargs=dict(mbstd_group_size=1)).eval().requires_grad_(False)


def _dgp_reads(G, D, steps):
    with count_host_reads() as c:
        out = dgp.invert(G, _target(G), _Pool(), D=D, stage_steps=(steps,) * 5, num_candidates=4, batch=4)
    assert len(out.history['loss']) == len(out.history['mse']) == len(out.history['ftr']) == 5 * steps
    assert all(isinstance(v, float) for v in out.history['loss'] + out.history['ftr'] + out.history['nll'])
    return c['n']


def test_dgp_reads_do_not_grow_with_steps(G, D):
    assert _dgp_reads(G, D, 1) == _dgp_reads(G, D, 3)


@pytest.fixture(scope='module')
def G_qc():
    torch.manual_seed(0)
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, q_dim=2,
                           mapping_kwargs=dict(num_layers=2),
                           synthesis_kwargs=dict(channel_base=128, channel_max=16, degrad_width=4)).eval()
    return G.requires_grad_(False)


def _qc_reads(G, refine_steps, tune_steps, lpips_stop, stop_every=1):
    with count_host_reads() as c:
        out = qc.invert(G, _target(G), _Pool(), _L2(), refine_steps=refine_steps, tune_steps=tune_steps,
                        lpips_stop=lpips_stop, stop_every=stop_every)
    assert len(out.history['refine']['loss']) == refine_steps and len(out.history['tune']['lpips']) == tune_steps
    assert all(isinstance(v, float) for v in out.history['refine']['lpips'] + out.history['tune']['loss'])
    return c['n']


def test_qc_reads_do_not_grow_with_steps(G_qc):
    assert _qc_reads(G_qc, 1, 1, None) == _qc_reads(G_qc, 4, 4, None)
    # The tuning's early stop reads once per checked step: every step by default, every k-th with stop_every=k.
    assert _qc_reads(G_qc, 1, 4, -1.0) - _qc_reads(G_qc, 1, 1, -1.0) == 3
    assert _qc_reads(G_qc, 1, 4, -1.0) - _qc_reads(G_qc, 1, 4, -1.0, stop_every=2) == 2


def test_pti_stop_every_is_passed_to_the_tuning(G):
    assert _pti_reads(G, 1, 4, -1.0) - _pti_reads_k(G, 1, 4, -1.0, 4) == 3


def _pti_reads_k(G, pivot_steps, tune_steps, lpips_stop, stop_every):
    with count_host_reads() as c:
        out = pti.invert(G, _target(G), _Pool(), _L2(), pivot_steps=pivot_steps, tune_steps=tune_steps,
                         lpips_stop=lpips_stop, stop_every=stop_every)
    assert len(out.history['tune']['lpips']) == tune_steps
    return c['n']
