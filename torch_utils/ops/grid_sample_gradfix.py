"""`grid_sample` (bilinear, zero padding, align_corners=False) with a second derivative.

Stock `grid_sample` has no double backward, which R1 through ADA's geometric augmentations needs.
Here the backward is itself an autograd function whose gradient with respect to its incoming
gradient is a plain `grid_sample` (the backward is linear in it). Gradients of second order
with respect to the grid are not supported (the augmentation grid never requires grad).
Only public PyTorch API is used, so this works on every current PyTorch version.
"""

import torch

#----------------------------------------------------------------------------

enabled = False  # Use the custom op? The training loop turns this on.

def grid_sample(input, grid):
    """Bilinear `grid_sample` with zero padding and `align_corners=False`.

    Args:
        input: Float tensor `[N, C, H_in, W_in]`.
        grid:  Float tensor `[N, H_out, W_out, 2]` of (x, y) sampling positions in [-1, 1].
    Returns:
        Tensor `[N, C, H_out, W_out]`.
    """
    if enabled:
        return _GridSample2dForward.apply(input, grid)
    return _plain_grid_sample(input, grid)

#----------------------------------------------------------------------------

def _plain_grid_sample(input, grid):
    return torch.nn.functional.grid_sample(input=input, grid=grid, mode='bilinear', padding_mode='zeros', align_corners=False)

def _grid_sample_backward(grad_output, input, grid, need_input, need_grid):
    """First-order gradients of `_plain_grid_sample` via a private autograd graph."""
    with torch.enable_grad():
        input_ = input.detach().requires_grad_(need_input)
        grid_ = grid.detach().requires_grad_(need_grid)
        inputs = [t for t, need in [(input_, need_input), (grid_, need_grid)] if need]
        grads = torch.autograd.grad(_plain_grid_sample(input_, grid_), inputs, grad_output.detach())
    grads = list(grads)
    grad_input = grads.pop(0) if need_input else None
    grad_grid = grads.pop(0) if need_grid else None
    return grad_input, grad_grid

class _GridSample2dForward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, grid):
        assert input.ndim == 4 and grid.ndim == 4
        ctx.save_for_backward(input, grid)
        return _plain_grid_sample(input, grid)

    @staticmethod
    def backward(ctx, grad_output):
        input, grid = ctx.saved_tensors
        grad_input, grad_grid = _GridSample2dBackward.apply(grad_output, input, grid)
        return (grad_input if ctx.needs_input_grad[0] else None,
                grad_grid if ctx.needs_input_grad[1] else None)

class _GridSample2dBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad_output, input, grid):
        ctx.save_for_backward(grid)
        grad_input, grad_grid = _grid_sample_backward(grad_output, input, grid, True, True)
        return grad_input, grad_grid

    @staticmethod
    def backward(ctx, grad2_grad_input, grad2_grad_grid):
        grid, = ctx.saved_tensors
        grad2_grad_output = None
        if ctx.needs_input_grad[0]:
            # grad_input is linear in grad_output: its adjoint is the forward grid_sample.
            grad2_grad_output = _GridSample2dForward.apply(grad2_grad_input, grid)
        assert not ctx.needs_input_grad[2], 'grid_sample_gradfix: second-order gradients with respect to the grid are not supported'
        return grad2_grad_output, None, None

#----------------------------------------------------------------------------
