"""Small helpers used across networks, training and inversion.

`constant`, `assert_shape`, `profiled_function`, `suppress_tracer_warnings`, `nan_to_num`,
`copy_params_and_buffers`, `ddp_sync`, `check_ddp_consistency` and `print_module_summary`
keep the signatures that pickled network code calls. `compiled_forward` runs a module through
`torch.compile` without changing (or pickling) the module; `frozen_forward` compiles an inference
snapshot of one module (inductor freezing, channels-last).
"""

import contextlib
import copy
import functools
import itertools
import re
import types
import warnings

import numpy as np
import torch

import dnnlib

#----------------------------------------------------------------------------

def is_qc(G):
    """True if `G` (a Generator, SynthesisNetwork, or a network dict's generator) takes a quality code q.

    The one test of "is this a QC-StyleGAN network": `G.q_dim > 0`; None and plain StyleGAN2
    networks give False.
    """
    return int(getattr(G, 'q_dim', 0) or 0) > 0

#----------------------------------------------------------------------------
# Cached construction of constant tensors. Avoids a host-to-device copy on every call
# for the small filter/shape constants that networks create inside forward().

_constant_cache = dict()

def constant(value, shape=None, dtype=None, device=None, memory_format=None):
    value = np.asarray(value)
    if shape is not None:
        shape = tuple(shape)
    if dtype is None:
        dtype = torch.get_default_dtype()
    if device is None:
        device = torch.device('cpu')
    if memory_format is None:
        memory_format = torch.contiguous_format

    key = (value.shape, value.dtype, value.tobytes(), shape, dtype, device, memory_format)
    tensor = _constant_cache.get(key, None)
    if tensor is None:
        tensor = torch.as_tensor(value.copy(), dtype=dtype, device=device)
        if shape is not None:
            tensor, _ = torch.broadcast_tensors(tensor, torch.empty(shape))
        tensor = tensor.contiguous(memory_format=memory_format)
        _constant_cache[key] = tensor
    return tensor

#----------------------------------------------------------------------------
# torch.compile as an option. One compiled function per module class (and options), taking the
# module as its first argument: the module itself is untouched, so it still pickles, deep-copies
# and trains as before, and copies of it (e.g. PTI's tuned generator) reuse the compiled code.

_compiled_forwards = dict()

def compiled_forward(module, **compile_kwargs):
    """Callable equal to `module(*args, **kwargs)`, run through `torch.compile(type(module).forward)`.

    The first call per input shape compiles (seconds to minutes); later calls reuse the code.
    Forward hooks of `module` are not called.
    """
    key = (type(module), tuple(sorted(compile_kwargs.items())))
    fn = _compiled_forwards.get(key)
    if fn is None:
        # One code object serves every instance, W/W+/W++ latents, grad modes and batch sizes:
        # allow more specialisations than the default 8 before dynamo falls back to eager.
        import torch._dynamo  # pylint: disable=import-outside-toplevel
        torch._dynamo.config.recompile_limit = max(getattr(torch._dynamo.config, 'recompile_limit', 8), 64)
        fn = _compiled_forwards[key] = torch.compile(type(module).forward, **compile_kwargs)
    return functools.partial(fn, module)

_frozen_ids = itertools.count()

def _call_module(module, args, kwargs):
    return module(*args, **kwargs)

def frozen_forward(module, channels_last=True, **forward_kwargs):
    """Inference callable equal to `module(*args, **forward_kwargs, **kwargs)` within float
    tolerance, compiled from a snapshot of `module` with inductor freezing.

    The snapshot is a deep copy taken now (channels-last weights with `channels_last`); its
    weights and buffers become constants of the compiled code, so the CPU convolutions get
    prepacked weights and folded weight arithmetic. Later changes to `module` are not seen: build
    a new one. Calls run under `torch.no_grad()`; the first call per input shape compiles. Each
    snapshot has its own compiled code (nothing is shared with `compiled_forward` or with other
    snapshots). For the StyleGAN2 networks pass `fused_modconv=False`: the modulation then scales
    activations and the convolution weight is a true constant (`generate.py --fast`; measured as
    the `bench/speed.py` variant `ref-fp32-unf-cl-compile-freeze`).
    """
    snapshot = copy.deepcopy(module).eval().requires_grad_(False)
    if channels_last:
        snapshot = snapshot.to(memory_format=torch.channels_last)
    # A top-level function with its own code object: dynamo keeps its compiled code per code object.
    code = _call_module.__code__.replace(co_name=f'frozen_forward_{next(_frozen_ids)}')
    compiled = torch.compile(types.FunctionType(code, _call_module.__globals__), options=dict(freezing=True))
    from torch import _dynamo  # pylint: disable=import-outside-toplevel
    _dynamo.config.recompile_limit = max(getattr(_dynamo.config, 'recompile_limit', 8), 64)

    def forward(*args, **kwargs):
        with torch.no_grad():
            return compiled(snapshot, args, dict(forward_kwargs, **kwargs))
    forward.snapshot = snapshot
    return forward

