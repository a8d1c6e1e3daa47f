"""Just-in-time build of the C++/CUDA plugins behind `torch_utils.ops`.

Builds go through `torch.utils.cpp_extension.load` (ninja + nvcc) into
`$TORCH_EXTENSIONS_DIR/<name>/<source md5>-<gpu tag>/`, so a changed source or header, or a
different GPU/arch list, gets its own build and a finished build is reused without recompiling.
Sources are staged in a temporary folder and moved into place with an atomic rename, so an
interrupted build never leaves a half-written cache entry that later runs hang on.

`get_plugin` raises on failure. `try_get_plugin` is what the ops call: it warns once, loudly,
naming the cause and the fix, remembers the failure so the build is never retried in the same
process, and returns None so the caller falls back to its reference implementation.
"""

import glob
import hashlib
import os
import re
import shutil
import traceback
import uuid
import warnings

import torch

#----------------------------------------------------------------------------

verbosity = 'brief'  # 'none', 'brief' or 'full'. Ranks other than 0 set 'none'.

_cached_plugins = dict()  # module_name -> loaded module
_failed_plugins = dict()  # module_name -> one-line reason

#----------------------------------------------------------------------------

def _candidate_cuda_homes():
    env = os.environ.get('CUDA_HOME') or os.environ.get('CUDA_PATH')
    if env:
        yield env
    for nvcc in filter(None, [shutil.which('nvcc')]):
        yield os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        yield os.path.dirname(os.path.dirname(nvcc))
    yield '/usr/local/cuda'
    yield from sorted(glob.glob('/usr/local/cuda-*'), reverse=True)

def find_cuda_home():
    """Return a CUDA toolkit root that has both `bin/nvcc` and `lib64/libcudart.so`, or None.

    nvcc is often symlinked into a folder (e.g. /usr/local/bin) whose parent has no CUDA
    libraries; PyTorch's own guess then fails at link time, so we look a little further.
    """
    for home in _candidate_cuda_homes():
        has_nvcc = os.path.isfile(os.path.join(home, 'bin', 'nvcc'))
        has_rt = any(os.path.exists(os.path.join(home, lib, 'libcudart.so')) for lib in ['lib64', 'lib'])
        if has_nvcc and has_rt:
            return home
    return None

def _gpu_tag():
    arch = os.environ.get('TORCH_CUDA_ARCH_LIST')
    if arch:
        tag = 'arch' + arch
    elif torch.cuda.is_available():
        tag = torch.cuda.get_device_name(torch.cuda.current_device())
    else:
        tag = 'nogpu'
    return re.sub('[^0-9a-zA-Z.+-]+', '-', tag)

def _build_root():
    import torch.utils.cpp_extension as cpp_ext
    return os.environ.get('TORCH_EXTENSIONS_DIR') or cpp_ext.get_default_build_root()

def _diagnose():
    """Return a one-line reason why a build cannot work here, or None if it might."""
    import torch.utils.cpp_extension as cpp_ext
    if torch.version.cuda is None:
        return f'this PyTorch build ({torch.__version__}) has no CUDA support; install a CUDA build of torch'
    if not cpp_ext.is_ninja_available():
        return 'ninja is not installed; run "pip install ninja"'
    if find_cuda_home() is None:
        return 'no CUDA toolkit found (need bin/nvcc and lib64/libcudart.so); set CUDA_HOME to the toolkit folder'
    return None

#----------------------------------------------------------------------------

