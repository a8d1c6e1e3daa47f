"""Model files: load network pickles of any origin, convert them, and the weights-only format.

`load_network_pkl(f)` returns a dict `{G, D, G_ema, augment_pipe, training_set_kwargs, ...}` from
  - this project's pickles,
  - official stylegan2-ada-pytorch / QC-StyleGAN pickles (their networks are rebuilt as this
    project's classes and filled by parameter name; their embedded source is not executed for
    the classes this project knows),
  - this project's weights-only files: `.pt` (state dicts + JSON constructor arguments, read with
    `torch.load(weights_only=True)`) and `.safetensors` (tensors + JSON metadata).

Pickles are read through an allow-list (`_SafeUnpickler`): tensors, storages, numpy arrays and
scalars, `dnnlib.EasyDict`, builtin containers and persistent objects of classes this project
knows. Anything else a pickle asks to call (`os.system`, `subprocess.run`, `builtins.eval`, ...) and
persistent classes this project does not know (whose embedded source would have to run) are refused
with `UntrustedPickleError`, unless the user opted in with `--trust-pickle` / `QCGAN_TRUST_PICKLE=1`.

`load_network(spec)` additionally resolves model-zoo names (`ffhq256`, `afhqcat`, ...), URLs,
local paths and `init:PRESET` (a freshly initialised network, for demos and tests).

CLI: `python legacy.py --source NET --dest out.pkl` re-saves as a pickle of this project's
classes; `--dest out.pt` (or `--format weights`) and `--dest out.safetensors` write the
weights-only formats.
"""

import copy
import io
import json
import os
import pickle
import struct
import zipfile

import click
import numpy as np
import torch

import dnnlib
import dnnlib.zoo
from torch_utils import misc
from torch_utils import persistence
from training import networks
from torch_utils import safe_pickle

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

class UntrustedPickleError(NetworkLoadError):
    """The file asks to run code that a network file does not need; loading it needs `--trust-pickle`."""

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
for _module in ['training.networks', 'training.augment']:  # pickles embedding exactly this source need no opt-in
    persistence.register_own_module(_module)

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

class _SafeUnpickler(safe_pickle.RestrictedUnpickler):
    """Unpickles what network files hold and refuses every other global (unless the user trusts the file).

    Persistent objects become `_PersistentStub`s (their embedded source is not executed here).
    """
    what = 'a network file'
    extra_globals = {
        ('torch_utils.persistence', '_reconstruct_persistent_obj'): _PersistentStub,
        ('dnnlib.tflib.network', 'Network'): _TFNetworkStub,
    }

