"""QC-StyleGAN generator: DegradBlocks, exact q = 0 identity, homogeneity, names, conversion."""


import pytest
import torch

import legacy
from training import qc as qc_surgery
from torch_utils import misc
from training import networks

#----------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield

def small_stock(seed=0, res=16, **synthesis_kwargs):
    torch.manual_seed(seed)
    G = networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=res, img_channels=3,
                           mapping_kwargs=dict(num_layers=2),
                           synthesis_kwargs=dict(channel_base=256, channel_max=32, **synthesis_kwargs)).eval()
    for name, p in G.named_parameters():
        if name.endswith('noise_strength'):
            p.data.fill_(0.3)  # make noise matter
    D = networks.Discriminator(c_dim=0, img_resolution=res, img_channels=3, channel_base=256, channel_max=32).eval()
    return dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=None)

#----------------------------------------------------------------------------

@pytest.mark.parametrize('noise_mode', ['const', 'none'])
def test_q_zero_is_bit_identical_to_the_source(noise_mode):
    stock = small_stock()
    qc = qc_surgery.convert_to_qc(stock, q_dim=4, degrad_width=3)
    G0, G1 = stock['G_ema'], qc['G_ema']
    assert G1.q_dim == 4 and G0.q_dim == 0
    for _ in range(3):
        ws = G0.mapping(torch.randn([4, 16]), None)
        for fused in [True, False]:
            ref = G0.synthesis(ws, noise_mode=noise_mode, fused_modconv=fused)
            for q in [None, torch.zeros([4, 4])]:
                out = G1.synthesis(ws, q=q, noise_mode=noise_mode, fused_modconv=fused)
                assert float((out - ref).abs().max()) == 0.0

def test_random_noise_mode_same_noise_identical():
    stock = small_stock()
    qc = qc_surgery.convert_to_qc(stock, q_dim=4)
    ws = stock['G_ema'].mapping(torch.randn([2, 16]), None)
    torch.manual_seed(5)
    ref = stock['G_ema'].synthesis(ws, noise_mode='random')
    torch.manual_seed(5)
    out = qc['G_ema'].synthesis(ws, q=torch.zeros([2, 4]), noise_mode='random')
    assert torch.equal(ref, out)

def test_nonzero_q_changes_output_and_features_are_content():
    qc = qc_surgery.convert_to_qc(small_stock(), q_dim=4)
    G = qc['G_ema']
    ws = G.mapping(torch.randn([2, 16]), None)
    q = torch.randn([2, 4])
    sharp, feats_sharp = G.synthesis(ws, q=None, noise_mode='const', return_features=True)
    degraded, feats_deg = G.synthesis(ws, q=q, noise_mode='const', return_features=True)
    assert (sharp - degraded).abs().max() > 1e-3
    assert [f.shape[-1] for f in feats_sharp] == [8, 16]  # the M = 2 last blocks, low to high
    # The 8x8 block's content features do not depend on q; the 16x16 ones do (via the 8x8 residual).
    assert torch.equal(feats_sharp[0], feats_deg[0])
    assert not torch.equal(feats_sharp[1], feats_deg[1])
    # The stock source gives the same features at q = 0 (the distillation target).
    _img, teacher_feats = qc['G_teacher'].synthesis(ws, noise_mode='const', return_features=True)
    assert all(torch.equal(a, b) for a, b in zip(teacher_feats, feats_sharp))

def test_degrad_block_is_positively_homogeneous_in_q():
    G = qc_surgery.convert_to_qc(small_stock(), q_dim=4)['G_ema']
    block = G.synthesis.b16
    x = torch.randn([2, block.in_channels, 8, 8])
    w = torch.randn([2, 16])
    q = torch.randn([2, 4])
    content, extra = block.conv1(block.conv0(x, w, noise_mode='none'), w, noise_mode='none', split_at=block.out_channels)
    def residual(qq):
        out, _ = block._conv1(block.conv0(x, w, noise_mode='none'), w, qq, dict(noise_mode='none'))
        return out - content
    base = residual(q)
    assert base.abs().max() > 1e-4
    for k in [0.0, 0.5, 2.0, 7.0]:
        assert torch.allclose(residual(k * q), k * base, atol=1e-5, rtol=1e-5)
    # Only positive homogeneity holds (ReLUs): a negative factor does not give -residual.
    assert not torch.allclose(residual(-q), -base, atol=1e-4)

