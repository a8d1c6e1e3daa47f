"""Train pSp-style encoders that map images to (w, q) of a QC-StyleGAN (or w of a StyleGAN2) network.

This is the revised stage 1 of QC-StyleGAN's inversion (paper section 3.4): a w encoder and a
q encoder (ResNet34 backbones, see training/encoders.py) are trained with the generator frozen.
Sharp training images are degraded on the fly with the degradation sampler (default: the
released pSp pipeline `qc_psp_encoder`), and the losses use both image versions.

\b
Coaches (--coach), per training step (x: sharp image, y: its degraded version):
  paired              one encoder pass over the batch [y; x]: (w, q) of y and (w_x, q_x) of x;
                      deg * L(G(w, q), y) + cross * L(G(w, 0), x) + self * L(G(w_x, q_x), x)
  paired-alternating  even steps deg * L(G(w, q), y) + cross * L(G(w, 0), x); odd steps
                      self * L(G(w_x, q_x), x) (the released alternation, plus the cross term)
  alternative         the released coach: even steps L(G(w, q), y), no cross term; odd steps
                      encode x with the q encoder skipped (q_x = 0)
  degraded            every step as the even steps of paired-alternating
  sharp               every step as the odd steps
The default, paired, puts sharp and degraded images in the same batch: with alternating batches,
BatchNorm's running statistics mix two input distributions that training never saw together
(train mode normalises each homogeneous batch on its own), and q predicted at inference drifts.
L = l2 * MSE + lpips * LPIPS(alex) + id * (1 - cos(ArcFace)) at min(resolution, 256), plus
w-norm * ||w - w_avg|| and q-reg * |q|^2 (sharp inputs). For a plain StyleGAN2 network (no q)
G(w, q) and G(w, 0) are the same image.

\b
Examples:
  # CPU demo: a tiny encoder for a small QC network on 32x32 faces.
  python train_encoder.py --network qc.pkl --data out/data/lfw32.zip --outdir out/enc \\
      --backbone tiny --input-size 32 --batch 8 --steps 2000 --device cpu
\b
  # The released setup (ResNet34 x 2, W space, 256 input, Ranger 1e-4, batch 4, alternating
  # coach, L2 + 0.8 LPIPS) on 2 GPUs:
  python train_encoder.py --network ffhq256-qc.pkl --data ffhq256.zip --outdir runs-enc --gpus 2 \
      --coach alternative
\b
  # Continue a run exactly where it stopped (optionally with more --steps):
  python train_encoder.py --outdir runs-enc --resume runs-enc/00000-ffhq256-alternative-w-resnet34-256/checkpoint.pt

Each run directory holds log.txt, options.json, stats.jsonl, TensorBoard events,
panels{step:06d}.png (rows: degraded input | G(w, q) | G(w, 0) | sharp target), val.jsonl,
checkpoint.pt (latest, for --resume and for inference) and best.pt (lowest validation loss).
"""

import json
import os

import click
import torch

import dnnlib
import legacy
from dnnlib import cli as cli_options
from metrics import provenance
from torch_utils import devices
from torch_utils import distributed
from training import degradation_sampler
from training import encoder_loop
from training import encoders
from training.dataset import DatasetError
from training.encoder_data import GENERATOR_DATA, EncoderDataError, open_dataset, split_dataset
from training.encoder_loop import COACHES, OPTIMIZERS
from training.encoder_loss import ID_CROPS, IDNetworkError, load_id_network

#----------------------------------------------------------------------------

class UserError(Exception):
    """Bad options or data: reported as a one-line error."""

BACKBONE_STRIDES = {'resnet34': 16, 'tiny': 4}

# Options that may change when a checkpoint is continued (they do not change the training math).
RESUME_OVERRIDABLE = {'outdir', 'steps', 'snap', 'val_every', 'tick', 'workers', 'device', 'gpus', 'data', 'val_data', 'network', 'resume', 'dry_run'}

