"""Generate images with a pretrained or freshly initialised network.

\b
Examples:
  python generate.py --network init:tiny32 --seeds 0-15 --grid --outdir out/demo
  python generate.py --network ffhq256 --seeds 0-7 --trunc 0.7 --outdir out/ffhq
  python generate.py --network cifar10 --seeds 0-9 --class 3 --outdir out/cifar --device cuda
"""

import os
import re

import click
import numpy as np
import torch

import dnnlib
import legacy
from torch_utils import image_utils

#----------------------------------------------------------------------------

_MAX_SEEDS = 1_000_000

def parse_range(text):
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11]; every seed must be in [0, 2**32)."""
    if isinstance(text, list):
        return text
    values = []
    for part in str(text).split(','):
        part = part.strip()
        match = re.fullmatch(r'(\d+)-(\d+)', part)
        if match:
            lo, hi = int(match.group(1)), int(match.group(2))
            if hi < lo:
                raise ValueError(f'range "{part}" is empty (end before start)')
            if hi >= 2**32:
                raise ValueError(f'seed {hi} is out of range: seeds must be in 0..{2**32 - 1}')
            if hi - lo >= _MAX_SEEDS:
                raise ValueError(f'range "{part}" has {hi - lo + 1} seeds; at most {_MAX_SEEDS} per call')
            values.extend(range(lo, hi + 1))
        elif re.fullmatch(r'\d+', part):
            values.append(int(part))
        else:
            raise ValueError(f'"{part}" is not a number or a range like 0-7 (seeds are non-negative)')
    bad = [v for v in values if v >= 2**32]
    if bad:
        raise ValueError(f'seed {bad[0]} is out of range: seeds must be in 0..{2**32 - 1}')
    return values

class _RangeType(click.ParamType):
    name = 'range'
    def convert(self, value, param, ctx):
        try:
            return parse_range(value)
        except ValueError as err:
            self.fail(str(err), param, ctx)

#----------------------------------------------------------------------------

def generate_images(G, seeds, truncation_psi=1.0, truncation_cutoff=None, class_idx=None,
                    noise_mode='const', batch_size=8, device=torch.device('cpu')):
    """Images for `seeds` as float `[N, C, H, W]` in about [-1, 1] (CPU).

    z for seed s is `np.random.RandomState(s).randn(1, z_dim)` as in the reference, so the
    same seed gives the same image as the official generate.py.
    """
    label = torch.zeros([1, G.c_dim], device=device)
    if G.c_dim != 0:
        if class_idx is None:
            raise ValueError(f'this network is conditional ({G.c_dim} classes): pass --class')
        if not 0 <= class_idx < G.c_dim:
            raise ValueError(f'--class {class_idx} is out of range: the network has classes 0..{G.c_dim - 1}')
        label[:, class_idx] = 1
    elif class_idx is not None:
        print('warning: --class is ignored for an unconditional network')

    images = []
    for start in range(0, len(seeds), batch_size):
        batch_seeds = seeds[start:start + batch_size]
        z = np.concatenate([np.random.RandomState(seed).randn(1, G.z_dim) for seed in batch_seeds])
        z = torch.from_numpy(z).to(device=device, dtype=torch.float32)
        with torch.no_grad():
            img = G(z, label.repeat([len(batch_seeds), 1]), truncation_psi=truncation_psi,
                    truncation_cutoff=truncation_cutoff, noise_mode=noise_mode)
        images.append(img.cpu())
    return torch.cat(images)

#----------------------------------------------------------------------------

@click.command(help=__doc__)
@click.option('--network', 'network_spec', help='Network: path, URL, zoo name (e.g. ffhq256) or init:PRESET', required=True)
@click.option('--seeds', type=_RangeType(), help='List of random seeds, e.g. 0-7 or 1,5,9', required=True)
@click.option('--trunc', 'truncation_psi', type=float, help='Truncation psi', default=1, show_default=True)
@click.option('--trunc-cutoff', 'truncation_cutoff', type=click.IntRange(min=1), help='Truncate only the first N ws')
@click.option('--class', 'class_idx', type=click.IntRange(min=0), help='Class label (conditional networks)')
@click.option('--noise-mode', help='Noise mode', type=click.Choice(['const', 'random', 'none']), default='const', show_default=True)
@click.option('--outdir', help='Where to save the output images', type=str, required=True, metavar='DIR')
@click.option('--device', help='cpu, cuda, cuda:N or auto', default='auto', show_default=True)
@click.option('--grid', help='Also save all images as one grid.png', is_flag=True)
@click.option('--batch', 'batch_size', type=click.IntRange(min=1), help='Images per forward pass', default=8, show_default=True)
def generate_main(network_spec, seeds, truncation_psi, truncation_cutoff, class_idx, noise_mode, outdir, device, grid, batch_size):
    try:
        device = image_utils.parse_device(device)
        print(f'Loading network "{network_spec}" on {device}...')
        G = legacy.load_network(network_spec, device=device)['G_ema']
        images = generate_images(G, seeds, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                                 class_idx=class_idx, noise_mode=noise_mode, batch_size=batch_size, device=device)
    except (legacy.NetworkLoadError, dnnlib.DownloadError, FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err))

    os.makedirs(outdir, exist_ok=True)
    uint8_images = image_utils.to_uint8(images)
    for seed, array in zip(seeds, uint8_images):
        image_utils.save_image(array, os.path.join(outdir, f'seed{seed:04d}.png'))
    print(f'Wrote {len(seeds)} images to {outdir}')
    if grid:
        grid_path = os.path.join(outdir, 'grid.png')
        image_utils.save_image(image_utils.make_grid(uint8_images), grid_path)
        print(f'Wrote {grid_path}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    generate_main()  # pylint: disable=no-value-for-parameter