def test_paper256_qc_names_and_shapes_match_reference():
    G = networks.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3, q_dim=16,
                           mapping_kwargs=dict(num_layers=8),
                           synthesis_kwargs=dict(channel_base=16384, channel_max=512, num_fp16_res=4, conv_clamp=256))
    shapes = {name: list(t.shape) for name, t in misc.named_params_and_buffers(G)}
    assert shapes['synthesis.b128.conv1.weight'] == [128 + 16 * 16, 128, 3, 3]
    assert shapes['synthesis.b128.conv1.bias'] == [384]
    assert shapes['synthesis.b256.conv1.weight'] == [320, 64, 3, 3]
    assert shapes['synthesis.b128.convq.0.weight'] == [128, 16, 1, 1]
    assert shapes['synthesis.b128.convq.1.weight'] == [128, 128, 1, 1]
    assert shapes['synthesis.b128.convq.2.weight'] == [128, 128, 1, 1]
    assert shapes['synthesis.b256.convq.0.weight'] == [64, 16, 1, 1]
    assert shapes['synthesis.b256.convq.2.resample_filter'] == [4, 4]
    assert not any(name.startswith('synthesis.b64.convq') for name in shapes)
    assert shapes['synthesis.b64.conv1.weight'] == [256, 256, 3, 3]
    count = sum(p.numel() for p in G.parameters())
    assert count == 24_767_458 + 486_912  # the reference's extra DegradBlock parameters for FFHQ-256

def test_conversion_round_trips_through_pickles_and_weights(tmp_path):
    qc = qc_surgery.convert_to_qc(small_stock(), q_dim=4)
    legacy.save_network_pkl({k: v for k, v in qc.items() if k != 'G_teacher'}, str(tmp_path / 'qc.pkl'))
    with open(tmp_path / 'qc.pkl', 'rb') as f:
        loaded = legacy.load_network_pkl(f)
    assert qc_surgery.is_qc_network(loaded) and loaded['G_ema'].q_dim == 4
    ws = qc['G_ema'].mapping(torch.randn([2, 16]), None)
    q = torch.randn([2, 4])
    assert torch.equal(loaded['G_ema'].synthesis(ws, q=q, noise_mode='const'), qc['G_ema'].synthesis(ws, q=q, noise_mode='const'))
    legacy.save_weights({k: v for k, v in qc.items() if k != 'G_teacher'}, str(tmp_path / 'qc.pt'))
    with open(tmp_path / 'qc.pt', 'rb') as f:
        loaded = legacy.load_network_pkl(f)
    assert torch.equal(loaded['G_ema'].synthesis(ws, q=q, noise_mode='const'), qc['G_ema'].synthesis(ws, q=q, noise_mode='const'))
    again = qc_surgery.load_qc_network(str(tmp_path / 'qc.pkl'))
    assert again['G_teacher'] is None  # already QC: no conversion

def test_qc_bad_input():
    G = qc_surgery.convert_to_qc(small_stock(), q_dim=4)['G_ema']
    ws = G.mapping(torch.randn([2, 16]), None)
    with pytest.raises(ValueError, match=r'q must have shape \[2, 4\]'):
        G.synthesis(ws, q=torch.zeros([2, 5]))
    with pytest.raises(ValueError, match='q_dim=0'):
        small_stock()['G_ema'].synthesis(ws, q=torch.ones([2, 4]))
    with pytest.raises(legacy.NetworkLoadError, match='does not fit'):
        qc_surgery.convert_to_qc(small_stock(res=4), q_dim=4, qc_blocks=2)
    with pytest.raises(legacy.NetworkLoadError, match='plain StyleGAN2'):
        qc_surgery.convert_to_qc(dict(G_ema=None))

def test_stock_call_signature_still_works():
    G = small_stock()['G_ema']
    z = torch.randn([2, 16])
    img = G(z, None, truncation_psi=0.5, noise_mode='const')
    assert img.shape == (2, 3, 16, 16)
    assert torch.equal(img, G(z, None, None, 0.5, noise_mode='const'))

#----------------------------------------------------------------------------
