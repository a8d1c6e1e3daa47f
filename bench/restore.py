"""Restoration benchmark: every held-out image x task x level x method, one fixed hyperparameter set.

For each clean image x, the true operator f makes the observation y = f(x); each method restores
x_hat from y. Recorded per case: accuracy = LPIPS(x_hat, x), fidelity = LPIPS(f(x_hat), y) (at the
image size for resampling tasks), PSNR and SSIM against x. NIQE and patch FID are not computed here.

Writes <outdir>/results.csv (one row per image x method x task x level, flushed after each case;
cases already there are skipped, so an interrupted run resumes), results.md (means per method x
task x level) and examples.png (rows: GT | observation | each method, first image per task/level).
Compositions (sr+jpeg, ...) are not part of this first version.

\b
Examples:
  python bench/restore.py --network init:tiny32 --data imgs/ --methods ngd,pti --tasks sr,inpaint \\
      --levels XS --num-images 2 --steps 2 --lpips-backbone random --outdir out/restore
  python bench/restore.py --network ffhq.pkl --data ffhq-test.zip --methods ngd,pti,cri --levels XS,M,XL \\
      --num-images 100 --outdir out/restore
"""

import csv
import math
import os
import sys
import time

import click
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dnnlib  # noqa: E402
import legacy  # noqa: E402
from torch_utils.image_utils import make_grid, parse_device, save_image, to_uint8  # noqa: E402

TASKS = ('sr', 'inpaint', 'denoise', 'jpeg', 'colorize')
FIELDS = ('image', 'method', 'task', 'level', 'accuracy_lpips', 'fidelity_lpips', 'psnr', 'ssim', 'seconds')
METRICS = ('accuracy_lpips', 'fidelity_lpips', 'psnr', 'ssim', 'seconds')

#----------------------------------------------------------------------------

def _split(text):
    return [t.strip() for t in str(text).split(',') if t.strip()]

def task_spec(task, level):
    # colorize has no levels: one case, recorded under each requested level for a uniform table.
    return 'colorize' if task == 'colorize' else f'{task}:{level}'

def load_images(data, num_images, resolution):
    """The first `num_images` images of a folder or dataset zip -> list of (name, tensor [1, 3, R, R] in [-1, 1])."""
    from training.dataset import ImageFolderDataset
    dataset = ImageFolderDataset(path=data, resolution=resolution)
    out = []
    for idx in range(min(num_images, len(dataset))):
        img = dataset[idx][0]
        img = torch.from_numpy(np.asarray(img, dtype=np.float32))[None] / 127.5 - 1
        if img.shape[1] == 1:
            img = img.repeat(1, 3, 1, 1)
        name = os.path.splitext(os.path.basename(dataset._all_fnames[dataset._raw_idx[idx]]))[0]  # pylint: disable=protected-access
        out.append((name, img))
    return out

def read_done(csv_path):
    if not os.path.isfile(csv_path):
        return [], set()
    with open(csv_path, newline='') as f:
        rows = list(csv.DictReader(f))
    return rows, {(r['image'], r['method'], r['task'], r['level']) for r in rows}

def append_row(csv_path, row):
    new = not os.path.isfile(csv_path) or os.path.getsize(csv_path) == 0
    with open(csv_path, 'a', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)
        f.flush()
        os.fsync(f.fileno())

