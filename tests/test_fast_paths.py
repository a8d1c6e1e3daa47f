"""The faster paths measured by bench/speed.py keep results within float tolerance.

* the synthesis network traces into one torch.compile graph (no graph breaks) and the compiled
  network renders what the eager one does, also through the inversion option;
* the fast inference snapshot (`misc.frozen_forward`: freezing, channels-last, non-fused
  modulation; `generate.py --fast`) renders what the eager network does and keeps its own weights;
* the non-fused modulation of the inversion steps (`common.unfused_modconv`) gives the same images
  and latent gradients as the default fused path (W, W+; W++ stays fused);
* bf16 autocast runs the generator and discriminator and stays close to fp32, and so does a whole
  inversion under it (`methods.run(bf16=True)`, `invert.py --bf16`, refused without native bf16);
* the multi-tensor G_ema update equals the per-tensor formula.
"""

import copy

import pytest
import torch

import legacy
from inversion import common
from torch_utils import misc
from training.training_loop import update_ema


@pytest.fixture(scope='module')
def tiny():
    return legacy.load_network('init:tiny32', verbose=False)


def _ws(G, n=2, seed=0):
    z = torch.randn([n, G.z_dim], generator=torch.Generator().manual_seed(seed))
    return G.mapping(z, None)


def test_synthesis_traces_without_graph_breaks(tiny):
    G = tiny['G_ema']
    torch._dynamo.reset()
    for ws in (_ws(G), common.LatentGenerator(G).to_wpp(_ws(G))):  # W+ and the filter-wise W++ latents
        explanation = torch._dynamo.explain(G.synthesis)(ws, noise_mode='const')
        assert explanation.graph_break_count == 0, explanation.break_reasons
        assert explanation.graph_count == 1


def test_compiled_synthesis_matches_eager(tiny):
    G = tiny['G_ema']
    ws = _ws(G)
    with torch.no_grad():
        eager = G.synthesis(ws, noise_mode='const')
        compiled = misc.compiled_forward(G.synthesis)(ws, noise_mode='const')
        # A deep copy (e.g. PTI's tuned generator) reuses the compiled code and sees its own weights.
        G2 = copy.deepcopy(G)
        for p in G2.synthesis.parameters():
            p.mul_(0.9)
        eager2 = G2.synthesis(ws, noise_mode='const')
        compiled2 = misc.compiled_forward(G2.synthesis)(ws, noise_mode='const')
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(compiled2, eager2, atol=1e-4, rtol=1e-4)
    assert (eager2 - eager).abs().max() > 1e-3
    assert not any(isinstance(v, torch.nn.Module) and v is not G.synthesis for v in vars(G.synthesis).values())

    common.compile_synthesis(True)
    try:
        gen = common.LatentGenerator(G)
        with torch.no_grad():
            torch.testing.assert_close(gen(ws), G.synthesis(ws, noise_mode='const', force_fp32=True), atol=1e-4, rtol=1e-4)
    finally:
        common.compile_synthesis(False)


def test_bf16_autocast_generator_and_discriminator(tiny):
    G, D = tiny['G_ema'], tiny['D']
    z = torch.randn([2, G.z_dim], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = G(z, None, noise_mode='const')
        with torch.autocast('cpu', dtype=torch.bfloat16):
            img = G(z, None, noise_mode='const')
            logits = D(img, None)
    assert img.dtype == torch.float32 and img.shape == ref.shape  # the image path stays fp32
    assert torch.isfinite(logits).all()
    rel = (img - ref).norm() / ref.norm()
    assert rel < 0.1, float(rel)  # bf16 has 8 mantissa bits: close, not equal
    assert rel > 0  # autocast did run the convolutions in bf16


def test_update_ema_matches_per_tensor_formula(tiny):
    G = tiny['G']
    G_ema = copy.deepcopy(G)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p))
        for b in G.buffers():
            b.add_(1)
    expected_params = [p.lerp(p_ema, 0.9) for p_ema, p in zip(G_ema.parameters(), G.parameters())]
    update_ema(G_ema, G, 0.9)
    for got, want in zip(G_ema.parameters(), expected_params):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        assert torch.equal(b_ema, b)


def test_generate_compile_flag_gives_the_same_images(tmp_path):
    import numpy as np
    import PIL.Image
    from click.testing import CliRunner

    import generate
    outs = []
    for flag in ([], ['--compile'], ['--fast']):
        outdir = tmp_path / (flag[0].strip('-') if flag else 'eager')
        result = CliRunner().invoke(generate.generate_main, ['--network', 'init:tiny32', '--seeds', '0-1', '--device', 'cpu',
                                                             '--outdir', str(outdir)] + flag)
        assert result.exit_code == 0, result.output + repr(result.exception)
        outs.append([np.asarray(PIL.Image.open(outdir / f'seed{s:04d}.png'), dtype=np.int16) for s in (0, 1)])
    for other in outs[1:]:
        for eager, fast in zip(outs[0], other):
            assert np.abs(eager - fast).max() <= 1  # uint8 rounding of values equal within float tolerance


