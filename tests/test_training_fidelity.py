"""Training fidelity to the references: distillation targets, teacher/student trunk, QC EMA, w_avg
tracking, and init_kwargs that the released tools can rebuild (issue 14, points 2-5)."""

import copy
import inspect
import pytest
import torch

import legacy
from torch_utils import training_stats
from training import networks
from training import qc as qc_surgery
from training.loss import QCStyleGAN2Loss, StyleGAN2Loss
from training.training_loop import update_ema

#----------------------------------------------------------------------------
# Tiny networks. Noise strengths are set to 1 so that mismatched noise draws show in the features.

def stock_G(seed, noise_strength=1.0):
    torch.manual_seed(seed)
    G = networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=16))
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith('noise_strength'):
                p.fill_(noise_strength)
    return G

def stock_D():
    return networks.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=16)

def kd_of_gmain(data, style_mixing_prob, rounds=4):
    """Mean distillation loss over `rounds` Gmain passes of the QC loss (student = data['G'])."""
    G = data['G'].train()
    loss = QCStyleGAN2Loss(torch.device('cpu'), G, data['D'], data['D_degraded'], G_teacher=data['G_teacher'],
                           style_mixing_prob=style_mixing_prob, pl_weight=0, r1_gamma=0)
    training_stats.reset()
    collector = training_stats.Collector(regex='Loss/G/kd')
    torch.manual_seed(3)
    for _ in range(rounds):
        loss.accumulate_gradients('Gmain', real_img=torch.zeros(4, 3, 16, 16), real_c=torch.zeros(4, 0),
                                  gen_z=torch.randn(4, 16), gen_c=torch.zeros(4, 0), gain=1)
    collector.update()
    assert collector.num('Loss/G/kd') == rounds
    return collector.mean('Loss/G/kd')

#----------------------------------------------------------------------------
# Point 2: the teacher replays the student's noise draws, also under style mixing.

@pytest.mark.parametrize('style_mixing_prob', [0.9, 0.0])
def test_kd_is_zero_when_the_student_is_the_teacher(style_mixing_prob):
    G = stock_G(0)
    data = qc_surgery.convert_to_qc(dict(G=G, D=stock_D(), G_ema=G), q_dim=4)
    assert kd_of_gmain(data, style_mixing_prob) < 1e-9  # Was 7.25 under style mixing 0.9 (noise captured too early).

def test_teacher_noise_differs_from_an_independent_draw():
    # Control: with independent noise the same networks give a large KD, so the test above can fail.
    G = stock_G(0)
    data = qc_surgery.convert_to_qc(dict(G=G, D=stock_D(), G_ema=G), q_dim=4)
    data['G_teacher'] = copy.deepcopy(data['G_teacher'])
    teacher_synthesis = data['G_teacher'].synthesis
    original = teacher_synthesis.forward
    teacher_synthesis.forward = lambda ws, **kw: (torch.randn([]), original(ws, **kw))[1]  # Shifts the RNG.
    assert kd_of_gmain(data, 0.9) > 0.1

#----------------------------------------------------------------------------
# Point 3: student G, G_ema and the teacher share the source's G_ema trunk.

def test_kd_is_zero_at_step_0_when_G_differs_from_G_ema():
    data = qc_surgery.convert_to_qc(dict(G=stock_G(0), D=stock_D(), G_ema=stock_G(1)), q_dim=4)
    src = dict(stock_G(1).named_parameters())
    assert all(torch.equal(p, q) for p, q in zip(data['G'].parameters(), data['G_ema'].parameters()))
    stock = qc_surgery.extract_stock_generator(data['G'])
    assert all(torch.equal(p, src[name]) for name, p in stock.named_parameters())
    assert all(torch.equal(p, src[name]) for name, p in data['G_teacher'].named_parameters())
    assert kd_of_gmain(data, 0.9, rounds=1) < 1e-9  # Was 6.1: the student came from G, the teacher from G_ema.

#----------------------------------------------------------------------------
# QC EMA: the released rule (last block, and the second-to-last minus its conv0) or full.