_StubUnpickler = _SafeUnpickler  # former name

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
    ones (only with the user's opt-in) by executing the source embedded in the pickle."""
    if isinstance(obj, _PersistentStub):
        state = obj.state
        init_args = state.get('_init_args', ())
        init_kwargs = state.get('_init_kwargs', {})
        cls = _resolve_class(obj.class_name, init_args, init_kwargs)
        if cls is None:
            if not dnnlib.util.trust_pickle_enabled():
                raise UntrustedPickleError(f'refusing to load: the pickle holds a {obj.class_name!r} object whose class '
                                           f'this project does not know; loading it would run the Python source '
                                           f'embedded in the file; {dnnlib.util.TRUST_HINT}')
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
    if data[:4] == b'PK\x03\x04':
        if not _is_weights_file(data):
            raise NetworkLoadError('a zip file, not a network file (a dataset?); expected a network pickle, .pt or .safetensors file')
        result = _load_weights(data)
        if result is None:  # a torch file holding a plain state dict (e.g. released G_teacher_*.pth.tar)
            from training import released  # pylint: disable=import-outside-toplevel
            result = released.network_from_state_dict_file(data)
    elif _is_safetensors(data):
        result = _load_safetensors(data)
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
        obj = _SafeUnpickler(io.BytesIO(data)).load()
    except dnnlib.util.UntrustedFileError as err:
        raise UntrustedPickleError(str(err)) from err
    except (EOFError, pickle.UnpicklingError, ValueError, IndexError, KeyError, TypeError) as err:
        raise NetworkLoadError(f'not a readable network pickle ({type(err).__name__}: {err}); '
                               f'the file may be truncated: download or copy it again') from err
    except (ModuleNotFoundError, AttributeError) as err:
        raise NetworkLoadError(f'the pickle refers to code that is not available ({err}); '
                               f'it is not a StyleGAN2-ADA/QC-StyleGAN/qcgan network pickle') from err

    if isinstance(obj, tuple) and len(obj) == 3 and all(isinstance(net, _TFNetworkStub) for net in obj):
        from training import tf_convert  # pylint: disable=import-outside-toplevel
        try:
            return tf_convert.convert_tf_pickle(*obj)
        except tf_convert.TFConversionError as err:
            raise NetworkLoadError(f'TensorFlow pickle: {err}') from None
    if not isinstance(obj, dict):
        raise NetworkLoadError(f'unrecognised pickle content ({type(obj).__name__}); expected a dict with G, D and G_ema')
    try:
        return _materialize(obj)
    except dnnlib.util.UntrustedFileError as err:
        raise UntrustedPickleError(str(err)) from err

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
# Weights-only formats: nothing in the file is code.
#   .pt:          a torch zip file of plain dicts, strings and tensors (read with weights_only=True).
#   .safetensors: tensors named "<key>.<param>", plus the JSON metadata entry "qcgan" holding the format
#                 marker, each network's class and constructor arguments, and JSON-able extras.

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

def _split_for_weights(data):
    """`(modules, extras)`: per network its class, JSON constructor arguments and tensors; other JSON-able entries."""
    modules = dict()
    extras = dict()
    for key, value in data.items():
        if isinstance(value, torch.nn.Module):
            modules[key] = dict(
                class_name=_class_path(value),
                init_args_json=json.dumps(list(value.init_args), default=_json_default),
                init_kwargs_json=json.dumps(dict(value.init_kwargs), default=_json_default),
                state_dict={name: tensor.detach().cpu().clone().contiguous() for name, tensor in misc.named_params_and_buffers(value)},
            )
        elif value is not None:
            extras[key] = value
    return modules, extras

def save_weights(data, path):
    """Write `{G, D, G_ema, ...}` (networks and JSON-able extras) in a weights-only format, atomically:
    `.safetensors` if `path` ends so, else the torch zip (`.pt`) format."""
    if os.fspath(path).lower().endswith('.safetensors'):
        save_safetensors(data, path)
        return
    modules, extras = _split_for_weights(data)
    payload = dict(format=_WEIGHTS_FORMAT, format_version=_WEIGHTS_VERSION, modules=modules,
                   extras_json=json.dumps(extras, default=_json_default))
    with dnnlib.util.atomic_write(path, 'wb') as f:
        torch.save(payload, f)

def save_safetensors(data, path):
    """Write `{G, D, G_ema, ...}` as a `.safetensors` file (tensors + JSON metadata), atomically."""
    import safetensors.torch  # pylint: disable=import-outside-toplevel
    modules, extras = _split_for_weights(data)
    tensors = dict()
    meta_modules = dict()
    for key, entry in modules.items():
        if '.' in key:
            raise ValueError(f'cannot save entry "{key}" in .safetensors: entry names must not contain dots')
        for name, tensor in entry.pop('state_dict').items():
            tensors[f'{key}.{name}'] = tensor
        meta_modules[key] = entry
    meta = dict(format=_WEIGHTS_FORMAT, format_version=_WEIGHTS_VERSION, modules=meta_modules,
                extras_json=json.dumps(extras, default=_json_default))
    blob = safetensors.torch.save(tensors, metadata={'qcgan': json.dumps(meta)})
    with dnnlib.util.atomic_write(path, 'wb') as f:
        f.write(blob)

def _is_weights_file(data):
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return any(name.endswith('data.pkl') for name in zf.namelist())
    except zipfile.BadZipFile:
        return False

def _safetensors_header(data):
    """The JSON header of a .safetensors blob, or None if `data` is not one."""
    if len(data) < 10 or data[8:9] != b'{':
        return None
    (size,) = struct.unpack('<Q', data[:8])
    if size > len(data) - 8:
        return None
    try:
        header = json.loads(data[8:8 + size].decode('utf-8'))
    except (UnicodeDecodeError, ValueError):
        return None
    return header if isinstance(header, dict) else None

def _is_safetensors(data):
    return _safetensors_header(data) is not None

def _build_networks(result, modules, tensors_of):
    for key, entry in modules.items():
        class_name = str(entry['class_name']).rsplit('.', 1)[-1]
        init_args = json.loads(entry['init_args_json'])
        init_kwargs = json.loads(entry['init_kwargs_json'])
        cls = _resolve_class(class_name, init_args, init_kwargs)
        if cls is None:
            raise NetworkLoadError(f'weights file entry "{key}" has unknown class {entry["class_name"]}')
        module = cls(*init_args, **init_kwargs)
        _load_tensors(module, tensors_of(key), key)
        result[key] = module.eval().requires_grad_(False)
    return result

def _extras(extras_json):
    result = json.loads(extras_json or '{}')
    if isinstance(result.get('training_set_kwargs'), dict):
        result['training_set_kwargs'] = dnnlib.EasyDict(result['training_set_kwargs'])
    return result

def _load_weights(data):
    try:
        payload = misc.load_weights_only(io.BytesIO(data))  # quiet: torch's loader notes never reach the user
    except ValueError as err:
        if 'refers to code' in str(err):
            raise UntrustedPickleError(f'refusing to load: {err}') from None
        raise NetworkLoadError(f'not a readable weights file ({err}); the file may be truncated: download or copy it again') from None
    if isinstance(payload, dict) and payload.get('format') is None and payload and \
            all(isinstance(k, str) and torch.is_tensor(v) for k, v in payload.items()):
        return None  # plain state dict: the caller converts it
    if not isinstance(payload, dict) or payload.get('format') != _WEIGHTS_FORMAT:
        raise NetworkLoadError('this torch file is not a qcgan weights-only file (no "format" marker)')
    if payload.get('format_version', 0) > _WEIGHTS_VERSION:
        raise NetworkLoadError(f'weights file version {payload["format_version"]} is newer than this code '
                               f'(reads {_WEIGHTS_VERSION}); update qcgan')
    result = _extras(payload.get('extras_json'))
    return _build_networks(result, payload['modules'], lambda key: payload['modules'][key]['state_dict'])

def _load_safetensors(data):
    import safetensors.torch  # pylint: disable=import-outside-toplevel
    header = _safetensors_header(data)
    try:
        meta = json.loads((header.get('__metadata__') or {}).get('qcgan', ''))
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get('format') != _WEIGHTS_FORMAT:
        raise NetworkLoadError('this .safetensors file holds no qcgan network metadata; write it with '
                               'legacy.py --dest NAME.safetensors')
    if meta.get('format_version', 0) > _WEIGHTS_VERSION:
        raise NetworkLoadError(f'weights file version {meta["format_version"]} is newer than this code '
                               f'(reads {_WEIGHTS_VERSION}); update qcgan')
    try:
        tensors = safetensors.torch.load(data)
    except Exception as err:  # pylint: disable=broad-except
        raise NetworkLoadError(f'not a readable .safetensors file ({type(err).__name__}: {err}); '
                               f'the file may be truncated: download or copy it again') from err
    def tensors_of(key):
        prefix = key + '.'
        return {name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)}
    return _build_networks(_extras(meta.get('extras_json')), meta['modules'], tensors_of)

