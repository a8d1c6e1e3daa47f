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

def grid_layout(num):
    """(gw, gh) with gw * gh == num (no empty cell): the most square such layout, at least as wide
    as tall (a prime count gives one row)."""
    num = max(int(num), 1)
    gh = max(h for h in range(1, int(np.sqrt(num)) + 1) if num % h == 0)
    return num // gh, gh

def _font(size):
    import PIL.ImageFont
    try:
        return PIL.ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return PIL.ImageFont.load_default()

def _text_size(draw, text, font):
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top

def _fit_text(draw, text, font, max_width):
    """`text`, shortened with '...' until it fits `max_width` pixels."""
    text = str(text)
    if _text_size(draw, text, font)[0] <= max_width:
        return text
    while len(text) > 1 and _text_size(draw, text + '...', font)[0] > max_width:
        text = text[:-1]
    return text + '...'

def labelled_grid(images, grid_size=None, col_labels=None, row_labels=None, min_cell=256, title=None,
                  background=255, font_size=None):
    """A readable picture: uint8 images `[N, H, W, C]` (row-major) tiled into `grid_size` = (gw, gh)
    cells, each upscaled by nearest neighbour by the smallest integer factor that makes it at least
    `min_cell` px on its shorter side, with `col_labels` (gw strings) drawn above the columns,
    `row_labels` (gh strings) left of the rows and an optional `title` line on top. Missing cells
    are left as background. Returns uint8 `[H', W', 3]`."""
    import PIL.ImageDraw
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    num, height, width, _ = images.shape
    gw, gh = grid_size if grid_size is not None else grid_layout(num)
    assert gw * gh >= num, f'grid {gw}x{gh} is too small for {num} images'
    scale = max(1, int(np.ceil(min_cell / max(1, min(height, width)))))
    cell_h, cell_w = height * scale, width * scale
    font = _font(font_size or max(12, min(28, cell_w // 12)))
    probe = PIL.ImageDraw.Draw(PIL.Image.new('RGB', (8, 8)))
    line_h = probe.textbbox((0, 0), 'Agjy', font=font)[3] + 8  # down to the descenders
    pad = 4
    top = (line_h if col_labels else 0) + (line_h if title else 0)
    left = 0
    if row_labels:
        left = min(max(_text_size(probe, str(t), font)[0] for t in row_labels) + 2 * pad, max(cell_w // 2, 64))
    canvas = PIL.Image.new('RGB', (left + gw * (cell_w + pad) - pad, top + gh * (cell_h + pad) - pad), (background,) * 3)
    for idx in range(num):
        row, col = divmod(idx, gw)
        tile = PIL.Image.fromarray(np.ascontiguousarray(images[idx])).resize((cell_w, cell_h), PIL.Image.NEAREST)
        canvas.paste(tile, (left + col * (cell_w + pad), top + row * (cell_h + pad)))
    draw = PIL.ImageDraw.Draw(canvas)
    ink = (0, 0, 0) if background > 127 else (255, 255, 255)
    if title:
        draw.text((left + pad, 4), _fit_text(draw, title, font, canvas.width - left - 2 * pad), fill=ink, font=font)
    if col_labels:
        y = (line_h if title else 0) + 4
        for col, text in enumerate(list(col_labels)[:gw]):
            text = _fit_text(draw, text, font, cell_w - 2 * pad)
            x = left + col * (cell_w + pad) + (cell_w - _text_size(draw, text, font)[0]) // 2
            draw.text((x, y), text, fill=ink, font=font)
    if row_labels:
        for row, text in enumerate(list(row_labels)[:gh]):
            text = _fit_text(draw, text, font, left - 2 * pad)
            y = top + row * (cell_h + pad) + (cell_h - _text_size(draw, text, font)[1]) // 2
            draw.text((pad, y), text, fill=ink, font=font)
    return np.asarray(canvas)

def save_labelled_grid(images, path, **kwargs):
    """`labelled_grid(images, **kwargs)` written as PNG, atomically; returns the array."""
    grid = labelled_grid(images, **kwargs)
    save_image(grid, path)
    return grid

def save_image_grid(img, path, drange=(-1, 1), grid_size=None):
    """Float images `[N, C, H, W]` in `drange` -> one PNG grid, atomically."""
    save_image(make_grid(to_uint8(img, drange), grid_size), path)

#----------------------------------------------------------------------------
