"""Pickles that carry their own source code.

A class decorated with `@persistent_class` pickles as the full source of its defining module plus
the instance state. Unpickling executes that source in a private module and restores the state,
so a network pickle keeps working after `training/networks.py` changes or when `training/` is
not importable at all. Only `dnnlib` and `torch_utils` must be importable, under these names.

The pickle format (`meta` dict with keys type, version, module_src, class_name, state and
version 6) is the one official stylegan2-ada-pytorch and QC-StyleGAN pickles use, so those
load through this module too.

Unpickling executes code stored in the file, so source this process did not write itself is
executed only when the user opted in (`--trust-pickle` or `QCGAN_TRUST_PICKLE=1`). Use
`legacy.load_network_pkl`, which rebuilds known classes from this project's code without
executing anything, or the weights-only formats (`.pt`, `.safetensors`).
"""

import copy
import inspect
import io
import pickle
import sys
import types
import uuid

import dnnlib

#----------------------------------------------------------------------------

_version = 6                  # Format version written into pickles; must match the official one.
_decorators = set()           # Every class returned by persistent_class().
_import_hooks = []            # Callables meta -> meta, run before a pickled class is rebuilt.
_module_to_src_dict = dict()  # Module object -> source string (for modules created from pickles).
_src_to_module_dict = dict()  # Source string -> module object (so each source is executed once).

#----------------------------------------------------------------------------

def persistent_class(orig_class):
    """Class decorator: instances pickle together with the source of the defining module.

    The decorated class records the positional and keyword arguments of its constructor
    (`init_args`, `init_kwargs`), so an instance can be rebuilt with newer code:
    `new = type(old)(*old.init_args, **old.init_kwargs)` followed by
    `misc.copy_params_and_buffers(old, new)`.

    Constructor arguments must be pickleable plain data (numbers, strings, lists, dicts,
    numpy arrays, tensors or other persistent objects); anything else raises at construction.
    """
    assert isinstance(orig_class, type)
    if is_persistent(orig_class):
        return orig_class

    assert orig_class.__module__ in sys.modules
    orig_module = sys.modules[orig_class.__module__]
    orig_module_src = _module_to_src(orig_module)

    class Decorator(orig_class):
        _orig_module_src = orig_module_src
        _orig_class_name = orig_class.__name__

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._init_args = copy.deepcopy(args)
            self._init_kwargs = copy.deepcopy(kwargs)
            assert orig_class.__name__ in orig_module.__dict__
            _check_pickleable(self.__reduce__())

        @property
        def init_args(self):
            return copy.deepcopy(self._init_args)

        @property
        def init_kwargs(self):
            return dnnlib.EasyDict(copy.deepcopy(self._init_kwargs))

        def __reduce__(self):
            fields = list(super().__reduce__())
            fields += [None] * max(3 - len(fields), 0)
            if fields[0] is not _reconstruct_persistent_obj:
                meta = dict(type='class', version=_version, module_src=self._orig_module_src,
                            class_name=self._orig_class_name, state=fields[2])
                fields[0] = _reconstruct_persistent_obj  # Rebuilt by this function on load...
                fields[1] = (meta,)                      # ...called with the meta dict alone...
                fields[2] = None                         # ...which already carries the state.
            return tuple(fields)

    Decorator.__name__ = orig_class.__name__
    Decorator.__qualname__ = orig_class.__qualname__
    Decorator.__module__ = orig_class.__module__
    Decorator.__doc__ = orig_class.__doc__
    _decorators.add(Decorator)
    return Decorator

#----------------------------------------------------------------------------

def is_persistent(obj):
    """True if `obj` is a persistent class or an instance of one."""
    try:
        if obj in _decorators:
            return True
    except TypeError:  # unhashable
        pass
    return type(obj) in _decorators

#----------------------------------------------------------------------------

def import_hook(hook):
    """Register `hook(meta) -> meta` to patch pickled source or state before it is used.

    `meta` is an EasyDict with `type`, `version`, `module_src`, `class_name` and `state`.
    Hooks run in registration order on every persistent object that is unpickled.
    """
    assert callable(hook)
    _import_hooks.append(hook)

