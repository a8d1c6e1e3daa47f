"""The GAN training presets (`--cfg`) and the translation of train.py's options into the keyword
config of `training.training_loop.training_loop` (nested `dnnlib.EasyDict`s: G_kwargs, D_kwargs,
loss_kwargs, ...). train.py parses and prints; bench/bench_training.py builds the same config.
"""

import dnnlib
from metrics import metric_main
from torch_utils import devices
from training import augment
from training import degradation_sampler

#----------------------------------------------------------------------------

class ConfigError(Exception):
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
    # The demo's generator: many kimg per CPU minute on ~100 small faces (make demo). Narrow layers, a
    # 2-layer mapping, no path-length regulariser or style mixing (as 'cifar'), large batch and lr, and
    # an ADA that reacts within a few kimg.
    'cpu32':     dict(ref_gpus=1,  kimg=40,     mb=32, mbstd=4,  fmaps=0.015625, lrate=0.005, gamma=0.2, ema=2, ramp=0.05, map=2,
                      w_dim=64, channel_max=64, num_fp16_res=0, grid=(8, 4), tick_kimg=2, pl_weight=0, style_mixing=0, ada_kimg=20),
}

RESUME_SPECS = ['ffhq256', 'ffhq512', 'ffhq1024', 'celebahq256', 'lsundog256']

AUG_GEOM_MODES = list(augment.GEOM_MODES)
AUGPIPES = ['blit', 'geom', 'color', 'filter', 'noise', 'cutout', 'bg', 'bgc', 'bgcf', 'bgcfn', 'bgcfnc']

#----------------------------------------------------------------------------