def write_markdown(rows, path):
    groups = {}
    for r in rows:
        groups.setdefault((r['method'], r['task'], r['level']), []).append(r)
    lines = ['| method | task | level | n | ' + ' | '.join(METRICS) + ' |',
             '|' + '---|' * (4 + len(METRICS))]
    for (method, task, level), rs in sorted(groups.items()):
        means = []
        for m in METRICS:
            vals = [float(r[m]) for r in rs if math.isfinite(float(r[m]))]
            means.append(f'{np.mean(vals):.4f}' if vals else 'n/a')
        lines.append(f'| {method} | {task} | {level} | {len(rs)} | ' + ' | '.join(means) + ' |')
    with dnnlib.util.atomic_write(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')

#----------------------------------------------------------------------------

@click.command(help=__doc__)
@click.option('--network', 'network_spec', required=True, help='Network pickle, zoo name or init:PRESET')
@click.option('--data', required=True, help='Held-out clean images: folder of images or dataset .zip')
@click.option('--methods', default='ngd,pti', show_default=True, help='Comma list of pti,cri,ngd,dgp')
@click.option('--tasks', default='sr,inpaint,denoise,jpeg', show_default=True, help='Comma list of ' + ','.join(TASKS))
@click.option('--levels', default='XS,M,XL', show_default=True, help='Comma list of XS,S,M,L,XL')
@click.option('--num-images', type=int, default=10, show_default=True)
@click.option('--steps', default=None, help='Steps per phase (N or comma list, as in invert.py); method defaults if unset')
@click.option('--outdir', required=True)
@click.option('--device', default='auto', show_default=True)
@click.option('--lpips-backbone', type=click.Choice(['pretrained', 'random']), default='pretrained', show_default=True)
@click.option('--seed', type=int, default=0, show_default=True)
def main(network_spec, data, methods, tasks, levels, num_images, steps, outdir, device, lpips_backbone, seed):
    import invert
    from inversion import common
    from inversion.degradations import LEVELS, parse_degradation
    from metrics import restoration

    try:
        device = parse_device(device)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint='--device')
    methods, tasks, levels = _split(methods), _split(tasks), _split(levels)
    for m in methods:
        if m not in invert.METHODS or m == 'qc':
            raise click.BadParameter(f'unknown or unsupported method "{m}"', param_hint='--methods')
    for t in tasks:
        if t not in TASKS:
            raise click.BadParameter(f'unknown task "{t}" (compositions are not supported yet)', param_hint='--tasks')
    for lv in levels:
        if lv not in LEVELS:
            raise click.BadParameter(f'unknown level "{lv}"', param_hint='--levels')
    step_kwargs = {m: invert.parse_steps(m, steps) for m in methods}

    net = legacy.load_network(network_spec, device=device, verbose=False)
    G, D = net['G_ema'].eval(), net.get('D')
    res = G.synthesis.img_resolution
    images = load_images(data, num_images, res)
    if not images:
        raise click.ClickException(f'no images in {data}')
    random_backbone = lpips_backbone == 'random'
    lpips_alex = invert.build_lpips('alex', random_backbone).to(device)
    lpips_vgg = invert.build_lpips('vgg', random_backbone).to(device) if {'ngd', 'pti'} & set(methods) else None
    print('Note: NIQE and patch FID are not computed by this version.')

    os.makedirs(outdir, exist_ok=True)
    csv_path = os.path.join(outdir, 'results.csv')
    _rows, done = read_done(csv_path)
    examples = {}  # (task, level) -> [GT, observation, each method]
    for name, clean in images:
        clean = clean.to(device)
        for task in tasks:
            for level in levels:
                spec = task_spec(task, level)
                degradation = parse_degradation(spec, res, device=device, seed=seed)
                torch.manual_seed(seed)
                with torch.no_grad():
                    y = common.degrade(degradation, clean, true=True)
                y_img = common.to_image_size(degradation, y, res)
                panel = examples.setdefault((task, level), [clean, y_img]) if name == images[0][0] else None
                for method in methods:
                    if (name, method, task, level) in done:
                        continue
                    torch.manual_seed(seed)
                    t0 = time.time()
                    out = invert.run_method(method, G, D, y, degradation, lpips_alex, lpips_vgg, step_kwargs[method],
                                            None, seed, 'w', False, 2000, progress=False)
                    seconds = time.time() - t0
                    with torch.no_grad():
                        pred = out.restored.clamp(-1, 1)
                        torch.manual_seed(seed)
                        redeg = common.degrade(degradation, pred, true=True)
                        acc = float(lpips_alex(pred, clean)[0])
                        fid = float(lpips_alex(common.to_image_size(degradation, redeg, res), y_img)[0])
                        p = float(restoration.psnr_torch((pred + 1) / 2, (clean + 1) / 2, 1.0)[0])
                        s = float(restoration.ssim_torch((pred + 1) / 2, (clean + 1) / 2, 1.0)[0])
                    row = dict(image=name, method=method, task=task, level=level, accuracy_lpips=f'{acc:.6f}',
                               fidelity_lpips=f'{fid:.6f}', psnr=f'{p:.4f}', ssim=f'{s:.6f}', seconds=f'{seconds:.3f}')
                    append_row(csv_path, row)
                    done.add((name, method, task, level))
                    print(f'{name} {method} {spec}: LPIPS {acc:.4f} fidelity {fid:.4f} PSNR {p:.2f} SSIM {s:.4f} ({seconds:.1f}s)',
                          flush=True)
                    if panel is not None:
                        panel.append(pred)

    rows, _ = read_done(csv_path)
    write_markdown(rows, os.path.join(outdir, 'results.md'))
    if examples:
        width = max(len(p) for p in examples.values())
        tiles = []
        for panel in examples.values():
            panel = panel + [torch.full_like(panel[0], -1)] * (width - len(panel))
            tiles += [p[:1].clamp(-1, 1) for p in panel]
        grid = make_grid(to_uint8(torch.cat(tiles)), (width, len(examples)))
        save_image(grid, os.path.join(outdir, 'examples.png'))
    print(f'wrote {csv_path} ({len(rows)} rows), results.md, examples.png')

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
