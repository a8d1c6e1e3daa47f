"""The main job on the embedded faces: train a generator, make it a QC-StyleGAN, train its pSp
encoder, and restore degraded faces with it (QC) and with NGD, against the observation.

Every stage is one of the toolkit's own commands (printed before it runs), so each can be rerun
or changed by hand. Outputs go to OUTDIR (default out/demo), which a new run replaces.

\b
Stages:
  1. data      96 of the 100 grey faces of skimage's lfw_subset -> OUTDIR/data/train-grey.zip
  2. data      the same as RGB (train.zip), and the 4 held-out faces
  3. train     StyleGAN2-ADA on the grey faces, --cfg cpu32 --mirror 1, with the download-free
               rfkid1k_full metric (KID in a fixed random CNN's features) at every snapshot
  4. rgb       the grey network as an exactly equivalent RGB network (training/channels.py), since
               the pSp encoders and inversion work on RGB networks
  5. qc        QC-StyleGAN fine-tuning of that network (--degradation demo32: ranges for 32 px; --q-dim 4,
               as the DegradBlocks widen conv1 by q_dim * 16 channels, 16 times the width of this network)
  6. encoder   a tiny-backbone pSp (w, q) encoder for the QC network
  7. network   the QC network with its per-pixel noise inputs off, for the targets and the restoration
  8. targets   ground truths: the held-out faces and faces made by that network (sharp, q = 0)
  9. restore   invert.py --method qc --encoder ... --zero-q (the encoder's w, q = 0 as the SR operator
               models the degradation, then generator tuning), and
               --method ngd, on the same degraded targets
 10. report    PSNR/SSIM/LPIPS of the restored images and of the bilinearly upsampled observation vs
               the ground truth

\b
Examples:
  python demo.py                       # the full demo (about 8 minutes on 2 CPU cores)
  python demo.py --size quick          # the same pipeline in about a minute (smoke test)
  python demo.py --device cuda --outdir out/demo-gpu
"""

import glob
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import click

# Per size: the generator kimg, QC fine-tuning kimg, encoder steps, restoration steps (QC: refine the
# encoder's (w, q), then tune the generator; NGD: W, W+, W++), generator-made targets, and the degradation:
# PIL bicubic downsampling, which the methods model with the same filter (`:matched`; the NGD paper's model,
# average pooling, is 0.02 rms off it at 32 px and cost QC 0.4 dB and NGD 0.2 dB on the held-out faces).
# The quick size (a smoke test) uses sr:4 because its barely trained generator makes smooth images, which
# an sr:2 observation already shows almost exactly.
SIZES = {
    'full':  dict(kimg=24, snap=4, metric='rfkid1k_full', qc_kimg=2, enc_steps=300, enc_batch=16, qc_steps='0,300', ngd_steps='100,100,1200', ngd_lr_scale=10, gen_targets=4, degradation='sr:2:bicubic:matched'),
    'quick': dict(kimg=1, snap=1, metric='rfkid100_full', qc_kimg=1, enc_steps=40, enc_batch=8, qc_steps='0,20', ngd_steps='20,20,100', ngd_lr_scale=1, gen_targets=1, degradation='sr:4:bicubic:matched'),
}
# Restoration settings for this 32-px, w_dim-64 network (measured on the held-out faces, README "Quick start"):
# QC uses the encoder's w as it is (refine 0, as upstream) with q = 0 (--zero-q: the SR operator models the whole
# degradation, and the encoder's q, read from the upsampled observation, would blur it a second time) and tunes the
# generator at 2e-3 for every step (the reference's early stop at LPIPS <= 0.002 is calibrated for the pretrained
# LPIPS; with the demo's random-backbone LPIPS it ended the tuning early, before the observation was fitted);
# NGD's step sizes, set for 512-d W codes, are scaled by 10 for the trained network (ngd_lr_scale; W++ gets
# 1200 steps); the quick size's barely trained network does best at the published rates.
QC_OPTIONS = ['--zero-q', '--tune-lr', '2e-3', '--lpips-stop', '0']
HERE = os.path.dirname(os.path.abspath(__file__))

#----------------------------------------------------------------------------