def get_plugin(module_name, sources, headers=None, source_dir=None, **build_kwargs):
    """Compile (or reuse) and import a C++/CUDA extension module. Raises on failure.

    Args:
        module_name:  Python module name of the extension, e.g. 'upfirdn2d_plugin'.
        sources:      List of .cpp/.cu file names (relative to `source_dir`, or absolute).
        headers:      List of header file names that the sources include; part of the hash.
        source_dir:   Folder the file names are relative to.
        build_kwargs: Passed through to `torch.utils.cpp_extension.load`.
    """
    assert verbosity in ['none', 'brief', 'full']
    if headers is None:
        headers = []
    if source_dir is not None:
        sources = [os.path.join(source_dir, fname) for fname in sources]
        headers = [os.path.join(source_dir, fname) for fname in headers]

    if module_name in _cached_plugins:
        return _cached_plugins[module_name]

    if verbosity == 'full':
        print(f'Setting up PyTorch plugin "{module_name}"...')
    elif verbosity == 'brief':
        print(f'Setting up PyTorch plugin "{module_name}"... ', end='', flush=True)
    verbose_build = (verbosity == 'full')

    try:
        reason = _diagnose()
        if reason is not None:
            raise RuntimeError(reason)
        import torch.utils.cpp_extension as cpp_ext
        cuda_home = find_cuda_home()
        os.environ.setdefault('CUDA_HOME', cuda_home)
        cpp_ext.CUDA_HOME = cuda_home  # read by cpp_extension at build time; its import-time guess may be wrong
        if 'TORCH_CUDA_ARCH_LIST' not in os.environ and torch.cuda.is_available():
            os.environ['TORCH_CUDA_ARCH_LIST'] = ''  # target the local GPU only

        all_files = sorted(sources + headers)
        hash_md5 = hashlib.md5()
        for src in all_files:
            with open(src, 'rb') as f:
                hash_md5.update(f.read())
        hash_md5.update(torch.__version__.encode())
        build_dir = os.path.join(_build_root(), module_name, f'{hash_md5.hexdigest()}-{_gpu_tag()}')

        if not os.path.isdir(build_dir):
            tmp_dir = f'{build_dir}.tmp-{uuid.uuid4().hex}'
            os.makedirs(tmp_dir)
            for src in all_files:
                shutil.copyfile(src, os.path.join(tmp_dir, os.path.basename(src)))
            try:
                os.replace(tmp_dir, build_dir)
            except OSError:
                shutil.rmtree(tmp_dir, ignore_errors=True)  # another process won the race
                if not os.path.isdir(build_dir):
                    raise

        cached_sources = [os.path.join(build_dir, os.path.basename(fname)) for fname in sources]
        module = cpp_ext.load(name=module_name, build_directory=build_dir, verbose=verbose_build,
                              sources=cached_sources, **build_kwargs)
    except:
        if verbosity == 'brief':
            print('Failed!')
        raise

    if verbosity == 'full':
        print(f'Done setting up PyTorch plugin "{module_name}".')
    elif verbosity == 'brief':
        print('Done.')
    _cached_plugins[module_name] = module
    return module

#----------------------------------------------------------------------------

def try_get_plugin(module_name, **kwargs):
    """Like `get_plugin`, but on failure warn once and return None (the caller uses its reference path)."""
    if module_name in _cached_plugins:
        return _cached_plugins[module_name]
    if module_name in _failed_plugins:
        return None
    try:
        return get_plugin(module_name, **kwargs)
    except Exception as err:  # build errors come in many types (subprocess, OSError, ImportError, ...)
        # A failed compile ends with "ninja: build stopped"; the compiler's own error line says more.
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
        errors = [line for line in lines if re.search(r'\berror\b', line) and not line.startswith('Error building extension')]
        cause = errors[0] if errors else lines[-1] if lines else type(err).__name__
        _failed_plugins[module_name] = cause
        msg = (f'Failed to build CUDA kernels for "{module_name}": {cause}. '
               f'Falling back to the slower reference implementation (results are the same). '
               f'Set torch_utils.custom_ops.verbosity = "full" to see the build log; '
               f'if a stale build hangs or fails, delete {os.path.join(_build_root(), module_name)}.')
        if verbosity == 'full':
            msg += '\n' + traceback.format_exc()
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        return None

def plugin_failure(module_name):
    """The recorded one-line reason a plugin failed to build in this process, or None."""
    return _failed_plugins.get(module_name)

#----------------------------------------------------------------------------