def test_frozen_forward_matches_eager_and_snapshots(tiny):
    G = copy.deepcopy(tiny['G_ema'])
    ws = _ws(G)
    with torch.no_grad():
        eager = G.synthesis(ws, noise_mode='const')
    fast = misc.frozen_forward(G.synthesis, fused_modconv=False)
    out = fast(ws, noise_mode='const')
    torch.testing.assert_close(out, eager, atol=1e-4, rtol=1e-4)
    assert not out.requires_grad and out.is_contiguous()
    assert all(p.is_contiguous() for p in G.synthesis.parameters())  # the network itself is untouched
    # The snapshot keeps the weights it was built from; a new snapshot sees the new ones.
    with torch.no_grad():
        for p in G.synthesis.parameters():
            p.mul_(0.9)
        eager2 = G.synthesis(ws, noise_mode='const')
    assert (eager2 - eager).abs().max() > 1e-3
    torch.testing.assert_close(fast(ws, noise_mode='const'), eager, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(misc.frozen_forward(G.synthesis, fused_modconv=False)(ws, noise_mode='const'), eager2,
                               atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('space', ['w', 'w+'])
def test_unfused_modconv_matches_fused_with_gradients(tiny, space):
    G = tiny['G_ema']
    gen = common.LatentGenerator(G)
    w = _ws(G)[:, 0] if space == 'w' else _ws(G)
    target = torch.rand([2, 3, 32, 32], generator=torch.Generator().manual_seed(3)) * 2 - 1
    results = []
    for unfused in (False, True):
        common.unfused_modconv(unfused)
        try:
            latent = w.detach().clone().requires_grad_(True)
            img = gen(latent)
            (img - target).square().mean().backward()
            results.append((img.detach(), latent.grad))
        finally:
            common.unfused_modconv(False)
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results[1][1], results[0][1], atol=1e-6, rtol=1e-4)
    assert results[0][1].abs().max() > 0


def test_unfused_modconv_keeps_wpp_fused(tiny):
    G = tiny['G_ema']
    gen = common.LatentGenerator(G)
    wpp = gen.to_wpp(_ws(G))
    with torch.no_grad():
        ref = gen(wpp)
        common.unfused_modconv(True)
        try:
            out = gen(wpp)
        finally:
            common.unfused_modconv(False)
    assert torch.equal(out, ref)  # filter-wise styles always take the fused path


def test_invert_fast_flags(tmp_path):
    import json

    import numpy as np
    import PIL.Image
    from click.testing import CliRunner

    import invert
    PIL.Image.fromarray((np.random.RandomState(0).rand(32, 32, 3) * 255).astype(np.uint8)).save(tmp_path / 't.png')
    images = []
    try:
        for flag in ([], ['--unfused-modconv', '--channels-last']):
            outdir = tmp_path / ('unfused' if flag else 'default')
            r = CliRunner().invoke(invert.main, ['--network', 'init:tiny32', '--target', str(tmp_path / 't.png'), '--method', 'pti',
                                                 '--steps', '3,2', '--device', 'cpu', '--lpips-backbone', 'random',
                                                 '--outdir', str(outdir)] + flag)
            assert r.exit_code == 0, r.output + repr(r.exception)
            settings = json.loads((outdir / 'results.json').read_text())['provenance']['settings']
            assert settings['unfused_modconv'] is bool(flag) and settings['channels_last'] is bool(flag)
            images.append(np.asarray(PIL.Image.open(outdir / 't_restored.png'), dtype=np.int16))
    finally:
        common.unfused_modconv(False)
    assert np.abs(images[0] - images[1]).max() <= 2  # the same optimisation within float tolerance

@pytest.mark.parametrize('method, steps', [('pti', dict(pivot_steps=20, tune_steps=20)), ('ngd', dict(steps=(10, 10, 10)))])
def test_bf16_inversion_stays_close_to_fp32(tiny, method, steps):
    """`methods.run(bf16=True)`: the same optimisation under bf16 autocast, with float32 results close to
    the fp32 run's (measured: 43 dB apart for PTI, 53 dB for NGD; final losses within 3%)."""
    from inversion import methods
    from metrics import restoration
    G = tiny['G_ema']
    with torch.no_grad():
        target = G(torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(3)), None, noise_mode='const')
    lpips = methods.build_lpips_modules([method], random_backbone='random', device='cpu', seed=0)
    outs = {}
    for bf16 in (False, True):
        torch.manual_seed(0)
        out = outs[bf16] = methods.run(method=method, G=G, target=target, lpips=lpips, steps=steps, seed=0, bf16=bf16)
        assert out.restored.dtype == torch.float32 and out.ws.dtype == torch.float32 and out.loss.dtype == torch.float32
        assert all(p.dtype == torch.float32 for p in out.G.parameters())
    apart = float(restoration.psnr(outs[True].restored.clamp(-1, 1), outs[False].restored.clamp(-1, 1), data_range=2)[0])
    assert apart > 35, apart
    assert float(outs[True].loss[0]) == pytest.approx(float(outs[False].loss[0]), rel=0.05)
    assert not torch.equal(outs[True].restored, outs[False].restored)  # bf16 did run (not exact)

def test_invert_bf16_flag_refused_without_native_bf16(tmp_path, monkeypatch):
    import json

    import numpy as np
    import PIL.Image
    from click.testing import CliRunner

    import invert
    PIL.Image.fromarray((np.random.RandomState(0).rand(32, 32, 3) * 255).astype(np.uint8)).save(tmp_path / 't.png')
    base = ['--network', 'init:tiny32', '--target', str(tmp_path / 't.png'), '--method', 'pti', '--steps', '2,2', '--device', 'cpu',
            '--lpips-backbone', 'random', '--bf16']
    monkeypatch.setattr(misc, 'cpu_bf16_support', lambda: (False, 'this CPU has no native bfloat16 (test)'))
    r = CliRunner().invoke(invert.main, base + ['--outdir', str(tmp_path / 'refused')])
    assert r.exit_code == 2 and 'no native bfloat16 (test)' in r.output and 'Traceback' not in r.output
    assert not (tmp_path / 'refused').exists()
    monkeypatch.setattr(misc, 'cpu_bf16_support', lambda: (True, 'CPU flags avx512_bf16 (test)'))
    r = CliRunner().invoke(invert.main, base + ['--outdir', str(tmp_path / 'ran')])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert json.loads((tmp_path / 'ran' / 'results.json').read_text())['provenance']['settings']['bf16'] is True
