"""The inversion methods by name: what each one needs and one way to run any of them.

Every method module (`inversion/pti.py`, ...) has an `invert(G, target, degradation, ...)` that
returns `common.InversionResult`. `METHODS` holds one `Method` entry per name saying how to call
it: its step phases (for `--steps`), which LPIPS networks it takes under which keyword, which of
the shared inputs (`D`, `encoder`, `seed`, `progress`) it takes, whether it needs a QC network, and
under which keyword (`init`) it starts from an encoder's W / W+ code of the observation.
A new method is one module with an `invert()` and one entry here.

    lpips = methods.build_lpips_modules(['pti'], random_backbone=False, device=device)
    out = methods.run(method='pti', G=G, target=y, degradation=deg, lpips=lpips,
                      steps=methods.parse_steps('pti', '100,50'), seed=0, space='w+')

Extra keywords of `run` go to the method's `invert()` unchanged; one it does not know is a TypeError.
"""

import dataclasses
from typing import Callable, Dict, Tuple

import torch

from inversion import cri, dgp, ngd, pti, qc, sphinx
from metrics import restoration
from torch_utils import misc
from training import encoders

#----------------------------------------------------------------------------

class MethodError(ValueError):
    """An unknown method, bad --steps, or a network / encoder the method cannot use (one line)."""

@dataclasses.dataclass(frozen=True)
class Method:
    invert: Callable                    # invert(G, target, degradation, ...) -> common.InversionResult
    phases: Tuple[str, ...]             # the invert() keyword of each step phase; one repeated name takes a tuple
    lpips: Dict[str, str]               # invert() keyword -> LPIPS network ('alex' or 'vgg') passed under it
    takes: Tuple[str, ...] = ('seed', 'progress')  # shared inputs of run() the method takes: D, encoder, seed, progress
    needs_qc: bool = False              # only for QC-StyleGAN networks (G.q_dim > 0)
    init: str = None                    # invert() keyword of a start latent (W [N, w_dim] or W+ [N, num_ws, w_dim]):
                                        # run() passes the encoder's code of the target there; None: no encoder start

METHODS = {
    'pti': Method(pti.invert, phases=('pivot_steps', 'tune_steps'), lpips=dict(lpips_module='alex', lpips_pivot='vgg'),
                  init='w_init'),
    'cri': Method(cri.invert, phases=('offset_steps', 'tune_steps'), lpips=dict(lpips_module='alex', vgg='vgg')),
    'ngd': Method(ngd.invert, phases=('steps',) * 3, lpips=dict(lpips_module='vgg'), takes=('progress',), init='w_init'),
    'dgp': Method(dgp.invert, phases=('stage_steps',) * 5, lpips=dict(), takes=('D', 'seed', 'progress')),
    'qc': Method(qc.invert, phases=('refine_steps', 'tune_steps'), lpips=dict(lpips_module='alex'),
                 takes=('encoder', 'seed', 'progress'), needs_qc=True),
    'sphinx': Method(sphinx.invert, phases=('steps',), lpips=dict(lpips_module='vgg')),
}

def get(name):
    """The `Method` called `name`; MethodError naming the choices otherwise."""
    if name not in METHODS:
        raise MethodError(f'unknown method "{name}"; choose from {", ".join(METHODS)}')
    return METHODS[name]

#----------------------------------------------------------------------------

def parse_steps(method, text):
    """Step counts of `method` from text: 'N' -> every phase N; 'A,B,...' -> one value per phase.

    Returns the invert() keywords (e.g. pti: dict(pivot_steps=A, tune_steps=B); ngd: dict(steps=(A, B, C)));
    None / '' -> {} (the method's defaults). Raises MethodError.
    """
    if text is None:
        return {}
    try:
        values = [int(v) for v in str(text).split(',') if v.strip()]
    except ValueError:
        raise MethodError(f'"{text}" is not an integer or a comma-separated list of integers') from None
    if any(v < 0 for v in values) or not values:
        raise MethodError('step counts must be non-negative integers')
    names = get(method).phases
    if len(values) == 1:
        values = values * len(names)
    if len(values) != len(names):
        raise MethodError(f'--method {method} has {len(names)} phases ({", ".join(names)}); got {len(values)} values')
    if len(set(names)) == 1 and len(names) > 1:
        return {names[0]: tuple(values)}
    return dict(zip(names, values))

def lpips_networks(names):
    """The LPIPS networks ('alex', 'vgg') the methods `names` use."""
    return sorted({net for name in names for net in get(name).lpips.values()})

