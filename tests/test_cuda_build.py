"""Build tests for the CUDA plugins (upfirdn2d, bias_act) and the plugin builder's failure path.

These need no GPU: nvcc compiles for an explicit architecture (TORCH_CUDA_ARCH_LIST=9.0) and
the resulting modules import fine without a device. Only the argument checks can be exercised
here (they run before any CUDA call); numerical checks live in test_cuda_ops.py.

Each build goes to a private TORCH_EXTENSIONS_DIR, and the builder's in-process caches are
swapped out for the duration, so an arch-9.0 module built here is never handed to later tests
that want a module for the local GPU.
"""

import os
import time
import warnings

import pytest
import torch

import torch_utils.ops
from torch_utils import custom_ops

pytestmark = pytest.mark.slow

OPS_DIR = os.path.dirname(torch_utils.ops.__file__)
CUDA_CFLAGS = ['--use_fast_math', '--allow-unsupported-compiler']

# Same arguments as the wrappers in torch_utils/ops/{upfirdn2d,bias_act}.py pass.
PLUGINS = {
    'upfirdn2d': dict(module_name='upfirdn2d_plugin', sources=['upfirdn2d.cpp', 'upfirdn2d.cu'],
                      headers=['upfirdn2d.h'], source_dir=OPS_DIR, extra_cuda_cflags=CUDA_CFLAGS),
    'bias_act':  dict(module_name='bias_act_plugin', sources=['bias_act.cpp', 'bias_act.cu'],
                      headers=['bias_act.h'], source_dir=OPS_DIR, extra_cuda_cflags=CUDA_CFLAGS),
}

def _missing_toolkit_reason():
    """Why a CUDA build is impossible on this machine, or None. Only a truly absent toolkit skips."""
    if torch.version.cuda is None:
        return f'PyTorch {torch.__version__} is a CPU-only build, so CUDA extensions cannot be built'
    if custom_ops.find_cuda_home() is None:
        return 'no CUDA toolkit found (need bin/nvcc and lib64/libcudart.so; set CUDA_HOME)'
    return None

needs_toolkit = pytest.mark.skipif(_missing_toolkit_reason() is not None, reason=str(_missing_toolkit_reason()))

#----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def build_root(tmp_path_factory):
    """A private extension cache and fresh builder caches, shared by the build tests of this module."""
    root = tmp_path_factory.mktemp('torch_extensions')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('TORCH_EXTENSIONS_DIR', str(root))
        mp.setenv('TORCH_CUDA_ARCH_LIST', '9.0')  # no GPU to detect the arch from; 9.0 = Hopper
        mp.setattr(custom_ops, '_cached_plugins', dict())
        mp.setattr(custom_ops, '_failed_plugins', dict())
        yield root

@pytest.fixture(scope='module')
def plugins(build_root):
    """Build both plugins once (about 20-40 s each on 2 cores) and return {name: module}."""
    modules = {}
    for name, kwargs in PLUGINS.items():
        start = time.time()
        modules[name] = custom_ops.get_plugin(**kwargs)
        print(f'built {kwargs["module_name"]} in {time.time() - start:.1f} s')
    return modules

#----------------------------------------------------------------------------

@needs_toolkit
def test_upfirdn2d_plugin_builds(plugins):
    module = plugins['upfirdn2d']
    assert callable(module.upfirdn2d)
    doc = module.upfirdn2d.__doc__
    for arg in ['x', 'f', 'upx', 'upy', 'downx', 'downy', 'padx0', 'padx1', 'pady0', 'pady1', 'flip', 'gain']:
        assert f'{arg}:' in doc, f'argument {arg} missing from the binding: {doc}'

@needs_toolkit
def test_bias_act_plugin_builds(plugins):
    module = plugins['bias_act']
    assert callable(module.bias_act)
    doc = module.bias_act.__doc__
    for arg in ['x', 'b', 'xref', 'yref', 'dy', 'grad', 'dim', 'act', 'alpha', 'gain', 'clamp']:
        assert f'{arg}:' in doc, f'argument {arg} missing from the binding: {doc}'