#----------------------------------------------------------------------------

def _reconstruct_persistent_obj(meta):
    """Unpickle hook: rebuild one persistent object from its `meta` dict."""
    meta = dnnlib.EasyDict(meta)
    meta.state = dnnlib.EasyDict(meta.state)
    for hook in _import_hooks:
        meta = hook(meta)
        assert meta is not None, 'persistence.import_hook functions must return meta'

    if meta.version != _version:
        raise pickle.UnpicklingError(f'Unsupported persistent object version {meta.version} '
                                     f'(this code reads version {_version})')
    if meta.type != 'class':
        raise pickle.UnpicklingError(f'Unsupported persistent object type "{meta.type}"')

    module = _src_to_module(meta.module_src)
    orig_class = module.__dict__[meta.class_name]
    decorator_class = persistent_class(orig_class)
    obj = decorator_class.__new__(decorator_class)

    setstate = getattr(obj, '__setstate__', None)
    if callable(setstate):
        setstate(meta.state)
    else:
        obj.__dict__.update(meta.state)
    return obj

#----------------------------------------------------------------------------

def _module_to_src(module):
    src = _module_to_src_dict.get(module, None)
    if src is None:
        src = inspect.getsource(module)
        _module_to_src_dict[module] = src
        _src_to_module_dict[src] = module
    return src

# Modules (by name) of the application that define persistent classes, registered by the application
# (legacy.py). A pickle whose embedded source is exactly one of them (its own snapshots, networks sent to
# spawned worker processes) needs no execution and no opt-in: that module is imported and used.
_own_modules = []

def register_own_module(module_name):
    """Declare `module_name` as this application's own code: embedded source identical to its source is trusted."""
    if module_name not in _own_modules:
        _own_modules.append(module_name)

def _own_module_with_source(src):
    import importlib  # pylint: disable=import-outside-toplevel
    for name in _own_modules:
        try:
            importlib.import_module(name)  # decorating its classes registers its source
        except ImportError:
            continue
        module = _src_to_module_dict.get(src, None)
        if module is not None:
            return module
    return None

def _src_to_module(src):
    module = _src_to_module_dict.get(src, None)
    if module is None:
        module = _own_module_with_source(src)
    if module is None:
        if not dnnlib.util.trust_pickle_enabled():
            first = next((line.strip() for line in src.splitlines() if line.strip()), '')[:80]
            raise dnnlib.util.UntrustedFileError(
                f'refusing to execute Python source embedded in a pickle (it starts "{first}"); load network '
                f'files with legacy.load_network_pkl, or {dnnlib.util.TRUST_HINT}')
        module_name = '_imported_module_' + uuid.uuid4().hex
        module = types.ModuleType(module_name)
        sys.modules[module_name] = module
        _module_to_src_dict[module] = src
        _src_to_module_dict[src] = module
        exec(src, module.__dict__)  # pylint: disable=exec-used
    return module

#----------------------------------------------------------------------------

def _check_pickleable(obj):
    """Raise a clear error if `obj` (an object's reduce tuple) holds something that cannot be pickled.

    Persistent objects and tensors are accepted as they are; everything else must be plain data.
    """
    import numpy as np
    import torch

    def recurse(obj):
        if isinstance(obj, (list, tuple, set)):
            return [recurse(x) for x in obj]
        if isinstance(obj, dict):
            return [[recurse(x), recurse(y)] for x, y in obj.items()]
        if isinstance(obj, (str, int, float, bool, bytes, bytearray)) or obj is None:
            return None
        if f'{type(obj).__module__}.{type(obj).__name__}' in ['numpy.ndarray', 'torch.Tensor', 'torch.nn.parameter.Parameter']:
            return None
        if isinstance(obj, (np.ndarray, np.generic, torch.Tensor, torch.dtype, torch.device)):
            return None
        if is_persistent(obj):
            return None
        return obj

    try:
        with io.BytesIO() as f:
            pickle.dump(recurse(obj), f)
    except Exception as err:
        raise TypeError(f'Persistent class arguments must be pickleable plain data: {err}') from err

#----------------------------------------------------------------------------