def test_qc_ema_parameter_names():
    G = qc_surgery.convert_to_qc(dict(G=stock_G(0), D=None, G_ema=stock_G(0)), q_dim=4)['G']
    names = {name for name, _ in G.named_parameters()}
    released = qc_surgery.qc_ema_parameter_names(G)
    assert released == {n for n in names if n.startswith('synthesis.b16.') or
                        (n.startswith('synthesis.b8.') and not n.startswith('synthesis.b8.conv0.'))}
    assert 'synthesis.b8.convq.0.weight' in released and 'synthesis.b8.conv0.weight' not in released
    assert qc_surgery.qc_ema_parameter_names(G, 'full') == names
    with pytest.raises(ValueError, match='released'):
        qc_surgery.qc_ema_parameter_names(G, 'partial')

def test_update_ema_copies_the_parameters_outside_the_ema_set():
    G = qc_surgery.convert_to_qc(dict(G=stock_G(0), D=None, G_ema=stock_G(0)), q_dim=4)['G']
    G_ema = copy.deepcopy(G)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(1)
    before = {name: p.clone() for name, p in G_ema.named_parameters()}
    names = qc_surgery.qc_ema_parameter_names(G)
    update_ema(G_ema, G, 0.75, names)
    G_params = dict(G.named_parameters())
    for name, p in G_ema.named_parameters():
        expected = before[name] + 0.25 * (G_params[name] - before[name]) if name in names else G_params[name]
        assert torch.allclose(p, expected, atol=1e-6), name
    assert all(torch.equal(b, g) for b, g in zip(G_ema.buffers(), G.buffers()))

#----------------------------------------------------------------------------
# Point 4: w_avg follows the mapped z of Gmain, Greg and Dmain (StyleGAN2) and of the QC phases.

@pytest.mark.parametrize('phase', ['Gmain', 'Greg', 'Dmain'])
def test_w_avg_moves_in_every_generator_run(phase):
    G = stock_G(0, noise_strength=0).train()
    loss = StyleGAN2Loss(torch.device('cpu'), G, stock_D(), style_mixing_prob=0.9, r1_gamma=1, pl_weight=2)
    before = G.mapping.w_avg.clone()
    loss.accumulate_gradients(phase, real_img=torch.zeros(4, 3, 16, 16), real_c=torch.zeros(4, 0),
                              gen_z=torch.randn(4, 16), gen_c=torch.zeros(4, 0), gain=1)
    assert (G.mapping.w_avg - before).abs().max() > 1e-6

def test_w_avg_update_matches_the_reference_formula():
    G = stock_G(0, noise_strength=0).train()
    loss = StyleGAN2Loss(torch.device('cpu'), G, stock_D(), style_mixing_prob=0)
    z = torch.randn(4, 16)
    with torch.no_grad():
        w = G.mapping(z, None, skip_w_avg_update=True)[:, 0]
    expected = w.mean(dim=0).lerp(G.mapping.w_avg, G.mapping.w_avg_beta)
    loss.accumulate_gradients('Gmain', real_img=torch.zeros(4, 3, 16, 16), real_c=torch.zeros(4, 0), gen_z=z,
                              gen_c=torch.zeros(4, 0), gain=1)
    assert torch.allclose(G.mapping.w_avg, expected, atol=1e-6)

@pytest.mark.parametrize('phase', ['Gmain', 'Greg', 'Dmain', 'D_degradedmain'])
def test_qc_w_avg_moves(phase):
    data = qc_surgery.convert_to_qc(dict(G=stock_G(0), D=stock_D(), G_ema=stock_G(0)), q_dim=4)
    G = data['G'].train()
    data['D_degraded'].requires_grad_(True)  # As the training loop does for the phase's network.
    loss = QCStyleGAN2Loss(torch.device('cpu'), G, data['D'], data['D_degraded'], G_teacher=data['G_teacher'])
    before = G.mapping.w_avg.clone()
    loss.accumulate_gradients(phase, real_img=torch.zeros(4, 3, 16, 16), real_c=torch.zeros(4, 0),
                              gen_z=torch.randn(4, 16), gen_c=torch.zeros(4, 0), gain=1,
                              real_img_degraded=torch.zeros(4, 3, 16, 16))
    assert (G.mapping.w_avg - before).abs().max() > 1e-6

#----------------------------------------------------------------------------
# Point 5: init_kwargs use only the argument names of the released constructors.

_RELEASED_GENERATOR = {'z_dim', 'c_dim', 'w_dim', 'img_resolution', 'img_channels', 'mapping_kwargs', 'synthesis_kwargs'}
_RELEASED_MAPPING = {'num_layers', 'embed_features', 'layer_features', 'activation', 'lr_multiplier', 'w_avg_beta'}
_RELEASED_SYNTHESIS = {'channel_base', 'channel_max', 'num_fp16_res', 'architecture', 'resample_filter', 'conv_clamp',
                       'fp16_channels_last', 'use_noise', 'activation', 'kernel_size'}

