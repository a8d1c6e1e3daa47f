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
from dnnlib import cli
from torch_utils import devices
from torch_utils import image_utils
from torch_utils import misc

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

def seed_q(G, seed):
    """The random quality code of a seed: drawn after z from the same RandomState, so it is
    independent of z (unlike the released code, whose q repeats the first entries of z)."""
    return np.random.RandomState(seed).randn(1, G.z_dim + G.q_dim)[:, G.z_dim:]

def parse_q(spec, G, image_seed=None, q_seed=None):
    """'zero' | 'random' | 'seed:K' | FILE.npy -> float64 `[1, q_dim]` or `[N, q_dim]` (numpy)."""
    if G.q_dim == 0:
        if spec not in (None, 'zero'):
            raise ValueError('this network has no quality code (it is not a QC-StyleGAN network): drop --q/--q-from/--q-to')
        return None
    if spec in (None, 'zero'):
        return np.zeros([1, G.q_dim])
    if spec == 'random':
        if q_seed is not None:
            return np.random.RandomState(q_seed).randn(1, G.q_dim)
        return seed_q(G, image_seed)
    if spec.startswith('seed:'):
        return np.random.RandomState(int(spec[5:])).randn(1, G.q_dim)
    if not os.path.isfile(spec):
        raise ValueError(f'--q "{spec}" is not zero, random, seed:K or an existing .npy file')
    q = np.load(spec).astype(np.float64)
    q = q.reshape(1, -1) if q.ndim == 1 else q
    if q.ndim != 2 or q.shape[1] != G.q_dim:
        raise ValueError(f'{spec}: q has shape {list(q.shape)}, expected [{G.q_dim}] or [N, {G.q_dim}] for this network')
    return q

def _label(G, class_idx, device):
    label = torch.zeros([1, G.c_dim], device=device)
    if G.c_dim != 0:
        if class_idx is None:
            raise ValueError(f'this network is conditional ({G.c_dim} classes): pass --class')
        if not 0 <= class_idx < G.c_dim:
            raise ValueError(f'--class {class_idx} is out of range: the network has classes 0..{G.c_dim - 1}')
        label[:, class_idx] = 1
    elif class_idx is not None:
        print('warning: --class is ignored for an unconditional network')
    return label

def generate_images(G, seeds, truncation_psi=1.0, truncation_cutoff=None, class_idx=None,
                    noise_mode='const', batch_size=8, device=torch.device('cpu'), q=None):
    """Images for `seeds` as float `[N, C, H, W]` in about [-1, 1] (CPU).

    z for seed s is `np.random.RandomState(s).randn(1, z_dim)` as in the reference, so the
    same seed gives the same image as the official generate.py. For QC generators, q is None
    (sharp), one code `[1, q_dim]` for every seed, `[len(seeds), q_dim]`, or a callable seed -> code.
    """
    label = _label(G, class_idx, device)
    if q is not None and not misc.is_qc(G):
        raise ValueError('this network has no quality code')

    images = []
    for start in range(0, len(seeds), batch_size):
        batch_seeds = seeds[start:start + batch_size]
        z = np.concatenate([np.random.RandomState(seed).randn(1, G.z_dim) for seed in batch_seeds])
        z = torch.from_numpy(z).to(device=device, dtype=torch.float32)
        batch_q = None
        if callable(q):
            batch_q = np.concatenate([q(seed) for seed in batch_seeds])
        elif q is not None:
            batch_q = q if q.shape[0] == 1 else q[start:start + batch_size]
            batch_q = np.repeat(batch_q, len(batch_seeds), axis=0) if batch_q.shape[0] == 1 else batch_q
        if batch_q is not None:
            batch_q = torch.from_numpy(batch_q).to(device=device, dtype=torch.float32)
        with torch.no_grad():
            img = G(z, label.repeat([len(batch_seeds), 1]), q=batch_q, truncation_psi=truncation_psi,
                    truncation_cutoff=truncation_cutoff, noise_mode=noise_mode)
        images.append(img.cpu())
    return torch.cat(images)

