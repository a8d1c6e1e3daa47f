"""Upsample, FIR-filter and downsample 2D images (`upfirdn2d`), with a CUDA kernel and a PyTorch reference.

Semantics of `upfirdn2d(x, f, up, down, padding, flip_filter, gain)`, per channel:
  1. upsample by inserting `up - 1` zeros after each pixel;
  2. pad with zeros (negative padding crops), padding given relative to the upsampled image;
  3. convolve with the 2D filter `f` (true convolution; correlation when `flip_filter=True`),
     keeping only outputs where the filter lies fully inside the padded image;
  4. keep every `down`-th pixel, starting from the first.
The filter is scaled by `gain ** (f.ndim / 2)`, so a separable (1-D) filter run as two passes
scales the result by `gain` in total, like the equivalent 2-D filter.

Output width: `(W * upx + padx0 + padx1 - fw + downx) // downx`, and likewise for the height.

The CUDA path is used for CUDA tensors when `impl='cuda'` and the kernel builds; CPU tensors
and failed builds always use the reference path, which gives the same results.
"""

import os

import numpy as np
import torch

from .. import custom_ops
from .. import misc
from . import conv2d_gradfix

#----------------------------------------------------------------------------

_plugin = None
_inited = False

def _init():
    global _inited, _plugin
    if not _inited:
        _inited = True  # Set first: a failed build is reported once and never retried.
        _plugin = custom_ops.try_get_plugin('upfirdn2d_plugin', sources=['upfirdn2d.cpp', 'upfirdn2d.cu'],
            headers=['upfirdn2d.h'], source_dir=os.path.dirname(__file__),
            extra_cuda_cflags=['--use_fast_math', '--allow-unsupported-compiler'])
    return _plugin is not None

def _parse_scaling(scaling):
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    assert isinstance(scaling, (list, tuple))
    assert all(isinstance(s, int) for s in scaling)
    sx, sy = scaling
    assert sx >= 1 and sy >= 1, 'up/down factors must be >= 1'
    return sx, sy

def _parse_padding(padding):
    if isinstance(padding, int):
        padding = [padding, padding]
    assert isinstance(padding, (list, tuple))
    assert all(isinstance(p, int) for p in padding)
    if len(padding) == 2:
        padx, pady = padding
        padding = [padx, padx, pady, pady]
    assert len(padding) == 4, 'padding must be an int, [x, y] or [x0, x1, y0, y1]'
    padx0, padx1, pady0, pady1 = padding
    return padx0, padx1, pady0, pady1

def _get_filter_size(f):
    """Return (width, height) of a 2-D filter, (taps, taps) of a separable 1-D one, (1, 1) for None."""
    if f is None:
        return 1, 1
    assert isinstance(f, torch.Tensor) and f.ndim in [1, 2]
    fw = f.shape[-1]
    fh = f.shape[0]
    with misc.suppress_tracer_warnings():
        fw = int(fw)
        fh = int(fh)
    misc.assert_shape(f, [fh, fw][:f.ndim])
    assert fw >= 1 and fh >= 1
    return fw, fh

#----------------------------------------------------------------------------