def released_generator(z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={}, synthesis_kwargs={}, **extra):
    """What the released code accepts: StyleGAN2-ADA's Generator signature, plus `q_dim` for QC-StyleGAN
    (required there); any other name raises TypeError as a released constructor would. The network
    is then our class with only those arguments (our defaults are the released architecture)."""
    if set(extra) - {'q_dim'}:
        raise TypeError(f'unexpected arguments {sorted(set(extra) - {"q_dim"})}')
    for given, known in [(mapping_kwargs, _RELEASED_MAPPING), (synthesis_kwargs, _RELEASED_SYNTHESIS)]:
        if set(given) - known:
            raise TypeError(f'unexpected arguments {sorted(set(given) - known)}')
    return networks.Generator(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                              mapping_kwargs=mapping_kwargs, synthesis_kwargs=synthesis_kwargs, **extra)

def _round_trip(data, path):
    legacy.save_network_pkl(data, str(path))
    with open(path, 'rb') as f:
        return legacy.load_network_pkl(f)

def test_qc_pickle_rebuilds_from_init_kwargs_with_released_names(tmp_path):
    data = qc_surgery.convert_to_qc(dict(G=stock_G(0), D=stock_D(), G_ema=stock_G(1)), q_dim=4)
    loaded = _round_trip({k: v for k, v in data.items() if k != 'G_teacher'}, tmp_path / 'qc.pkl')
    for key in ['G', 'G_ema']:
        G = loaded[key]
        kwargs = G.init_kwargs
        assert set(kwargs) <= _RELEASED_GENERATOR | {'q_dim'} and kwargs['q_dim'] == 4
        rebuilt = released_generator(**kwargs).eval()
        rebuilt.load_state_dict(G.state_dict())  # Strict: same names and shapes.
        ws = torch.randn(2, G.num_ws, 16)
        q = torch.randn(2, 4)
        assert torch.equal(rebuilt.synthesis(ws, q=q, noise_mode='const'), G.synthesis(ws, q=q, noise_mode='const'))
        # Our own rebuild path (init_args + init_kwargs) still gives the same network.
        ours = type(G)(*G.init_args, **G.init_kwargs).eval()
        ours.load_state_dict(G.state_dict())
        assert torch.equal(ours.synthesis(ws, q=q, noise_mode='const'), G.synthesis(ws, q=q, noise_mode='const'))
    stock = qc_surgery.extract_stock_generator(loaded['G_ema'])
    assert 'q_dim' not in stock.init_kwargs
    released_generator(**_round_trip(dict(G_ema=stock), tmp_path / 'stock.pkl')['G_ema'].init_kwargs).load_state_dict(stock.state_dict())

def test_non_released_qc_arguments_are_kept():
    kwargs = qc_surgery.released_generator_kwargs(dict(z_dim=16, q_dim=4, synthesis_kwargs=dict(channel_base=128, qc_blocks=3,
                                                                                             degrad_width=16, degrad_layers=2)))
    assert kwargs == dict(z_dim=16, q_dim=4, synthesis_kwargs=dict(channel_base=128, qc_blocks=3, degrad_layers=2))
    with pytest.raises(TypeError, match='qc_blocks'):
        released_generator(**dict(kwargs, c_dim=0, w_dim=16, img_resolution=16, img_channels=3))
    assert qc_surgery.released_generator_kwargs(dict(z_dim=16, q_dim=0, synthesis_kwargs=dict(qc_blocks=3))) == \
        dict(z_dim=16, synthesis_kwargs={})

def test_released_generator_signature_matches_the_reference_table():
    # The names above are the reference signatures (training/networks.py of StyleGAN2-ADA); ours accepts them all.
    signature = lambda cls: set(inspect.signature(cls.__bases__[0].__init__).parameters)  # Under @persistent_class.
    assert _RELEASED_GENERATOR | {'q_dim', 'self'} == signature(networks.Generator)
    assert _RELEASED_MAPPING <= signature(networks.MappingNetwork)
    assert {'channel_base', 'channel_max', 'num_fp16_res'} <= signature(networks.SynthesisNetwork)

#----------------------------------------------------------------------------
