"""Shared test setup: keep every cache inside a temporary folder and make runs reproducible."""

import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402

import legacy  # noqa: E402
from torch_utils import training_stats  # noqa: E402
from training import networks  # noqa: E402

@pytest.fixture(autouse=True, scope='session')
def _isolated_caches(tmp_path_factory):
    cache = tmp_path_factory.mktemp('dnnlib-cache')
    old = os.environ.get('DNNLIB_CACHE_DIR')
    os.environ['DNNLIB_CACHE_DIR'] = str(cache)
    yield
    if old is None:
        os.environ.pop('DNNLIB_CACHE_DIR', None)
    else:
        os.environ['DNNLIB_CACHE_DIR'] = old

@pytest.fixture(autouse=True)
def _seed():
    import numpy as np
    import torch
    torch.manual_seed(0)
    np.random.seed(0)

@pytest.fixture(scope='module')
def single_thread():
    """One intra-op thread: ops on tiny tensors otherwise stall on thread wake-ups (tens of ms per
    call on a busy 2-core machine). Restored afterwards."""
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

@pytest.fixture(scope='session')
def faces16(tmp_path_factory):
    """32 of the embedded LFW faces at 16x16 as a dataset zip (training tests)."""
    import dataset_tool
    path = str(tmp_path_factory.mktemp('data') / 'faces16.zip')
    dataset_tool.convert_dataset(source='builtin:lfw-faces', dest=path, max_images=32, resolution=16,
                                 transform=None, resize_filter='lanczos', channels=3)
    return path

@pytest.fixture(scope='session')
def stock16_pkl(tmp_path_factory):
    """A small plain StyleGAN2 network pickle (random weights, 16x16, w_dim 16) with G, D and G_ema."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G = networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                               mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=16))
        D = networks.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=16)
    path = str(tmp_path_factory.mktemp('net') / 'stock16.pkl')
    legacy.save_network_pkl(dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=None), path)
    return path

@pytest.fixture
def fresh_training_stats():
    """Training runs use the process-wide training_stats: start clean and leave it clean."""
    training_stats.reset()
    yield
    training_stats.reset()
