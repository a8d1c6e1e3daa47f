"""Converting network outputs to images and writing them (single PNGs and grids), atomically."""


import numpy as np
import PIL.Image
import torch

import dnnlib
from torch_utils.devices import parse_device  # noqa: F401  (re-exported: scripts used to import it from here)

#----------------------------------------------------------------------------

def to_uint8(img, drange=(-1, 1)):
    """Float images `[N, C, H, W]` in `drange` -> uint8 numpy `[N, H, W, C]` (C = 1 or 3)."""
    lo, hi = drange
    img = torch.as_tensor(img).detach().to(torch.float32)
    img = (img - lo) * (255 / (hi - lo))
    img = (img + 0.5).clamp(0, 255).to(torch.uint8)
    return img.permute(0, 2, 3, 1).cpu().numpy()

def save_image(array, path):
    """Write one uint8 image `[H, W, C]` (C = 1 or 3) as PNG, atomically."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    image = PIL.Image.fromarray(array, 'L' if array.ndim == 2 else 'RGB')
    with dnnlib.util.atomic_write(path, 'wb') as f:
        image.save(f, format='PNG')

def make_grid(images, grid_size=None):
    """Tile uint8 images `[N, H, W, C]` into one `[gh*H, gw*W, C]` array; empty cells stay black.

    grid_size: (gw, gh); default is the most square layout that fits N.
    """
    images = np.asarray(images)
    num, height, width, channels = images.shape
    if grid_size is None:
        gw = int(np.ceil(np.sqrt(num)))
        gh = int(np.ceil(num / gw))
    else:
        gw, gh = grid_size
    assert gw * gh >= num, f'grid {gw}x{gh} is too small for {num} images'
    grid = np.zeros([gh * height, gw * width, channels], dtype=images.dtype)
    for idx in range(num):
        row, col = divmod(idx, gw)
        grid[row * height:(row + 1) * height, col * width:(col + 1) * width] = images[idx]
    return grid

def save_image_grid(img, path, drange=(-1, 1), grid_size=None):
    """Float images `[N, C, H, W]` in `drange` -> one PNG grid, atomically."""
    save_image(make_grid(to_uint8(img, drange), grid_size), path)

#----------------------------------------------------------------------------
