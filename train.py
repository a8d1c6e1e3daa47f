"""Train a StyleGAN2-ADA network.

\b
Examples:
  # CPU demo on the embedded faces (build the dataset first with dataset_tool.py):
  python dataset_tool.py --source builtin:lfw-faces --dest out/lfw32.zip --resolution 32
  python train.py --outdir out/runs --data out/lfw32.zip --cfg tiny --kimg 10 --device cpu
\b
  # FFHQ 256 on 8 GPUs with the paper's settings:
  python train.py --outdir runs --data ffhq256.zip --gpus 8 --cfg paper256 --mirror 1
\b
  # Same with torchrun (also multi-node):
  torchrun --nproc_per_node 8 train.py --outdir runs --data ffhq256.zip --cfg paper256 --mirror 1
\b
  # Continue a run exactly where it stopped:
  python train.py --outdir runs --data ffhq256.zip --resume runs/00000-ffhq256-paper256/checkpoint.pt
"""

import copy
import json
import os

import click
import torch

import dnnlib
import legacy
from dnnlib import cli
from torch_utils import custom_ops
from torch_utils import distributed
from torch_utils import image_utils
from torch_utils import training_stats

#----------------------------------------------------------------------------

class UserError(Exception):
    """Bad options or data: reported as a one-line error."""

#----------------------------------------------------------------------------
# Presets (the reference cfg_specs, plus 'tiny' for CPU).

CFG_SPECS = {
    'auto':      dict(ref_gpus=-1, kimg=25000,  mb=-1, mbstd=-1, fmaps=-1,  lrate=-1,     gamma=-1,   ema=-1,  ramp=0.05, map=2),
    'stylegan2': dict(ref_gpus=8,  kimg=25000,  mb=32, mbstd=4,  fmaps=1,   lrate=0.002,  gamma=10,   ema=10,  ramp=None, map=8),
    'paper256':  dict(ref_gpus=8,  kimg=25000,  mb=64, mbstd=8,  fmaps=0.5, lrate=0.0025, gamma=1,    ema=20,  ramp=None, map=8),
    'paper512':  dict(ref_gpus=8,  kimg=25000,  mb=64, mbstd=8,  fmaps=1,   lrate=0.0025, gamma=0.5,  ema=20,  ramp=None, map=8),
    'paper1024': dict(ref_gpus=8,  kimg=25000,  mb=32, mbstd=4,  fmaps=1,   lrate=0.002,  gamma=2,    ema=10,  ramp=None, map=8),
    'cifar':     dict(ref_gpus=2,  kimg=100000, mb=64, mbstd=32, fmaps=1,   lrate=0.0025, gamma=0.01, ema=500, ramp=0.05, map=2),
    # Small enough to learn the 100 embedded 32x32 faces on 2 CPU cores in about ten minutes.
    'tiny':      dict(ref_gpus=1,  kimg=10,     mb=16, mbstd=4,  fmaps=0.03125, lrate=0.0025, gamma=0.05, ema=1, ramp=0.05, map=2,
                      w_dim=128, channel_max=64, num_fp16_res=0, grid=(8, 4), tick_kimg=1),
}

RESUME_SPECS = ['ffhq256', 'ffhq512', 'ffhq1024', 'celebahq256', 'lsundog256']

AUGPIPES = ['blit', 'geom', 'color', 'filter', 'noise', 'cutout', 'bg', 'bgc', 'bgcf', 'bgcfn', 'bgcfnc']

# Options that may differ when continuing a checkpoint exactly (they do not change the training math).
EXACT_RESUME_OVERRIDABLE = {'outdir', 'kimg', 'snap', 'metrics', 'workers', 'dry_run', 'device', 'resume', 'data', 'gpus', 'qc'}

#----------------------------------------------------------------------------

