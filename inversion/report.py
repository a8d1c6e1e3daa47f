"""Restoration reports: compare methods with the observation they started from.

`invert.py --ground-truth` writes `results.json` with, per image, the PSNR (dB), SSIM and LPIPS of
the restored image and of the observation brought to the image size (`observation`: the baseline a
restoration has to beat). This module reads several such files (one per method), averages them over
groups of images (e.g. held-out real faces and generator-made targets, by file-name prefix), prints
one comparison table and builds a labelled, upscaled panel of the pictures.
"""

import json
import os

import numpy as np
import PIL.Image
import PIL.ImageDraw

SCORES = ('psnr', 'ssim', 'lpips')
BETTER = dict(psnr='higher', ssim='higher', lpips='lower')

#----------------------------------------------------------------------------

def load_results(path):
    """`results.json` of invert.py -> dict (`images`: stem -> record)."""
    with open(path, 'r', encoding='utf-8') as f:
        return json.load(f)


def group_scores(results_by_method, groups):
    """Mean scores per group and row.

    Args:
        results_by_method: {method name: results dict of invert.py}, in display order.
        groups:            {group name: file-stem prefix}; a stem belongs to the first matching group.
    Returns:
        {group: {'observation' | method: {'psnr', 'ssim', 'lpips', 'n'}}}; the observation row is taken
        from the first method's file (every method sees the same observation).
    """
    def group_of(stem):
        for name, prefix in groups.items():
            if stem.startswith(prefix):
                return name
        return None

    table = {}
    for idx, (method, results) in enumerate(results_by_method.items()):
        rows = {}
        for stem, rec in sorted(results.get('images', {}).items()):
            group = group_of(stem)
            if group is None or 'psnr' not in rec:
                continue
            if idx == 0 and 'observation' in rec:
                rows.setdefault((group, 'observation'), []).append(rec['observation'])
            rows.setdefault((group, method), []).append(rec)
        for (group, row), recs in rows.items():
            table.setdefault(group, {})[row] = dict({k: float(np.mean([r[k] for r in recs])) for k in SCORES}, n=len(recs))
    return table


def format_table(table, methods):
    """Text table: one line per group x (observation, methods), with the change vs the observation."""
    lines = [f'{"targets":<12} {"image":<22} {"PSNR dB":>8} {"SSIM":>6} {"LPIPS":>6}   vs observation']
    for group, rows in table.items():
        obs = rows.get('observation')
        for row in ['observation'] + list(methods):
            if row not in rows:
                continue
            s = rows[row]
            label = 'observation (upsampled)' if row == 'observation' else f'restored: {row}'
            note = ''
            if obs is not None and row != 'observation':
                dp, dl = s['psnr'] - obs['psnr'], s['lpips'] - obs['lpips']
                verdict = 'better' if dp > 0 and dl < 0 else 'NOT better'
                note = f'{verdict} (PSNR {dp:+.2f} dB, LPIPS {dl:+.3f})'
            lines.append(f'{group + " x" + str(s["n"]):<12} {label:<22} {s["psnr"]:8.2f} {s["ssim"]:6.3f} {s["lpips"]:6.3f}   {note}')
    return '\n'.join(lines)


def beats_observation(table, method):
    """True where `method` has a higher mean PSNR and a lower mean LPIPS than the observation, per group."""
    out = {}
    for group, rows in table.items():
        if method in rows and 'observation' in rows:
            out[group] = rows[method]['psnr'] > rows['observation']['psnr'] and rows[method]['lpips'] < rows['observation']['lpips']
    return out

#----------------------------------------------------------------------------
# Labelled panels. Minimal: nearest-neighbour upscaling and PIL's built-in font.

def labelled_grid(rows, col_labels=None, row_labels=None, scale=4, pad=2, label_height=14, label_width=None):
    """Tile images into a labelled grid.

    Args:
        rows:       list of rows, each a list of uint8 images `[H, W]`, `[H, W, 1]` or `[H, W, 3]`
                    (all the same size; None = empty cell).
        col_labels: one caption per column (above), or None.
        row_labels: one caption per row (left), or None.
        scale:      integer nearest-neighbour upscaling of every image.
    Returns:
        uint8 RGB array `[H', W', 3]`.
    """
    cells = [img for row in rows for img in row if img is not None]
    h, w = np.asarray(cells[0]).shape[:2]
    ch, cw = h * scale, w * scale
    ncols = max(len(r) for r in rows)
    left = 0 if not row_labels else (label_width or 6 * max(len(s) for s in row_labels) + 2 * pad)
    top = label_height if col_labels else 0
    canvas = PIL.Image.new('RGB', (left + ncols * (cw + pad) + pad, top + len(rows) * (ch + pad) + pad), (255, 255, 255))
    draw = PIL.ImageDraw.Draw(canvas)
    for j, text in enumerate(col_labels or []):
        draw.text((left + pad + j * (cw + pad), 1), str(text), fill=(0, 0, 0))
    for i, row in enumerate(rows):
        y0 = top + pad + i * (ch + pad)
        if row_labels:
            draw.text((pad, y0 + ch // 2 - 5), str(row_labels[i]), fill=(0, 0, 0))
        for j, img in enumerate(row):
            if img is None:
                continue
            arr = np.asarray(img, dtype=np.uint8)
            if arr.ndim == 3 and arr.shape[2] == 1:
                arr = arr[:, :, 0]
            pil = PIL.Image.fromarray(arr).convert('RGB').resize((cw, ch), PIL.Image.NEAREST)
            canvas.paste(pil, (left + pad + j * (cw + pad), y0))
    return np.asarray(canvas)


def read_image(path):
    """PNG -> uint8 array `[H, W, 3]`."""
    with PIL.Image.open(path) as img:
        return np.asarray(img.convert('RGB'))


def restoration_panel(stems, columns, scale=4):
    """A labelled panel: one row per stem, one column per (label, folder, file suffix or callable).

    `columns`: list of (label, fn) with fn(stem) -> image path or None.
    """
    rows = []
    for stem in stems:
        row = []
        for _label, fn in columns:
            path = fn(stem)
            row.append(read_image(path) if path and os.path.isfile(path) else None)
        rows.append(row)
    return labelled_grid(rows, col_labels=[c[0] for c in columns], row_labels=list(stems), scale=scale)

#----------------------------------------------------------------------------
