"""QC-StyleGAN network surgery: build a quality-controllable network from a plain StyleGAN2(-ADA) one.

`convert_to_qc(data)` widens a loaded `{G, D, G_ema, ...}` dict into a QC network dict (DegradBlocks in
the last blocks, `D_degraded`, a frozen `G_teacher`); `extract_stock_generator(G_qc)` goes back;
`load_qc_network(spec)` loads any StyleGAN2 or QC-StyleGAN source as a QC dict. `is_qc(G)` (from
`torch_utils.misc`) tells whether a generator has a quality code.
"""

import copy

import torch

import legacy
from torch_utils import misc

from torch_utils.misc import is_qc  # noqa: F401  (re-exported: the one test of "has a quality code")

#----------------------------------------------------------------------------


# Constructor arguments of `training.networks` that the released generators do not take, with the
# values at which qcgan builds exactly the released architecture (M = 2 DegradBlocks, L = 16, P = 3).
QC_SYNTHESIS_DEFAULTS = dict(qc_blocks=2, degrad_width=16, degrad_layers=3)

def released_generator_kwargs(kwargs):
    """Generator keyword arguments without the qcgan-only ones that are at their released values.

    Networks built with the result record only argument names that the released code knows in
    `init_kwargs`, so the official tools that rebuild a network with `Generator(**G.init_kwargs)`
    (QC-StyleGAN's pSp and PTI; StyleGAN2-ADA for q_dim = 0) load qcgan pickles. Plain generators
    (q_dim 0) lose `q_dim` and every QC argument; QC generators keep `q_dim` (a released argument)
    and any QC argument that differs from the released architecture.
    """
    kwargs = copy.deepcopy(dict(kwargs))
    synthesis_kwargs = dict(kwargs.get('synthesis_kwargs', {}))
    if kwargs.get('q_dim', 0) == 0:
        kwargs.pop('q_dim', None)
        drop = set(QC_SYNTHESIS_DEFAULTS)
    else:
        drop = {key for key, value in QC_SYNTHESIS_DEFAULTS.items() if synthesis_kwargs.get(key) == value}
    if 'synthesis_kwargs' in kwargs:
        kwargs['synthesis_kwargs'] = {key: value for key, value in synthesis_kwargs.items() if key not in drop}
    return kwargs

def is_qc_network(data):
    """True if the loaded network dict holds a QC generator (q_dim > 0) and a degraded-image D."""
    G = data.get('G_ema')
    return G is not None and is_qc(G) and data.get('D_degraded') is not None

@torch.no_grad()
def convert_to_qc(data, q_dim=16, qc_blocks=2, degrad_width=16, degrad_layers=3, seed=0):
    """Turn `{G, D, G_ema, ...}` of a plain StyleGAN2 network into a QC-StyleGAN network dict.

    Every tensor of the source is copied by name; the widened conv1 of the DegradBlock blocks gets
    the source's weights and biases in its first C rows, so at q = 0 the QC generator reproduces the
    source exactly. The extra conv1 rows and the projection keep their random init (seeded).
    `D_degraded` starts as a copy of D. The result also holds `G_teacher`, a frozen copy of the
    source G_ema used for feature distillation.

    Student `G`, `G_ema` and the teacher all start from the source's `G_ema` (the published
    generator; official pickles have G != G_ema). In the released code the teacher is one stock
    generator and the EMA copies every parameter outside the last two blocks raw from G into G_ema,
    so the trunk of the released model is G's, and distillation can only reach 0 if G's trunk is the
    teacher. The source's training-time `G` is therefore not used. At q = 0 the student then equals
    the teacher exactly (same noise draws), i.e. the distillation loss starts at 0.

    A network that already is QC is returned unchanged (with `G_teacher` = None unless present).
    """
    if is_qc_network(data):
        result = dict(data)
        result.setdefault('G_teacher', None)
        return result
    src_G = data.get('G_ema')
    if src_G is None or is_qc(src_G):
        raise legacy.NetworkLoadError('convert_to_qc needs a plain StyleGAN2 generator (q_dim 0) in G_ema')
    if q_dim < 1:
        raise legacy.NetworkLoadError(f'q_dim must be at least 1, got {q_dim}')

    def widen(src):
        kwargs = copy.deepcopy(src.init_kwargs)
        kwargs['q_dim'] = q_dim
        kwargs['synthesis_kwargs'] = dict(kwargs.get('synthesis_kwargs', {}), qc_blocks=qc_blocks,
                                          degrad_width=degrad_width, degrad_layers=degrad_layers)
        kwargs = released_generator_kwargs(kwargs)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                dst = type(src)(*src.init_args, **kwargs)
            except ValueError as err:
                raise legacy.NetworkLoadError(f'cannot build a QC generator from this network: {err}') from err
        dst_tensors = dict(misc.named_params_and_buffers(dst))
        for name, tensor in misc.named_params_and_buffers(src):
            target = dst_tensors[name]
            if target.shape == tensor.shape:
                target.copy_(tensor)
            else:  # widened conv1 of a DegradBlock: the source fills the content rows
                assert name.endswith(('conv1.weight', 'conv1.bias')), name
                target[:tensor.shape[0]].copy_(tensor)
        return dst.eval().requires_grad_(False)

    result = dict(data)
    result['G_ema'] = widen(src_G)
    result['G'] = copy.deepcopy(result['G_ema'])
    if data.get('D') is not None:
        result['D_degraded'] = copy.deepcopy(data['D']).eval().requires_grad_(False)
    result['G_teacher'] = copy.deepcopy(src_G).eval().requires_grad_(False)
    return result

