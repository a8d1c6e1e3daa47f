"""Grayscale -> RGB network surgery.

A generator trained on 1-channel (grey) images learns faster than an RGB one on the same grey
faces (it never has to learn that R = G = B), but the pSp encoders and most tools expect RGB
networks. `grey_to_rgb` turns a 1-channel G/D pair into a 3-channel one that is exactly
equivalent on grey images:

* G: every ToRGB layer's weight `[1, C, 1, 1]` and bias `[1]` are repeated to 3 output channels,
  so the RGB image is the grey image in all three channels (bit for bit).
* D: the FromRGB layers' weights `[C, 1, 1, 1]` become `[C, 3, 1, 1]` = w * sqrt(3) / 3 per channel
  (the layer's runtime gain 1 / sqrt(in_channels) drops by sqrt(3)), so a grey image repeated to
  RGB gives the same features as the 1-channel image (up to rounding).

Everything else (mapping, convolutions, w_avg, noise buffers) is copied unchanged.
"""

import copy

import torch

#----------------------------------------------------------------------------

def _rebuild(module, img_channels):
    kwargs = dict(module.init_kwargs)
    kwargs['img_channels'] = img_channels
    new = type(module)(*module.init_args, **kwargs)
    return new.eval().requires_grad_(False).to(next(module.parameters()).device)


def _expand_tensor(name, old, new_shape, channels):
    """The RGB version of tensor `name` (`old` from the grey network)."""
    if tuple(old.shape) == tuple(new_shape):
        return old
    leaf = name.split('.')
    if 'torgb' in leaf and old.shape[0] == 1 and new_shape[0] == channels:  # G output: weight [1, C, 1, 1], bias [1]
        return old.repeat([channels] + [1] * (old.ndim - 1))
    if 'fromrgb' in leaf and old.ndim == 4 and old.shape[1] == 1 and new_shape[1] == channels:  # D input: [C, 1, 1, 1]
        # The layer scales its weight by 1 / sqrt(in_channels): undo the change of that gain, then split w over channels.
        return old.repeat([1, channels, 1, 1]) * (channels ** 0.5 / channels)
    raise ValueError(f'cannot map {name} {tuple(old.shape)} to {tuple(new_shape)}')


def module_to_rgb(module, channels=3):
    """A copy of a 1-channel Generator or Discriminator with `channels` image channels (see module docstring)."""
    if int(module.img_channels) == channels:
        return copy.deepcopy(module)
    if int(module.img_channels) != 1:
        raise ValueError(f'expected a 1-channel network, got {module.img_channels} channels')
    new = _rebuild(module, channels)
    old_state = module.state_dict()
    new_state = new.state_dict()
    with torch.no_grad():
        new.load_state_dict({name: _expand_tensor(name, old_state[name], value.shape, channels)
                             for name, value in new_state.items()})
    return new


def grey_to_rgb(data, channels=3):
    """`{G, D, G_ema, ...}` of a 1-channel network -> the same dict with RGB G, D and G_ema.

    Other entries (augment_pipe, training_set_kwargs, ...) are kept; `training_set_kwargs`, if
    present, is dropped because it describes the grey dataset.
    """
    out = {}
    for key, value in data.items():
        if key in ('G', 'D', 'G_ema') and isinstance(value, torch.nn.Module):
            out[key] = module_to_rgb(value, channels)
        elif key != 'training_set_kwargs':
            out[key] = value
    return out

#----------------------------------------------------------------------------
