"""Readable pictures: labelled, upscaled grids (torch_utils.image_utils.labelled_grid) and where they are used."""

import os

import numpy as np
import PIL.Image
from click.testing import CliRunner

from torch_utils import image_utils


def _solid(colors, size=16):
    return np.stack([np.full([size, size, 3], c, np.uint8) for c in colors])

def _ink(region):
    return int((region.min(axis=2) < 128).sum())

def test_grid_layout_has_no_empty_cells():
    for n in range(1, 41):
        gw, gh = image_utils.grid_layout(n)
        assert gw * gh == n and gw >= gh
    assert image_utils.grid_layout(12) == (4, 3) and image_utils.grid_layout(7) == (7, 1)

def test_labelled_grid_sizes_and_labels():
    images = _solid([(200, 30, 30), (30, 200, 30), (30, 30, 200)])
    grid = image_utils.labelled_grid(images, (3, 1), col_labels=['observation', 'restored', 're-degraded'])
    top = grid.shape[0] - 256
    assert top > 10 and grid.shape[1] == 3 * 256 + 2 * 4  # 16 px cells upscaled x16 (nearest), 4 px gaps
    # Cells are the images, upscaled by nearest neighbour (solid colours stay exact).
    for col, color in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        cell = grid[top:, col * 260:col * 260 + 256]
        assert (cell == color).all()
    # Each column has its label drawn above it; no label, no ink.
    for col in range(3):
        assert _ink(grid[:top, col * 260:col * 260 + 256]) > 20
    blank = image_utils.labelled_grid(images, (3, 1), col_labels=['observation', '', 're-degraded'])
    assert _ink(blank[:top, 260:516]) == 0 and _ink(blank[:top, :256]) > 20
    # The drawn text is the label: another text gives other header pixels, same cells.
    other = image_utils.labelled_grid(images, (3, 1), col_labels=['ground truth', 'restored', 're-degraded'])
    assert not np.array_equal(other[:top, :256], grid[:top, :256]) and np.array_equal(other[:top, 260:], grid[:top, 260:])
    assert np.array_equal(other[top:], grid[top:])
    # Row labels go left of the rows; a title adds a line on top.
    rows = image_utils.labelled_grid(_solid([(10, 10, 10)] * 4, size=64), (2, 2), row_labels=['SeFa 0', 'SeFa 1'], title='edits')
    left = rows.shape[1] - (2 * 256 + 4)
    assert left > 10 and rows.shape[0] > 2 * 256 + 4 and _ink(rows[-256:, :left]) > 20
    # Large images are not upscaled.
    assert image_utils.labelled_grid(_solid([(0, 0, 0)], size=300), (1, 1)).shape == (300, 300, 3)

def test_generate_grid_layout_and_labels(tmp_path):
    import generate
    out = tmp_path / 'o'
    r = CliRunner().invoke(generate.generate_main, ['--network', 'init:tiny32', '--seeds', '0-5', '--outdir', str(out),
                                                    '--grid', '--device', 'cpu'])
    assert r.exit_code == 0, r.output
    grid = np.asarray(PIL.Image.open(out / 'grid.png'))
    assert grid.shape[1] == 3 * 256 + 2 * 4 and 2 * 256 + 4 < grid.shape[0] < 2 * 256 + 60  # 3x2, no empty cell
    assert '(3x2)' in r.output and _ink(grid[:grid.shape[0] - 2 * 256 - 4]) > 20  # the title names the seeds
    seed0 = np.asarray(PIL.Image.open(out / 'seed0000.png'))
    top = grid.shape[0] - 2 * 256 - 4
    assert np.array_equal(grid[top:top + 256:8, :256:8], seed0)  # nearest upscaling of the first seed
    assert os.path.isfile(out / 'seed0005.png')
