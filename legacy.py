"""Model files: load network pickles of any origin, convert them, and the weights-only format.

`load_network_pkl(f)` returns a dict `{G, D, G_ema, augment_pipe, training_set_kwargs, ...}` from
  - this project's pickles,
  - official stylegan2-ada-pytorch / QC-StyleGAN pickles (their networks are rebuilt as this
    project's classes and filled by parameter name; their embedded source is not executed for
    the classes this project knows),
  - this project's weights-only files (state dicts + JSON constructor arguments), which load with
    `torch.load(weights_only=True)`: no code from the file is ever executed.

`load_network(spec)` additionally resolves model-zoo names (`ffhq256`, `afhqcat`, ...), URLs,
local paths and `init:PRESET` (a freshly initialised network, for demos and tests).

CLI: `python legacy.py --source NET --dest out.pkl` re-saves as a pickle of this project's
classes; `--dest out.pt` (or `--format weights`) writes the weights-only format.
"""

import copy
import io
import json
import os
import pickle
import zipfile

import click
import numpy as np
import torch

import dnnlib
from torch_utils import misc
from torch_utils import persistence
from training import networks

#----------------------------------------------------------------------------
# Model zoo: short names usable wherever a network is taken.

_NVLABS = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained'
_TRANSFER = f'{_NVLABS}/transfer-learning-source-nets'

MODEL_ZOO = {
    # Transfer-learning sources (the `--resume` presets of the reference train.py).
    'ffhq256':      f'{_TRANSFER}/ffhq-res256-mirror-paper256-noaug.pkl',
    'ffhq512':      f'{_TRANSFER}/ffhq-res512-mirror-stylegan2-noaug.pkl',
    'ffhq1024':     f'{_TRANSFER}/ffhq-res1024-mirror-stylegan2-noaug.pkl',
    'celebahq256':  f'{_TRANSFER}/celebahq-res256-mirror-paper256-kimg100000-ada-target0.5.pkl',
    'lsundog256':   f'{_TRANSFER}/lsundog-res256-paper256-kimg100000-noaug.pkl',
    # Pretrained models of the ADA paper.
    'ffhq':         f'{_NVLABS}/ffhq.pkl',
    'metfaces':     f'{_NVLABS}/metfaces.pkl',
    'afhqcat':      f'{_NVLABS}/afhqcat.pkl',
    'afhqdog':      f'{_NVLABS}/afhqdog.pkl',
    'afhqwild':     f'{_NVLABS}/afhqwild.pkl',
    'cifar10':      f'{_NVLABS}/cifar10.pkl',
    'brecahad':     f'{_NVLABS}/brecahad.pkl',
}

#----------------------------------------------------------------------------
# Architectures for `init:NAME`: freshly initialised networks (random weights).

def make_arch(res, channel_base, channel_max, map_layers, w_dim=512, mbstd=4, fp16=4, img_channels=3):
    """The architecture fields `network_kwargs_from_arch` reads (an EasyDict)."""
    return dnnlib.EasyDict(resolution=res, img_channels=img_channels, z_dim=w_dim, w_dim=w_dim,
        channel_base=channel_base, channel_max=channel_max, map_layers=map_layers, mbstd=mbstd, num_fp16_res=fp16)

INIT_PRESETS = {
    'tiny32':       make_arch(32,   channel_base=2048,  channel_max=64,  map_layers=2, w_dim=64),
    'tiny64':       make_arch(64,   channel_base=4096,  channel_max=64,  map_layers=2, w_dim=64),
    'paper256':     make_arch(256,  channel_base=16384, channel_max=512, map_layers=8, mbstd=8),
    'paper512':     make_arch(512,  channel_base=32768, channel_max=512, map_layers=8, mbstd=8),
    'stylegan2-1024': make_arch(1024, channel_base=32768, channel_max=512, map_layers=8),
}