#----------------------------------------------------------------------------

def check_network_file(spec, what='--network'):
    """Cheap check, without building anything or running code, that `spec` (a resolved path or URL)
    looks like a network file this loader reads: a pickle holding a G_ema entry and only globals it
    accepts, a qcgan weights file or a qcgan .safetensors file. URLs are not fetched (they are checked
    when loaded). Raises NetworkLoadError / UntrustedPickleError with one line."""
    spec = str(spec)
    if dnnlib.util.is_url(spec) and not spec.lower().startswith('file://'):
        return
    path = dnnlib.util._file_url_to_path(spec) if spec.lower().startswith('file://') else spec  # pylint: disable=protected-access
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as err:
        raise NetworkLoadError(f'{what} "{spec}": cannot read it ({dnnlib.util.describe_os_error(err)})') from None
    if len(data) == 0:
        raise NetworkLoadError(f'{what} "{spec}": the file is empty')
    if data[:4] == b'PK\x03\x04':
        if not _is_weights_file(data):
            raise NetworkLoadError(f'{what} "{spec}": a zip file, not a network file (a dataset?)')
        return
    if _is_safetensors(data):
        return
    if data[:1] != b'\x80':
        raise NetworkLoadError(f'{what} "{spec}": not a network file (neither a pickle, a .pt weights file nor a .safetensors file)')
    try:
        obj = _SafeUnpickler(io.BytesIO(data)).load()  # stubs only: no network is built, no embedded source runs
    except dnnlib.util.UntrustedFileError as err:
        raise UntrustedPickleError(f'{what} "{spec}": {err}') from None
    except Exception as err:  # pylint: disable=broad-except
        reason = ' '.join(str(err).split())[:200]
        raise NetworkLoadError(f'{what} "{spec}": not a readable network pickle ({type(err).__name__}: {reason}); '
                               f'the file may be truncated: download or copy it again') from None
    if not isinstance(obj, dict) or 'G_ema' not in obj:
        raise NetworkLoadError(f'{what} "{spec}": this pickle holds no G_ema network; is it a network snapshot?')
    unknown = sorted(_unknown_classes(obj))
    if unknown and not dnnlib.util.trust_pickle_enabled():
        raise UntrustedPickleError(f'{what} "{spec}": refusing to load: the pickle holds {", ".join(repr(c) for c in unknown)} '
                                   f'objects whose class this project does not know; loading them would run the Python '
                                   f'source embedded in the file; {dnnlib.util.TRUST_HINT}')

