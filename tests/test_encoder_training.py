"""The encoder trainer's modules on their own: the reconstruction loss and identity-network loader
(training/encoder_loss.py), the data split, validation pairs and generated pairs
(training/encoder_data.py), and the loop's config, coaches and a tiny run (training/encoder_loop.py)."""

import json
import os

import numpy as np
import pytest
import torch

import dnnlib
import legacy
from torch_utils import training_stats
from training import encoder_data
from training import encoder_loop
from training import encoder_loss
from training import networks
from training import qc as qc_surgery

#----------------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures('single_thread', 'fresh_training_stats')

def _tiny_generator(res=16, seed=0):
    torch.manual_seed(seed)
    return networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=res, img_channels=3,
                              mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=8 * res, channel_max=16))

@pytest.fixture(scope='module')
def qc_pkl(stock16_pkl, tmp_path_factory):
    """A 16px QC network (q_dim 4) as a pickle."""
    qc = qc_surgery.load_qc_network(stock16_pkl, q_dim=4, seed=0)
    path = str(tmp_path_factory.mktemp('net') / 'qc16.pkl')
    legacy.save_network_pkl({k: v for k, v in qc.items() if k != 'G_teacher'}, path)
    return path

@pytest.fixture
def reported():
    """reported(name): the mean of what was reported under `name` since the test started."""
    collector = training_stats.Collector(regex='.*')  # only names matched by a collector are recorded
    def mean(name):
        collector.update()
        return collector.mean(name)
    return mean

#----------------------------------------------------------------------------
# encoder_loss.

def test_reconstruction_loss_terms_and_weights(reported):
    G = dnnlib.EasyDict(img_resolution=16)
    loss = encoder_loss.ReconstructionLoss(G, torch.device('cpu'), l2_weight=2.0, lpips_weight=0)
    assert loss.lpips is None and loss.res == 16
    out = torch.zeros([2, 3, 16, 16])
    target = torch.full([2, 3, 16, 16], 0.5)
    total = loss(out, target, 'deg')
    assert torch.allclose(total, torch.tensor(2.0 * 0.25))  # 2 * MSE
    assert reported('Loss/deg/l2') == pytest.approx(0.25)

    # Generator output above the loss resolution is average-pooled (pSp) before the comparison.
    big = encoder_loss.ReconstructionLoss(dnnlib.EasyDict(img_resolution=512), torch.device('cpu'), lpips_weight=0)
    assert big.res == encoder_loss.LOSS_MAX_RES
    assert big.to_loss_res(torch.ones([1, 3, 512, 512])).shape == (1, 3, 256, 256)
    assert big.target(torch.zeros([1, 3, 64, 64])).shape == (1, 3, 256, 256)

def test_reconstruction_loss_latent_terms():
    loss = encoder_loss.ReconstructionLoss(dnnlib.EasyDict(img_resolution=16), torch.device('cpu'), lpips_weight=0,
                                           w_norm_weight=0.5, q_reg_weight=0.1)
    latent_avg = torch.tensor([1.0, 1.0, 1.0, 0.0])  # w_avg (3) then q (1)
    w = torch.tensor([[1.0, 1.0, 4.0], [1.0, 5.0, 1.0]])  # distances 3 and 4
    q = torch.tensor([[2.0], [0.0]])                       # |q|^2: 4 and 0
    assert float(loss.latent_terms(w, q, latent_avg, 3, sharp=False)) == pytest.approx(0.5 * 3.5)  # no q term on degraded inputs
    assert float(loss.latent_terms(w, q, latent_avg, 3, sharp=True)) == pytest.approx(0.5 * 3.5 + 0.1 * 2.0)
    w_plus = w[:, None, :].repeat(1, 2, 1)  # W+: the norm is over every style
    assert float(loss.latent_terms(w_plus, None, latent_avg, 3, sharp=True)) == pytest.approx(0.5 * np.mean([3 * 2**0.5, 4 * 2**0.5]))