def network_kwargs_from_arch(arch, c_dim=0):
    """Constructor kwargs `(G_kwargs, D_kwargs)` for an `INIT_PRESETS`-style architecture dict."""
    conv_clamp = 256 if arch.num_fp16_res > 0 else None
    G_kwargs = dnnlib.EasyDict(z_dim=arch.z_dim, c_dim=c_dim, w_dim=arch.w_dim, img_resolution=arch.resolution,
        img_channels=arch.img_channels, mapping_kwargs=dict(num_layers=arch.map_layers),
        synthesis_kwargs=dict(channel_base=arch.channel_base, channel_max=arch.channel_max,
                              num_fp16_res=arch.num_fp16_res, conv_clamp=conv_clamp))
    D_kwargs = dnnlib.EasyDict(c_dim=c_dim, img_resolution=arch.resolution, img_channels=arch.img_channels,
        architecture='resnet', channel_base=arch.channel_base, channel_max=arch.channel_max,
        num_fp16_res=arch.num_fp16_res, conv_clamp=conv_clamp, epilogue_kwargs=dict(mbstd_group_size=arch.mbstd))
    return G_kwargs, D_kwargs

def init_network(name, seed=0):
    """Freshly initialised `{G, D, G_ema}` for the architecture `INIT_PRESETS[name]`."""
    if name not in INIT_PRESETS:
        raise NetworkLoadError(f'unknown init preset "{name}"; choose from: {", ".join(INIT_PRESETS)}')
    G_kwargs, D_kwargs = network_kwargs_from_arch(INIT_PRESETS[name])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = networks.Generator(**G_kwargs).eval().requires_grad_(False)
        D = networks.Discriminator(**D_kwargs).eval().requires_grad_(False)
    return dict(G=G, D=D, G_ema=copy.deepcopy(G), augment_pipe=None, training_set_kwargs=None)

#----------------------------------------------------------------------------

class NetworkLoadError(Exception):
    """A network file or name could not be loaded; the message says why and what to do."""

#----------------------------------------------------------------------------
# Classes this project can rebuild from a pickle's constructor arguments. Later packages add
# theirs with `register_network_class` (e.g. the QC generator, the augmentation pipe).

_CLASS_REGISTRY = dict()  # class name -> callable (init_kwargs) -> dotted path of the class to build

def register_network_class(class_name, resolver):
    """`resolver` is a dotted class path, or a callable `(init_args, init_kwargs) -> dotted path`."""
    _CLASS_REGISTRY[class_name] = resolver

for _name in ['Generator', 'Discriminator', 'MappingNetwork', 'SynthesisNetwork', 'SynthesisBlock', 'SynthesisLayer',
              'ToRGBLayer', 'FullyConnectedLayer', 'Conv2dLayer', 'DiscriminatorBlock', 'DiscriminatorEpilogue',
              'MinibatchStdLayer']:
    register_network_class(_name, f'training.networks.{_name}')
register_network_class('AugmentPipe', 'training.augment.AugmentPipe')

def _resolve_class(class_name, init_args, init_kwargs):
    resolver = _CLASS_REGISTRY.get(class_name)
    if resolver is None:
        return None
    path = resolver(init_args, init_kwargs) if callable(resolver) else resolver
    try:
        return dnnlib.util.get_obj_by_name(path)
    except ImportError:
        return None

#----------------------------------------------------------------------------
# Reading pickles without executing their embedded module source.

class _PersistentStub:
    """Stand-in for a persistent object: its class name, constructor arguments and state."""
    def __init__(self, meta):
        self.meta = dnnlib.EasyDict(meta)

    @property
    def class_name(self):
        return self.meta.class_name

    @property
    def state(self):
        return self.meta.state

class _TFNetworkStub(dnnlib.EasyDict):
    """Stand-in for `dnnlib.tflib.network.Network` objects in TensorFlow pickles."""

class _StubUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == 'torch_utils.persistence' and name == '_reconstruct_persistent_obj':
            return _PersistentStub
        if module == 'dnnlib.tflib.network' and name == 'Network':
            return _TFNetworkStub
        return super().find_class(module, name)

def _tensors_of(obj, prefix=''):
    """Flatten the parameters and buffers of a stub (or a plain module holding stubs) by dotted name."""
    state = obj.state if isinstance(obj, _PersistentStub) else obj.__dict__
    tensors = dict()
    for group in ['_parameters', '_buffers']:
        for name, tensor in (state.get(group) or {}).items():
            if tensor is not None:
                tensors[prefix + name] = tensor
    for name, child in (state.get('_modules') or {}).items():
        if child is not None:
            tensors.update(_tensors_of(child, prefix + name + '.'))
    return tensors