#----------------------------------------------------------------------------

@click.command(help=__doc__)
@click.option('--network', 'network_spec', help='Network: pickle or weights file, URL, zoo name (e.g. ffhq256) or init:PRESET', required=True, metavar='NETWORK')
@click.option('--seeds', type=_RangeType(), help='List of random seeds, e.g. 0-7 or 1,5,9', required=True)
@click.option('--trunc', 'truncation_psi', type=cli.FiniteFloat(min=0, max=1), help='Truncation psi (0 = mean image, 1 = no truncation)', default=1, show_default=True)
@click.option('--trunc-cutoff', 'truncation_cutoff', type=click.IntRange(min=1), help='Truncate only the first N ws')
@click.option('--class', 'class_idx', type=click.IntRange(min=0), help='Class label (conditional networks)')
@click.option('--noise-mode', help='Noise mode', type=click.Choice(['const', 'random', 'none']), default='const', show_default=True)
@click.option('--outdir', help='Where to save the output images', type=str, required=True, metavar='DIR')
@click.option('--device', help=devices.DEVICE_HELP, default='auto', show_default=True)
@click.option('--grid', help='Also save all images as one grid.png', is_flag=True)
@click.option('--batch', 'batch_size', type=click.IntRange(min=1), help='Images per forward pass', default=8, show_default=True)
@click.option('--q', 'q_spec', help='QC networks: degraded-image quality code: random, seed:K or FILE.npy ([q_dim] or [N, q_dim]); zero = sharp only  [default: random]', default=None)
@click.option('--q-seed', type=click.IntRange(min=0), help='QC networks: one random q from this seed for every image [default: per image seed]')
@click.option('--q-from', help='QC networks: interpolate the quality code from this q (zero, random, seed:K, FILE.npy)...')
@click.option('--q-to', help='...to this q, written as one strip per seed')
@click.option('--steps', type=click.IntRange(min=2), default=8, show_default=True, help='Images in a --q-from/--q-to strip')
@click.option('--compile', 'compile_synthesis', is_flag=True, help='Run the synthesis network through torch.compile (pays off for many seeds)')
@click.option('--fast', 'fast', is_flag=True, help='Fastest inference, same images within float tolerance: torch.compile with '
              'inductor freezing of a channels-last snapshot of the synthesis network, non-fused modulation (bench/speed.py unf-cl-compile-freeze)')
