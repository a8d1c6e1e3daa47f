"""Generator and discriminator: official names/shapes, parameter counts, forward semantics."""


import numpy as np
import pytest
import torch

from torch_utils import misc
from training import networks

#----------------------------------------------------------------------------

def paper256_kwargs():
    G_kwargs = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3,
                    mapping_kwargs=dict(num_layers=8),
                    synthesis_kwargs=dict(channel_base=16384, channel_max=512, num_fp16_res=4, conv_clamp=256))
    D_kwargs = dict(c_dim=0, img_resolution=256, img_channels=3, architecture='resnet', channel_base=16384,
                    channel_max=512, num_fp16_res=4, conv_clamp=256, epilogue_kwargs=dict(mbstd_group_size=8))
    return G_kwargs, D_kwargs

def small_G(**overrides):
    kwargs = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=16))
    for key, value in overrides.items():
        if key in ['architecture', 'num_fp16_res', 'conv_clamp']:
            kwargs['synthesis_kwargs'] = dict(kwargs['synthesis_kwargs'], **{key: value})
        else:
            kwargs[key] = value
    return networks.Generator(**kwargs)

def small_D(**overrides):
    kwargs = dict(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=16)
    kwargs.update(overrides)
    return networks.Discriminator(**kwargs)

def channels(channel_base, res, channel_max=512):
    return min(channel_base // res, channel_max)

def expected_G_params(z_dim, w_dim, res, channel_base, channel_max, map_layers, img_channels=3):
    """Parameter count from the architecture description (independent of the code)."""
    total = z_dim * w_dim + w_dim + (map_layers - 1) * (w_dim * w_dim + w_dim)
    def layer(cin, cout, k):  # affine + weight + noise_strength + bias
        return (w_dim * cin + cin) + cout * cin * k * k + 1 + cout
    def torgb(cin):
        return (w_dim * cin + cin) + img_channels * cin + img_channels
    log2 = int(np.log2(res))
    for r in [2 ** i for i in range(2, log2 + 1)]:
        c = channels(channel_base, r, channel_max)
        if r == 4:
            total += c * 16 + layer(c, c, 3)
        else:
            cin = channels(channel_base, r // 2, channel_max)
            total += layer(cin, c, 3) + layer(c, c, 3)
        total += torgb(c)
    return total

def expected_D_params(res, channel_base, channel_max, img_channels=3, mbstd_channels=1):
    total = 0
    log2 = int(np.log2(res))
    for r in [2 ** i for i in range(log2, 2, -1)]:
        tmp = channels(channel_base, r, channel_max)
        out = channels(channel_base, r // 2, channel_max)
        if r == res:
            total += img_channels * tmp + tmp
        total += tmp * tmp * 9 + tmp + out * tmp * 9 + out + out * tmp
    c = channels(channel_base, 4, channel_max)
    total += (c + mbstd_channels) * c * 9 + c + c * 16 * c + c + c + 1
    return total

def count(module):
    return sum(p.numel() for p in module.parameters())

#----------------------------------------------------------------------------

def test_paper256_parameter_names_shapes_and_counts():
    G_kwargs, D_kwargs = paper256_kwargs()
    G = networks.Generator(**G_kwargs)
    D = networks.Discriminator(**D_kwargs)
    assert G.num_ws == 14
    # 24,767,458 is also what the QC-StyleGAN reference reports for the stock FFHQ-256 generator
    # (25.25M total minus the 486,912 DegradBlock parameters).
    assert count(G) == 24_767_458 == expected_G_params(512, 512, 256, 16384, 512, 8)
    assert count(D) == expected_D_params(256, 16384, 512)

    g = {name: list(t.shape) for name, t in misc.named_params_and_buffers(G)}
    expected_g = {
        'mapping.fc0.weight': [512, 512], 'mapping.fc0.bias': [512], 'mapping.fc7.weight': [512, 512],
        'mapping.w_avg': [512],
        'synthesis.b4.const': [512, 4, 4], 'synthesis.b4.resample_filter': [4, 4],
        'synthesis.b4.conv1.weight': [512, 512, 3, 3], 'synthesis.b4.conv1.bias': [512],
        'synthesis.b4.conv1.affine.weight': [512, 512], 'synthesis.b4.conv1.affine.bias': [512],
        'synthesis.b4.conv1.noise_const': [4, 4], 'synthesis.b4.conv1.noise_strength': [],
        'synthesis.b4.conv1.resample_filter': [4, 4],
        'synthesis.b4.torgb.weight': [3, 512, 1, 1], 'synthesis.b4.torgb.bias': [3],
        'synthesis.b4.torgb.affine.weight': [512, 512],
        'synthesis.b64.conv0.weight': [256, 512, 3, 3], 'synthesis.b64.conv0.noise_const': [64, 64],
        'synthesis.b128.conv1.weight': [128, 128, 3, 3],
        'synthesis.b256.conv0.weight': [64, 128, 3, 3], 'synthesis.b256.conv1.affine.weight': [64, 512],
        'synthesis.b256.torgb.weight': [3, 64, 1, 1], 'synthesis.b256.conv1.noise_const': [256, 256],
    }
    for name, shape in expected_g.items():
        assert g.get(name) == shape, name
    assert not any(name.startswith('synthesis.b4.conv0') for name in g)
    assert not any('.skip.' in name for name in g)  # skip architecture: no resnet skips in G

    d = {name: list(t.shape) for name, t in misc.named_params_and_buffers(D)}
    expected_d = {
        'b256.fromrgb.weight': [64, 3, 1, 1], 'b256.fromrgb.bias': [64],
        'b256.conv0.weight': [64, 64, 3, 3], 'b256.conv1.weight': [128, 64, 3, 3], 'b256.skip.weight': [128, 64, 1, 1],
        'b256.conv1.resample_filter': [4, 4], 'b8.conv1.weight': [512, 512, 3, 3],
        'b4.conv.weight': [512, 513, 3, 3], 'b4.fc.weight': [512, 512 * 16], 'b4.fc.bias': [512],
        'b4.out.weight': [1, 512], 'b4.out.bias': [1],
    }
    for name, shape in expected_d.items():
        assert d.get(name) == shape, name
    assert 'b128.fromrgb.weight' not in d and 'b256.skip.bias' not in d

def test_fp16_block_set_and_num_ws():
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=32, img_channels=3,
                           synthesis_kwargs=dict(channel_base=256, channel_max=8, num_fp16_res=4))
    fp16 = [res for res in G.synthesis.block_resolutions if getattr(G.synthesis, f'b{res}').use_fp16]
    assert fp16 == [8, 16, 32]  # 4 highest resolutions, but never below 8x8
    assert G.num_ws == 2 * 5 - 2 == 8
    D = networks.Discriminator(c_dim=0, img_resolution=32, img_channels=3, channel_base=256, channel_max=8, num_fp16_res=2)
    assert sorted(res for res in D.block_resolutions if getattr(D, f'b{res}').use_fp16) == [16, 32]

@pytest.mark.parametrize('architecture', ['orig', 'skip', 'resnet'])
def test_small_networks_all_architectures(architecture):
    G = small_G(architecture=architecture)
    D = small_D(architecture=architecture)
    expected = expected_G_params(16, 16, 16, 128, 16, 2)
    if architecture != 'skip':  # orig/resnet: ToRGB only in the last block
        expected -= sum((16 * c + c) + 3 * c + 3 for c in [channels(128, 4, 16), channels(128, 8, 16)])
    if architecture == 'resnet':  # 1x1 bias-free skip convs in every block but the first
        expected += sum(channels(128, r // 2, 16) * channels(128, r, 16) for r in [8, 16])
    assert count(G) == expected
    z = torch.randn([4, 16])
    img = G(z, None)
    assert img.shape == (4, 3, 16, 16) and img.dtype == torch.float32 and torch.isfinite(img).all()
    logits = D(img, None)
    assert logits.shape == (4, 1)
    G.requires_grad_(True)
    D.requires_grad_(True)
    D(G(z, None), None).sum().backward()
    assert all(p.grad is not None for name, p in G.named_parameters() if 'noise_strength' not in name and 'mapping' not in name)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in D.parameters())

def test_conditioning_names_and_effect():
    G = small_G(c_dim=5)
    D = small_D(c_dim=5)
    assert list(G.mapping.embed.weight.shape) == [16, 5]
    assert list(G.mapping.fc0.weight.shape) == [16, 32]  # z_dim + embed_features
    assert list(D.mapping.embed.weight.shape) == [16, 5]  # cmap_dim = channels at 4x4
    assert not hasattr(D.mapping, 'w_avg')
    assert list(D.b4.out.weight.shape) == [16, 16]
    z = torch.randn([2, 16])
    c0 = torch.nn.functional.one_hot(torch.tensor([0, 0]), 5).float()
    c1 = torch.nn.functional.one_hot(torch.tensor([3, 3]), 5).float()
    img0 = G(z, c0, noise_mode='const')
    img1 = G(z, c1, noise_mode='const')
    assert (img0 - img1).abs().max() > 1e-3
    assert (D(img0, c0) - D(img0, c1)).abs().max() > 1e-6

def test_truncation_and_w_avg_tracking():
    G = small_G()
    G.mapping.w_avg.copy_(torch.randn([16]))
    z = torch.randn([3, 16])
    ws = G.mapping(z, None)
    assert ws.shape == (3, G.num_ws, 16)
    assert torch.equal(ws[:, 0], ws[:, -1])  # broadcast
    ws0 = G.mapping(z, None, truncation_psi=0)
    assert torch.allclose(ws0, G.mapping.w_avg.expand_as(ws0))
    ws_half = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    assert torch.allclose(ws_half[:, :2], G.mapping.w_avg + 0.5 * (ws[:, :2] - G.mapping.w_avg), atol=1e-6)
    assert torch.allclose(ws_half[:, 2:], ws[:, 2:])

    G.train()
    before = G.mapping.w_avg.clone()
    out = G.mapping(z, None)[:, 0]
    assert torch.allclose(G.mapping.w_avg, out.mean(0) + 0.995 * (before - out.mean(0)), atol=1e-6)
    G.mapping(z, None, skip_w_avg_update=True)
    assert torch.allclose(G.mapping.w_avg, out.mean(0) + 0.995 * (before - out.mean(0)), atol=1e-6)

def test_noise_modes():
    G = small_G()
    for name, p in G.named_parameters():
        if name.endswith('noise_strength'):
            p.data.fill_(0.5)
    ws = G.mapping(torch.randn([2, 16]), None)
    const_a = G.synthesis(ws, noise_mode='const')
    const_b = G.synthesis(ws, noise_mode='const')
    rand_a = G.synthesis(ws, noise_mode='random')
    none = G.synthesis(ws, noise_mode='none')
    assert torch.equal(const_a, const_b)
    assert (const_a - rand_a).abs().max() > 1e-3
    for name, p in G.named_parameters():
        if name.endswith('noise_strength'):
            p.data.zero_()
    assert torch.allclose(G.synthesis(ws, noise_mode='random'), none, atol=1e-6)
    with pytest.raises(ValueError, match='noise_mode'):
        G.synthesis(ws, noise_mode='bogus')

def test_fused_and_unfused_modconv_agree():
    G = small_G()
    ws = G.mapping(torch.randn([3, 16]), None)
    fused = G.synthesis(ws, noise_mode='const', fused_modconv=True)
    unfused = G.synthesis(ws, noise_mode='const', fused_modconv=False)
    assert torch.allclose(fused, unfused, atol=1e-5)

def test_modulated_conv2d_matches_per_sample_definition():
    x = torch.randn([2, 4, 6, 6], dtype=torch.float64)
    weight = torch.randn([5, 4, 3, 3], dtype=torch.float64)
    styles = torch.randn([2, 4], dtype=torch.float64)
    out = networks.modulated_conv2d(x, weight, styles, padding=1, fused_modconv=False)
    for n in range(2):
        w = weight * styles[n].reshape(1, 4, 1, 1)
        w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        ref = torch.nn.functional.conv2d(x[n:n + 1], w, padding=1)
        assert torch.allclose(out[n:n + 1], ref, atol=1e-10)

def test_freeze_d_turns_first_layers_into_buffers():
    D = small_D(block_kwargs=dict(freeze_layers=3))
    trainable = {name for name, _ in D.named_parameters()}
    buffers = {name for name, _ in D.named_buffers()}
    # Layer order: b16.fromrgb, b16.conv0, b16.conv1, b16.skip, b8.conv0, ...
    assert {'b16.fromrgb.weight', 'b16.conv0.weight', 'b16.conv1.weight'} <= buffers
    assert 'b16.skip.weight' in trainable and 'b8.conv0.weight' in trainable
    assert D.b16.num_layers == 4 and D.b8.first_layer_idx == 4

def test_minibatch_std_values_and_group_check():
    layer = networks.MinibatchStdLayer(group_size=2, num_channels=1)
    x = torch.randn([4, 3, 2, 2], dtype=torch.float64)
    y = layer(x)
    assert y.shape == (4, 4, 2, 2)
    xs = x.numpy()
    for n in range(4):
        group = [n % 2, n % 2 + 2]  # sample i belongs to group i % (N / G)
        expected = np.sqrt(xs[group].var(axis=0) + 1e-8).mean()
        assert np.allclose(y[n, 3].numpy(), expected)
    with pytest.raises(ValueError, match='divisible'):
        networks.MinibatchStdLayer(group_size=4)(torch.randn([6, 3, 2, 2]))

def test_fp16_blocks_run_in_fp32_on_cpu():
    G = small_G(num_fp16_res=2, conv_clamp=256)
    D = small_D(num_fp16_res=2, conv_clamp=256)
    z = torch.randn([2, 16])
    img = G(z, None, noise_mode='const')
    assert img.dtype == torch.float32 and torch.isfinite(img).all()
    assert torch.equal(img, G(z, None, noise_mode='const', force_fp32=True))
    assert G.synthesis.b16.compute_dtype('cpu') == torch.float32
    assert G.synthesis.b16.compute_dtype('cuda') == torch.float16
    assert G.synthesis.b4.compute_dtype('cuda') == torch.float32
    assert D(img, None).dtype == torch.float32

def test_state_dict_round_trip_is_exact():
    G = small_G()
    G2 = small_G()
    G2.load_state_dict(G.state_dict())
    z = torch.randn([2, 16])
    assert torch.equal(G(z, None, noise_mode='const'), G2(z, None, noise_mode='const'))

def test_init_kwargs_recorded_and_rebuild():
    G = small_G(c_dim=2)
    assert G.init_kwargs.c_dim == 2 and G.init_kwargs.synthesis_kwargs['channel_base'] == 128
    clone = type(G)(*G.init_args, **G.init_kwargs)
    misc.copy_params_and_buffers(G, clone, require_all=True)
    z = torch.randn([1, 16])
    c = torch.tensor([[1.0, 0.0]])
    assert torch.equal(G(z, c, noise_mode='const'), clone(z, c, noise_mode='const'))

def test_print_module_summary(capsys):
    G = small_G()
    out = misc.print_module_summary(G, [torch.randn([2, 16]), None])
    assert out.shape == (2, 3, 16, 16)
    text = capsys.readouterr().out
    total_line = [line for line in text.splitlines() if line.startswith('Total')][0]
    assert int(total_line.split()[1]) == count(G)
    assert 'synthesis.b16' in text

def test_resolution_must_be_power_of_two():
    with pytest.raises(ValueError, match='power of two'):
        networks.Generator(z_dim=4, c_dim=0, w_dim=4, img_resolution=48, img_channels=3)
    with pytest.raises(ValueError, match='power of two'):
        networks.Discriminator(c_dim=0, img_resolution=24, img_channels=3)

#----------------------------------------------------------------------------

def test_filterwise_wpp_latents():
    """W++ (one code per output filter): repeated W+ rows render the same image; each filter's code matters."""
    G = small_G()
    ws = G.mapping(torch.randn([2, 16]), None)
    K = G.synthesis.max_filters
    wpp = ws.detach().unsqueeze(2).repeat([1, 1, K, 1]).requires_grad_(True)
    ref = G.synthesis(ws, noise_mode='const', fused_modconv=True)
    out = G.synthesis(wpp, noise_mode='const')
    assert torch.allclose(out, ref, atol=1e-5)
    out.square().sum().backward()
    # Codes beyond a layer's filters get no gradient; e.g. ToRGB (3 filters) of the last block.
    last_row = wpp.grad[:, -1]
    assert last_row[:, :3].abs().sum() > 0 and float(last_row[:, 3:].abs().sum()) == 0
    moved = wpp.detach().clone()
    moved[:, 1, 0] += 1.0  # the first filter of one layer
    assert (G.synthesis(moved, noise_mode='const') - ref).abs().max() > 1e-4