def _materialize(obj):
    """Turn stubs into real modules: known classes are rebuilt from this project's code, unknown
    ones by executing the source embedded in the pickle (as a plain pickle.load would)."""
    if isinstance(obj, _PersistentStub):
        state = obj.state
        init_args = state.get('_init_args', ())
        init_kwargs = state.get('_init_kwargs', {})
        cls = _resolve_class(obj.class_name, init_args, init_kwargs)
        if cls is None:
            meta = dict(obj.meta)
            meta['state'] = {key: _materialize(value) for key, value in state.items()}
            return persistence._reconstruct_persistent_obj(meta)
        try:
            module = cls(*init_args, **init_kwargs)
        except TypeError as err:
            raise NetworkLoadError(f'cannot rebuild {obj.class_name} with this code: {err}') from err
        _load_tensors(module, _tensors_of(obj), obj.class_name)
        module.train(bool(state.get('training', False)))
        module.requires_grad_(False)
        return module
    if isinstance(obj, dict):
        items = {key: _materialize(value) for key, value in obj.items()}
        return dnnlib.EasyDict(items) if isinstance(obj, dnnlib.EasyDict) else items
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(value) for value in obj)
    return obj

@torch.no_grad()
def _load_tensors(module, tensors, what):
    own = dict(misc.named_params_and_buffers(module))
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise NetworkLoadError(f'{what}: parameter names do not match this code '
                               f'(missing: {missing[:5]}, unexpected: {unexpected[:5]})')
    for name, tensor in own.items():
        src = torch.as_tensor(tensors[name])
        if src.shape != tensor.shape:
            raise NetworkLoadError(f'{what}: shape mismatch for "{name}": file {list(src.shape)}, code {list(tensor.shape)}')
        tensor.copy_(src)

#----------------------------------------------------------------------------

_WEIGHTS_FORMAT = 'qcgan-weights'
_WEIGHTS_VERSION = 1
_NETWORK_KEYS = ['G', 'D', 'G_ema']

def load_network_pkl(f, force_fp16=False):
    """Load a network file into `{G, D, G_ema, augment_pipe, training_set_kwargs, ...}`.

    Args:
        f:          Binary file object (pickle or weights-only file).
        force_fp16: Rebuild G and D with `num_fp16_res=4, conv_clamp=256` (as in the reference).

    Raises:
        NetworkLoadError with a one-line explanation for truncated, unknown or mismatched files.
    """
    data = f.read()
    if len(data) == 0:
        raise NetworkLoadError('the file is empty')
    if data[:4] == b'PK\x03\x04' and _is_weights_file(data):
        result = _load_weights(data)
    else:
        result = _load_pickle(data)

    for key in _NETWORK_KEYS:
        if key in result and not isinstance(result[key], torch.nn.Module):
            raise NetworkLoadError(f'entry "{key}" is a {type(result[key]).__name__}, not a network')
    if 'G_ema' not in result:
        raise NetworkLoadError(f'no G_ema network in the file (keys: {sorted(result)}); is it a network snapshot?')
    result.setdefault('training_set_kwargs', None)
    result.setdefault('augment_pipe', None)

    if force_fp16:
        result = _force_fp16(result)
    return result

def _load_pickle(data):
    try:
        obj = _StubUnpickler(io.BytesIO(data)).load()
    except (EOFError, pickle.UnpicklingError, ValueError, IndexError, KeyError, TypeError) as err:
        raise NetworkLoadError(f'not a readable network pickle ({type(err).__name__}: {err}); '
                               f'the file may be truncated: download or copy it again') from err
    except (ModuleNotFoundError, AttributeError) as err:
        raise NetworkLoadError(f'the pickle refers to code that is not available ({err}); '
                               f'it is not a StyleGAN2-ADA/QC-StyleGAN/qcgan network pickle') from err

    if isinstance(obj, tuple) and len(obj) == 3 and all(isinstance(net, _TFNetworkStub) for net in obj):
        raise NetworkLoadError('TensorFlow StyleGAN2 pickles are not supported yet; convert it with the official '
                               'stylegan2-ada-pytorch legacy.py first, then load the result here')
    if not isinstance(obj, dict):
        raise NetworkLoadError(f'unrecognised pickle content ({type(obj).__name__}); expected a dict with G, D and G_ema')
    return _materialize(obj)