def test_reconstruction_loss_lpips_and_identity_terms(reported):
    torch.manual_seed(0)
    embed = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 8))
    loss = encoder_loss.ReconstructionLoss(dnnlib.EasyDict(img_resolution=16), torch.device('cpu'), l2_weight=0,
                                           lpips_weight=1.0, lpips_backbone='random', id_weight=1.0, id_net=embed, id_crop='none')
    x = torch.rand([2, 3, 16, 16]) * 2 - 1
    assert float(loss(x, x, 'self').detach()) == pytest.approx(0.0, abs=1e-5)  # same image: no LPIPS distance, cosine 1
    y = -x
    total = float(loss(y, x, 'other').detach())
    assert total > 0 and total == pytest.approx(reported('Loss/other/lpips') + reported('Loss/other/id'), rel=1e-4)
    # Below 32 px LPIPS sees bilinearly upsampled images.
    assert loss.lpips_distance(x[:, :, :8, :8], x[:, :, :8, :8]).shape[0] == 2

def test_identity_network_loader(tmp_path):
    with pytest.raises(encoder_loss.IDNetworkError, match='--id-weights PATH'):
        encoder_loss.load_id_network(None)
    with pytest.raises(encoder_loss.IDNetworkError, match='file not found'):
        encoder_loss.load_id_network(tmp_path / 'missing.pt')
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(12, 5))
    torch.save(net.state_dict(), tmp_path / 'bare.pt')
    with pytest.raises(encoder_loss.IDNetworkError, match='bare state dict'):
        encoder_loss.load_id_network(tmp_path / 'bare.pt')
    # {class_name, init_kwargs, state_dict}: rebuilt, frozen, in eval mode.
    torch.save(dict(class_name='torch.nn.Linear', init_kwargs=dict(in_features=3, out_features=2), state_dict={}), tmp_path / 'bad.pt')
    with pytest.raises(encoder_loss.IDNetworkError, match='cannot build torch.nn.Linear'):
        encoder_loss.load_id_network(tmp_path / 'bad.pt')
    wrong = torch.nn.Conv2d(3, 4, 3)  # returns a 4-D map, not [N, D] embeddings
    torch.save(dict(class_name='torch.nn.Conv2d', init_kwargs=dict(in_channels=3, out_channels=4, kernel_size=3),
                    state_dict=wrong.state_dict()), tmp_path / 'conv.pt')
    with pytest.raises(encoder_loss.IDNetworkError, match=r'expected embeddings \[2, D\]'):
        encoder_loss.load_id_network(tmp_path / 'conv.pt')

#----------------------------------------------------------------------------
# encoder_data.

def test_split_holds_out_last_images_with_their_mirrors(faces16):
    dataset = encoder_data.open_dataset(faces16, None, mirror=True)
    assert len(dataset) == 64  # 32 images and their x-flips
    train_idx, held = encoder_data.split_dataset(dataset, 4, has_val_data=False)
    assert held == [28, 29, 30, 31]
    assert len(train_idx) == 56 and not {dataset.get_details(i).raw_idx for i in train_idx} & set(held)
    assert encoder_data.split_dataset(dataset, 4, has_val_data=True) == (list(range(64)), [])
    assert encoder_data.split_dataset(dataset, 0, has_val_data=False)[1] == []
    with pytest.raises(encoder_data.EncoderDataError, match='leaves no training images'):
        encoder_data.split_dataset(dataset, 32, has_val_data=False)
    subset = encoder_data.HeldOut(dataset, train_idx[:3])
    assert len(subset) == 3 and np.array_equal(subset[1][0], dataset[train_idx[1]][0])

def test_validation_pairs_are_reproducible(faces16):
    dataset = encoder_data.open_dataset(faces16, 'qc_psp_encoder')
    sharp, degraded = encoder_data.validation_items(dataset, raw_indices=[30, 31], seed=0)
    assert sharp.shape == degraded.shape == (2, 3, 16, 16) and sharp.dtype == torch.float32
    assert -1 <= float(sharp.min()) and float(sharp.max()) <= 1
    again = encoder_data.validation_items(dataset, raw_indices=[30, 31], seed=0)[1]
    assert torch.equal(degraded, again)  # keyed by the image index, not by a running stream
    assert not torch.equal(sharp, degraded)
    plain = encoder_data.open_dataset(faces16, None)
    sharp2, none = encoder_data.validation_items(plain, num=3)
    assert none is None and sharp2.shape[0] == 3