def build_lpips(net, random_backbone=False, seed=0):
    """An LPIPS module on `net` ('alex' or 'vgg'): ImageNet weights from torch hub's cache, or random
    features (`random_backbone`, for machines without the weights) drawn from `seed`, the same on
    every run whatever ran before. `random_backbone` may also be a `--lpips-backbone` value:
    'pretrained', 'random' or PATH (a torchvision weights file or a folder holding them)."""
    spec = random_backbone if isinstance(random_backbone, str) else ('random' if random_backbone else 'pretrained')
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) + (0 if net == 'alex' else 1))
        return restoration.build_lpips(net, spec)

def build_lpips_modules(names, random_backbone=False, device='cpu', extra=(), seed=0):
    """{'alex': module or None, 'vgg': module or None}: the networks the methods `names` use, plus `extra`."""
    modules = {net: None for net in ('alex', 'vgg')}
    for net in sorted(set(lpips_networks(names)) | set(extra)):
        modules[net] = build_lpips(net, random_backbone, seed).to(device)
    return modules

def check_network(method, G, network_name='the network'):
    """MethodError if `method` needs a QC-StyleGAN network and `G` is a plain StyleGAN2 one."""
    if get(method).needs_qc and not misc.is_qc(G):
        raise MethodError(f'--method {method}: only for QC-StyleGAN networks (q_dim > 0); {network_name} is a plain '
                          f'StyleGAN2 network')

def accepts_encoder(method):
    """Whether `method` can use an encoder: it takes the encoder itself (qc) or starts from its code (pti, ngd)."""
    entry = get(method)
    return 'encoder' in entry.takes or entry.init is not None

def check_encoder(method):
    """MethodError (one line) if `method` cannot use an encoder."""
    if not accepts_encoder(method):
        able = ', '.join(name for name in METHODS if accepts_encoder(name))
        raise MethodError(f'--method {method} cannot start from an encoder; drop --encoder, or use a method that '
                          f'can: {able}')

def load_encoder(path, G, device):
    """The pSp encoder checkpoint `path` for `G` (`training.encoders.load_encoder`); MethodError with
    the reason (another network's checkpoint, unreadable or missing file)."""
    try:  # EncoderError is a ValueError
        return encoders.load_encoder(path, G=G, device=device)
    except (ValueError, FileNotFoundError) as err:
        raise MethodError(str(err)) from err

#----------------------------------------------------------------------------

def run(*, method, G, target, degradation=None, lpips=None, steps=None, D=None, encoder=None, seed=0, progress=False,
        bf16=False, **options):
    """Restore `target` (float `[N, C, h, w]` in [-1, 1], the observation) with `method`.

    lpips: {'alex': module, 'vgg': module} (see `build_lpips_modules`); steps: `parse_steps` output;
    D, encoder, seed, progress: passed to the methods that take them; a method with an `init`
    keyword gets the encoder's W / W+ code of `target` (`qc.encode`: the observation at the
    network's size) there instead, and one that can use no encoder raises MethodError. `options`
    go to the method's `invert()` as they are. `bf16`: run the method under bfloat16 autocast (the
    convolutions and matrix products of G, D, LPIPS and the encoder compute in bf16; latents, weights and
    optimizer states stay float32; not exact: see README "Benchmarks"); the result's tensors come back
    as float32. Returns `common.InversionResult`.
    """
    entry = get(method)
    check_network(method, G)
    if encoder is not None:
        check_encoder(method)
    lpips = lpips or {}
    kwargs = {keyword: lpips.get(net) for keyword, net in entry.lpips.items()}
    shared = dict(D=D, encoder=encoder, seed=seed, progress=progress)
    kwargs.update({name: shared[name] for name in entry.takes})
    if encoder is not None and entry.init is not None and 'encoder' not in entry.takes:
        kwargs[entry.init], _ = qc.encode(encoder, target, G.synthesis.img_resolution)
    kwargs.update(steps or {})
    kwargs.update(options)
    if not bf16:
        return entry.invert(G, target, degradation, **kwargs)
    with torch.autocast(device_type=target.device.type, dtype=torch.bfloat16):
        out = entry.invert(G, target, degradation, **kwargs)
    for key, value in out.items():
        if torch.is_tensor(value) and value.is_floating_point() and value.dtype != torch.float32:
            out[key] = value.float()
    return out

#----------------------------------------------------------------------------