def _force_fp16(result):
    result = dict(result)
    for key in _NETWORK_KEYS + ['D_degraded']:
        old = result.get(key)
        if old is None:
            continue
        kwargs = copy.deepcopy(old.init_kwargs)
        fp16_kwargs = kwargs['synthesis_kwargs'] if 'synthesis_kwargs' in kwargs else kwargs
        fp16_kwargs['num_fp16_res'] = 4
        fp16_kwargs['conv_clamp'] = 256
        if kwargs != old.init_kwargs:
            new = type(old)(*old.init_args, **kwargs).eval().requires_grad_(False)
            misc.copy_params_and_buffers(old, new, require_all=True)
            result[key] = new
    return result

#----------------------------------------------------------------------------
# Weights-only format: a torch zip file holding plain dicts, strings and tensors only.

def _class_path(module):
    """Dotted path of the class this project uses for `module` (never an `_imported_module_*`)."""
    cls_name = type(module).__name__
    cls = _resolve_class(cls_name, module.init_args, module.init_kwargs) if persistence.is_persistent(module) else None
    if cls is None:
        raise ValueError(f'cannot save {cls_name} in the weights-only format: not a class this project knows')
    return f'{cls.__module__}.{cls.__name__}'

def _json_default(obj):
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f'{type(obj).__name__} is not JSON serialisable')

def save_weights(data, path):
    """Write `{G, D, G_ema, ...}` (networks and JSON-able extras) in the weights-only format, atomically."""
    modules = dict()
    extras = dict()
    for key, value in data.items():
        if isinstance(value, torch.nn.Module):
            modules[key] = dict(
                class_name=_class_path(value),
                init_args_json=json.dumps(list(value.init_args), default=_json_default),
                init_kwargs_json=json.dumps(dict(value.init_kwargs), default=_json_default),
                state_dict={name: tensor.detach().cpu().clone() for name, tensor in misc.named_params_and_buffers(value)},
            )
        elif value is not None:
            extras[key] = value
    payload = dict(format=_WEIGHTS_FORMAT, format_version=_WEIGHTS_VERSION, modules=modules,
                   extras_json=json.dumps(extras, default=_json_default))
    with dnnlib.util.atomic_write(path, 'wb') as f:
        torch.save(payload, f)

def _is_weights_file(data):
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return any(name.endswith('data.pkl') for name in zf.namelist())
    except zipfile.BadZipFile:
        return False

def _load_weights(data):
    try:
        payload = torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
    except Exception as err:
        raise NetworkLoadError(f'not a readable weights file ({type(err).__name__}: {err}); '
                               f'the file may be truncated: download or copy it again') from err
    if not isinstance(payload, dict) or payload.get('format') != _WEIGHTS_FORMAT:
        raise NetworkLoadError('this torch file is not a qcgan weights-only file (no "format" marker)')
    if payload.get('format_version', 0) > _WEIGHTS_VERSION:
        raise NetworkLoadError(f'weights file version {payload["format_version"]} is newer than this code '
                               f'(reads {_WEIGHTS_VERSION}); update qcgan')
    result = json.loads(payload.get('extras_json', '{}'))
    if isinstance(result.get('training_set_kwargs'), dict):
        result['training_set_kwargs'] = dnnlib.EasyDict(result['training_set_kwargs'])
    for key, entry in payload['modules'].items():
        class_name = entry['class_name'].rsplit('.', 1)[-1]
        init_args = json.loads(entry['init_args_json'])
        init_kwargs = json.loads(entry['init_kwargs_json'])
        cls = _resolve_class(class_name, init_args, init_kwargs)
        if cls is None:
            raise NetworkLoadError(f'weights file entry "{key}" has unknown class {entry["class_name"]}')
        module = cls(*init_args, **init_kwargs)
        _load_tensors(module, entry['state_dict'], key)
        result[key] = module.eval().requires_grad_(False)
    return result