#----------------------------------------------------------------------------

def nan_to_num(input, nan=0.0, posinf=None, neginf=None, *, out=None):
    """`torch.nan_to_num` (kept as a function because pickled code imports it from here)."""
    return torch.nan_to_num(input, nan=nan, posinf=posinf, neginf=neginf, out=out)

#----------------------------------------------------------------------------

@contextlib.contextmanager
def suppress_tracer_warnings():
    """Silence TracerWarnings for shape checks that are known to be safe when tracing."""
    # TracerWarnings only arise under torch.jit.trace; elsewhere skip catch_warnings, which costs
    # time on every layer call and breaks torch.compile graphs.
    if not torch.jit.is_tracing():
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
        yield

#----------------------------------------------------------------------------

def assert_shape(tensor, ref_shape):
    """Assert that `tensor.shape` matches `ref_shape`; None entries match any size.

    Entries may be ints or 0-d tensors (as produced while tracing).
    """
    if tensor.ndim != len(ref_shape):
        raise AssertionError(f'Wrong number of dimensions: got {tensor.ndim}, expected {len(ref_shape)}')
    for idx, (size, ref_size) in enumerate(zip(tensor.shape, ref_shape)):
        if ref_size is None:
            pass
        elif isinstance(ref_size, torch.Tensor):
            with suppress_tracer_warnings():
                torch._assert(torch.equal(torch.as_tensor(size), ref_size), f'Wrong size for dimension {idx}')
        elif isinstance(size, torch.Tensor):
            with suppress_tracer_warnings():
                torch._assert(torch.equal(size, torch.as_tensor(ref_size)), f'Wrong size for dimension {idx}: expected {ref_size}')
        elif size != ref_size:
            raise AssertionError(f'Wrong size for dimension {idx}: got {size}, expected {ref_size}')

#----------------------------------------------------------------------------

def profiled_function(fn):
    """Decorator that names the function in `torch.autograd.profiler` traces."""
    def decorator(*args, **kwargs):
        # Under torch.compile the profiler range would break the graph (and recompile per function).
        if torch.compiler.is_compiling():
            return fn(*args, **kwargs)
        with torch.autograd.profiler.record_function(fn.__name__):
            return fn(*args, **kwargs)
    decorator.__name__ = fn.__name__
    decorator.__doc__ = fn.__doc__
    return decorator

#----------------------------------------------------------------------------

class InfiniteSampler(torch.utils.data.Sampler):
    """Endless, continuously reshuffled index stream, split across ranks.

    One global order is drawn with `RandomState(seed)`. Rank r yields the positions
    `idx % num_replicas == r`. After each position, the element is swapped with a random
    element within a window of `window_size * len(dataset)` so that the order drifts over time.

    `start_idx` skips the first `start_idx` positions of the global stream (all ranks together),
    replaying the reshuffling so that a resumed run sees the same images as an uninterrupted one.
    With `with_positions`, it yields `(index, position)` pairs: the position in the global stream
    keys per-sample randomness (e.g. degradations) independently of workers and resumes.
    """
    def __init__(self, dataset, rank=0, num_replicas=1, shuffle=True, seed=0, window_size=0.5, start_idx=0, with_positions=False):
        assert len(dataset) > 0
        assert num_replicas > 0
        assert 0 <= rank < num_replicas
        assert 0 <= window_size <= 1
        super().__init__()
        self.dataset = dataset
        self.rank = rank
        self.num_replicas = num_replicas
        self.shuffle = shuffle
        self.seed = seed
        self.window_size = window_size
        self.start_idx = start_idx
        self.with_positions = with_positions

    def __iter__(self):
        order = np.arange(len(self.dataset))
        rnd = None
        window = 0
        if self.shuffle:
            rnd = np.random.RandomState(self.seed)
            rnd.shuffle(order)
            window = int(np.rint(order.size * self.window_size))

        idx = 0
        while True:
            i = idx % order.size
            if idx % self.num_replicas == self.rank and idx >= self.start_idx:
                yield (int(order[i]), idx) if self.with_positions else order[i]
            if window >= 2:
                j = (i - rnd.randint(window)) % order.size
                order[i], order[j] = order[j], order[i]
            idx += 1

#----------------------------------------------------------------------------

def params_and_buffers(module):
    assert isinstance(module, torch.nn.Module)
    return list(module.parameters()) + list(module.buffers())