class Stages:
    """Runs the numbered stages as subprocesses, printing each command and its time."""

    def __init__(self, total):
        self.total = total
        self.index = 0
        self.start = time.time()
        self.times = {}
        self.cpu_times = {}
        # One intra-op thread unless the user says otherwise: these 32-px networks are too small to gain
        # from more, and on a busy machine extra threads mostly wait for each other.
        self.env = dict(os.environ)
        self.env.setdefault('OMP_NUM_THREADS', '1')

    def run(self, name, *commands):
        """Run each `python argv...` in the repository folder; stop the demo if one fails."""
        self.index += 1
        t0, cpu0 = time.time(), _children_cpu()
        for i, argv in enumerate(commands):
            print(f'\n[demo {self.index}/{self.total}] {name if i == 0 else "..."}: python ' + ' '.join(argv), flush=True)
            result = subprocess.run([sys.executable] + argv, cwd=HERE, env=self.env, check=False)
            if result.returncode != 0:
                raise click.ClickException(f'stage "{name}" failed (exit code {result.returncode}); its output is above')
        self.times[name] = time.time() - t0
        self.cpu_times[name] = _children_cpu() - cpu0
        print(f'[demo {self.index}/{self.total}] {name} done in {self.times[name]:.0f} s ({self.cpu_times[name]:.0f} s CPU; '
              f'total {time.time() - self.start:.0f} s)', flush=True)

    def step(self, name):
        self.index += 1
        print(f'\n[demo {self.index}/{self.total}] {name}', flush=True)


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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


def write_without_noise(src, dest):
    """Copy a network pickle with every per-pixel noise input's strength set to 0 (G and G_ema)."""
    import legacy
    import torch
    data = legacy.load_network(src, verbose=False)
    zeroed = 0
    for key in ('G', 'G_ema'):
        if isinstance(data.get(key), torch.nn.Module):
            for name, param in data[key].named_parameters():
                if name.endswith('noise_strength'):
                    param.data.zero_()
                    zeroed += 1
    legacy.save_network_pkl(data, dest)
    return zeroed

#----------------------------------------------------------------------------

