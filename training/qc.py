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
    result['G'] = widen(data['G']) if data.get('G') is not None else copy.deepcopy(result['G_ema'])
    if data.get('D') is not None:
        result['D_degraded'] = copy.deepcopy(data['D']).eval().requires_grad_(False)
    result['G_teacher'] = copy.deepcopy(src_G).eval().requires_grad_(False)
    return result

@torch.no_grad()
def extract_stock_generator(G_qc):
    """The plain StyleGAN2 generator inside a QC generator: its q = 0 behaviour, without DegradBlocks."""
    kwargs = copy.deepcopy(G_qc.init_kwargs)
    kwargs['q_dim'] = 0
    synthesis_kwargs = dict(kwargs.get('synthesis_kwargs', {}))
    for key in ['qc_blocks', 'degrad_width', 'degrad_layers']:
        synthesis_kwargs.pop(key, None)
    kwargs['synthesis_kwargs'] = synthesis_kwargs
    G = type(G_qc)(*G_qc.init_args, **kwargs)
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
