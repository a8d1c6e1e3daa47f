"""Fused bias + activation + gain + clamp (`bias_act`), with a CUDA kernel and a PyTorch reference.

`y = clamp(gain * act(x + b, alpha), -clamp, +clamp)`, with the bias broadcast along `dim`.
The CUDA path saves only what its backward needs (the output for most activations) and supports
first and second derivatives; the reference path is plain autograd.
"""

import math
import os

import numpy as np
import torch

import dnnlib

from .. import custom_ops
from .. import misc

#----------------------------------------------------------------------------
# def_alpha/def_gain: defaults of `alpha`/`gain`; cuda_idx: activation code of the kernel;
# ref: tensor the CUDA backward derives the gradient from ('y' output, 'x' pre-activation, '' none);
# has_2nd_grad: whether the second derivative with respect to x can be non-zero.

activation_funcs = {
    'linear':   dnnlib.EasyDict(func=lambda x, **_:         x,                                          def_alpha=0,    def_gain=1,             cuda_idx=1, ref='',  has_2nd_grad=False),
    'relu':     dnnlib.EasyDict(func=lambda x, **_:         torch.nn.functional.relu(x),                def_alpha=0,    def_gain=math.sqrt(2),   cuda_idx=2, ref='y', has_2nd_grad=False),
    'lrelu':    dnnlib.EasyDict(func=lambda x, alpha, **_:  torch.nn.functional.leaky_relu(x, alpha),   def_alpha=0.2,  def_gain=math.sqrt(2),   cuda_idx=3, ref='y', has_2nd_grad=False),
    'tanh':     dnnlib.EasyDict(func=lambda x, **_:         torch.tanh(x),                              def_alpha=0,    def_gain=1,             cuda_idx=4, ref='y', has_2nd_grad=True),
    'sigmoid':  dnnlib.EasyDict(func=lambda x, **_:         torch.sigmoid(x),                           def_alpha=0,    def_gain=1,             cuda_idx=5, ref='y', has_2nd_grad=True),
    'elu':      dnnlib.EasyDict(func=lambda x, **_:         torch.nn.functional.elu(x),                 def_alpha=0,    def_gain=1,             cuda_idx=6, ref='y', has_2nd_grad=True),
    'selu':     dnnlib.EasyDict(func=lambda x, **_:         torch.nn.functional.selu(x),                def_alpha=0,    def_gain=1,             cuda_idx=7, ref='y', has_2nd_grad=True),
    'softplus': dnnlib.EasyDict(func=lambda x, **_:         torch.nn.functional.softplus(x),            def_alpha=0,    def_gain=1,             cuda_idx=8, ref='y', has_2nd_grad=True),
    'swish':    dnnlib.EasyDict(func=lambda x, **_:         torch.sigmoid(x) * x,                       def_alpha=0,    def_gain=math.sqrt(2),   cuda_idx=9, ref='x', has_2nd_grad=True),
}

#----------------------------------------------------------------------------

_plugin = None
_inited = False
_null_tensor = torch.empty([0])

def _init():
    global _inited, _plugin
    if not _inited:
        _inited = True  # Set first: a failed build is reported once and never retried.
        _plugin = custom_ops.try_get_plugin('bias_act_plugin', sources=['bias_act.cpp', 'bias_act.cu'],
            headers=['bias_act.h'], source_dir=os.path.dirname(__file__),
            extra_cuda_cflags=['--use_fast_math', '--allow-unsupported-compiler'])
    return _plugin is not None

#----------------------------------------------------------------------------

def bias_act(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None, impl='cuda'):
    r"""Fused bias, activation, gain and clamp.

    Args:
        x:      Input activation tensor of any shape (fp16, fp32 or fp64).
        b:      Bias vector `[x.shape[dim]]` of the same dtype as x, or None.
        dim:    Dimension of x that the bias is added along.
        act:    Activation name: one of `activation_funcs` ('linear', 'relu', 'lrelu', 'tanh',
                'sigmoid', 'elu', 'selu', 'softplus', 'swish').
        alpha:  Activation shape parameter (lrelu slope). None: the activation's default.
        gain:   Scale applied after the activation. None: the activation's default, chosen
                so the output keeps roughly unit variance (sqrt(2) for relu/lrelu/swish).
        clamp:  Clamp the output to [-clamp, +clamp]; None disables clamping.
        impl:   'cuda' (use the CUDA kernel when possible) or 'ref'.

    Returns:
        Tensor of the same shape, dtype and memory format as `x`.
    """
    assert isinstance(x, torch.Tensor)
    assert impl in ['ref', 'cuda']
    if act not in activation_funcs:
        raise ValueError(f'bias_act: unknown activation "{act}"; choose from {sorted(activation_funcs)}')
    if impl == 'cuda' and x.device.type == 'cuda' and _init():
        return _bias_act_cuda(dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)(x, b)
    return _bias_act_ref(x=x, b=b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)