def named_params_and_buffers(module):
    assert isinstance(module, torch.nn.Module)
    return list(module.named_parameters()) + list(module.named_buffers())

@torch.no_grad()
def copy_params_and_buffers(src_module, dst_module, require_all=False):
    """Copy every parameter and buffer of `src_module` into the tensor of the same name in `dst_module`.

    Raises a ValueError that names the tensor when shapes differ, or when `require_all` is set
    and `dst_module` has a tensor that `src_module` lacks.
    """
    assert isinstance(src_module, torch.nn.Module)
    assert isinstance(dst_module, torch.nn.Module)
    src_tensors = dict(named_params_and_buffers(src_module))
    for name, tensor in named_params_and_buffers(dst_module):
        if name not in src_tensors:
            if require_all:
                raise ValueError(f'copy_params_and_buffers: source has no tensor named "{name}"')
            continue
        src = src_tensors[name]
        if src.shape != tensor.shape:
            raise ValueError(f'copy_params_and_buffers: shape mismatch for "{name}": '
                             f'source {list(src.shape)}, destination {list(tensor.shape)}')
        tensor.copy_(src.detach()).requires_grad_(tensor.requires_grad)

#----------------------------------------------------------------------------

@contextlib.contextmanager
def ddp_sync(module, sync):
    """Skip DDP gradient all-reduce (`no_sync`) for all but the last accumulation round."""
    assert isinstance(module, torch.nn.Module)
    if sync or not isinstance(module, torch.nn.parallel.DistributedDataParallel):
        yield
    else:
        with module.no_sync():
            yield

#----------------------------------------------------------------------------

def check_ddp_consistency(module, ignore_regex=None):
    """Assert that every rank holds the same parameters and buffers (rank 0's are the reference)."""
    assert isinstance(module, torch.nn.Module)
    for name, tensor in named_params_and_buffers(module):
        fullname = type(module).__name__ + '.' + name
        if ignore_regex is not None and re.fullmatch(ignore_regex, fullname):
            continue
        tensor = tensor.detach()
        if tensor.is_floating_point():
            tensor = nan_to_num(tensor)
        other = tensor.clone()
        torch.distributed.broadcast(tensor=other, src=0)
        if not (tensor == other).all():
            raise RuntimeError(f'DDP consistency check failed: "{fullname}" differs between ranks')

#----------------------------------------------------------------------------

def print_module_summary(module, inputs, max_nesting=3, skip_redundant=True):
    """Print a table of submodules with parameter/buffer counts and output shapes/dtypes.

    Runs one forward pass with `inputs` (a tuple) and returns its outputs.
    """
    assert isinstance(module, torch.nn.Module)
    assert not isinstance(module, torch.jit.ScriptModule)
    assert isinstance(inputs, (tuple, list))

    entries = []
    nesting = [0]
    def pre_hook(_mod, _inputs):
        nesting[0] += 1
    def post_hook(mod, _inputs, outputs):
        nesting[0] -= 1
        if nesting[0] <= max_nesting:
            outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
            outputs = [t for t in outputs if isinstance(t, torch.Tensor)]
            entries.append(dnnlib.EasyDict(mod=mod, outputs=outputs))
    hooks = [mod.register_forward_pre_hook(pre_hook) for mod in module.modules()]
    hooks += [mod.register_forward_hook(post_hook) for mod in module.modules()]

    outputs = module(*inputs)
    for hook in hooks:
        hook.remove()

    # Attribute each tensor to the first (innermost) module that reports it.
    tensors_seen = set()
    for e in entries:
        e.unique_params = [t for t in e.mod.parameters() if id(t) not in tensors_seen]
        e.unique_buffers = [t for t in e.mod.buffers() if id(t) not in tensors_seen]
        e.unique_outputs = [t for t in e.outputs if id(t) not in tensors_seen]
        tensors_seen |= {id(t) for t in e.unique_params + e.unique_buffers + e.unique_outputs}
    if skip_redundant:
        entries = [e for e in entries if len(e.unique_params) or len(e.unique_buffers) or len(e.unique_outputs)]

    rows = [[type(module).__name__, 'Parameters', 'Buffers', 'Output shape', 'Datatype']]
    rows += [['---'] * len(rows[0])]
    param_total = 0
    buffer_total = 0
    submodule_names = {mod: name for name, mod in module.named_modules()}
    for e in entries:
        name = '<top-level>' if e.mod is module else submodule_names[e.mod]
        param_size = sum(t.numel() for t in e.unique_params)
        buffer_size = sum(t.numel() for t in e.unique_buffers)
        output_shapes = [str(list(t.shape)) for t in e.outputs]
        output_dtypes = [str(t.dtype).split('.')[-1] for t in e.outputs]
        rows += [[
            name + (':0' if len(e.outputs) >= 2 else ''),
            str(param_size) if param_size else '-',
            str(buffer_size) if buffer_size else '-',
            (output_shapes + ['-'])[0],
            (output_dtypes + ['-'])[0],
        ]]
        for idx in range(1, len(e.outputs)):
            rows += [[name + f':{idx}', '-', '-', output_shapes[idx], output_dtypes[idx]]]
        param_total += param_size
        buffer_total += buffer_size
    rows += [['---'] * len(rows[0])]
    rows += [['Total', str(param_total), str(buffer_total), '-', '-']]

    widths = [max(len(cell) for cell in column) for column in zip(*rows)]
    print()
    for row in rows:
        print('  '.join(cell + ' ' * (width - len(cell)) for cell, width in zip(row, widths)))
    print()
    return outputs

