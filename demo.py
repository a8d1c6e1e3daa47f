"""The main job on the embedded faces: train a generator, make it a QC-StyleGAN, train its pSp
encoder, and restore degraded faces with it (QC) and with NGD, against the observation.

Every stage is one of the toolkit's own commands (printed before it runs), so each can be rerun
or changed by hand. Outputs go to OUTDIR (default out/demo), which a new run replaces.

\b
Stages:
  1. data      96 of the 100 grey faces of skimage's lfw_subset -> OUTDIR/data/train.zip; 4 held out
  2. train     StyleGAN2-ADA, --cfg cpu32 --mirror 1, with the download-free rfkid1k_full metric
               (KID in a fixed random CNN's features) at every snapshot
  3. qc        QC-StyleGAN fine-tuning of that network (--degradation demo32: ranges for 32 px)
  4. encoder   a tiny-backbone pSp (w, q) encoder for the QC network
  5. targets   ground truths: the held-out faces and faces made by the QC network (sharp, q = 0)
  6. restore   invert.py --method qc --encoder ..., and --method ngd, on the same degraded targets
  7. report    PSNR/SSIM/LPIPS of the restored images and of the observation vs the ground truth

\b
Examples:
  python demo.py                       # the full demo (about 12 minutes on 2 CPU cores)
  python demo.py --size quick          # the same pipeline in about a minute (smoke test)
  python demo.py --device cuda --outdir out/demo-gpu
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import time

import click
import numpy as np

# Per size: the generator kimg, QC fine-tuning kimg, encoder steps, restoration steps and targets.
SIZES = {
    'full':  dict(kimg=48, snap=4, metric='rfkid1k_full', qc_kimg=4, enc_steps=1500, enc_batch=16, qc_steps='0,150', ngd_steps='100,100,100', gen_targets=4),
    'quick': dict(kimg=1, snap=1, metric='rfkid100_full', qc_kimg=1, enc_steps=40, enc_batch=8, qc_steps='0,20', ngd_steps='15,15,15', gen_targets=1),
}
HERE = os.path.dirname(os.path.abspath(__file__))

#----------------------------------------------------------------------------

class Stages:
    """Runs the numbered stages as subprocesses, printing each command and its time."""

    def __init__(self, total):
        self.total = total
        self.index = 0
        self.start = time.time()
        self.times = {}

    def run(self, name, argv):
        self.index += 1
        print(f'\n[demo {self.index}/{self.total}] {name}: ' + ' '.join(argv[1:]), flush=True)
        t0 = time.time()
        result = subprocess.run([sys.executable] + argv[1:], cwd=HERE, check=False)
        self.times[name] = time.time() - t0
        if result.returncode != 0:
            raise click.ClickException(f'stage "{name}" failed (exit code {result.returncode}); its output is above')
        print(f'[demo {self.index}/{self.total}] {name} done in {self.times[name]:.0f} s '
              f'(total {time.time() - self.start:.0f} s)', flush=True)

    def step(self, name):
        self.index += 1
        print(f'\n[demo {self.index}/{self.total}] {name}', flush=True)


def only(pattern, what):
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise click.ClickException(f'{what} not found ({pattern})')
    return paths[-1]


def read_metric(run_dir, metric):
    """[(kimg, value)] of `metric` from a training run (first = the network at init)."""
    path = os.path.join(run_dir, f'metric-{metric}.jsonl')
    out = []
    if os.path.isfile(path):
        with open(path, encoding='utf-8') as f:
            for line in f:
                rec = json.loads(line)
                kimg = int(os.path.basename(rec['snapshot_pkl']).split('-')[-1].split('.')[0])
                out.append((kimg, rec['results'][metric]))
    return out

#----------------------------------------------------------------------------

@click.command(help=__doc__)
@click.option('--outdir', default='out/demo', show_default=True, help='Output folder (replaced)')
@click.option('--size', type=click.Choice(list(SIZES)), default='full', show_default=True, help='full demo or a quick smoke run')
@click.option('--device', default='auto', show_default=True, help='auto, cpu, cuda or cuda:N')
@click.option('--degradation', default='sr:2', show_default=True, help='What the targets go through before restoration (invert.py spec)')
@click.option('--kimg', type=int, default=None, help='Override the generator training length')
def main(outdir, size, device, degradation, kimg):
    cfg = dict(SIZES[size])
    if kimg is not None:
        cfg['kimg'] = kimg
    outdir = os.path.abspath(outdir)
    if os.path.isdir(outdir):
        print(f'Replacing the previous demo outputs in {outdir}')
        shutil.rmtree(outdir)
    os.makedirs(outdir)
    py = 'python'
    dev = ['--device', device]
    stages = Stages(total=9)

    # 1. Data.
    data = os.path.join(outdir, 'data', 'train.zip')
    heldout = os.path.join(outdir, 'data', 'heldout')
    stages.run('data', [py, 'dataset_tool.py', '--source', 'builtin:lfw-faces', '--dest', data, '--resolution', '32',
                        '--channels', '1', '--max-images', '96'])
    stages.run('held-out data', [py, 'dataset_tool.py', '--source', 'builtin:lfw-faces', '--dest', heldout,
                                 '--resolution', '32', '--channels', '1', '--skip-images', '96'])

    # 2. StyleGAN2-ADA.
    runs = os.path.join(outdir, 'runs')
    stages.run('train the generator', [py, 'train.py', '--outdir', runs, '--data', data, '--cfg', 'cpu32',
                                       '--kimg', str(cfg['kimg']), '--snap', str(cfg['snap']), '--metrics', cfg['metric'],
                                       '--mirror', '1', '--workers', '0'] + dev)
    run_dir = only(os.path.join(runs, '00000-*'), 'the training run')
    network = only(os.path.join(run_dir, 'network-snapshot-*.pkl'), 'a generator snapshot')

    # 3. QC-StyleGAN.
    stages.run('QC-StyleGAN fine-tuning', [py, 'train.py', '--outdir', runs, '--data', data, '--cfg', 'cpu32', '--qc',
                                           '--resume', network, '--degradation', 'demo32', '--kimg', str(cfg['qc_kimg']),
                                           '--snap', '1', '--workers', '0'] + dev)
    qc_dir = only(os.path.join(runs, '*-qc'), 'the QC run')
    qc_net = only(os.path.join(qc_dir, 'network-snapshot-*.pkl'), 'a QC snapshot')

    # 4. pSp encoder.
    enc_runs = os.path.join(outdir, 'encoder')
    stages.run('train the pSp encoder', [py, 'train_encoder.py', '--outdir', enc_runs, '--network', qc_net, '--data', data,
                                         '--backbone', 'tiny', '--input-size', '32', '--batch', str(cfg['enc_batch']),
                                         '--steps', str(cfg['enc_steps']), '--degradation', 'demo32', '--opt', 'adam',
                                         '--lr', '1e-3', '--lpips-backbone', 'random', '--val-images', '8',
                                         '--tick', '100', '--val-every', str(max(cfg['enc_steps'] // 3, 1)),
                                         '--snap', str(cfg['enc_steps']), '--workers', '0'] + dev)
    encoder = only(os.path.join(enc_runs, '*', 'checkpoint.pt'), 'the encoder checkpoint')

    # 5. Ground-truth targets: held-out faces and generator-made faces (sharp, q = 0).
    gen_dir = os.path.join(outdir, 'generated')
    seeds = f'1000-{1000 + cfg["gen_targets"] - 1}'
    stages.run('generator-made targets', [py, 'generate.py', '--network', qc_net, '--seeds', seeds, '--outdir', gen_dir,
                                          '--trunc', '0.7', '--grid'] + dev)
    targets = os.path.join(outdir, 'targets')
    os.makedirs(targets)
    for i, path in enumerate(sorted(glob.glob(os.path.join(heldout, '*', '*.png')))):
        shutil.copyfile(path, os.path.join(targets, f'heldout{i}.png'))
    for path in sorted(glob.glob(os.path.join(gen_dir, 'seed[0-9][0-9][0-9][0-9].png'))):
        shutil.copyfile(path, os.path.join(targets, 'generated-' + os.path.basename(path)))

    # 6. Restoration: QC with the encoder, and NGD, on the same degraded targets.
    common = ['--target', targets, '--ground-truth', targets, '--synthesize-degradation', '--degradation', degradation,
              '--lpips-backbone', 'random'] + dev
    methods = dict(qc=['--encoder', encoder, '--steps', cfg['qc_steps']], ngd=['--steps', cfg['ngd_steps']])
    for method, extra in methods.items():
        stages.run(f'restore with {method}', [py, 'invert.py', '--network', qc_net, '--method', method,
                                              '--outdir', os.path.join(outdir, f'restore-{method}')] + common + extra)

    # 7. Report.
    stages.step('report')
    sys.path.insert(0, HERE)
    from inversion import report
    from torch_utils.image_utils import save_image
    results = {m: report.load_results(os.path.join(outdir, f'restore-{m}', 'results.json')) for m in methods}
    groups = {'held-out': 'heldout', 'generated': 'generated-'}
    table = report.group_scores(results, groups)
    stems = sorted(next(iter(results.values()))['images'])
    columns = [('observed', lambda s: os.path.join(outdir, 'restore-qc', f'{s}_observed.png'))]
    columns += [(m.upper(), (lambda s, m=m: os.path.join(outdir, f'restore-{m}', f'{s}_restored.png'))) for m in methods]
    columns += [('truth', lambda s: os.path.join(targets, f'{s}.png'))]
    panel_path = os.path.join(outdir, 'restoration.png')
    save_image(report.restoration_panel(stems, columns, scale=4), panel_path)
    metric = read_metric(run_dir, cfg['metric'])
    summary = dict(size=size, device=device, degradation=degradation, generator=os.path.relpath(network, outdir),
                   qc_generator=os.path.relpath(qc_net, outdir), encoder=os.path.relpath(encoder, outdir),
                   metric=cfg['metric'], metric_by_kimg=metric, table=table,
                   beats_observation={m: report.beats_observation(table, m) for m in methods},
                   stage_seconds=stages.times, total_seconds=time.time() - stages.start)
    with open(os.path.join(outdir, 'summary.json'), 'w', encoding='utf-8') as f:
        json.dump(summary, f, indent=2)

    fakes = only(os.path.join(run_dir, 'fakes[0-9]*.png'), 'the generator grid')
    print(f'\nDemo finished in {summary["total_seconds"] / 60:.1f} min ({size}, device {device}).')
    if metric:
        print(f'Generator quality, {cfg["metric"]} (random-feature KID, lower is better): '
              f'{metric[0][1]:.1f} at init -> {metric[-1][1]:.1f} after {metric[-1][0]} kimg')
    print(f'Restoration of {degradation} targets vs ground truth (means):')
    print(report.format_table(table, list(methods)))
    print('Pictures to open:')
    print(f'  {os.path.relpath(panel_path)}   observed | QC | NGD | truth, x4')
    print(f'  {os.path.relpath(os.path.join(run_dir, "reals.png"))}   vs   {os.path.relpath(fakes)}   (training faces vs generated)')
    print(f'  {os.path.relpath(only(os.path.join(qc_dir, "fakes_degraded[0-9]*.png"), "QC grid"))}   (QC: degraded versions)')
    print(f'  {os.path.relpath(os.path.join(outdir, "summary.json"))}')


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