#----------------------------------------------------------------------------
# Options.

def setup_args(network=None, data=None, val_data=None, val_images=None, degradation=None, mirror=None, q_scale=None, truncation=None, backbone=None,
               input_size=None, w_space=None, backbone_weights=None, coach=None, sharp_q=None, deg_weight=None,
               cross_weight=None, self_weight=None, l2=None, lpips=None, lpips_backbone=None, id_weight=None, id_weights=None, id_crop=None,
               w_norm=None, q_reg=None, opt=None, lr=None, batch=None, gpus=None, steps=None, tick=None, snap=None,
               val_every=None, seed=None, workers=None, device=None, init=None):
    """CLI options -> (run description, training_loop kwargs). Raises UserError on bad input."""
    def pick(value, default):
        return default if value is None else value
    args = dnnlib.EasyDict()
    if network is None:
        raise UserError('--network is required (a QC-StyleGAN or StyleGAN2 pickle)')
    if data is None:
        raise UserError('--data is required (a folder or zip of sharp training images)')
    args.network = network
    args.data = data
    args.val_data = val_data
    args.val_images = pick(val_images, 16)
    if args.val_images < 0:
        raise UserError('--val-images must be non-negative')
    degradation = pick(degradation, 'qc_psp_encoder')
    args.degradation = None if degradation == 'none' else degradation
    args.mirror = bool(pick(mirror, False))
    args.q_scale = pick(q_scale, 1.0)
    args.truncation = pick(truncation, 1.0)
    args.backbone = pick(backbone, 'resnet34')
    args.input_size = pick(input_size, 256)
    args.w_space = pick(w_space, 'w')
    args.backbone_weights = pick(backbone_weights, 'auto')
    args.coach = pick(coach, 'paired')
    args.sharp_q = sharp_q
    args.deg_weight = pick(deg_weight, 1.0)
    args.cross_weight = pick(cross_weight, 1.0)
    args.self_weight = pick(self_weight, 1.0)
    args.l2_weight = pick(l2, 1.0)
    args.lpips_weight = pick(lpips, 0.8)
    args.lpips_backbone = None if lpips_backbone == 'pretrained' else lpips_backbone
    args.id_weight = pick(id_weight, 0.0)
    args.id_weights = id_weights
    args.id_crop = pick(id_crop, 'ffhq')
    args.w_norm_weight = pick(w_norm, 0.0)
    args.q_reg_weight = pick(q_reg, 0.0)
    args.opt = pick(opt, 'ranger')
    args.lr = pick(lr, 1e-4)
    args.num_gpus = pick(gpus, 1)
    args.batch_size = pick(batch, 4)
    args.total_steps = pick(steps, 500000)
    args.tick_steps = pick(tick, 50)
    args.snap_steps = pick(snap, 5000)
    args.val_every = pick(val_every, 1000)
    args.random_seed = pick(seed, 0)
    args.num_workers = pick(workers, 2)
    args.init_encoder = init

    for name, value in [('--l2', args.l2_weight), ('--lpips', args.lpips_weight), ('--id-weight', args.id_weight),
                        ('--w-norm', args.w_norm_weight), ('--q-reg', args.q_reg_weight), ('--deg-weight', args.deg_weight),
                        ('--cross-weight', args.cross_weight), ('--self-weight', args.self_weight)]:
        if value < 0:
            raise UserError(f'{name} must be non-negative')
    if not args.lr > 0:
        raise UserError('--lr must be positive')
    if args.num_gpus < 1:
        raise UserError('--gpus must be at least 1')
    if args.batch_size < 1 or args.batch_size % args.num_gpus != 0:
        raise UserError(f'--batch {args.batch_size} must be at least 1 and divisible by --gpus {args.num_gpus}')
    for name, value in [('--steps', args.total_steps), ('--tick', args.tick_steps), ('--snap', args.snap_steps), ('--val-every', args.val_every)]:
        if value < 1:
            raise UserError(f'{name} must be at least 1')
    if args.num_workers < 0:
        raise UserError('--workers must be non-negative')
    if args.backbone not in encoders.BACKBONES:
        raise UserError(f'--backbone must be one of {", ".join(encoders.BACKBONES)}')
    for name, value, choices in [('--coach', args.coach, COACHES), ('--w-space', args.w_space, encoders.W_SPACES),
                                 ('--opt', args.opt, OPTIMIZERS), ('--id-crop', args.id_crop, list(ID_CROPS)),
                                 ('--sharp-q', args.sharp_q, [None, 'predict', 'skip'])]:
        if value not in choices:
            raise UserError(f'{name} must be one of {", ".join(c for c in choices if c)}, got "{value}"')
    stride = BACKBONE_STRIDES[args.backbone]
    if args.input_size < stride or args.input_size % stride != 0:
        raise UserError(f'--input-size {args.input_size} must be a positive multiple of {stride} for the {args.backbone} backbone')

    # Things that can be checked without training: the network, the data, the preset, the ID network.
    try:
        G = legacy.load_network(network, verbose=False)['G_ema']
    except (legacy.NetworkLoadError, dnnlib.DownloadError, OSError) as err:
        raise UserError(f'--network: {err}') from err
    if args.degradation is not None:
        try:
            degradation_sampler.load_preset(args.degradation)
        except ValueError as err:
            raise UserError(f'--degradation: {err}') from err
    if data == GENERATOR_DATA:
        desc = 'generator'
        if val_data is not None:
            raise UserError('--val-data cannot be used with --data generator (validation pairs are generated too)')
        if degradation not in (None, 'none'):
            print('Note: --data generator degrades with the network\'s own quality codes; --degradation is not used.')
        args.degradation = None
        if not args.q_scale > 0 or not args.truncation > 0:
            raise UserError('--q-scale and --trunc must be positive')
    else:
        if q_scale is not None or truncation is not None:
            raise UserError('--q-scale and --trunc only apply to --data generator')
        try:
            dataset = open_dataset(data, None)
            desc = dataset.name
            if val_data is not None:
                open_dataset(val_data, None)
            else:
                split_dataset(dataset, args.val_images, False)
        except (DatasetError, FileNotFoundError) as err:
            raise UserError(f'--data: {err}') from err
        except EncoderDataError as err:
            raise UserError(str(err)) from err
        if dataset.resolution != G.img_resolution:
            print(f'Note: --data images are {dataset.resolution}x{dataset.resolution} but the generator makes '
                  f'{G.img_resolution}x{G.img_resolution}; they are resized for the losses.')
    if args.backbone_weights not in ('auto', 'none') and not os.path.isfile(args.backbone_weights):
        raise UserError(f'--backbone-weights: file not found: "{args.backbone_weights}"')
    if args.id_weight > 0:
        try:
            load_id_network(args.id_weights)
        except IDNetworkError as err:
            raise UserError(str(err)) from err
    elif args.id_weights is not None:
        print('Note: --id-weights is given but --id-weight is 0: the identity loss is off.')
    if args.lpips_backbone not in (None, 'random') and not os.path.isfile(args.lpips_backbone):
        raise UserError(f'--lpips-backbone: file not found: "{args.lpips_backbone}"')
    if init is not None:
        try:
            ckpt = encoders.load_encoder_checkpoint(init)
            encoders.check_fingerprint(ckpt['fingerprint'], G, what=f'--init checkpoint "{init}"')
        except (encoders.EncoderError, FileNotFoundError) as err:
            raise UserError(str(err)) from err

    try:
        args.update(devices.device_options(device))
    except ValueError as err:
        raise UserError(str(err)) from err
    desc += f'-{args.coach}-{args.w_space.replace("+", "plus")}-{args.backbone}-{args.input_size}'
    return desc, encoder_loop.group_options(args)