@needs_toolkit
def test_plugins_reject_cpu_tensors(plugins):
    # The argument checks run before any CUDA call, so they work without a GPU.
    x = torch.zeros([1, 1, 4, 4])
    f = torch.ones([2, 2])
    with pytest.raises(RuntimeError, match='CUDA device'):
        plugins['upfirdn2d'].upfirdn2d(x, f, 1, 1, 1, 1, 0, 0, 0, 0, False, 1.0)
    null = torch.empty([0])
    with pytest.raises(RuntimeError, match='CUDA device'):
        plugins['bias_act'].bias_act(x, null, null, null, null, 0, 1, 3, 0.2, 1.0, -1.0)

@needs_toolkit
def test_finished_build_is_reused(plugins, build_root):
    # A second process (simulated by clearing the in-memory cache) must load the cached
    # build: no new build folder, the shared object untouched.
    kwargs = PLUGINS['upfirdn2d']
    plugin_dir = build_root / kwargs['module_name']
    builds = sorted(p for p in plugin_dir.iterdir() if p.is_dir())
    assert len(builds) == 1, builds
    so_files = list(builds[0].glob('*.so')) + list(builds[0].glob('*.pyd'))
    assert len(so_files) == 1, so_files
    mtime = so_files[0].stat().st_mtime_ns

    custom_ops._cached_plugins.pop(kwargs['module_name'])
    module = custom_ops.get_plugin(**kwargs)
    assert callable(module.upfirdn2d)
    assert sorted(p for p in plugin_dir.iterdir() if p.is_dir()) == builds
    assert so_files[0].stat().st_mtime_ns == mtime

#----------------------------------------------------------------------------

def test_try_get_plugin_warns_once_on_broken_source(tmp_path, monkeypatch):
    # Works with or without a toolkit: either nvcc rejects the source or the diagnosis
    # reports the missing toolkit; both must end in one warning and a None.
    monkeypatch.setenv('TORCH_EXTENSIONS_DIR', str(tmp_path / 'ext'))
    monkeypatch.setenv('TORCH_CUDA_ARCH_LIST', '9.0')
    monkeypatch.setattr(custom_ops, '_cached_plugins', dict())
    monkeypatch.setattr(custom_ops, '_failed_plugins', dict())
    src_dir = tmp_path / 'src'
    src_dir.mkdir()
    (src_dir / 'broken.cu').write_text('this is not valid CUDA;\n__global__ void k() { undeclared_identifier = 1; }\n')
    name = 'qcgan_broken_test_plugin'
    kwargs = dict(sources=['broken.cu'], source_dir=str(src_dir), extra_cuda_cflags=CUDA_CFLAGS)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')  # so a repeated warning would not be swallowed by the default filter
        assert custom_ops.try_get_plugin(name, **kwargs) is None
    runtime_warnings = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime_warnings) == 1, [str(w.message) for w in caught]
    message = str(runtime_warnings[0].message)
    cause = custom_ops.plugin_failure(name)
    assert cause, 'the failure reason was not recorded'
    assert name in message
    assert cause in message, f'warning does not name the cause {cause!r}: {message}'
    if _missing_toolkit_reason() is None:
        # nvcc ran and rejected the source: the warning must quote the compiler's error (file and
        # message), not just a generic "build failed" line, so users can act on it.
        assert 'broken.cu' in cause and 'error' in cause, f'cause is not the compiler error: {cause!r}'

    # The second call must neither build again nor warn again.
    def no_rebuild(*args, **kw):
        raise AssertionError('try_get_plugin retried a build that already failed')
    monkeypatch.setattr(custom_ops, 'get_plugin', no_rebuild)
    start = time.time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert custom_ops.try_get_plugin(name, **kwargs) is None
    assert time.time() - start < 1.0
    assert [str(w.message) for w in caught] == []

#----------------------------------------------------------------------------