def setup_filter(f, device=torch.device('cpu'), normalize=True, flip_filter=False, gain=1, separable=None):
    r"""Convenience function to set up a 2D FIR filter for `upfirdn2d()`.

    Args:
        f:           Filter taps: None (identity), a scalar, a 1-D list/array/tensor `[taps]`
                     or a 2-D one `[height, width]`.
        device:      Where to place the result.
        normalize:   Divide by the sum of the taps so that the DC gain is 1.
        flip_filter: Flip the taps (turns convolution into correlation and vice versa).
        gain:        Overall scaling of the filter output.
        separable:   Keep a 1-D filter separable (run as two passes). None: separable iff
                     the filter is 1-D with at least 8 taps (where two passes are cheaper).

    Returns:
        float32 tensor `[height, width]` (non-separable) or `[taps]` (separable).
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    assert f.ndim in [0, 1, 2]
    assert f.numel() > 0
    if f.ndim == 0:
        f = f[np.newaxis]

    if separable is None:
        separable = (f.ndim == 1 and f.numel() >= 8)
    if f.ndim == 1 and not separable:
        f = f.ger(f)
    assert f.ndim == (1 if separable else 2)

    if normalize:
        f = f / f.sum()  # not in place: f may alias the caller's tensor
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    f = f.to(device=device)
    return f

#----------------------------------------------------------------------------

def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl='cuda'):
    r"""Pad, upsample, filter and downsample a batch of 2D images.

    Args:
        x:           Float tensor `[batch, channels, in_height, in_width]` (fp16, fp32 or fp64).
        f:           float32 FIR filter `[filter_height, filter_width]` (2-D) or `[taps]`
                     (separable, run as two 1-D passes), or None for identity.
        up:          Integer upsampling factor, `int` or `[x, y]`.
        down:        Integer downsampling factor, `int` or `[x, y]`.
        padding:     `int`, `[x, y]` or `[x_before, x_after, y_before, y_after]`, relative to
                     the upsampled image; negative values crop.
        flip_filter: False = convolution, True = correlation.
        gain:        Overall scaling of the signal magnitude.
        impl:        'cuda' (use the CUDA kernel when possible) or 'ref'.

    Returns:
        Tensor `[batch, channels, out_height, out_width]` of the same dtype as `x`.
    """
    assert isinstance(x, torch.Tensor)
    assert impl in ['ref', 'cuda']
    if impl == 'cuda' and x.device.type == 'cuda' and _init():
        return _upfirdn2d_cuda(up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain).apply(x, f)
    return _upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)

#----------------------------------------------------------------------------

def _check_output_size(in_size, up, pad0, pad1, fsize, down, axis):
    out_size = (in_size * up + pad0 + pad1 - fsize + down) // down
    if out_size < 1:
        raise ValueError(f'upfirdn2d: empty output along {axis} (input {in_size}, up {up}, padding {pad0},{pad1}, '
                         f'filter {fsize}, down {down}); pad more or use a smaller filter')
    return out_size

@misc.profiled_function
def _upfirdn2d_ref(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """Reference `upfirdn2d` built from standard PyTorch ops (any device, any order of gradients)."""
    assert isinstance(x, torch.Tensor) and x.ndim == 4
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    assert isinstance(f, torch.Tensor) and f.ndim in [1, 2]
    assert f.dtype == torch.float32 and not f.requires_grad
    batch_size, num_channels, in_height, in_width = x.shape
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    if not torch.jit.is_tracing():
        _check_output_size(int(in_width), upx, padx0, padx1, fw, downx, 'x')
        _check_output_size(int(in_height), upy, pady0, pady1, fh, downy, 'y')

    # Zero insertion: each pixel is followed by up-1 zeros along each axis.
    x = x.reshape([batch_size, num_channels, in_height, 1, in_width, 1])
    x = torch.nn.functional.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape([batch_size, num_channels, in_height * upy, in_width * upx])

    # Pad with zeros where positive, crop where negative.
    x = torch.nn.functional.pad(x, [max(padx0, 0), max(padx1, 0), max(pady0, 0), max(pady1, 0)])
    x = x[:, :, max(-pady0, 0) : x.shape[2] - max(-pady1, 0), max(-padx0, 0) : x.shape[3] - max(-padx1, 0)]

    # conv2d computes correlation, so the filter is flipped to get a true convolution.
    f = f * (gain ** (f.ndim / 2))
    f = f.to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))

    f = f[np.newaxis, np.newaxis].repeat([num_channels, 1] + [1] * f.ndim)
    if f.ndim == 4:
        x = conv2d_gradfix.conv2d(input=x, weight=f, groups=num_channels)
    else:
        x = conv2d_gradfix.conv2d(input=x, weight=f.unsqueeze(2), groups=num_channels)
        x = conv2d_gradfix.conv2d(input=x, weight=f.unsqueeze(3), groups=num_channels)

    # Keep every down-th pixel.
    x = x[:, :, ::downy, ::downx]
    return x

#----------------------------------------------------------------------------

_upfirdn2d_cuda_cache = dict()

def _upfirdn2d_cuda(up=1, down=1, padding=0, flip_filter=False, gain=1):
    """Autograd function for the CUDA kernel; backward is the same op with up/down swapped."""
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)

    key = (upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain)
    if key in _upfirdn2d_cuda_cache:
        return _upfirdn2d_cuda_cache[key]

    class Upfirdn2dCuda(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, f):
            assert isinstance(x, torch.Tensor) and x.ndim == 4
            if f is None:
                f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
            if f.ndim == 1 and f.shape[0] == 1:
                f = f.square().unsqueeze(0)  # A 1-tap separable filter is a 1x1 filter.
            assert isinstance(f, torch.Tensor) and f.ndim in [1, 2]
            fw, fh = _get_filter_size(f)
            _check_output_size(x.shape[3], upx, padx0, padx1, fw, downx, 'x')
            _check_output_size(x.shape[2], upy, pady0, pady1, fh, downy, 'y')
            y = x
            if f.ndim == 2:
                y = _plugin.upfirdn2d(y, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, float(gain))
            else:
                y = _plugin.upfirdn2d(y, f.unsqueeze(0), upx, 1, downx, 1, padx0, padx1, 0, 0, flip_filter, 1.0)
                y = _plugin.upfirdn2d(y, f.unsqueeze(1), 1, upy, 1, downy, 0, 0, pady0, pady1, flip_filter, float(gain))
            ctx.save_for_backward(f)
            ctx.x_shape = x.shape
            return y

        @staticmethod
        def backward(ctx, dy):
            f, = ctx.saved_tensors
            _, _, ih, iw = ctx.x_shape
            _, _, oh, ow = dy.shape
            fw, fh = _get_filter_size(f)
            p = [
                fw - padx0 - 1,
                iw * upx - ow * downx + padx0 - upx + 1,
                fh - pady0 - 1,
                ih * upy - oh * downy + pady0 - upy + 1,
            ]
            dx = None
            if ctx.needs_input_grad[0]:
                dx = _upfirdn2d_cuda(up=down, down=up, padding=p, flip_filter=(not flip_filter), gain=gain).apply(dy, f)
            assert not ctx.needs_input_grad[1], 'upfirdn2d: gradients with respect to the filter are not supported'
            return dx, None

    _upfirdn2d_cuda_cache[key] = Upfirdn2dCuda
    return Upfirdn2dCuda

#----------------------------------------------------------------------------

def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl='cuda'):
    r"""Filter a batch of 2D images with `f`; the output has the input's size unless `padding` says otherwise.

    Args:
        x:           Float tensor `[batch, channels, height, width]`.
        f:           float32 filter `[fh, fw]`, `[taps]` or None.
        padding:     Extra padding on top of the size-preserving padding: int, [x, y] or [x0, x1, y0, y1].
        flip_filter: False = convolution, True = correlation.
        gain:        Overall scaling of the signal magnitude.
        impl:        'cuda' or 'ref'.
    """
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        padx0 + fw // 2,
        padx1 + (fw - 1) // 2,
        pady0 + fh // 2,
        pady1 + (fh - 1) // 2,
    ]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)

#----------------------------------------------------------------------------

def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl='cuda'):
    r"""Upsample a batch of 2D images by `up` with the interpolation filter `f` (output `up` times larger).

    The gain is multiplied by `upx * upy` so that a constant image stays constant.

    Args:
        x:           Float tensor `[batch, channels, height, width]`.
        f:           float32 filter `[fh, fw]`, `[taps]` or None.
        up:          Integer upsampling factor, int or [x, y].
        padding:     Extra padding (relative to the upsampled image): int, [x, y] or [x0, x1, y0, y1].
        flip_filter: False = convolution, True = correlation.
        gain:        Overall scaling of the signal magnitude.
        impl:        'cuda' or 'ref'.
    """
    upx, upy = _parse_scaling(up)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        padx0 + (fw + upx - 1) // 2,
        padx1 + (fw - upx) // 2,
        pady0 + (fh + upy - 1) // 2,
        pady1 + (fh - upy) // 2,
    ]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)

#----------------------------------------------------------------------------

def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl='cuda'):
    r"""Downsample a batch of 2D images by `down` after low-pass filtering with `f` (output `down` times smaller).

    Args:
        x:           Float tensor `[batch, channels, height, width]`.
        f:           float32 filter `[fh, fw]`, `[taps]` or None.
        down:        Integer downsampling factor, int or [x, y].
        padding:     Extra padding (relative to the input): int, [x, y] or [x0, x1, y0, y1].
        flip_filter: False = convolution, True = correlation.
        gain:        Overall scaling of the signal magnitude.
        impl:        'cuda' or 'ref'.
    """
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        padx0 + (fw - downx + 1) // 2,
        padx1 + (fw - downx) // 2,
        pady0 + (fh - downy + 1) // 2,
        pady1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)

#----------------------------------------------------------------------------
