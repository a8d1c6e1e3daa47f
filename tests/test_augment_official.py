"""training/augment.py against the official stylegan2-ada-pytorch AugmentPipe.

`../shared/fixtures/ada-official.npz` beside the checkout (or $QCGAN_FIXTURES/ada-official.npz) holds the official pipe's
outputs and input gradients for 15 single ops and the `bgc`/`bgcfnc` presets at p = 0.5 and 1.0 (34
cases), under the seed protocol of the fixture README: `torch.manual_seed(5)` right before the call. A
match to 1e-4 therefore also checks that the pipe consumes random numbers in the official order.
"""

import os

import numpy as np
import pytest
import torch

from training.augment import AugmentPipe, augpipe_specs

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_FIXTURE_DIR = os.environ.get('QCGAN_FIXTURES', os.path.join(os.path.dirname(_REPO), 'shared', 'fixtures'))
_FIXTURE = os.path.join(_FIXTURE_DIR, 'ada-official.npz')

_SINGLE_OPS = ['xflip', 'rotate90', 'xint', 'scale', 'rotate', 'aniso', 'xfrac', 'brightness', 'contrast',
               'lumaflip', 'hue', 'saturation', 'imgfilter', 'noise', 'cutout']
_CASES = [(name, p) for name in _SINGLE_OPS + ['bgc', 'bgcfnc'] for p in ['0.5', '1.0']]

@pytest.fixture(scope='module')
def fixture():
    if not os.path.isfile(_FIXTURE):
        pytest.fail(f'{_FIXTURE} not found: set QCGAN_FIXTURES to the folder that holds ada-official.npz')
    return dict(np.load(_FIXTURE))

def _run(name, p, fixture, **pipe_kwargs):
    kwargs = dict(augpipe_specs[name]) if name in ('bgc', 'bgcfnc') else {name: 1}
    pipe = AugmentPipe(**kwargs, **pipe_kwargs)
    pipe.p.copy_(torch.as_tensor(float(p)))
    x = torch.as_tensor(fixture['input']).clone().requires_grad_(True)
    torch.manual_seed(5)
    y = pipe(x)
    (y * torch.as_tensor(fixture['grad_weights'])).sum().backward()
    return y.detach().numpy(), x.grad.numpy()

def test_fixture_protocol(fixture):
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    assert np.array_equal(fixture['input'], x.numpy())
    assert len(_CASES) == 34 and all(f'{n}/p{p}/out' in fixture and f'{n}/p{p}/grad' in fixture for n, p in _CASES)

@pytest.mark.parametrize('name,p', _CASES)
def test_matches_official(name, p, fixture):
    out, grad = _run(name, p, fixture)
    assert np.abs(out - fixture[f'{name}/p{p}/out']).max() < 1e-4
    assert np.abs(grad - fixture[f'{name}/p{p}/grad']).max() < 1e-4