def _unknown_classes(obj, seen=None):
    """Class names of the persistent stubs in `obj` that this project cannot rebuild itself."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return set()
    seen.add(id(obj))
    found = set()
    if isinstance(obj, _PersistentStub):
        state = obj.state if isinstance(obj.state, dict) else {}
        if _resolve_class(obj.class_name, state.get('_init_args', ()), state.get('_init_kwargs', {})) is None:
            found.add(str(obj.class_name))
        children = state.values()
    elif isinstance(obj, dict):
        children = obj.values()
    elif isinstance(obj, (list, tuple)):
        children = obj
    elif isinstance(obj, torch.nn.Module):
        children = obj.__dict__.values()
    else:
        children = ()
    for child in children:
        found |= _unknown_classes(child, seen)
    return found

def resolve_network_spec(spec):
    """Map a zoo name to its URL; pass paths and URLs through. Raises NetworkLoadError for unknown names."""
    spec = str(spec)
    if spec in MODEL_ZOO:
        return MODEL_ZOO[spec]
    if spec in dnnlib.zoo.MANUAL_FILES:
        try:
            return dnnlib.zoo.resolve(spec)
        except dnnlib.zoo.ManualDownloadError as err:
            raise NetworkLoadError(str(err)) from None
    if dnnlib.util.is_url(spec, allow_file_urls=True) or os.path.exists(spec):
        return spec
    looks_like_name = (os.sep not in spec and '/' not in spec and '.' not in spec)
    if looks_like_name:
        raise NetworkLoadError(f'unknown network "{spec}": not a file, URL or zoo name; '
                               f'zoo names: {", ".join(list(MODEL_ZOO) + dnnlib.zoo.names("network") + dnnlib.zoo.names("teacher"))} '
                               f'(or init:{"|".join(INIT_PRESETS)})')
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
            raise type(err)(f'{spec}: {err}') from err
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
@click.option('--dest', help='Output file (.pkl pickle, or .pt/.pth/.safetensors weights-only)', required=True, metavar='PATH')
@click.option('--format', 'fmt', help='Output format (default: from the --dest extension)', type=click.Choice(['auto', 'pkl', 'weights']), default='auto', show_default=True)
@click.option('--force-fp16', help='Rebuild with num_fp16_res=4, conv_clamp=256', is_flag=True)
@click.option('--trust-pickle', help='Allow code from --source to run (custom classes); only for files you trust', is_flag=True, expose_value=False, callback=dnnlib.util.click_trust_pickle)
def convert_network_pickle(source, dest, fmt, force_fp16):
    """Convert a network file to this project's classes (pickle) or to the weights-only format.

    \b
    Examples:
    python legacy.py --source ffhq256 --dest ffhq256.pt
    python legacy.py --source ffhq256 --dest ffhq256.safetensors
    python legacy.py --source official-snapshot.pkl --dest converted.pkl
    """
    try:
        dnnlib.util.check_output_path(dest, '--dest')
    except OSError as err:
        raise click.ClickException(err.strerror or str(err))
    if fmt == 'auto':
        fmt = 'weights' if os.path.splitext(dest)[1].lower() in ['.pt', '.pth', '.safetensors'] else 'pkl'
    try:
        print(f'Loading "{source}"...')
        data = load_network(source, force_fp16=force_fp16)
    except (NetworkLoadError, OSError) as err:
        raise click.ClickException(str(err))
    print(f'Saving "{dest}" ({fmt})...')
    try:
        if fmt == 'weights':
            save_weights(data, dest)
        else:
            save_network_pkl(data, dest)
    except OSError as err:
        raise click.ClickException(f'cannot write --dest "{dest}": {dnnlib.util.describe_os_error(err)}')
    except ValueError as err:
        raise click.ClickException(f'cannot write --dest "{dest}": {err}')
    print('Done.')

if __name__ == '__main__':
    convert_network_pickle()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