#----------------------------------------------------------------------------

def resolve_network_spec(spec):
    """Map a zoo name to its URL; pass paths and URLs through. Raises NetworkLoadError for unknown names."""
    spec = str(spec)
    if spec in MODEL_ZOO:
        return MODEL_ZOO[spec]
    if dnnlib.util.is_url(spec, allow_file_urls=True) or os.path.exists(spec):
        return spec
    looks_like_name = (os.sep not in spec and '/' not in spec and '.' not in spec)
    if looks_like_name:
        raise NetworkLoadError(f'unknown network "{spec}": not a file, URL or zoo name; '
                               f'zoo names: {", ".join(MODEL_ZOO)} (or init:{"|".join(INIT_PRESETS)})')
    raise NetworkLoadError(f'network file not found: {spec}')

def load_network(spec, device=None, force_fp16=False, verbose=True):
    """Load a network from a path, URL, zoo name or `init:PRESET`; returns the `load_network_pkl` dict.

    Networks are moved to `device` (if given) and left in eval mode without gradients.
    """
    spec = str(spec)
    if spec.startswith('init:'):
        result = init_network(spec[len('init:'):])
    else:
        url = resolve_network_spec(spec)
        try:
            with dnnlib.util.open_url(url, verbose=verbose) as f:
                result = load_network_pkl(f, force_fp16=force_fp16)
        except NetworkLoadError as err:
            raise NetworkLoadError(f'{spec}: {err}') from err
    if device is not None:
        for key, value in result.items():
            if isinstance(value, torch.nn.Module):
                result[key] = value.to(device)
    return result

#----------------------------------------------------------------------------
# QC network surgery lives in training/qc.py; these names stay importable from here for users' scripts.

_QC_NAMES = ('is_qc_network', 'convert_to_qc', 'extract_stock_generator', 'load_qc_network')

def __getattr__(name):
    if name in _QC_NAMES:
        from training import qc  # lazy: training.qc imports this module
        return getattr(qc, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')

#----------------------------------------------------------------------------

def save_network_pkl(data, path):
    """Pickle `{G, D, G_ema, ...}` atomically (modules deep-copied to CPU, eval mode, no grads)."""
    snapshot = dict()
    for key, value in data.items():
        if isinstance(value, torch.nn.Module):
            value = copy.deepcopy(value).eval().requires_grad_(False).cpu()
        snapshot[key] = value
    with dnnlib.util.atomic_write(path, 'wb') as f:
        pickle.dump(snapshot, f)

#----------------------------------------------------------------------------

@click.command()
@click.option('--source', help='Input network: path, URL, zoo name or init:PRESET', required=True, metavar='PATH')
@click.option('--dest', help='Output file (.pkl pickle, or .pt/.pth weights-only)', required=True, metavar='PATH')
@click.option('--format', 'fmt', help='Output format (default: from the --dest extension)', type=click.Choice(['auto', 'pkl', 'weights']), default='auto', show_default=True)
@click.option('--force-fp16', help='Rebuild with num_fp16_res=4, conv_clamp=256', is_flag=True)
def convert_network_pickle(source, dest, fmt, force_fp16):
    """Convert a network file to this project's classes (pickle) or to the weights-only format.

    \b
    Examples:
    python legacy.py --source ffhq256 --dest ffhq256.pt
    python legacy.py --source official-snapshot.pkl --dest converted.pkl
    """
    if fmt == 'auto':
        fmt = 'weights' if os.path.splitext(dest)[1].lower() in ['.pt', '.pth', '.safetensors'] else 'pkl'
    try:
        print(f'Loading "{source}"...')
        data = load_network(source, force_fp16=force_fp16)
    except (NetworkLoadError, OSError) as err:
        raise click.ClickException(str(err))
    print(f'Saving "{dest}" ({fmt})...')
    if fmt == 'weights':
        save_weights(data, dest)
    else:
        save_network_pkl(data, dest)
    print('Done.')

if __name__ == '__main__':
    convert_network_pickle()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