def resume_args(ckpt_path, cli, explicit):
    """Options stored in a checkpoint, with the few that may change taken from the CLI."""
    try:
        ckpt = encoders.load_encoder_checkpoint(ckpt_path)
    except (encoders.EncoderError, FileNotFoundError) as err:
        raise UserError(f'--resume: {err}') from err
    if not ckpt.get('options_json') or ckpt.get('optimizer') is None:
        raise UserError(f'--resume "{ckpt_path}" is an encoder checkpoint without training state; start a new run with --init')
    args = encoder_loop.group_options(json.loads(ckpt['options_json']))  # also the flat options of older checkpoints
    args.pop('provenance', None)  # recomputed for the continued run
    conflicting = sorted(set(explicit) - RESUME_OVERRIDABLE)
    if conflicting:
        raise UserError(f'--resume continues a run exactly; these options cannot change: '
                        f'{", ".join("--" + c.replace("_", "-") for c in conflicting)} (drop them, or start a new run with --init)')
    for key, target in [('steps', 'total_steps'), ('snap', 'snap_steps'), ('val_every', 'val_every'), ('tick', 'tick_steps'),
                        ('workers', 'num_workers'), ('network', 'network')]:
        if key in explicit:
            args[target] = cli[key]
    for key, target in [('data', 'path'), ('val_data', 'val_path')]:
        if key in explicit:
            args.data_kwargs[target] = cli[key]
    try:
        distributed.continue_run(args, explicit, cli['gpus'], cli['device'])
    except ValueError as err:
        raise UserError(str(err)) from err
    try:
        G = legacy.load_network(args.network, verbose=False)['G_ema']
        encoders.check_fingerprint(ckpt['fingerprint'], G, what=f'--resume checkpoint "{ckpt_path}"')
    except (legacy.NetworkLoadError, dnnlib.DownloadError, OSError) as err:
        raise UserError(f'--network: {err}') from err
    except encoders.EncoderMismatchError as err:
        raise UserError(str(err)) from err
    if int(ckpt['step']) >= args.total_steps:
        print(f'Note: the checkpoint is at step {ckpt["step"]}, at or past --steps {args.total_steps}; pass a larger --steps to train on.')
    if 'device' not in explicit and args.get('device_type') == 'cuda' and not torch.cuda.is_available():
        raise UserError('the checkpoint was trained on CUDA, which is not available here; pass --device cpu')
    args.resume_checkpoint = os.path.abspath(ckpt_path)
    args.init_encoder = None
    return args