def setup_training_loop_kwargs(
    data, gpus=1, snap=None, metrics=None, seed=None, cond=None, subset=None, mirror=None, cfg=None,
    gamma=None, kimg=None, batch=None, aug=None, p=None, target=None, augpipe=None, resume=None,
    freezed=None, fp32=None, nhwc=None, allow_tf32=None, nobench=None, workers=None, device=None,
    qc=None, q_dim=None, qc_blocks=None, train_blocks=None, kd_weight=None, teacher=None, degradation=None, qc_ema=None,
):
    """Turn CLI options into (run description, training_loop kwargs). Raises UserError on bad input."""
    args = dnnlib.EasyDict()

    # General options.
    if gpus is None:
        gpus = 1
    if not (gpus >= 1 and gpus & (gpus - 1) == 0):
        raise UserError('--gpus must be a power of two')
    args.num_gpus = gpus
    if snap is None:
        snap = 50
    if snap < 1:
        raise UserError('--snap must be at least 1')
    args.image_snapshot_ticks = snap
    args.network_snapshot_ticks = snap
    if metrics is None:
        metrics = []
    args.metrics = metrics
    if metrics:
        try:
            from metrics import metric_main
        except ImportError:
            metric_main = None
        known = metric_main.list_valid_metrics() if metric_main is not None and hasattr(metric_main, 'list_valid_metrics') else []
        unknown = [m for m in metrics if m not in known]
        if unknown:
            raise UserError(f'--metrics: unknown metric(s) {", ".join(unknown)}; available: {", ".join(known) or "none yet"}')
    if seed is None:
        seed = 0
    args.random_seed = seed

    # Dataset.
    if data is None:
        raise UserError('--data is required')
    args.training_set_kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=False, max_size=None, xflip=False)
    args.data_loader_kwargs = dnnlib.EasyDict(pin_memory=True, num_workers=3, prefetch_factor=2)
    try:
        training_set = dnnlib.util.construct_class_by_name(**args.training_set_kwargs)
        args.training_set_kwargs.resolution = training_set.resolution
        args.training_set_kwargs.max_size = len(training_set)
        desc = training_set.name
        del training_set
    except (IOError, OSError, ValueError) as err:
        raise UserError(f'--data: {err}') from err
    res = args.training_set_kwargs.resolution
    if res < 4 or (res & (res - 1)) != 0:
        lower = 1 << max(2, res.bit_length() - 1)
        raise UserError(f'--data {data}: the images are {res}x{res}, but the resolution must be a power of two; '
                        f'rebuild the dataset with dataset_tool.py --resolution {lower}')

    if cond is None:
        cond = False
    if cond:
        try:
            labelled = dnnlib.util.construct_class_by_name(**dict(args.training_set_kwargs, use_labels=True))
            has_labels = labelled.has_labels
            del labelled
        except (IOError, OSError, ValueError) as err:
            raise UserError(f'--cond: {err}') from err
        if not has_labels:
            raise UserError(f'--cond=True requires labels in dataset.json of {data}; add them (dataset_tool.py carries them over) or train without --cond')
        args.training_set_kwargs.use_labels = True
        desc += '-cond'
    else:
        args.training_set_kwargs.use_labels = False

    if subset is not None:
        if not 1 <= subset <= args.training_set_kwargs.max_size:
            raise UserError(f'--subset must be between 1 and {args.training_set_kwargs.max_size}')
        desc += f'-subset{subset}'
        if subset < args.training_set_kwargs.max_size:
            args.training_set_kwargs.max_size = subset
            args.training_set_kwargs.random_seed = args.random_seed

    if mirror is None:
        mirror = False
    if mirror:
        desc += '-mirror'
        args.training_set_kwargs.xflip = True

    # Base config.
    if cfg is None:
        cfg = 'auto'
    desc += f'-{cfg}'
    spec = dnnlib.EasyDict(CFG_SPECS[cfg])
    res = args.training_set_kwargs.resolution
    if cfg == 'auto':
        desc += f'{gpus:d}'
        spec.ref_gpus = gpus
        spec.mb = max(min(gpus * min(4096 // res, 32), 64), gpus)
        spec.mbstd = min(spec.mb // gpus, 4)
        spec.fmaps = 1 if res >= 512 else 0.5
        spec.lrate = 0.002 if res >= 1024 else 0.0025
        spec.gamma = 0.0002 * (res ** 2) / spec.mb
        spec.ema = spec.mb * 10 / 32
    if spec.mb % gpus != 0 and batch is None:
        spec.ref_gpus = gpus
    w_dim = spec.get('w_dim', 512)

    args.G_kwargs = dnnlib.EasyDict(class_name='training.networks.Generator', z_dim=w_dim, w_dim=w_dim,
                                    mapping_kwargs=dnnlib.EasyDict(), synthesis_kwargs=dnnlib.EasyDict())
    args.D_kwargs = dnnlib.EasyDict(class_name='training.networks.Discriminator', block_kwargs=dnnlib.EasyDict(),
                                    mapping_kwargs=dnnlib.EasyDict(), epilogue_kwargs=dnnlib.EasyDict())
    channel_max = spec.get('channel_max', 512)
    args.G_kwargs.synthesis_kwargs.channel_base = args.D_kwargs.channel_base = int(spec.fmaps * 32768)
    args.G_kwargs.synthesis_kwargs.channel_max = args.D_kwargs.channel_max = channel_max
    args.G_kwargs.mapping_kwargs.num_layers = spec.map
    num_fp16_res = spec.get('num_fp16_res', 4)
    args.G_kwargs.synthesis_kwargs.num_fp16_res = args.D_kwargs.num_fp16_res = num_fp16_res
    args.G_kwargs.synthesis_kwargs.conv_clamp = args.D_kwargs.conv_clamp = 256 if num_fp16_res > 0 else None
    args.D_kwargs.epilogue_kwargs.mbstd_group_size = spec.mbstd

    args.G_opt_kwargs = dnnlib.EasyDict(class_name='torch.optim.Adam', lr=spec.lrate, betas=[0, 0.99], eps=1e-8)
    args.D_opt_kwargs = dnnlib.EasyDict(class_name='torch.optim.Adam', lr=spec.lrate, betas=[0, 0.99], eps=1e-8)
    args.loss_kwargs = dnnlib.EasyDict(class_name='training.loss.StyleGAN2Loss', r1_gamma=spec.gamma)

    args.total_kimg = spec.kimg
    args.batch_size = spec.mb
    args.batch_gpu = spec.mb // spec.ref_gpus
    args.ema_kimg = spec.ema
    args.ema_rampup = spec.ramp
    if 'grid' in spec:
        args.image_grid_size = list(spec.grid)
    if 'tick_kimg' in spec:
        args.kimg_per_tick = spec.tick_kimg

    if cfg == 'cifar':
        args.loss_kwargs.pl_weight = 0  # disable path length regularization
        args.loss_kwargs.style_mixing_prob = 0  # disable style mixing
        args.D_kwargs.architecture = 'orig'  # disable residual skip connections

    if gamma is not None:
        if not (0 <= gamma < float('inf')):
            raise UserError(f'--gamma must be a non-negative number, got {gamma}')
        desc += f'-gamma{gamma:g}'
        args.loss_kwargs.r1_gamma = gamma

    if kimg is not None:
        if kimg < 1:
            raise UserError('--kimg must be at least 1')
        desc += f'-kimg{kimg:d}'
        args.total_kimg = kimg

    if batch is not None:
        if not (batch >= 1 and batch % gpus == 0):
            raise UserError(f'--batch {batch} must be at least 1 and divisible by --gpus {gpus}')
        desc += f'-batch{batch}'
        args.batch_size = batch
        args.batch_gpu = batch // gpus
    if args.batch_size % gpus != 0:
        raise UserError(f'the batch size {args.batch_size} of --cfg {cfg} is not divisible by --gpus {gpus}; pass --batch')
    args.batch_gpu = min(args.batch_gpu, args.batch_size // gpus)
    if (args.batch_size // gpus) % args.batch_gpu != 0:
        args.batch_gpu = args.batch_size // gpus
    args.D_kwargs.epilogue_kwargs.mbstd_group_size = min(spec.mbstd, args.batch_gpu)

    # Discriminator augmentation.
    if aug is None:
        aug = 'ada'
    else:
        desc += f'-{aug}'
    if aug == 'ada':
        args.ada_target = 0.6
    elif aug == 'noaug':
        pass
    elif aug == 'fixed':
        if p is None:
            raise UserError(f'--aug={aug} requires specifying --p')
    if p is not None:
        if aug != 'fixed':
            raise UserError('--p can only be specified with --aug=fixed')
        if not 0 <= p <= 1:
            raise UserError('--p must be between 0 and 1')
        desc += f'-p{p:g}'
        args.augment_p = p
    if target is not None:
        if aug != 'ada':
            raise UserError('--target can only be specified with --aug=ada')
        if not 0 <= target <= 1:
            raise UserError('--target must be between 0 and 1')
        desc += f'-target{target:g}'
        args.ada_target = target

    assert augpipe is None or isinstance(augpipe, str)
    if augpipe is None:
        augpipe = 'bgc'
    else:
        if aug == 'noaug':
            raise UserError('--augpipe cannot be specified with --aug=noaug')
        desc += f'-{augpipe}'
    if aug != 'noaug':
        from training import augment
        args.augment_kwargs = dnnlib.EasyDict(class_name='training.augment.AugmentPipe', **augment.augpipe_specs[augpipe])

    # Transfer learning.
    if resume is None or resume == 'noresume':
        pass
    else:
        if resume in RESUME_SPECS:
            desc += f'-resume{resume}'
        else:
            desc += '-resumecustom'
        args.resume_pkl = resume
        args.ada_kimg = 100  # make ADA react faster at the beginning
        args.ema_rampup = None  # disable EMA rampup

    if freezed is not None:
        if freezed < 0:
            raise UserError('--freezed must be non-negative')
        desc += f'-freezed{freezed:d}'
        args.D_kwargs.block_kwargs.freeze_layers = freezed

    # Performance options.
    if fp32:
        args.G_kwargs.synthesis_kwargs.num_fp16_res = args.D_kwargs.num_fp16_res = 0
        args.G_kwargs.synthesis_kwargs.conv_clamp = args.D_kwargs.conv_clamp = None
    if nhwc:
        args.G_kwargs.synthesis_kwargs.fp16_channels_last = args.D_kwargs.block_kwargs.fp16_channels_last = True
    if nobench:
        args.cudnn_benchmark = False
    if allow_tf32:
        args.allow_tf32 = True
    if workers is not None:
        if workers < 0:
            raise UserError('--workers must be non-negative')
        args.data_loader_kwargs.num_workers = workers
        if workers == 0:
            args.data_loader_kwargs.pop('prefetch_factor', None)

    # QC-StyleGAN fine-tuning.
    if qc:
        if resume is None or resume == 'noresume':
            raise UserError('--qc fine-tunes a pretrained network: pass --resume (a StyleGAN2(-ADA) or QC-StyleGAN pickle, URL or zoo name)')
        q_dim = 16 if q_dim is None else q_dim
        if q_dim < 1:
            raise UserError('--q-dim must be at least 1')
        if qc_blocks is not None and qc_blocks < 1:
            raise UserError(f'--qc-blocks must be at least 1, got {qc_blocks}')
        if kd_weight is not None and not (0 <= kd_weight < float('inf')):
            raise UserError(f'--kd-weight must be a non-negative number, got {kd_weight}')
        args.qc_kwargs = dnnlib.EasyDict(q_dim=q_dim, qc_blocks=2 if qc_blocks is None else qc_blocks, degrad_width=16, degrad_layers=3,
                                         train_blocks=3 if train_blocks is None else train_blocks, teacher=teacher,
                                         ema=qc_ema or 'released')
        if args.qc_kwargs.train_blocks < args.qc_kwargs.qc_blocks:
            raise UserError(f'--train-blocks ({args.qc_kwargs.train_blocks}) must include the {args.qc_kwargs.qc_blocks} DegradBlock blocks (--qc-blocks)')
        args.training_set_kwargs.degradation = degradation or 'qc_stylegan_train'
        try:
            from training import degradation_sampler
            degradation_sampler.load_preset(args.training_set_kwargs.degradation)
        except (ValueError, OSError) as err:
            raise UserError(f'--degradation: {err}') from err
        args.loss_kwargs.class_name = 'training.loss.QCStyleGAN2Loss'
        args.loss_kwargs.kd_weight = 3.0 if kd_weight is None else kd_weight
        desc += '-qc'
    elif any(v is not None for v in [q_dim, qc_blocks, train_blocks, kd_weight, teacher, degradation, qc_ema]):
        raise UserError('--q-dim, --qc-blocks, --train-blocks, --kd-weight, --teacher, --degradation and --qc-ema need --qc')

    try:
        dev = image_utils.parse_device(device or 'auto')
    except ValueError as err:
        raise UserError(str(err)) from err
    args.device_type = dev.type
    if dev.type == 'cpu':
        args.data_loader_kwargs.pin_memory = False
    return desc, args

#----------------------------------------------------------------------------

def subprocess_fn(rank, args, temp_dir=None, local_rank=None, torchrun=False):
    """Run the training loop in one process (rank) with logging and distributed setup."""
    from training import training_loop
    from training.dataset import DatasetError
    if local_rank is None:
        local_rank = rank
    dnnlib.util.Logger(file_name=os.path.join(args.run_dir, 'log.txt'), file_mode='a', should_flush=True)

    device = distributed.process_device(args.device_type, local_rank, args.num_gpus)
    if args.num_gpus > 1 and not torchrun:
        distributed.init_process_group(rank, args.num_gpus, args.device_type, temp_dir)
    sync_device = device if args.num_gpus > 1 else None
    training_stats.init_multiprocessing(rank=rank, sync_device=sync_device)
    if rank != 0:
        custom_ops.verbosity = 'none'

    loop_kwargs = {k: v for k, v in args.items() if k not in ['device_type', 'run_dir_name']}
    errors = (training_loop.TrainingDiverged, training_loop.SnapshotWriteError, legacy.NetworkLoadError, dnnlib.DownloadError, DatasetError)
    with distributed.process_errors(errors, temp_dir, rank, exits=(args.num_gpus > 1 or torchrun), wrap=UserError):
        training_loop.training_loop(rank=rank, device=device, training_options=copy.deepcopy(dict(args)), **loop_kwargs)

#----------------------------------------------------------------------------

def print_options(args, desc):
    print()
    print('Training options:')
    print(json.dumps(args, indent=2, default=str))
    print()
    print(f'Output directory:   {args.run_dir}')
    print(f'Training data:      {args.training_set_kwargs.path}')
    print(f'Training duration:  {args.total_kimg} kimg')
    print(f'Number of processes: {args.num_gpus} ({args.device_type})')
    print(f'Number of images:   {args.training_set_kwargs.max_size}')
    print(f'Image resolution:   {args.training_set_kwargs.resolution}')
    print(f'Conditional model:  {args.training_set_kwargs.use_labels}')
    print(f'Dataset x-flips:    {args.training_set_kwargs.xflip}')
    print()

def exact_resume_args(ckpt_path, cli, explicit):
    """Training options from a checkpoint, with the few options that may change taken from the CLI."""
    from training import training_loop
    ckpt = training_loop.load_checkpoint(ckpt_path)
    options = ckpt.get('training_options_json')
    if options is None:
        raise UserError(f'{ckpt_path}: the checkpoint holds no training options')
    args = dnnlib.EasyDict(json.loads(options))
    for key in ['training_set_kwargs', 'data_loader_kwargs', 'G_kwargs', 'D_kwargs', 'G_opt_kwargs', 'D_opt_kwargs', 'loss_kwargs', 'augment_kwargs', 'qc_kwargs']:
        if isinstance(args.get(key), dict):
            args[key] = dnnlib.EasyDict(args[key])
    conflicting = sorted(set(explicit) - EXACT_RESUME_OVERRIDABLE)
    if conflicting:
        raise UserError(f'--resume of a training checkpoint continues its run exactly; these options cannot change: '
                        f'{", ".join("--" + c.replace("_", "-") for c in conflicting)} (drop them, or resume from the snapshot .pkl to start a new run)')
    if 'kimg' in explicit:
        args.total_kimg = cli['kimg']
    if 'snap' in explicit:
        args.image_snapshot_ticks = args.network_snapshot_ticks = cli['snap']
    if 'metrics' in explicit:
        args.metrics = cli['metrics']
    if 'workers' in explicit:
        args.data_loader_kwargs.num_workers = cli['workers']
    if 'data' in explicit and cli['data'] is not None:
        args.training_set_kwargs.path = cli['data']
    if 'gpus' in explicit and cli['gpus'] != args.num_gpus:
        print(f'Note: the checkpoint was trained with {args.num_gpus} processes; continuing with {cli["gpus"]} '
              f'changes the per-rank data shards and random streams (not an exact continuation).')
        args.num_gpus = cli['gpus']
        if args.batch_size % args.num_gpus != 0:
            raise UserError(f'the batch size {args.batch_size} is not divisible by --gpus {args.num_gpus}')
        args.batch_gpu = min(args.batch_gpu, args.batch_size // args.num_gpus)
    if 'device' in explicit:
        try:
            args.device_type = image_utils.parse_device(cli['device']).type
        except ValueError as err:
            raise UserError(str(err)) from err
    try:
        training_loop.check_class_names(args, ckpt_path)
    except (dnnlib.util.UntrustedFileError, ImportError) as err:
        raise UserError(str(err)) from err
    args.pop('resume_pkl', None)
    args.resume_checkpoint = os.path.abspath(ckpt_path)
    return args

#----------------------------------------------------------------------------

class CommaSeparatedList(click.ParamType):
    name = 'list'
    def convert(self, value, param, ctx):
        _ = param, ctx
        if value is None or value.lower() == 'none' or value == '':
            return []
        return value.split(',')

@click.command(help=__doc__)
@click.pass_context
# General options.
@click.option('--outdir', help='Where to save the results', required=True, metavar='DIR')
@click.option('--gpus', help='Number of processes: GPUs, or CPU processes with --device cpu [default: 1]', type=int, metavar='INT')
@click.option('--snap', help='Snapshot interval [default: 50 ticks]', type=click.IntRange(min=1), metavar='INT')
@click.option('--metrics', help='Comma-separated list or "none" [default: none]', type=CommaSeparatedList())
@click.option('--seed', help='Random seed [default: 0]', type=int, metavar='INT')
@click.option('-n', '--dry-run', help='Print training options and exit', is_flag=True)
@click.option('--device', help='auto, cuda or cpu [default: auto]', metavar='DEV')
# Dataset.
@click.option('--data', help='Training data (directory or zip)', metavar='PATH')
@click.option('--cond', help='Train conditional model based on dataset labels [default: false]', type=bool, metavar='BOOL')
@click.option('--subset', help='Train with only N images [default: all]', type=int, metavar='INT')
@click.option('--mirror', help='Enable dataset x-flips [default: false]', type=bool, metavar='BOOL')
# Base config.
@click.option('--cfg', help='Base config [default: auto]', type=click.Choice(list(CFG_SPECS)))
@click.option('--gamma', help='Override R1 gamma', type=cli.FiniteFloat(min=0))
@click.option('--kimg', help='Override training duration', type=click.IntRange(min=1), metavar='INT')
@click.option('--batch', help='Override batch size', type=click.IntRange(min=1), metavar='INT')
# Discriminator augmentation.
@click.option('--aug', help='Augmentation mode [default: ada]', type=click.Choice(['noaug', 'ada', 'fixed']))
@click.option('--p', help='Augmentation probability for --aug=fixed', type=cli.FiniteFloat(min=0, max=1))
@click.option('--target', help='ADA target value for --aug=ada', type=cli.FiniteFloat(min=0, max=1))
@click.option('--augpipe', help='Augmentation pipeline [default: bgc]', type=click.Choice(AUGPIPES))
# Transfer learning and resume.
@click.option('--resume', help='Network pickle/URL/zoo name to start from, or a checkpoint.pt to continue exactly', metavar='PKL')
@click.option('--freezed', help='Freeze-D [default: 0 layers]', type=click.IntRange(min=0), metavar='INT')
# Performance options.
@click.option('--fp32', help='Disable mixed-precision training', type=bool, metavar='BOOL')
@click.option('--nhwc', help='Use NHWC memory format with FP16', type=bool, metavar='BOOL')
@click.option('--nobench', help='Disable cuDNN benchmarking', type=bool, metavar='BOOL')
@click.option('--allow-tf32', help='Allow PyTorch to use TF32 internally', type=bool, metavar='BOOL')
@click.option('--workers', help='Override number of DataLoader workers', type=click.IntRange(min=0), metavar='INT')
# QC-StyleGAN.
@click.option('--qc', help='Fine-tune --resume into a quality-controllable QC-StyleGAN', is_flag=True, default=None)
@click.option('--q-dim', help='Quality code size D_q [default: 16]', type=click.IntRange(min=1), metavar='INT')
@click.option('--qc-blocks', help='DegradBlocks in the last M synthesis blocks [default: 2]', type=click.IntRange(min=1), metavar='INT')
@click.option('--train-blocks', help='Train the last N synthesis blocks (released models: 3, paper: 2) [default: 3]', type=click.IntRange(min=1), metavar='INT')
@click.option('--kd-weight', help='Feature distillation weight [default: 3]', type=cli.FiniteFloat(min=0))
@click.option('--teacher', help='Frozen source generator for distillation [default: the resumed stock network]', metavar='PKL')
@click.option('--degradation', help='Degradation preset name or JSON file for real degraded images [default: qc_stylegan_train]', metavar='PRESET')
@click.option('--qc-ema', help='G_ema during QC fine-tuning: EMA of the last two blocks minus one conv0, rest copied (released), or of everything (full) [default: released]', type=click.Choice(['released', 'full']))
@cli.trust_pickle_option
def main(ctx, outdir, dry_run, **config_kwargs):
    from training import training_loop
    torchrun = distributed.started_by_torchrun()
    explicit = {name for name in config_kwargs if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
    if torchrun:
        world_size = int(os.environ['WORLD_SIZE'])
        if 'gpus' in explicit and config_kwargs['gpus'] != world_size:
            raise click.ClickException(f'--gpus {config_kwargs["gpus"]} disagrees with torchrun WORLD_SIZE={world_size}; drop --gpus under torchrun')
        config_kwargs['gpus'] = world_size
        explicit.add('gpus')

    try:
        if not dry_run:
            dnnlib.util.check_output_dir(outdir, '--outdir')
        resume = config_kwargs.get('resume')
        if resume is not None and training_loop.is_checkpoint_file(resume):
            args = exact_resume_args(resume, config_kwargs, explicit)
            desc = dnnlib.util.continued_run_desc(resume)
        else:
            desc, args = setup_training_loop_kwargs(**config_kwargs)
            for what, spec in [('--resume', resume), ('--teacher', (args.get('qc_kwargs') or {}).get('teacher'))]:
                if spec is not None and spec not in RESUME_SPECS:
                    try:
                        path = legacy.resolve_network_spec(spec)
                    except legacy.NetworkLoadError as err:
                        raise legacy.NetworkLoadError(f'{what}: {err}') from None
                    legacy.check_network_file(path, what)  # fail before making a run folder
    except (UserError, legacy.NetworkLoadError, ValueError, OSError) as err:
        raise click.ClickException(err.strerror if isinstance(err, OSError) and err.filename is None and err.strerror else str(err))

    if torchrun:
        _run_torchrun(args, outdir, desc, dry_run)
        return

    if dry_run:
        args.run_dir = dnnlib.util.next_run_dir(outdir, desc)
        print_options(args, desc)
        print('Dry run; exiting.')
        return

    try:
        args.run_dir = dnnlib.util.make_run_dir(outdir, desc)  # atomic: concurrent runs get distinct folders
    except OSError as err:
        raise click.ClickException(f'--outdir "{outdir}": cannot create a run folder: {dnnlib.util.describe_os_error(err)}')
    print_options(args, desc)
    print(f'Created output directory {args.run_dir}')
    try:
        with dnnlib.util.atomic_write(os.path.join(args.run_dir, 'training_options.json'), 'w') as f:
            json.dump(args, f, indent=2)
        print('Launching processes...')
        distributed.launch(subprocess_fn, args, args.num_gpus, log_hint=os.path.join(args.run_dir, 'log.txt'))
    except (UserError, distributed.LaunchError, OSError) as err:
        dnnlib.util.remove_unused_run_dir(args.run_dir)
        raise click.ClickException(str(err) if not isinstance(err, OSError) else f'{args.run_dir}: {dnnlib.util.describe_os_error(err)}')
    except BaseException:
        dnnlib.util.remove_unused_run_dir(args.run_dir)
        raise

def _run_torchrun(args, outdir, desc, dry_run):
    """Started by torchrun: every process already exists; rank 0 picks the run directory."""
    def choose_run_dir():
        if dry_run:
            return dnnlib.util.next_run_dir(outdir, desc)
        return dnnlib.util.make_run_dir(outdir, desc)
    rank, local_rank, args.run_dir = distributed.torchrun_setup(args.num_gpus, args.device_type, choose_run_dir)
    if rank == 0:
        print_options(args, desc)
        if not dry_run:
            with dnnlib.util.atomic_write(os.path.join(args.run_dir, 'training_options.json'), 'w') as f:
                json.dump(args, f, indent=2)
    if dry_run:
        torch.distributed.destroy_process_group()
        return
    try:
        subprocess_fn(rank=rank, args=args, temp_dir=None, local_rank=local_rank, torchrun=True)
    except UserError as err:
        raise click.ClickException(str(err))

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