def test_to_float_and_generated_pairs():
    x = encoder_data.to_float(torch.tensor([[[[0, 255]]]], dtype=torch.uint8), 'cpu')
    assert x.shape == (1, 3, 1, 2) and x.flatten().tolist() == [-1.0, 1.0] * 3
    G = _tiny_generator()
    pairs = encoder_data.SyntheticPairs(G, seed=3)
    x, y, w, q = pairs.make([5, 6], 'cpu')
    assert y is None and q is None and x.shape == (2, 3, 16, 16) and w.shape[0] == 2
    x2, _, _, _ = encoder_data.SyntheticPairs(G, seed=3).make([6], 'cpu')
    assert torch.allclose(x2[0], x[1], atol=1e-4)  # sample p depends on (seed, p) only
    x3, _, _, _ = encoder_data.SyntheticPairs(G, seed=4).make([6], 'cpu')
    assert not torch.allclose(x3[0], x[1], atol=1e-2)

#----------------------------------------------------------------------------
# encoder_loop.

def test_coaches_and_keyword_config():
    kinds = {coach: [encoder_loop.step_kind(coach, step, True) for step in range(2)] for coach in encoder_loop.COACHES}
    assert kinds == {'paired': ['joint', 'joint'], 'paired-alternating': ['degraded', 'sharp'],
                     'alternative': ['degraded', 'sharp'], 'degraded': ['degraded', 'degraded'], 'sharp': ['sharp', 'sharp']}
    assert encoder_loop.step_kind('paired', 0, False) == 'sharp'  # no degraded images
    config = encoder_loop.group_options(dict(data='d.zip', val_data=None, lr=0.01, opt='adam', coach='sharp', w_space='w+',
                                             lpips_weight=0.0, total_steps=5, network='n.pkl'))
    assert config.data_kwargs == dict(path='d.zip', val_path=None) and config.opt_kwargs == dict(name='adam', lr=0.01)
    assert config.coach_kwargs == dict(coach='sharp') and config.encoder_kwargs == dict(w_space='w+')
    assert config.loss_kwargs == dict(lpips_weight=0.0) and config.total_steps == 5 and config.network == 'n.pkl'
    assert encoder_loop.group_options(config) == config  # grouped options stay as they are
    with pytest.raises(TypeError, match='lpips_wieght'):
        encoder_loop.training_loop(loss_kwargs=dict(lpips_wieght=0))
    with pytest.raises(encoder_loop.EncoderTrainingError, match='unknown optimizer'):
        encoder_loop.make_optimizer('sgd', [torch.nn.Parameter(torch.zeros(1))], 0.1)

def test_tiny_loop_run_and_exact_continuation(qc_pkl, tmp_path):
    """Four steps on generated pairs in one call equal two calls of two steps (checkpoint resume)."""
    base = dict(network=qc_pkl, data_kwargs=dict(path='generator', val_images=2), encoder_kwargs=dict(backbone='tiny', input_size=32),
                loss_kwargs=dict(lpips_weight=0), opt_kwargs=dict(name='adam', lr=1e-3), batch_size=2, num_workers=0,
                tick_steps=2, val_every=2, snap_steps=2, log_fn=lambda *a, **k: None)
    full = encoder_loop.training_loop(run_dir=str(tmp_path / 'full'), total_steps=4, **base)
    assert full.step == 4 and full.val is not None and np.isfinite(full.val['val/loss'])
    assert {'stats.jsonl', 'val.jsonl', 'checkpoint.pt', 'best.pt', 'panels000002.png', 'panels000004.png'} <= set(os.listdir(tmp_path / 'full'))
    part = encoder_loop.training_loop(run_dir=str(tmp_path / 'part'), total_steps=4, max_steps=2, **base)
    assert part.step == 2
    training_stats.reset()
    resumed = encoder_loop.training_loop(run_dir=str(tmp_path / 'resumed'), total_steps=4, resume_checkpoint=part.checkpoint, **base)
    assert resumed.step == 4
    for (name, a), b in zip(full.encoder.state_dict().items(), resumed.encoder.state_dict().values()):
        assert torch.equal(a, b), name
    # The continued run's stats.jsonl and val.jsonl start with the history it continues: one history.
    def steps(run, name):
        with open(tmp_path / run / name, encoding='utf-8') as f:
            return [json.loads(line)['step'] for line in f]
    for name in ['stats.jsonl', 'val.jsonl']:
        assert steps('part', name) == [2] and steps('resumed', name) == steps('full', name) == [2, 4], name
    with pytest.raises(encoder_loop.EncoderTrainingError, match='every loss weight is zero'):
        encoder_loop.training_loop(run_dir=str(tmp_path / 'zero'), total_steps=1, write_files=False,
                                   **dict(base, loss_kwargs=dict(lpips_weight=0, l2_weight=0)))

#----------------------------------------------------------------------------
