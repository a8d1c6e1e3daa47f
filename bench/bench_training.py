"""Seconds per kimg of the training loop for the `tiny` and `paper256` configs on the current device.

Runs the real training loop (phases, regularisation, ADA, G_ema) on a synthetic dataset of the
config's resolution, makes every iteration a tick, and reports the median sec/kimg over the
timed iterations (the first, which includes warm-up, is dropped).

\b
Examples:
  python bench/bench_training.py --device cpu --cfgs tiny --steps 10
  python bench/bench_training.py --device cpu --cfgs paper256 --batch 4 --steps 3
  python bench/bench_training.py --device cuda --cfgs tiny,paper256 --steps 20 --json out/bench_training.json
"""

import contextlib
import io
import json
import os
import re
import sys
import tempfile
import zipfile

import click
import numpy as np
import PIL.Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dnnlib  # noqa: E402
from dnnlib import cli  # noqa: E402
from torch_utils import devices  # noqa: E402
from torch_utils import training_stats  # noqa: E402
from training import presets  # noqa: E402
from training import training_loop  # noqa: E402

RESOLUTION = {'tiny': 32, 'paper256': 256, 'paper512': 512, 'paper1024': 1024, 'stylegan2': 1024, 'cifar': 32, 'auto': 256}

def make_synthetic_dataset(path, resolution, num_images=64, seed=0):
    rnd = np.random.RandomState(seed)
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_STORED) as zf:
        for idx in range(num_images):
            # Smooth random blobs: cheap to make, not constant, decodes like real PNGs.
            small = rnd.randint(0, 256, size=[8, 8, 3], dtype=np.uint8)
            img = PIL.Image.fromarray(small).resize((resolution, resolution), PIL.Image.BICUBIC)
            with zf.open(f'{idx:08d}.png', 'w') as f:
                img.save(f, format='PNG', compress_level=0)

def bench_cfg(cfg, device, steps, batch, data_dir):
    resolution = RESOLUTION[cfg]
    data = os.path.join(data_dir, f'synthetic{resolution}.zip')
    if not os.path.exists(data):
        make_synthetic_dataset(data, resolution)
    _desc, args = presets.setup_training_loop_kwargs(data=data, cfg=cfg, batch=batch, workers=1, device=device.type)
    args.pop('device_type')
    args.run_dir = os.path.join(data_dir, f'run-{cfg}')
    os.makedirs(args.run_dir, exist_ok=True)
    args.kimg_per_tick = args.batch_size / 1000  # one tick per iteration
    args.image_snapshot_ticks = args.network_snapshot_ticks = None
    args.image_grid_size = [2, 2]
    lines = []
    training_stats.reset()
    with contextlib.redirect_stdout(io.StringIO()):  # network summaries
        training_loop.training_loop(device=device, max_steps=steps + 1, log_fn=lambda *a, **k: lines.append(' '.join(map(str, a))), **args)
    sec_per_kimg = [float(m.group(1)) for m in (re.search(r'sec/kimg (\S+)', line) for line in lines) if m]
    timed = sec_per_kimg[1:] if len(sec_per_kimg) > 1 else sec_per_kimg
    return dnnlib.EasyDict(cfg=cfg, resolution=resolution, batch=args.batch_size, device=str(device), steps=len(timed),
                           sec_per_kimg=float(np.median(timed)), img_per_s=1000 / float(np.median(timed)))

@click.command(help=__doc__)
@click.option('--device', default='auto', show_default=True, help=devices.DEVICE_HELP)
@click.option('--cfgs', default='tiny,paper256', show_default=True, help='Comma-separated train.py --cfg presets')
@click.option('--steps', type=click.IntRange(min=1), default=5, show_default=True, help='Timed iterations per config')
@click.option('--batch', type=click.IntRange(min=1), default=None, help='Override the preset batch size (e.g. small on CPU)')
@click.option('--json', 'json_path', default=None, help='Also write the results to this JSON file')
@cli.os_errors_as_one_line
def main(device, cfgs, steps, batch, json_path):
    try:
        device = devices.parse_device(device)
    except ValueError as err:
        raise click.ClickException(str(err))
    rows = []
    with tempfile.TemporaryDirectory() as data_dir:
        print(f'{"cfg":>10} {"res":>5} {"batch":>5} {"sec/kimg":>10} {"img/s":>8}  ({device})')
        for cfg in cfgs.split(','):
            row = bench_cfg(cfg, device, steps, batch, data_dir)
            rows.append(row)
            print(f'{row.cfg:>10} {row.resolution:>5} {row.batch:>5} {row.sec_per_kimg:>10.1f} {row.img_per_s:>8.2f}', flush=True)
    if json_path:
        with dnnlib.util.atomic_write(json_path, 'w') as f:
            json.dump(rows, f, indent=2)

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
