"""Unpickling through an allow-list: the data types that model and statistics files legitimately hold.

A pickle names the callables that rebuild its objects (`module.name` globals), and a plain
`pickle.load` calls whatever a file names: `os.system`, `subprocess.run`, `builtins.eval`, ... .
`RestrictedUnpickler` resolves only the globals that tensors, storages, numpy arrays and scalars,
`dnnlib.EasyDict` and builtin containers need, plus a subclass's `extra_globals`; any other global
raises `dnnlib.util.UntrustedFileError` naming it, unless the user opted in to trusting the files
they load (`--trust-pickle` or `QCGAN_TRUST_PICKLE=1`, see `dnnlib.util.trust_pickle_enabled`).

Storages inside pickles are serialised by torch as bytes that `torch.storage._load_from_bytes`
reads with `weights_only=False`; here they are read with `weights_only=True` instead.
"""

import collections
import importlib
import io
import pickle
import sys
import warnings

import numpy as np
import torch

import dnnlib

#----------------------------------------------------------------------------

def _storage_from_bytes(data):
    """Replacement for `torch.storage._load_from_bytes` (which unpickles with `weights_only=False`)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # torch's loader notes ("Detected pickle protocol 4", ...)
        return torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)

def _multiarray():
    try:
        from numpy._core import multiarray  # pylint: disable=import-outside-toplevel # numpy >= 2
    except ImportError:  # pragma: no cover
        from numpy.core import multiarray  # pylint: disable=import-outside-toplevel
    return multiarray

_SAFE_GLOBALS = {
    ('collections', 'OrderedDict'): lambda: collections.OrderedDict,
    ('builtins', 'set'): lambda: set,
    ('builtins', 'frozenset'): lambda: frozenset,
    ('builtins', 'slice'): lambda: slice,
    ('builtins', 'range'): lambda: range,
    ('builtins', 'complex'): lambda: complex,
    ('builtins', 'bytearray'): lambda: bytearray,
    ('_codecs', 'encode'): lambda: __import__('_codecs').encode,  # bytes in protocol-2 pickles
    ('copyreg', '_reconstructor'): lambda: __import__('copyreg')._reconstructor,  # protocol 0/1 objects (classes are checked too)
    ('dnnlib.util', 'EasyDict'): lambda: dnnlib.EasyDict,
    ('dnnlib', 'EasyDict'): lambda: dnnlib.EasyDict,
    ('torch._utils', '_rebuild_tensor'): lambda: torch._utils._rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): lambda: torch._utils._rebuild_tensor_v2,
    ('torch._utils', '_rebuild_parameter'): lambda: torch._utils._rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): lambda: torch._utils._rebuild_parameter_with_state,
    ('torch._utils', '_rebuild_device_tensor_from_numpy'): lambda: torch._utils._rebuild_device_tensor_from_numpy,
    ('torch._tensor', '_rebuild_from_type_v2'): lambda: torch._tensor._rebuild_from_type_v2,
    ('torch.storage', '_load_from_bytes'): lambda: _storage_from_bytes,
    ('torch', 'Size'): lambda: torch.Size,
    ('torch', 'device'): lambda: torch.device,
    ('torch', 'Tensor'): lambda: torch.Tensor,
    ('torch.nn.parameter', 'Parameter'): lambda: torch.nn.Parameter,
    ('numpy', 'ndarray'): lambda: np.ndarray,
    ('numpy', 'dtype'): lambda: np.dtype,
    ('numpy.core.multiarray', '_reconstruct'): lambda: _multiarray()._reconstruct,
    ('numpy._core.multiarray', '_reconstruct'): lambda: _multiarray()._reconstruct,
    ('numpy.core.multiarray', 'scalar'): lambda: _multiarray().scalar,
    ('numpy._core.multiarray', 'scalar'): lambda: _multiarray().scalar,
}

def safe_global(module, name):
    """The object the pickle global `module.name` stands for if data files may use it, else None."""
    module = {'__builtin__': 'builtins', 'copy_reg': 'copyreg'}.get(module, module)
    getter = _SAFE_GLOBALS.get((module, name))
    if getter is not None:
        return getter()
    if module == 'torch':  # dtypes (torch.float32, ...) and typed storages (torch.FloatStorage, ...)
        obj = getattr(torch, name, None)
        if isinstance(obj, torch.dtype) or (isinstance(obj, type) and name.endswith('Storage')):
            return obj
    if module == 'numpy.dtypes' and name.endswith('DType'):
        return getattr(np.dtypes, name, None)
    if module.startswith('torch.nn.modules.'):  # stock layers (Sequential, Conv2d, LeakyReLU, ...) inside networks
        obj = getattr(sys.modules.get(module), name, None) if module in sys.modules else None
        if obj is None:
            try:
                obj = getattr(importlib.import_module(module), name, None)
            except ImportError:
                obj = None
        if isinstance(obj, type) and issubclass(obj, torch.nn.Module) and obj.__module__ == module:
            return obj  # rebuilt with __new__ and a state dict: no constructor or file code runs
    return None

#----------------------------------------------------------------------------

class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves only `safe_global`s and `extra_globals` (a dict
    `(module, name) -> object`), everything else only with the user's opt-in."""
    extra_globals = {}
    what = 'this file'

    def find_class(self, module, name):
        obj = self.extra_globals.get((module, name))
        if obj is None:
            obj = safe_global(module, name)
        if obj is not None:
            return obj
        if dnnlib.util.trust_pickle_enabled():
            return super().find_class(module, name)
        raise dnnlib.util.UntrustedFileError(f'refusing to load: the pickle calls {module}.{name}, which {self.what} '
                                             f'does not need (it may run arbitrary code); {dnnlib.util.TRUST_HINT}')

def restricted_loads(data, what='this file'):
    """`pickle.loads` through `RestrictedUnpickler`."""
    unpickler = RestrictedUnpickler(io.BytesIO(data))
    unpickler.what = what
    return unpickler.load()

#----------------------------------------------------------------------------