def setup_training_loop_kwargs(
    data, gpus=1, snap=None, metrics=None, seed=None, cond=None, subset=None, mirror=None, cfg=None,
    gamma=None, kimg=None, batch=None, aug=None, p=None, target=None, augpipe=None, aug_geom=None, resume=None,
    freezed=None, fp32=None, nhwc=None, allow_tf32=None, nobench=None, workers=None, device=None,
    qc=None, q_dim=None, qc_blocks=None, train_blocks=None, kd_weight=None, teacher=None, degradation=None, qc_ema=None,
):
    """Turn train.py options into (run description, `training_loop.training_loop` kwargs).

    Raises ConfigError (one line naming the option) on bad input."""
    args = dnnlib.EasyDict()

    # General options.
    if gpus is None:
        gpus = 1
    if not (gpus >= 1 and gpus & (gpus - 1) == 0):
        raise ConfigError('--gpus must be a power of two')
    args.num_gpus = gpus
    if snap is None:
        snap = 50
    if snap < 1:
        raise ConfigError('--snap must be at least 1')
    args.image_snapshot_ticks = snap
    args.network_snapshot_ticks = snap
    if metrics is None:
        metrics = []
    args.metrics = metrics
    if metrics:
        known = metric_main.list_valid_metrics()
        unknown = [m for m in metrics if m not in known]
        if unknown:
            raise ConfigError(f'--metrics: unknown metric(s) {", ".join(unknown)}; available: {", ".join(known) or "none yet"}')
    if seed is None:
        seed = 0
    args.random_seed = seed

    # Dataset.
    if data is None:
        raise ConfigError('--data is required')
    args.training_set_kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=False, max_size=None, xflip=False)
    args.data_loader_kwargs = dnnlib.EasyDict(pin_memory=True, num_workers=3, prefetch_factor=2)
    try:
        training_set = dnnlib.util.construct_class_by_name(**args.training_set_kwargs)
        args.training_set_kwargs.resolution = training_set.resolution
        args.training_set_kwargs.max_size = len(training_set)
        desc = training_set.name
        del training_set
    except (IOError, OSError, ValueError) as err:
        raise ConfigError(f'--data: {err}') from err
    res = args.training_set_kwargs.resolution
    if res < 4 or (res & (res - 1)) != 0:
        lower = 1 << max(2, res.bit_length() - 1)
        raise ConfigError(f'--data {data}: the images are {res}x{res}, but the resolution must be a power of two; '
                          f'rebuild the dataset with dataset_tool.py --resolution {lower}')

    if cond is None:
        cond = False
    if cond:
        try:
            labelled = dnnlib.util.construct_class_by_name(**dict(args.training_set_kwargs, use_labels=True))
            has_labels = labelled.has_labels
            del labelled
        except (IOError, OSError, ValueError) as err:
            raise ConfigError(f'--cond: {err}') from err
        if not has_labels:
            raise ConfigError(f'--cond=True requires labels in dataset.json of {data}; add them (dataset_tool.py carries them over) or train without --cond')
        args.training_set_kwargs.use_labels = True
        desc += '-cond'
    else:
        args.training_set_kwargs.use_labels = False

    if subset is not None:
        if not 1 <= subset <= args.training_set_kwargs.max_size:
            raise ConfigError(f'--subset must be between 1 and {args.training_set_kwargs.max_size}')
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

    for key, name in [('pl_weight', 'pl_weight'), ('style_mixing', 'style_mixing_prob')]:
        if key in spec:
            args.loss_kwargs[name] = spec[key]
    if 'ada_kimg' in spec:
        args.ada_kimg = spec.ada_kimg

    if cfg == 'cifar':
        args.loss_kwargs.pl_weight = 0  # disable path length regularization
        args.loss_kwargs.style_mixing_prob = 0  # disable style mixing
        args.D_kwargs.architecture = 'orig'  # disable residual skip connections

    if gamma is not None:
        if not (0 <= gamma < float('inf')):
            raise ConfigError(f'--gamma must be a non-negative number, got {gamma}')
        desc += f'-gamma{gamma:g}'
        args.loss_kwargs.r1_gamma = gamma

    if kimg is not None:
        if kimg < 1:
            raise ConfigError('--kimg must be at least 1')
        desc += f'-kimg{kimg:d}'
        args.total_kimg = kimg

    if batch is not None:
        if not (batch >= 1 and batch % gpus == 0):
            raise ConfigError(f'--batch {batch} must be at least 1 and divisible by --gpus {gpus}')
        desc += f'-batch{batch}'
        args.batch_size = batch
        args.batch_gpu = batch // gpus
    if args.batch_size % gpus != 0:
        raise ConfigError(f'the batch size {args.batch_size} of --cfg {cfg} is not divisible by --gpus {gpus}; pass --batch')
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
            raise ConfigError(f'--aug={aug} requires specifying --p')
    if p is not None:
        if aug != 'fixed':
            raise ConfigError('--p can only be specified with --aug=fixed')
        if not 0 <= p <= 1:
            raise ConfigError('--p must be between 0 and 1')
        desc += f'-p{p:g}'
        args.augment_p = p
    if target is not None:
        if aug != 'ada':
            raise ConfigError('--target can only be specified with --aug=ada')
        if not 0 <= target <= 1:
            raise ConfigError('--target must be between 0 and 1')
        desc += f'-target{target:g}'
        args.ada_target = target

    assert augpipe is None or isinstance(augpipe, str)
    if augpipe is None:
        augpipe = 'bgc'
    else:
        if aug == 'noaug':
            raise ConfigError('--augpipe cannot be specified with --aug=noaug')
        desc += f'-{augpipe}'
    if aug != 'noaug':
        args.augment_kwargs = dnnlib.EasyDict(class_name='training.augment.AugmentPipe', **augment.augpipe_specs[augpipe])

    if aug_geom is not None:
        if aug == 'noaug':
            raise ConfigError('--aug-geom cannot be specified with --aug=noaug')
        if aug_geom not in AUG_GEOM_MODES:
            raise ConfigError(f'--aug-geom must be one of {", ".join(AUG_GEOM_MODES)}')
        if aug_geom != 'official':
            desc += f'-geom{aug_geom}'
            args.augment_kwargs.geom_mode = aug_geom

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
            raise ConfigError('--freezed must be non-negative')
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
            raise ConfigError('--workers must be non-negative')
        args.data_loader_kwargs.num_workers = workers
        if workers == 0:
            args.data_loader_kwargs.pop('prefetch_factor', None)

    # QC-StyleGAN fine-tuning.
    if qc:
        if resume is None or resume == 'noresume':
            raise ConfigError('--qc fine-tunes a pretrained network: pass --resume (a StyleGAN2(-ADA) or QC-StyleGAN pickle, URL or zoo name)')
        q_dim = 16 if q_dim is None else q_dim
        if q_dim < 1:
            raise ConfigError('--q-dim must be at least 1')
        if qc_blocks is not None and qc_blocks < 1:
            raise ConfigError(f'--qc-blocks must be at least 1, got {qc_blocks}')
        if kd_weight is not None and not (0 <= kd_weight < float('inf')):
            raise ConfigError(f'--kd-weight must be a non-negative number, got {kd_weight}')
        args.qc_kwargs = dnnlib.EasyDict(q_dim=q_dim, qc_blocks=2 if qc_blocks is None else qc_blocks, degrad_width=16, degrad_layers=3,
                                         train_blocks=3 if train_blocks is None else train_blocks, teacher=teacher,
                                         ema=qc_ema or 'released')
        if args.qc_kwargs.train_blocks < args.qc_kwargs.qc_blocks:
            raise ConfigError(f'--train-blocks ({args.qc_kwargs.train_blocks}) must include the {args.qc_kwargs.qc_blocks} DegradBlock blocks (--qc-blocks)')
        args.training_set_kwargs.degradation = degradation or 'qc_stylegan_train'
        try:
            degradation_sampler.load_preset(args.training_set_kwargs.degradation)
        except (ValueError, OSError) as err:
            raise ConfigError(f'--degradation: {err}') from err
        args.loss_kwargs.class_name = 'training.loss.QCStyleGAN2Loss'
        args.loss_kwargs.kd_weight = 3.0 if kd_weight is None else kd_weight
        desc += '-qc'
    elif any(v is not None for v in [q_dim, qc_blocks, train_blocks, kd_weight, teacher, degradation, qc_ema]):
        raise ConfigError('--q-dim, --qc-blocks, --train-blocks, --kd-weight, --teacher, --degradation and --qc-ema need --qc')

    try:
        args.update(devices.device_options(device))
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if args.device_type == 'cpu':
        args.data_loader_kwargs.pin_memory = False
    return desc, args

#----------------------------------------------------------------------------
