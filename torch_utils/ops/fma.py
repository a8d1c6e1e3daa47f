"""Fused multiply-add `a * b + c` with a lean backward (gradients summed back to each input's shape)."""

import torch

#----------------------------------------------------------------------------

def fma(a, b, c):
    """Return `a * b + c` (broadcasting), i.e. `torch.addcmul(c, a, b)`."""
    return _FusedMultiplyAdd.apply(a, b, c)

#----------------------------------------------------------------------------

class _FusedMultiplyAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, c):
        out = torch.addcmul(c, a, b)
        ctx.save_for_backward(a, b)
        ctx.c_shape = c.shape
        return out

    @staticmethod
    def backward(ctx, dout):
        a, b = ctx.saved_tensors
        da = db = dc = None
        if ctx.needs_input_grad[0]:
            da = _unbroadcast(dout * b, a.shape)
        if ctx.needs_input_grad[1]:
            db = _unbroadcast(dout * a, b.shape)
        if ctx.needs_input_grad[2]:
            dc = _unbroadcast(dout, ctx.c_shape)
        return da, db, dc

#----------------------------------------------------------------------------

def _unbroadcast(x, shape):
    """Sum `x` over the dimensions that broadcasting added or expanded, giving `shape`."""
    extra_dims = x.ndim - len(shape)
    assert extra_dims >= 0
    dims = [i for i in range(x.ndim) if x.shape[i] > 1 and (i < extra_dims or shape[i - extra_dims] == 1)]
    if len(dims):
        x = x.sum(dim=dims, keepdim=True)
    x = x.reshape(shape)
    return x

#----------------------------------------------------------------------------
