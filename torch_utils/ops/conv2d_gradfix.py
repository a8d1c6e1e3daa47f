"""`conv2d`/`conv_transpose2d` that can skip weight gradients inside `no_weight_gradients()`.

R1 and path-length regularisation differentiate the network output with respect to its input
only; the weight gradients of that first backward pass are wasted work. When `enabled` is set
(the training loop does), convolutions whose weights require grad run through a custom autograd
function built on `torch.ops.aten.convolution_backward`, which skips the weight gradient while
`no_weight_gradients()` is active and stays differentiable to any order (double backward of R1).

Unlike the reference, this uses only public PyTorch ops and works on every PyTorch >= 1.11,
on CPU and CUDA. With `enabled = False` it is exactly `torch.nn.functional`.
"""

import contextlib

import torch

#----------------------------------------------------------------------------

enabled = False                     # Use the custom op at all? The training loop turns this on.
weight_gradients_disabled = False   # Read at backward time; set by no_weight_gradients().

@contextlib.contextmanager
def no_weight_gradients(disable=True):
    """Within this context, backward passes through convolutions skip the weight gradients."""
    global weight_gradients_disabled
    old = weight_gradients_disabled
    if disable:
        weight_gradients_disabled = True
    try:
        yield
    finally:
        weight_gradients_disabled = old

#----------------------------------------------------------------------------

def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Same arguments and result as `torch.nn.functional.conv2d`."""
    if _should_use_custom_op(weight):
        return _Convolution.apply(input, weight, bias, _pair(stride), _pair(padding), _pair(dilation), False, (0, 0), groups)
    return torch.nn.functional.conv2d(input=input, weight=weight, bias=bias, stride=stride, padding=padding, dilation=dilation, groups=groups)

def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Same arguments and result as `torch.nn.functional.conv_transpose2d`."""
    if _should_use_custom_op(weight):
        return _Convolution.apply(input, weight, bias, _pair(stride), _pair(padding), _pair(dilation), True, _pair(output_padding), groups)
    return torch.nn.functional.conv_transpose2d(input=input, weight=weight, bias=bias, stride=stride, padding=padding,
                                                output_padding=output_padding, groups=groups, dilation=dilation)

#----------------------------------------------------------------------------

def _should_use_custom_op(weight):
    return enabled and torch.is_grad_enabled() and weight.requires_grad

def _pair(value):
    if isinstance(value, (list, tuple)):
        assert len(value) == 2
        return tuple(int(v) for v in value)
    return (int(value), int(value))

class _Convolution(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
        ctx.conv_args = (stride, padding, dilation, transposed, output_padding, groups)
        ctx.bias_sizes = None if bias is None else list(bias.shape)
        ctx.save_for_backward(input, weight)
        return torch.ops.aten.convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        stride, padding, dilation, transposed, output_padding, groups = ctx.conv_args
        output_mask = [
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1] and not weight_gradients_disabled,
            ctx.needs_input_grad[2],
        ]
        if not any(output_mask):
            return (None,) * 9
        grad_input, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad_output, input, weight, ctx.bias_sizes, stride, padding, dilation, transposed, output_padding, groups, output_mask)
        return (grad_input if output_mask[0] else None, grad_weight if output_mask[1] else None,
                grad_bias if output_mask[2] else None) + (None,) * 6

#----------------------------------------------------------------------------