QC_EMA_MODES = ('released', 'full')

def qc_ema_parameter_names(G, mode='released'):
    """Names of the QC generator parameters that G_ema follows with the EMA during QC fine-tuning.

    'released' (default): as the released QC-StyleGAN training loop, every parameter of the last
    block and those of the second-to-last block except its conv0; all other parameters (including
    the trained conv0 and third-to-last block) are copied from G unaveraged at every step.
    'full': every parameter, as in StyleGAN2 (and the paper's description).
    """
    if mode not in QC_EMA_MODES:
        raise ValueError(f'QC EMA mode must be one of {", ".join(QC_EMA_MODES)}, got {mode!r}')
    names = [name for name, _p in G.named_parameters()]
    if mode == 'full':
        return set(names)
    last, second = [f'synthesis.b{res}.' for res in G.synthesis.block_resolutions[-1:-3:-1]]
    return {name for name in names if name.startswith(last) or (name.startswith(second) and not name.startswith(second + 'conv0.'))}

@torch.no_grad()
def extract_stock_generator(G_qc):
    """The plain StyleGAN2 generator inside a QC generator: its q = 0 behaviour, without DegradBlocks."""
    kwargs = copy.deepcopy(G_qc.init_kwargs)
    kwargs['q_dim'] = 0
    G = type(G_qc)(*G_qc.init_args, **released_generator_kwargs(kwargs))
    src = dict(misc.named_params_and_buffers(G_qc))
    for name, tensor in misc.named_params_and_buffers(G):
        tensor.copy_(src[name][:tensor.shape[0]] if src[name].shape != tensor.shape else src[name])
    return G.eval().requires_grad_(False)

def load_qc_network(spec, device=None, **convert_kwargs):
    """`load_network` + `convert_to_qc`: a QC network dict from any StyleGAN2 or QC-StyleGAN source."""
    data = legacy.load_network(spec)
    if not is_qc_network(data):
        G = data.get('G_ema')
        if is_qc(G):
            raise legacy.NetworkLoadError(f'{spec}: a QC generator without D_degraded; is it a complete QC snapshot?')
        data = convert_to_qc(data, **convert_kwargs)
    data.setdefault('G_teacher', None)
    if device is not None:
        data = {key: (value.to(device) if isinstance(value, torch.nn.Module) else value) for key, value in data.items()}
    return data

#----------------------------------------------------------------------------

def trainable_parameters(G, train_blocks):
    """Parameters of the last `train_blocks` synthesis blocks of `G` (what QC fine-tuning trains;
    everything else stays frozen)."""
    resolutions = G.synthesis.block_resolutions[-train_blocks:]
    prefixes = tuple(f'synthesis.b{res}.' for res in resolutions)
    return [p for name, p in G.named_parameters() if name.startswith(prefixes)]

#----------------------------------------------------------------------------