#----------------------------------------------------------------------------

#----------------------------------------------------------------------------
# RNG states for exact resume (tensors and numbers only, so checkpoints load with weights_only=True).

def rng_state(device):
    """The torch (CPU and, for a CUDA device, CUDA) and numpy global RNG states as a plain dict."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    assert kind == 'MT19937'
    state = dict(torch=torch.get_rng_state(), numpy_keys=torch.from_numpy(keys.astype(np.int64)),
                 numpy_pos=int(pos), numpy_has_gauss=int(has_gauss), numpy_gauss=float(cached_gaussian))
    if torch.device(device).type == 'cuda':
        state['cuda'] = torch.cuda.get_rng_state(device)
    return state

def set_rng_state(state, device):
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state['torch'])
    np.random.set_state(('MT19937', state['numpy_keys'].numpy().astype(np.uint32), state['numpy_pos'],
                         state['numpy_has_gauss'], state['numpy_gauss']))
    if torch.device(device).type == 'cuda' and 'cuda' in state:
        torch.cuda.set_rng_state(state['cuda'], device)

@contextlib.contextmanager
def preserve_rng(device):
    """Run a block without changing the torch/numpy RNG streams (keeps a resumed run exact)."""
    state = rng_state(device)
    try:
        yield
    finally:
        set_rng_state(state, device)

def all_gather_objects(obj, num_procs):
    """[obj of rank 0, obj of rank 1, ...] (just [obj] for a single process)."""
    if num_procs == 1:
        return [obj]
    gathered = [None] * num_procs
    torch.distributed.all_gather_object(gathered, obj)
    return gathered

#----------------------------------------------------------------------------
# Reading weights-only torch files quietly, with one-line errors.

def torch_load_error_summary(err):
    """One line for a failed `torch.load(weights_only=True)`, without torch's advice to re-run with
    `weights_only=False` (which would execute code from the file)."""
    text = str(err)
    match = re.search(r'(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)', text)
    if match:
        return f'the file refers to code ({match.group(1)}), which a weights-only file must not'
    if 'WeightsUnpickler error:' in text:
        text = text.split('WeightsUnpickler error:', 1)[1]
    elif text.startswith('Weights only load failed.'):
        text = '\n'.join(text.split('\n')[1:])  # drop torch's advice to re-run with weights_only=False
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith('Check the documentation')]
    return f'{type(err).__name__}: {(lines[0] if lines else "weights-only load failed")[:200]}'

def load_weights_only(f):
    """`torch.load(f, map_location='cpu', weights_only=True)` without torch's loader warnings
    ("Detected pickle protocol 4", ...). Raises ValueError with a one-line reason."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try:
            return torch.load(f, map_location='cpu', weights_only=True)
        except Exception as err:  # pylint: disable=broad-except
            raise ValueError(torch_load_error_summary(err)) from None

#----------------------------------------------------------------------------
def cpu_bf16_support():
    """(native, reason): whether this CPU computes bfloat16 in hardware (x86 AVX512-BF16 or AMX-BF16,
    ARM BF16), from /proc/cpuinfo. Without it, bf16 autocast on the CPU emulates every op and runs
    many times slower than fp32."""
    try:
        with open('/proc/cpuinfo') as f:
            flags = set()
            for line in f:
                if line.lower().startswith(('flags', 'features')):
                    flags.update(line.split(':', 1)[1].split())
    except OSError:
        return False, 'cannot read /proc/cpuinfo to check for native bfloat16 support'
    found = sorted(flags & {'avx512_bf16', 'amx_bf16', 'bf16'})
    if found:
        return True, f'CPU flags {", ".join(found)}'
    import torch.backends.cpu  # pylint: disable=import-outside-toplevel
    return False, (f'this CPU has no native bfloat16 (no avx512_bf16/amx_bf16 flag; torch CPU capability '
                   f'{torch.backends.cpu.get_cpu_capability()}): bf16 autocast is emulated and many times slower than fp32')