#----------------------------------------------------------------------------

def _resolve_args(act, alpha, gain, clamp):
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    return spec, alpha, gain, clamp

@misc.profiled_function
def _bias_act_ref(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None):
    """Reference `bias_act` from standard PyTorch ops."""
    assert isinstance(x, torch.Tensor)
    assert clamp is None or clamp >= 0
    spec, alpha, gain, clamp = _resolve_args(act, alpha, gain, clamp)

    if b is not None:
        assert isinstance(b, torch.Tensor) and b.ndim == 1
        assert 0 <= dim < x.ndim
        assert b.shape[0] == x.shape[dim], f'bias has {b.shape[0]} elements, x has {x.shape[dim]} along dim {dim}'
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])

    x = spec.func(x, alpha=alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x

#----------------------------------------------------------------------------

_bias_act_cuda_cache = dict()

def _memory_format(x):
    if x.ndim == 4 and x.stride(1) == 1 and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format

def _bias_act_cuda(dim=1, act='linear', alpha=None, gain=None, clamp=None):
    """Return `fn(x, b)` running the CUDA kernel with autograd support (first and second order)."""
    assert clamp is None or clamp >= 0
    spec, alpha, gain, clamp = _resolve_args(act, alpha, gain, clamp)
    if act == 'elu':
        alpha = 1.0  # torch's elu (the reference) always uses alpha = 1.

    key = (dim, act, alpha, gain, clamp)
    if key in _bias_act_cuda_cache:
        return _bias_act_cuda_cache[key]

    is_identity = (act == 'linear' and gain == 1 and clamp < 0)
    needs_y = (spec.ref == 'y' or clamp >= 0)
    needs_x = (spec.ref == 'x')

    class BiasActCuda(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, b):
            ctx.memory_format = _memory_format(x)
            x = x.contiguous(memory_format=ctx.memory_format)
            b = b.contiguous() if b is not None else _null_tensor.to(x.device)
            y = x
            if not is_identity or b.numel() > 0:
                y = _plugin.bias_act(x, b, _null_tensor.to(x.device), _null_tensor.to(x.device),
                                     _null_tensor.to(x.device), 0, dim, spec.cuda_idx, alpha, gain, clamp)
            null = _null_tensor.to(x.device)
            # For activations with a second derivative, `x` already includes the bias (see wrapper below).
            ctx.save_for_backward(x if needs_x or spec.has_2nd_grad else null, y if needs_y else null)
            ctx.has_bias = b.numel() > 0
            return y

        @staticmethod
        def backward(ctx, dy):
            dy = dy.contiguous(memory_format=ctx.memory_format)
            xref, yref = ctx.saved_tensors
            dx = None
            db = None
            if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
                dx = dy
                if not is_identity:
                    dx = BiasActCudaGrad.apply(dy, xref, yref)
            if ctx.needs_input_grad[1]:
                db = dx.sum([i for i in range(dx.ndim) if i != dim]) if dx.ndim > 1 else dx
            return dx, db

    class BiasActCudaGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, dy, xref, yref):
            ctx.memory_format = _memory_format(dy)
            null = _null_tensor.to(dy.device)
            dx = _plugin.bias_act(dy, null, xref if needs_x else null, yref, null, 1, dim, spec.cuda_idx, alpha, gain, clamp)
            ctx.save_for_backward(dy if spec.has_2nd_grad else null, xref, yref)
            return dx

        @staticmethod
        def backward(ctx, d_dx):
            d_dx = d_dx.contiguous(memory_format=ctx.memory_format)
            dy, xref, yref = ctx.saved_tensors
            d_dy = None
            d_x = None
            if ctx.needs_input_grad[0]:
                d_dy = BiasActCudaGrad.apply(d_dx, xref, yref)
            if spec.has_2nd_grad and ctx.needs_input_grad[1]:
                null = _null_tensor.to(d_dx.device)
                d_x = _plugin.bias_act(d_dx, null, xref if needs_x else null, yref, dy, 2, dim, spec.cuda_idx, alpha, gain, clamp)
            return d_dy, d_x, None

    def fn(x, b):
        if spec.has_2nd_grad and b is not None:
            # The second derivative is taken with respect to the pre-activation, so add the bias
            # with autograd-visible ops; piecewise-linear activations keep the fused bias.
            x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
            b = None
        return BiasActCuda.apply(x, b)

    _bias_act_cuda_cache[key] = fn
    return fn

#----------------------------------------------------------------------------