def subprocess_fn(rank, args, temp_dir=None, local_rank=None, torchrun=False):
    """Run the encoder training loop in one process; see `distributed.run_process`."""
    loop_kwargs = {k: v for k, v in args.items() if k not in ['device_type', 'device_index', 'run_dir_name', 'provenance']}
    def loop(rank, device):
        return encoder_loop.training_loop(rank=rank, device=device, training_options=dict(args, provenance=run_provenance(args)),
                                          **loop_kwargs)
    errors = (UserError, legacy.NetworkLoadError, dnnlib.DownloadError, DatasetError, encoders.EncoderError,
              IDNetworkError, EncoderDataError, encoder_loop.EncoderTrainingError, FileNotFoundError)
    return distributed.run_process(loop, rank, args, temp_dir, local_rank=local_rank, torchrun=torchrun, errors=errors,
                                   wrap=UserError)

def _option(args, key, default=None):
    """An option of the (possibly grouped) options dict."""
    if key in args:
        return args[key]
    for value in args.values():
        if isinstance(value, dict) and key in value:
            return value[key]
    return default

def run_provenance(args):
    """Network file (path, SHA-256 prefix), LPIPS backbone, settings and seed of a run (metrics/provenance.py)."""
    network = _option(args, 'network')
    lpips_backbone = _option(args, 'lpips_backbone')
    resolved = None
    if network is not None and not str(network).startswith('init:'):
        try:
            resolved = legacy.resolve_network_spec(network)
        except legacy.NetworkLoadError:
            pass
    lpips = [(lpips_backbone or 'pretrained', 'alex')] if _option(args, 'lpips_weight', 0.8) else []
    settings = {key: _option(args, key) for key in ('coach', 'backbone', 'w_space', 'id_weights')}
    return provenance.build(network=network, network_resolved=resolved, lpips=lpips, method='psp-encoder',
                            seed=_option(args, 'random_seed'), settings=settings)