def train_networks(stages, cfg, data, heldout, runs, enc_runs, dev, generator=None):
    """Stages 1-6: data, generator, RGB conversion, QC fine-tuning, encoder -> (run_dir, network, qc_dir, qc_net, encoder)."""
    data_grey = data.replace('.zip', '-grey.zip')
    stages.run('data', ['dataset_tool.py', '--source', 'builtin:lfw-faces', '--dest', data_grey, '--resolution', '32',
                        '--channels', '1', '--max-images', '96'])
    stages.run('RGB and held-out data', ['dataset_tool.py', '--source', 'builtin:lfw-faces', '--dest', data,
                                         '--resolution', '32', '--max-images', '96'],
               ['dataset_tool.py', '--source', 'builtin:lfw-faces', '--dest', heldout, '--resolution', '32', '--skip-images', '96'])

    # StyleGAN2-ADA on the grey faces (a 1-channel generator never has to learn that R = G = B).
    if generator is None:
        stages.run('train the generator', ['train.py', '--outdir', runs, '--data', data_grey, '--cfg', 'cpu32',
                                           '--kimg', str(cfg['kimg']), '--snap', str(cfg['snap']), '--metrics', cfg['metric'],
                                           '--mirror', '1', '--workers', '0'] + dev)
        run_dir = only(os.path.join(runs, '00000-*'), 'the training run')
        network = only(os.path.join(run_dir, 'network-snapshot-*.pkl'), 'a generator snapshot')
    else:
        stages.step(f'train the generator: skipped, using {generator}')
        run_dir, network = os.path.dirname(os.path.abspath(generator)), os.path.abspath(generator)

    # The same network with RGB output (exactly grey), for the RGB tools (encoders, inversion).
    stages.step('grey -> RGB network')
    import legacy
    from training import channels
    rgb_net = os.path.join(runs, 'generator-rgb.pkl')
    legacy.save_network_pkl(channels.grey_to_rgb(legacy.load_network(network, verbose=False)), rgb_net)
    print(f'Wrote {rgb_net}')

    # QC-StyleGAN.
    stages.run('QC-StyleGAN fine-tuning', ['train.py', '--outdir', runs, '--data', data, '--cfg', 'cpu32', '--qc',
                                           '--resume', rgb_net, '--degradation', 'demo32', '--q-dim', '4', '--train-blocks', '2',
                                           '--kimg', str(cfg['qc_kimg']), '--snap', '1', '--workers', '0'] + dev)
    qc_dir = only(os.path.join(runs, '*-qc'), 'the QC run')
    qc_net = only(os.path.join(qc_dir, 'network-snapshot-*.pkl'), 'a QC snapshot')

    # pSp encoder.
    stages.run('train the pSp encoder', ['train_encoder.py', '--outdir', enc_runs, '--network', qc_net, '--data', data,
                                         '--backbone', 'tiny', '--input-size', '32', '--batch', str(cfg['enc_batch']),
                                         '--steps', str(cfg['enc_steps']), '--degradation', 'demo32', '--opt', 'adam',
                                         '--lr', '1e-3', '--lpips-backbone', 'random', '--val-images', '8',
                                         '--tick', '100', '--val-every', str(max(cfg['enc_steps'] // 3, 1)),
                                         '--snap', str(cfg['enc_steps']), '--workers', '0'] + dev)
    encoder = only(os.path.join(enc_runs, '*', 'checkpoint.pt'), 'the encoder checkpoint')
    return run_dir, network, qc_dir, qc_net, encoder

#----------------------------------------------------------------------------

@click.command(help=__doc__)
@click.option('--outdir', default='out/demo', show_default=True, help='Output folder (replaced)')
@click.option('--size', type=click.Choice(list(SIZES)), default='full', show_default=True, help='full demo or a quick smoke run')
@click.option('--device', default='auto', show_default=True, help='auto, cpu, cuda or cuda:N')
@click.option('--degradation', default=None, help='What the targets go through before restoration (invert.py spec) [default: sr:2:bicubic:matched; quick: sr:4:bicubic:matched]')
@click.option('--kimg', type=int, default=None, help='Override the generator training length')
@click.option('--reuse', is_flag=True, help='Keep the networks a previous run trained in OUTDIR; redo the targets, restoration and report')
@click.option('--generator', default=None, help='Skip the generator training: start from this trained 32x32 RGB StyleGAN2 pickle')
def main(outdir, size, device, degradation, kimg, reuse, generator):
    cfg = dict(SIZES[size])
    degradation = degradation or cfg['degradation']
    if kimg is not None:
        cfg['kimg'] = kimg
    outdir = os.path.abspath(outdir)
    dev = ['--device', device]
    stages = Stages(total=11)
    data = os.path.join(outdir, 'data', 'train.zip')
    heldout = os.path.join(outdir, 'data', 'heldout')
    runs = os.path.join(outdir, 'runs')
    enc_runs = os.path.join(outdir, 'encoder')
    if reuse:
        if generator is not None:
            raise click.UsageError('--reuse keeps every network of the previous run; drop --generator')
        summary = os.path.join(outdir, 'summary.json')
        if not os.path.isfile(summary):
            raise click.ClickException(f'--reuse: no finished demo in {outdir} (no summary.json); run without --reuse first')
        with open(summary, encoding='utf-8') as f:
            network = os.path.join(outdir, json.load(f)['generator'])
        run_dir = os.path.dirname(network)
        qc_dir = only(os.path.join(runs, '*-qc'), 'the QC run')
        qc_net = only(os.path.join(qc_dir, 'network-snapshot-*.pkl'), 'a QC snapshot')
        encoder = only(os.path.join(enc_runs, '*', 'checkpoint.pt'), 'the encoder checkpoint')
        for path in [os.path.join(outdir, 'generated'), os.path.join(outdir, 'targets')] + glob.glob(os.path.join(outdir, 'restore-*')):
            shutil.rmtree(path, ignore_errors=True)
        print(f'Reusing the networks of the previous run: {qc_net}, {encoder}')
        stages.index = 6
    else:
        if os.path.isdir(outdir):
            print(f'Replacing the previous demo outputs in {outdir}')
            shutil.rmtree(outdir)
        os.makedirs(outdir)
        run_dir, network, qc_dir, qc_net, encoder = train_networks(stages, cfg, data, heldout, runs, enc_runs, dev, generator)

    # The restoration network: the QC network without its per-pixel noise. After minutes on 96 faces the
    # noise inputs add a speckle that no real face has; with them on, NGD's held-out PSNR was about 1 dB lower
    # (measured on the generator of an earlier run).
    stages.step('restoration network: the QC network with its noise inputs off (noise_strength = 0)')
    restore_net = os.path.join(runs, 'generator-qc-restore.pkl')
    print(f'Wrote {restore_net} ({write_without_noise(qc_net, restore_net)} noise strengths set to 0)', flush=True)

    # Ground-truth targets: held-out faces and generator-made faces (sharp, q = 0).
    gen_dir = os.path.join(outdir, 'generated')
    seeds = f'1000-{1000 + cfg["gen_targets"] - 1}'
    stages.run('generator-made targets', ['generate.py', '--network', restore_net, '--seeds', seeds, '--outdir', gen_dir,
                                          '--trunc', '0.7', '--grid'] + dev)
    targets = os.path.join(outdir, 'targets')
    os.makedirs(targets)
    for i, path in enumerate(sorted(glob.glob(os.path.join(heldout, '*', '*.png')))):
        shutil.copyfile(path, os.path.join(targets, f'heldout{i}.png'))
    for path in sorted(glob.glob(os.path.join(gen_dir, 'seed[0-9][0-9][0-9][0-9].png'))):
        shutil.copyfile(path, os.path.join(targets, 'generated-' + os.path.basename(path)))

    # Restoration: QC with the encoder, and NGD, on the same degraded targets.
    common = ['--target', targets, '--ground-truth', targets, '--synthesize-degradation', '--operator', degradation,
              '--lpips-backbone', 'random'] + dev
    methods = dict(qc=['--encoder', encoder, '--steps', cfg['qc_steps']] + QC_OPTIONS, ngd=['--steps', cfg['ngd_steps'], '--lr-scale', str(cfg['ngd_lr_scale'])])
    for method, extra in methods.items():
        stages.run(f'restore with {method}', ['invert.py', '--network', restore_net, '--method', method,
                                              '--outdir', os.path.join(outdir, f'restore-{method}')] + common + extra)

    # Report.
    stages.step('report')
    sys.path.insert(0, HERE)
    from inversion import report
    from torch_utils.image_utils import save_image
    results = {m: report.load_results(os.path.join(outdir, f'restore-{m}', 'results.json')) for m in methods}
    groups = {'held-out': 'heldout', 'generated': 'generated-'}
    table = report.group_scores(results, groups)
    stems = sorted(next(iter(results.values()))['images'], key=lambda s: (not s.startswith('heldout'), s))
    columns = [('observed', lambda s: os.path.join(outdir, 'restore-qc', f'{s}_observed.png'))]
    columns += [(m.upper(), (lambda s, m=m: os.path.join(outdir, f'restore-{m}', f'{s}_restored.png'))) for m in methods]
    columns += [('truth', lambda s: os.path.join(targets, f'{s}.png'))]
    panel_path = os.path.join(outdir, 'restoration.png')
    save_image(report.restoration_panel(stems, columns, scale=4), panel_path)
    snapshot_kimg = int(os.path.basename(network).split('-')[-1].split('.')[0]) if 'snapshot' in network else None
    metric = [(k, v) for k, v in read_metric(run_dir, cfg['metric']) if snapshot_kimg is None or k <= snapshot_kimg]
    summary = dict(size=size, device=device, degradation=degradation, generator=os.path.relpath(network, outdir),
                   qc_generator=os.path.relpath(qc_net, outdir), restoration_generator=os.path.relpath(restore_net, outdir),
                   encoder=os.path.relpath(encoder, outdir),
                   restoration_settings={m: [a for a in extra if a != encoder] for m, extra in methods.items()},
                   observation_baseline='the observation upsampled bilinearly to the image size',
                   metric=cfg['metric'], metric_by_kimg=metric, table=table,
                   beats_observation={m: report.beats_observation(table, m) for m in methods},
                   stage_seconds=stages.times, stage_cpu_seconds=stages.cpu_times, total_seconds=time.time() - stages.start,
                   load_average_at_end=list(os.getloadavg()))
    with open(os.path.join(outdir, 'summary.json'), 'w', encoding='utf-8') as f:
        json.dump(summary, f, indent=2)

    fakes = only(os.path.join(run_dir, f'fakes{snapshot_kimg:06d}.png' if snapshot_kimg is not None else 'fakes[0-9]*.png'),
                 'the generator grid')
    print(f'\nDemo finished in {summary["total_seconds"] / 60:.1f} min ({size}, device {device}; load average now '
          f'{" ".join(f"{v:.2f}" for v in summary["load_average_at_end"])}).')
    if metric:
        print(f'Generator quality, {cfg["metric"]} (random-feature KID, lower is better): '
              f'{metric[0][1]:.1f} at init -> {metric[-1][1]:.1f} after {metric[-1][0]} kimg')
    print(f'Restoration of {degradation} targets vs ground truth (means; observation = the degraded image upsampled bilinearly):')
    print(report.format_table(table, list(methods)))
    print('Pictures to open:')
    print(f'  {os.path.relpath(panel_path)}   observed | QC | NGD | truth, x4')
    print(f'  {os.path.relpath(os.path.join(run_dir, "reals.png"))}   vs   {os.path.relpath(fakes)}   (training faces vs generated)')
    print(f'  {os.path.relpath(only(os.path.join(qc_dir, "fakes_degraded[0-9]*.png"), "QC grid"))}   (QC: degraded versions)')
    print(f'  {os.path.relpath(os.path.join(outdir, "summary.json"))}')


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