@cli.trust_pickle_option
def generate_main(network_spec, seeds, truncation_psi, truncation_cutoff, class_idx, noise_mode, outdir, device, grid, batch_size,
                  q_spec, q_seed, q_from, q_to, steps, compile_synthesis=False, fast=False):
    """Writes seedNNNN.png; for QC networks also seedNNNN_degraded.png and seedNNNN_pair.png (sharp | degraded),
    and with --q-from/--q-to seedNNNN_qstrip.png."""
    kwargs = dict(truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, class_idx=class_idx,
                  noise_mode=noise_mode, batch_size=batch_size)
    try:
        dnnlib.util.check_output_dir(outdir, '--outdir')
    except OSError as err:
        raise click.ClickException(err.strerror)
    try:
        device = devices.parse_device(device)
        print(f'Loading network "{network_spec}" on {device}...')
        G = legacy.load_network(network_spec, device=device)['G_ema']
        if fast:  # this G is never saved or changed, so an instance-level forward is harmless
            G.synthesis.forward = misc.frozen_forward(G.synthesis, fused_modconv=False)
        elif compile_synthesis:
            G.synthesis.forward = misc.compiled_forward(G.synthesis)
        is_qc = misc.is_qc(G)
        if (q_from is None) != (q_to is None):
            raise click.UsageError('--q-from and --q-to go together')
        if not is_qc and (q_from is not None or q_seed is not None or q_spec is not None):
            raise click.UsageError(f'{network_spec} has no quality code (it is not a QC-StyleGAN network): drop the --q options')
        if class_idx is not None and G.c_dim == 0:
            raise click.UsageError(f'--class: {network_spec} is unconditional (it has no classes): drop --class')
        q_spec = 'random' if q_spec is None else q_spec
        sharp = generate_images(G, seeds, device=device, **kwargs)
        degraded = None
        if is_qc and q_spec != 'zero':
            q = (lambda seed: parse_q(q_spec, G, image_seed=seed, q_seed=q_seed)) if q_spec == 'random' else parse_q(q_spec, G, q_seed=q_seed)
            if not callable(q) and q.shape[0] not in (1, len(seeds)):
                raise ValueError(f'{q_spec}: {q.shape[0]} codes for {len(seeds)} seeds; give one code or one per seed')
            degraded = generate_images(G, seeds, device=device, q=q, **kwargs)
        strips = None
        if q_from is not None:
            strips = []
            for seed in seeds:
                qa = parse_q(q_from, G, image_seed=seed, q_seed=q_seed)
                qb = parse_q(q_to, G, image_seed=seed, q_seed=q_seed)
                if qa.shape[0] != 1 or qb.shape[0] != 1:
                    raise ValueError('--q-from/--q-to need a single code each')
                codes = np.concatenate([(1 - t) * qa + t * qb for t in np.linspace(0, 1, steps)])
                strips.append(generate_images(G, [seed] * steps, device=device, q=codes, **kwargs))
    except (legacy.NetworkLoadError, dnnlib.DownloadError, FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err))

    try:
        _write_outputs(outdir, seeds, sharp, degraded, strips, grid)
    except OSError as err:
        raise click.ClickException(f'cannot write to --outdir "{outdir}": {dnnlib.util.describe_os_error(err)}')

def _write_outputs(outdir, seeds, sharp, degraded, strips, grid):
    """Write the PNGs (each atomically)."""
    os.makedirs(outdir, exist_ok=True)
    uint8_images = image_utils.to_uint8(sharp)
    for seed, array in zip(seeds, uint8_images):
        image_utils.save_image(array, os.path.join(outdir, f'seed{seed:04d}.png'))
    if degraded is not None:
        uint8_degraded = image_utils.to_uint8(degraded)
        for seed, a, b in zip(seeds, uint8_images, uint8_degraded):
            image_utils.save_image(b, os.path.join(outdir, f'seed{seed:04d}_degraded.png'))
            image_utils.save_image(np.concatenate([a, b], axis=1), os.path.join(outdir, f'seed{seed:04d}_pair.png'))
    if strips is not None:
        for seed, strip in zip(seeds, strips):
            image_utils.save_image(np.concatenate(list(image_utils.to_uint8(strip)), axis=1), os.path.join(outdir, f'seed{seed:04d}_qstrip.png'))
    print(f'Wrote {len(seeds)} {"sharp/degraded pairs" if degraded is not None else "images"} to {outdir}')
    if grid:
        grid_path = os.path.join(outdir, 'grid.png')
        rows = uint8_images if degraded is None else np.concatenate([uint8_images, uint8_degraded], axis=2)
        gw, gh = image_utils.grid_layout(len(rows))  # no empty cells
        seed_names = [f'seed {seed}' for seed in seeds]
        image_utils.save_labelled_grid(rows, grid_path, grid_size=(gw, gh),
                                       col_labels=seed_names if gh == 1 else None,
                                       title=('' if gh == 1 else f'seeds {", ".join(str(s) for s in seeds[:gw * 2])}'
                                              f'{"..." if len(seeds) > gw * 2 else ""} (row by row)') +
                                             (' | each cell: sharp | degraded' if degraded is not None else ''))
        print(f'Wrote {grid_path} ({gw}x{gh})' + (' (each cell: sharp | degraded)' if degraded is not None else ''))

#----------------------------------------------------------------------------

if __name__ == '__main__':
    generate_main()  # pylint: disable=no-value-for-parameter