def print_options(args):
    print()
    print('Encoder training options:')
    print(json.dumps(args, indent=2, default=str))
    print()
    print(f'Output directory:  {args.run_dir}')
    print(f'Network:           {args.network}')
    print(f'Training data:     {args.data_kwargs.path}')
    print(f'Processes:         {args.num_gpus} ({args.device_type})')
    print()

#----------------------------------------------------------------------------

@click.command(help=__doc__)
@click.pass_context
@click.option('--outdir', help='Where to make the run directory', required=True, metavar='DIR')
@click.option('--network', help='Generator (QC-StyleGAN or StyleGAN2): pickle or weights file, URL, zoo name or init:PRESET', metavar='NETWORK')
@click.option('--data', help='Sharp training images (folder or zip), or "generator" for pairs made by the network', metavar='PATH')
@click.option('--val-data', help='Validation images [default: hold out the last --val-images of --data]', metavar='PATH')
@click.option('--val-images', help='Validation images held out of --data (0 = no validation), or taken from --val-data (0 = all) [default: 16]', type=click.IntRange(min=0), metavar='INT')
@click.option('--degradation-preset', '--degradation', 'degradation', help='Degradation preset (name or JSON file) that degrades the training images, or "none" [default: qc_psp_encoder]', metavar='PRESET')
@click.option('--mirror', help='Add x-flipped training images [default: false]', type=bool, metavar='BOOL')
@click.option('--q-scale', help='--data generator: q ~ N(0, I) * SCALE for the degraded images [default: 1]', type=cli_options.FiniteFloat(min=0))
@click.option('--trunc', 'truncation', help='--data generator: truncation psi [default: 1]', type=cli_options.FiniteFloat(min=0, max=1))
# Model.
@click.option('--backbone', help='Encoder backbone [default: resnet34]', type=click.Choice(list(encoders.BACKBONES)))
@click.option('--input-size', help='Encoder input resolution [default: 256]', type=int, metavar='INT')
@click.option('--w-space', help='Predict one w (released) or W+ with the GradualStyle head [default: w]', type=click.Choice(list(encoders.W_SPACES)))
@click.option('--backbone-weights', help='ImageNet ResNet34 weights: auto (torch hub cache if present), none, or a file [default: auto]', metavar='auto|none|PATH')
@click.option('--init', help='Start from the weights of an encoder checkpoint (new run, fresh optimizer)', metavar='CKPT')
# Losses.
@click.option('--coach', help='What each step reconstructs [default: paired]', type=click.Choice(COACHES))
@click.option('--sharp-q', help='Sharp steps: predict q or skip the q encoder [default: skip for alternative, else predict]', type=click.Choice(['predict', 'skip']))
@click.option('--deg-weight', help='Weight of L(G(w,q), degraded) [default: 1]', type=cli_options.FiniteFloat(min=0))
@click.option('--cross-weight', help='Weight of L(G(w,0), sharp) for degraded inputs [default: 1]', type=cli_options.FiniteFloat(min=0))
@click.option('--self-weight', help='Weight of L(G(w,q), sharp) for sharp inputs [default: 1]', type=cli_options.FiniteFloat(min=0))
@click.option('--l2', help='L2 weight [default: 1]', type=cli_options.FiniteFloat(min=0))
@click.option('--lpips', help='LPIPS (AlexNet) weight [default: 0.8]', type=cli_options.FiniteFloat(min=0))
@click.option('--lpips-backbone', help='LPIPS backbone: "pretrained" (torchvision ImageNet weights in torch hub\'s cache), "random" (tests/demos: numbers not comparable), or PATH (AlexNet weights file) [default: pretrained]', metavar='pretrained|random|PATH')
@click.option('--id-weight', help='Identity loss weight (needs --id-weights) [default: 0]', type=cli_options.FiniteFloat(min=0))
@click.option('--id-weights', help='Face-embedding network (TorchScript or {class_name, init_kwargs, state_dict}; [N,3,112,112] in [-1,1] -> [N,D])', metavar='PATH')
@click.option('--id-crop', help='Face crop before the identity network [default: ffhq]', type=click.Choice(list(ID_CROPS)))
@click.option('--w-norm', help='Weight of ||w - w_avg|| [default: 0]', type=cli_options.FiniteFloat(min=0))
@click.option('--q-reg', help='Weight of |q|^2 on sharp inputs [default: 0]', type=cli_options.FiniteFloat(min=0))
# Optimisation.
@click.option('--opt', help='Optimizer [default: ranger]', type=click.Choice(OPTIMIZERS))
@click.option('--lr', help='Learning rate [default: 1e-4]', type=cli_options.FiniteFloat(min=0, min_open=True))
@click.option('--batch', help='Total batch size [default: 4]', type=click.IntRange(min=1), metavar='INT')
@click.option('--steps', help='Training steps [default: 500000]', type=click.IntRange(min=1), metavar='INT')
@click.option('--gpus', help='Number of processes: GPUs, or CPU processes with --device cpu [default: 1]', type=click.IntRange(min=1), metavar='INT')
@click.option('--seed', help='Random seed [default: 0]', type=int, metavar='INT')
@click.option('--workers', help='DataLoader workers per process [default: 2]', type=click.IntRange(min=0), metavar='INT')
@click.option('--device', help=f'{devices.DEVICE_HELP} [default: auto]', metavar='DEV')
# Logging.
@click.option('--tick', help='Status line and stats every N steps [default: 50]', type=click.IntRange(min=1), metavar='INT')
@click.option('--val-every', help='Validation and panels every N steps [default: 1000]', type=click.IntRange(min=1), metavar='INT')
@click.option('--snap', help='checkpoint.pt every N steps [default: 5000]', type=click.IntRange(min=1), metavar='INT')
@click.option('--resume', help='checkpoint.pt of a run to continue exactly', metavar='CKPT')
@click.option('-n', '--dry-run', help='Print the options and exit', is_flag=True)
@cli_options.trust_pickle_option
def main(ctx, outdir, resume, dry_run, **cli):
    explicit = {name for name in cli if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
    try:
        if not dry_run:
            dnnlib.util.check_output_dir(outdir, '--outdir')
        cli['gpus'] = distributed.torchrun_gpus(cli['gpus'], 'gpus' in explicit)
        if distributed.started_by_torchrun():
            explicit.add('gpus')
        if resume is not None:
            args = resume_args(resume, cli, explicit)
            desc = distributed.continued_run_desc(resume)
            if not dry_run:  # temp files of the killed run it continues
                dnnlib.util.remove_stale_tmp_files(os.path.dirname(os.path.abspath(resume)))
        else:
            desc, args = setup_args(**cli)
    except (UserError, ValueError) as err:
        raise click.ClickException(str(err))
    except OSError as err:
        raise click.ClickException(err.strerror or str(err))
    try:
        distributed.start(subprocess_fn, args, outdir, desc, 'options.json', print_options, dry_run,
                          options_content=lambda a: dict(a, provenance=run_provenance(a)))
    except (UserError, distributed.LaunchError) as err:
        raise click.ClickException(str(err))
#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
