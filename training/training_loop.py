"""The GAN training loop: phases, lazy regularisation, G_ema, ADA, logging, snapshots, exact resume.

One process per device. With several processes (torch.distributed initialised by the caller),
each rank draws its own latents and data shard, and gradients are averaged with one all-reduce
per phase; rank 0 writes every file.

Exact resume: besides the network snapshot pickles (`network-snapshot-KKKKKK.pkl`, the same
content as the reference), `checkpoint.pt` holds everything the run needs to continue as if it
had never stopped: weights, optimizer states, `cur_nimg`, the ADA probability and its pending
statistics, the path length mean and every RNG state. It is rewritten atomically at each
network snapshot and at the end.
"""

import copy
import errno
import json
import os
import time

import numpy as np
import psutil
import torch

import dnnlib
import legacy
from metrics import metric_main
from torch_utils import distributed
from torch_utils import image_utils
from torch_utils import misc
from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import grid_sample_gradfix
from training import qc as qc_surgery

CHECKPOINT_FORMAT = 'qcgan-training-checkpoint'
CHECKPOINT_VERSION = 1

#----------------------------------------------------------------------------

class TrainingDiverged(RuntimeError):
    """Weights or losses became NaN/Inf; the run stops without writing a bad snapshot."""

class SnapshotWriteError(OSError):
    """A snapshot or checkpoint could not be written (e.g. the disk is full); nothing partial was left."""

#----------------------------------------------------------------------------

def setup_snapshot_image_grid(training_set, random_seed=0, grid_size=None):
    """Pick images for `reals.png`: one label per row for labelled data.

    Returns ((gw, gh), images, labels, degraded images or None), images as uint8 `[N, C, H, W]`.
    """
    rnd = np.random.RandomState(random_seed)
    if grid_size is None:
        gw = np.clip(7680 // training_set.image_shape[2], 7, 32)
        gh = np.clip(4320 // training_set.image_shape[1], 4, 32)
    else:
        gw, gh = grid_size
    gw, gh = int(gw), int(gh)

    if not training_set.has_labels:
        all_indices = list(range(len(training_set)))
        rnd.shuffle(all_indices)
        grid_indices = [all_indices[i % len(all_indices)] for i in range(gw * gh)]
    else:
        label_groups = dict()
        for idx in range(len(training_set)):
            label = tuple(training_set.get_details(idx).raw_label.flat[::-1])
            label_groups.setdefault(label, []).append(idx)
        label_order = sorted(label_groups.keys())
        for label in label_order:
            rnd.shuffle(label_groups[label])
        grid_indices = []
        for y in range(gh):
            label = label_order[y % len(label_order)]
            indices = label_groups[label]
            grid_indices += [indices[x % len(indices)] for x in range(gw)]
            label_groups[label] = [indices[(i + gw) % len(indices)] for i in range(len(indices))]

    items = [training_set[i] for i in grid_indices]
    images = np.stack([item[0] for item in items])
    labels = np.stack([item[-1] for item in items])
    degraded = np.stack([item[1] for item in items]) if len(items[0]) == 3 else None
    return (gw, gh), images, labels, degraded

def save_float_grid(img, path, grid_size, drange):
    """Images `[N, C, H, W]` -> PNG grid (atomic)."""
    image_utils.save_image_grid(torch.as_tensor(img), path, drange=drange, grid_size=grid_size)

#----------------------------------------------------------------------------

def _write_atomic(writer, path, what):
    """Run `writer(path)`; turn a full disk or other OS error into one clear message."""
    try:
        writer(path)
    except OSError as err:
        reason = 'the disk is full' if err.errno == errno.ENOSPC else f'{type(err).__name__}: {err}'
        raise SnapshotWriteError(err.errno, f'could not write {what} "{path}": {reason}. Nothing partial was left '
                                 f'behind and earlier snapshots are intact; free space and resume from the last checkpoint.') from err

def load_checkpoint(path):
    """Read a training checkpoint written by this loop (no code execution: weights_only)."""
    try:
        ckpt = misc.load_weights_only(path)
    except (ValueError, OSError) as err:
        raise ValueError(f'{path}: not a readable training checkpoint ({err})') from None
    if not isinstance(ckpt, dict) or ckpt.get('format') != CHECKPOINT_FORMAT:
        raise ValueError(f'{path}: not a qcgan training checkpoint')
    return ckpt

CLASS_NAME_OPTIONS = ['training_set_kwargs', 'G_kwargs', 'D_kwargs', 'G_opt_kwargs', 'D_opt_kwargs', 'loss_kwargs', 'augment_kwargs']

def check_class_names(options, source):
    """Check the `class_name`s in training options read from a file (checkpoint, training_options.json)
    against the allow-list before anything is built. Raises dnnlib.util.UntrustedFileError / ImportError."""
    for key in CLASS_NAME_OPTIONS:
        value = options.get(key)
        if isinstance(value, dict) and 'class_name' in value:
            dnnlib.util.resolve_allowed_class(value['class_name'], what=f'{source}: {key}.class_name')

def is_checkpoint_file(path):
    if not isinstance(path, str) or not os.path.isfile(path):
        return False
    try:
        return load_checkpoint(path) is not None
    except ValueError:
        return False

#----------------------------------------------------------------------------

def update_ema(G_ema, G, beta, ema_names=None):
    """G_ema's parameters <- beta * G_ema + (1 - beta) * G; buffers copied from G.

    ema_names: names of the parameters that follow the EMA; the others are copied from G. None = all
    parameters (StyleGAN2); QC-StyleGAN passes `qc.qc_ema_parameter_names()`.
    One multi-tensor (foreach) kernel per list instead of two small kernels per tensor: the
    per-tensor loop costs ~100 launches per step at 256 px.
    """
    with torch.no_grad():
        ema_params, params, copied_ema, copied = [], [], [], []
        for (name, p_ema), p in zip(G_ema.named_parameters(), G.parameters()):
            follows = ema_names is None or name in ema_names
            (ema_params if follows else copied_ema).append(p_ema)
            (params if follows else copied).append(p)
        if ema_params:
            torch._foreach_lerp_(ema_params, params, 1.0 - beta)
        if copied_ema:
            torch._foreach_copy_(copied_ema, copied)
        ema_buffers, buffers = list(G_ema.buffers()), list(G.buffers())
        if ema_buffers:
            torch._foreach_copy_(ema_buffers, buffers)

def _all_finite(modules):
    for module in modules:
        for tensor in misc.params_and_buffers(module):
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                return False
    return True

#----------------------------------------------------------------------------

def training_loop(
    run_dir                 = '.',      # Output directory.
    training_set_kwargs     = {},       # Options for the training set.
    data_loader_kwargs      = {},       # Options for torch.utils.data.DataLoader.
    G_kwargs                = {},       # Options for the generator network.
    D_kwargs                = {},       # Options for the discriminator network.
    G_opt_kwargs            = {},       # Options for the generator optimizer.
    D_opt_kwargs            = {},       # Options for the discriminator optimizer.
    augment_kwargs          = None,     # Options for the augmentation pipeline, None = disable.
    loss_kwargs             = {},       # Options for the loss function.
    metrics                 = [],       # Metrics to evaluate during training.
    random_seed             = 0,        # Global random seed.
    num_gpus                = 1,        # Number of processes (devices) taking part.
    rank                    = 0,        # Rank of the current process in [0, num_gpus).
    device                  = None,     # torch.device of this process; None = cuda:rank if available else cpu.
    batch_size              = 4,        # Total batch size for one training iteration (all processes).
    batch_gpu               = 4,        # Number of samples processed at a time by one process.
    ema_kimg                = 10,       # Half-life of the exponential moving average (EMA) of generator weights.
    ema_rampup              = None,     # EMA ramp-up coefficient.
    G_reg_interval          = 4,        # How often to perform regularization for G? None = disable lazy regularization.
    D_reg_interval          = 16,       # How often to perform regularization for D? None = disable lazy regularization.
    augment_p               = 0,        # Initial value of augmentation probability.
    ada_target              = None,     # ADA target value. None = fixed p.
    ada_interval            = 4,        # How often to perform ADA adjustment?
    ada_kimg                = 500,      # ADA adjustment speed, measured in how many kimg it takes for p to increase/decrease by one unit.
    total_kimg              = 25000,    # Total length of the training, measured in thousands of real images.
    kimg_per_tick           = 4,        # Progress snapshot interval.
    image_snapshot_ticks    = 50,       # How often to save image snapshots? None = disable.
    network_snapshot_ticks  = 50,       # How often to save network snapshots and checkpoints? None = disable.
    image_grid_size         = None,     # (gw, gh) of the image grids, None = as large as the reference.
    resume_pkl              = None,     # Network pickle/URL/zoo name to initialise the weights from.
    resume_checkpoint       = None,     # Training checkpoint (path) to continue exactly.
    cudnn_benchmark         = True,     # Enable torch.backends.cudnn.benchmark?
    allow_tf32              = False,    # Enable torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32?
    abort_fn                = None,     # Callback that determines whether to abort training. Must return consistent results across ranks.
    progress_fn             = None,     # Callback function for updating training progress. Called for all ranks.
    max_steps               = None,     # Stop after this many iterations (for tests and benchmarks).
    log_fn                  = print,    # Where rank 0 prints tick lines.
    training_options        = None,     # JSON-able options of the whole run, stored in checkpoints for exact resume.
    qc_kwargs               = None,     # QC-StyleGAN fine-tuning options (see train.py --qc), None = plain StyleGAN2.
):
    """Train G and D; returns an EasyDict with the final counters and paths (rank 0)."""
    # Initialize.
    start_time = time.time()
    if device is None:
        device = torch.device('cuda', rank) if torch.cuda.is_available() else torch.device('cpu')
    device = torch.device(device)
    np.random.seed(random_seed * num_gpus + rank)
    torch.manual_seed(random_seed * num_gpus + rank)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
        torch.backends.cudnn.allow_tf32 = allow_tf32
    # Skips weight gradients inside R1/PL gradient computations on CUDA (as the reference). On CPU
    # the custom op only adds a Python autograd node per convolution: autograd.grad(inputs=[x])
    # already prunes the weight gradients there (bench/compare_nvlabs.py).
    conv2d_gradfix.enabled = (device.type == 'cuda')
    grid_sample_gradfix.enabled = True  # Double backward through ADA's geometric augmentations.
    log = log_fn if rank == 0 else (lambda *args, **kwargs: None)

    # Temporary files of a killed run (atomic writes that never finished) are garbage now.
    if rank == 0:
        for folder in {os.path.abspath(run_dir)} | ({os.path.dirname(os.path.abspath(resume_checkpoint))} if resume_checkpoint else set()):
            for path in dnnlib.util.remove_stale_tmp_files(folder):
                log(f'Removed the stale temporary file "{path}" of an interrupted run')

    # Load training set.
    log('Loading training set...')
    training_set = dnnlib.util.construct_allowed_class(**training_set_kwargs, what='training_set_kwargs')
    checkpoint = load_checkpoint(resume_checkpoint) if resume_checkpoint is not None else None
    start_nimg = int(checkpoint['cur_nimg']) if checkpoint is not None else 0
    training_set_sampler = misc.InfiniteSampler(dataset=training_set, rank=rank, num_replicas=num_gpus, seed=random_seed,
                                                start_idx=start_nimg, with_positions=getattr(training_set, 'has_degradation', False))
    training_set_iterator = iter(torch.utils.data.DataLoader(dataset=training_set, sampler=training_set_sampler,
                                                             batch_size=batch_size // num_gpus, **data_loader_kwargs))
    log(f'Num images: {len(training_set)}, image shape: {training_set.image_shape}, label shape: {training_set.label_shape}')

    # Construct networks.
    log('Constructing networks...')
    common_kwargs = dict(c_dim=training_set.label_dim, img_resolution=training_set.resolution, img_channels=training_set.num_channels)
    D_degraded = None
    G_teacher = None
    if qc_kwargs is not None:
        G, D, G_ema, D_degraded, G_teacher = _setup_qc_networks(qc_kwargs, checkpoint, resume_pkl, common_kwargs, rank, num_gpus, random_seed, log)
    elif checkpoint is not None and checkpoint.get('arch') is not None:
        G, D = [_build_from_arch(checkpoint['arch'][name]) for name in ['G', 'D']]
    else:
        G = dnnlib.util.construct_allowed_class(**G_kwargs, **common_kwargs, what='G_kwargs')
        D = dnnlib.util.construct_allowed_class(**D_kwargs, **common_kwargs, what='D_kwargs')
    if qc_kwargs is None:
        G_ema = copy.deepcopy(G)
        # Resume weights from a network file (rank 0; broadcast below).
        if resume_pkl is not None and checkpoint is None and rank == 0:
            log(f'Resuming from "{resume_pkl}"')
            resume_data = legacy.load_network(resume_pkl)
            for name, module in [('G', G), ('D', D), ('G_ema', G_ema)]:
                if resume_data.get(name) is not None:
                    misc.copy_params_and_buffers(resume_data[name], module, require_all=False)
    G = G.train().requires_grad_(False).to(device)
    D = D.train().requires_grad_(False).to(device)
    G_ema = G_ema.eval().requires_grad_(False).to(device)
    if D_degraded is not None:
        D_degraded = D_degraded.train().requires_grad_(False).to(device)
    if G_teacher is not None:
        G_teacher = G_teacher.eval().requires_grad_(False).to(device)
    if G.img_resolution != training_set.resolution or G.img_channels != training_set.num_channels:
        raise ValueError(f'the network makes {G.img_channels}-channel {G.img_resolution}x{G.img_resolution} images but the '
                         f'dataset has {training_set.num_channels}-channel {training_set.resolution}x{training_set.resolution} ones; '
                         f'rebuild the dataset with dataset_tool.py --resolution {G.img_resolution}')

    # Set up the augmentation pipe.
    augment_pipe = None
    ada_stats = None
    if augment_kwargs is not None and (augment_p > 0 or ada_target is not None):
        augment_pipe = dnnlib.util.construct_allowed_class(**augment_kwargs, what='augment_kwargs').train().requires_grad_(False).to(device)
        augment_pipe.p.copy_(torch.as_tensor(augment_p))
        if ada_target is not None:
            ada_stats = training_stats.Collector(regex='Loss/signs/real')

    # Set up the loss and the phases.
    log('Setting up training phases...')
    extra_loss_kwargs = dict(D_degraded=D_degraded, G_teacher=G_teacher) if qc_kwargs is not None else {}
    loss = dnnlib.util.construct_allowed_class(what='loss_kwargs', device=device, G=G, D=D, augment_pipe=augment_pipe, **extra_loss_kwargs, **loss_kwargs)
    G_trainable = list(G.parameters())
    ema_names = None
    if qc_kwargs is not None:
        G_trainable = qc_surgery.trainable_parameters(G, qc_kwargs.get('train_blocks', 3))
        ema_names = qc_surgery.qc_ema_parameter_names(G, qc_kwargs.get('ema', 'released'))
    trained = [('G', G, G_trainable, G_opt_kwargs, G_reg_interval), ('D', D, list(D.parameters()), D_opt_kwargs, D_reg_interval)]
    if D_degraded is not None:
        trained += [('D_degraded', D_degraded, list(D_degraded.parameters()), D_opt_kwargs, D_reg_interval)]
    phases = []
    for name, module, params, opt_kwargs, reg_interval in trained:
        if reg_interval is None:
            opt = dnnlib.util.construct_allowed_class(params, **opt_kwargs, what=f'{name}_opt_kwargs')
            phases += [dnnlib.EasyDict(name=name + 'both', network=name, module=module, opt=opt, interval=1)]
        else:  # Lazy regularization: compensate the optimizer for the smaller share of main steps.
            mb_ratio = reg_interval / (reg_interval + 1)
            opt_kwargs = dnnlib.EasyDict(opt_kwargs)
            opt_kwargs.lr = opt_kwargs.lr * mb_ratio
            opt_kwargs.betas = [beta ** mb_ratio for beta in opt_kwargs.betas]
            opt = dnnlib.util.construct_allowed_class(params, **opt_kwargs, what=f'{name}_opt_kwargs')
            phases += [dnnlib.EasyDict(name=name + 'main', network=name, module=module, opt=opt, interval=1)]
            phases += [dnnlib.EasyDict(name=name + 'reg', network=name, module=module, opt=opt, interval=reg_interval)]
    for phase in phases:
        phase.params = [p for group in phase.opt.param_groups for p in group['params']]

    # Exact resume: restore everything the uninterrupted run would have in memory.
    cur_nimg = 0
    cur_tick = 0
    batch_idx = 0
    if checkpoint is not None:
        log(f'Resuming exactly from "{resume_checkpoint}" at kimg {checkpoint["cur_nimg"] / 1000:.1f}')
        for name, module in [('G', G), ('D', D), ('G_ema', G_ema), ('D_degraded', D_degraded), ('G_teacher', G_teacher)]:
            if module is not None:
                module.load_state_dict(checkpoint['state'][name])
        if augment_pipe is not None and checkpoint['state'].get('augment_pipe') is not None:
            augment_pipe.load_state_dict(checkpoint['state']['augment_pipe'])
        for phase in phases:
            phase.opt.load_state_dict(checkpoint['optimizers'][phase.network])
        loss.load_state_dict(checkpoint['loss'])
        cur_nimg = int(checkpoint['cur_nimg'])
        cur_tick = int(checkpoint['cur_tick'])
        batch_idx = int(checkpoint['batch_idx'])
        if ada_stats is not None and rank == 0 and checkpoint.get('ada_pending') is not None:
            training_stats.report_moments('Loss/signs/real', checkpoint['ada_pending'])
        misc.set_rng_state(checkpoint['rng'][rank] if rank < len(checkpoint['rng']) else checkpoint['rng'][0], device)

    # Every rank starts from rank 0's weights.
    for module in [G, D, G_ema, augment_pipe, D_degraded, G_teacher]:
        distributed.broadcast_module(module, num_gpus)

    # Print network summaries.
    if rank == 0 and checkpoint is None:
        with misc.preserve_rng(device), torch.no_grad():
            G.eval()  # train mode would update w_avg
            z = torch.zeros([batch_gpu, G.z_dim], device=device)
            c = torch.zeros([batch_gpu, G.c_dim], device=device)
            img = misc.print_module_summary(G, [z, c])
            misc.print_module_summary(D, [img, c])
            G.train()

    # Export sample images.
    grid_size = None
    grid_z = None
    grid_c = None
    grid_q = None
    if rank == 0:
        log('Exporting sample images...')
        grid_size, images, labels, degraded = setup_snapshot_image_grid(training_set=training_set, random_seed=random_seed, grid_size=image_grid_size)
        save_float_grid(images, os.path.join(run_dir, 'reals.png'), grid_size, drange=[0, 255])
        if degraded is not None:
            save_float_grid(degraded, os.path.join(run_dir, 'reals_degraded.png'), grid_size, drange=[0, 255])
        gen = torch.Generator().manual_seed(random_seed)  # Fixed grid latents, independent of the training RNG.
        grid_z = torch.randn([labels.shape[0], G.z_dim], generator=gen).to(device).split(batch_gpu)
        grid_c = torch.from_numpy(labels).to(device).split(batch_gpu)
        if misc.is_qc(G):
            grid_q = torch.randn([labels.shape[0], G.q_dim], generator=gen).to(device).split(batch_gpu)
        if checkpoint is None:
            _save_fakes(G_ema, grid_z, grid_c, grid_q, grid_size, run_dir, 'init')

    # Initialize logs.
    log('Initializing logs...')
    stats_collector = training_stats.Collector(regex='.*')
    stats_metrics = dict()
    stats_jsonl = None
    stats_tfevents = None
    if rank == 0:
        if checkpoint is not None:
            _carry_over_stats(os.path.dirname(os.path.abspath(resume_checkpoint)), run_dir, start_nimg / 1e3)
        stats_jsonl = open(os.path.join(run_dir, 'stats.jsonl'), 'at')
        try:
            import torch.utils.tensorboard as tensorboard
            stats_tfevents = tensorboard.SummaryWriter(run_dir)
        except ImportError as err:
            log('Skipping tfevents export:', err)

    # Train.
    log(f'Training for {total_kimg} kimg...')
    log()
    tick_start_nimg = cur_nimg
    tick_start_time = time.time()
    maintenance_time = tick_start_time - start_time
    if progress_fn is not None:
        progress_fn(0, total_kimg)
    result = dnnlib.EasyDict(snapshot_pkl=None, checkpoint=None)
    steps_done = 0
    done = cur_nimg >= total_kimg * 1000

    while not done:
        # Fetch training data.
        with torch.autograd.profiler.record_function('data_fetch'):
            batch = next(training_set_iterator)
            phase_real_img, phase_real_c = batch[0], batch[-1]
            phase_real_img = (phase_real_img.to(device).to(torch.float32) / 127.5 - 1).split(batch_gpu)
            phase_real_deg = [None] * len(phase_real_img)
            if len(batch) == 3:  # (sharp, degraded, label) from a dataset with a degradation preset
                phase_real_deg = (batch[1].to(device).to(torch.float32) / 127.5 - 1).split(batch_gpu)
            phase_real_c = phase_real_c.to(device).split(batch_gpu)
            all_gen_z = torch.randn([len(phases) * (batch_size // num_gpus), G.z_dim], device=device)
            all_gen_z = [phase_gen_z.split(batch_gpu) for phase_gen_z in all_gen_z.split(batch_size // num_gpus)]
            all_gen_c = [training_set.get_label(np.random.randint(len(training_set))) for _ in range(len(phases) * (batch_size // num_gpus))]
            all_gen_c = torch.from_numpy(np.stack(all_gen_c)).pin_memory().to(device) if device.type == 'cuda' else torch.from_numpy(np.stack(all_gen_c))
            all_gen_c = [phase_gen_c.split(batch_gpu) for phase_gen_c in all_gen_c.split(batch_size // num_gpus)]

        # Execute the phases that are due this iteration.
        for phase, phase_gen_z, phase_gen_c in zip(phases, all_gen_z, all_gen_c):
            if batch_idx % phase.interval != 0:
                continue
            phase.opt.zero_grad(set_to_none=True)
            for p in phase.params:  # only what this phase trains (QC keeps the mapping and early blocks frozen)
                p.requires_grad_(True)
            for real_img, real_deg, real_c, gen_z, gen_c in zip(phase_real_img, phase_real_deg, phase_real_c, phase_gen_z, phase_gen_c):
                loss.accumulate_gradients(phase=phase.name, real_img=real_img, real_c=real_c, gen_z=gen_z, gen_c=gen_c,
                                          gain=phase.interval, real_img_degraded=real_deg)
            for p in phase.params:
                p.requires_grad_(False)
            with torch.autograd.profiler.record_function(phase.name + '_opt'):
                distributed.average_gradients(phase.params, num_gpus)
                phase.opt.step()

        # Update G_ema: parameters follow G with a half-life of ema_kimg; buffers are copied.
        with torch.autograd.profiler.record_function('Gema'):
            ema_nimg = ema_kimg * 1000
            if ema_rampup is not None:
                ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
            ema_beta = 0.5 ** (batch_size / max(ema_nimg, 1e-8))
            update_ema(G_ema, G, ema_beta, ema_names)

        # Update state.
        cur_nimg += batch_size
        batch_idx += 1
        steps_done += 1

        # Execute ADA heuristic: move p toward the target sign statistic of D on reals.
        if (ada_stats is not None) and (batch_idx % ada_interval == 0):
            ada_stats.update()
            adjust = np.sign(ada_stats['Loss/signs/real'] - ada_target) * (batch_size * ada_interval) / (ada_kimg * 1000)
            if np.isfinite(adjust):
                augment_pipe.p.copy_((augment_pipe.p + adjust).max(misc.constant(0, device=device)))

        # Perform maintenance tasks once per tick.
        done = (cur_nimg >= total_kimg * 1000) or (max_steps is not None and steps_done >= max_steps)
        if (not done) and (cur_tick != 0) and (cur_nimg < tick_start_nimg + kimg_per_tick * 1000):
            continue

        # Print status line, accumulating the same information in training_stats.
        tick_end_time = time.time()
        fields = []
        fields += [f"tick {training_stats.report0('Progress/tick', cur_tick):<5d}"]
        fields += [f"kimg {training_stats.report0('Progress/kimg', cur_nimg / 1e3):<8.1f}"]
        fields += [f"time {dnnlib.util.format_time(training_stats.report0('Timing/total_sec', tick_end_time - start_time)):<12s}"]
        fields += [f"sec/tick {training_stats.report0('Timing/sec_per_tick', tick_end_time - tick_start_time):<7.1f}"]
        fields += [f"sec/kimg {training_stats.report0('Timing/sec_per_kimg', (tick_end_time - tick_start_time) / max(cur_nimg - tick_start_nimg, 1) * 1e3):<7.2f}"]
        fields += [f"maintenance {training_stats.report0('Timing/maintenance_sec', maintenance_time):<6.1f}"]
        fields += [f"cpumem {training_stats.report0('Resources/cpu_mem_gb', psutil.Process(os.getpid()).memory_info().rss / 2**30):<6.2f}"]
        if device.type == 'cuda':
            fields += [f"gpumem {training_stats.report0('Resources/peak_gpu_mem_gb', torch.cuda.max_memory_allocated(device) / 2**30):<6.2f}"]
            torch.cuda.reset_peak_memory_stats()
        fields += [f"augment {training_stats.report0('Progress/augment', float(augment_pipe.p.cpu()) if augment_pipe is not None else 0):.3f}"]
        training_stats.report0('Timing/total_hours', (tick_end_time - start_time) / (60 * 60))
        training_stats.report0('Timing/total_days', (tick_end_time - start_time) / (24 * 60 * 60))
        log(' '.join(fields))

        # Stop on non-finite weights before anything is written from them.
        if not _all_finite([m for m in [G, D, G_ema, D_degraded] if m is not None]):
            message = (f'Training diverged at kimg {cur_nimg / 1000:.1f}: non-finite values in the network weights. '
                       f'No snapshot was written from them; the last good one is {result.snapshot_pkl or "none"}. '
                       f'Try a larger --gamma, a smaller learning rate, or --fp32.')
            if stats_jsonl is not None:
                stats_jsonl.close()
            raise TrainingDiverged(message)

        # Check for abort.
        if (not done) and (abort_fn is not None) and abort_fn():
            done = True
            log()
            log('Aborting...')

        # Save image snapshot.
        if (rank == 0) and (image_snapshot_ticks is not None) and (done or cur_tick % image_snapshot_ticks == 0):
            _save_fakes(G_ema, grid_z, grid_c, grid_q, grid_size, run_dir, f'{cur_nimg // 1000:06d}')

        # Save network snapshot and the exact-resume checkpoint.
        if (network_snapshot_ticks is not None) and (done or cur_tick % network_snapshot_ticks == 0):
            snapshot_data = dict(G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe, training_set_kwargs=dict(training_set_kwargs))
            extra = getattr(loss, 'snapshot_extras', lambda: {})()
            snapshot_data.update(extra)
            if num_gpus > 1:
                for module in [G, D, G_ema, augment_pipe] + list(extra.values()):
                    if isinstance(module, torch.nn.Module):
                        misc.check_ddp_consistency(module, ignore_regex=r'.*\.[^.]+_(avg|ema)')
            ada_pending = ada_stats.pending_moments('Loss/signs/real') if ada_stats is not None else None
            rng_states = misc.all_gather_objects(misc.rng_state(device), num_gpus)
            if rank == 0:
                snapshot_pkl = os.path.join(run_dir, f'network-snapshot-{cur_nimg // 1000:06d}.pkl')
                _write_atomic(lambda path: legacy.save_network_pkl(snapshot_data, path), snapshot_pkl, 'network snapshot')
                ckpt = dict(format=CHECKPOINT_FORMAT, format_version=CHECKPOINT_VERSION,
                    state={name: (module.state_dict() if module is not None else None) for name, module in
                           [('G', G), ('D', D), ('G_ema', G_ema), ('augment_pipe', augment_pipe), ('D_degraded', D_degraded), ('G_teacher', G_teacher)]},
                    arch={name: _arch_of(module) for name, module in [('G', G), ('D', D), ('D_degraded', D_degraded), ('G_teacher', G_teacher)] if module is not None},
                    optimizers={phase.network: phase.opt.state_dict() for phase in phases if phase.name.endswith(('main', 'both'))},
                    loss=loss.state_dict(), cur_nimg=cur_nimg, cur_tick=cur_tick + 1, batch_idx=batch_idx,
                    ada_pending=ada_pending, rng=rng_states, snapshot_pkl=snapshot_pkl,
                    training_options_json=json.dumps(training_options, default=str) if training_options is not None else None)
                checkpoint_path = os.path.join(run_dir, 'checkpoint.pt')
                def write_checkpoint(path):
                    with dnnlib.util.atomic_write(path, 'wb') as f:
                        torch.save(ckpt, f)
                _write_atomic(write_checkpoint, checkpoint_path, 'training checkpoint')
                result.snapshot_pkl = snapshot_pkl
                result.checkpoint = checkpoint_path

            # Evaluate metrics on the snapshot.
            if len(metrics) > 0:
                log('Evaluating metrics...')
                # QC generators: q = 0 fakes against sharp reals, and q ~ N(0, I) fakes against degraded reals.
                sharp_kwargs = {k: v for k, v in training_set_kwargs.items() if k != 'degradation'}
                modes = [(None, sharp_kwargs)]
                if qc_kwargs is not None:
                    modes = [('sharp', sharp_kwargs), ('degraded', dict(training_set_kwargs))]
                for metric in metrics:
                    for q_mode, dataset_kwargs in modes:
                        with misc.preserve_rng(device):
                            metric_result = metric_main.calc_metric(metric=metric, G=G_ema, dataset_kwargs=dataset_kwargs,
                                                                    num_gpus=num_gpus, rank=rank, device=device, q_mode=q_mode)
                        if q_mode == 'degraded':
                            metric_result.metric = f'{metric}_degraded'
                            metric_result.results = dnnlib.EasyDict({f'{k}_degraded': v for k, v in metric_result.results.items()})
                        if rank == 0:
                            metric_main.report_metric(metric_result, run_dir=run_dir, snapshot_pkl=result.snapshot_pkl)
                        stats_metrics.update(metric_result.results)

        # Collect statistics.
        stats_collector.update()
        stats_dict = stats_collector.as_dict()

        # Update logs.
        timestamp = time.time()
        if stats_jsonl is not None:
            fields = dict(stats_dict, timestamp=timestamp)
            stats_jsonl.write(json.dumps(fields) + '\n')
            stats_jsonl.flush()
        if stats_tfevents is not None:
            global_step = int(cur_nimg / 1e3)
            walltime = timestamp - start_time
            for name, value in stats_dict.items():
                stats_tfevents.add_scalar(name, value.mean, global_step=global_step, walltime=walltime)
            for name, value in stats_metrics.items():
                stats_tfevents.add_scalar(f'Metrics/{name}', value, global_step=global_step, walltime=walltime)
            stats_tfevents.flush()
        if progress_fn is not None:
            progress_fn(cur_nimg // 1000, total_kimg)

        # Update state.
        cur_tick += 1
        tick_start_nimg = cur_nimg
        tick_start_time = time.time()
        maintenance_time = tick_start_time - tick_end_time

    # Done.
    if stats_jsonl is not None:
        stats_jsonl.close()
    if stats_tfevents is not None:
        stats_tfevents.close()
    log()
    log('Exiting...')
    result.update(cur_nimg=cur_nimg, cur_tick=cur_tick, batch_idx=batch_idx, G=G, D=D, G_ema=G_ema,
                  augment_pipe=augment_pipe, loss=loss)
    return result

#----------------------------------------------------------------------------

@torch.no_grad()
def _render_grid(G_ema, grid_z, grid_c, grid_q=None):
    grid_q = grid_q if grid_q is not None else [None] * len(grid_z)
    return torch.cat([G_ema(z=z, c=c, q=q, noise_mode='const').cpu() for z, c, q in zip(grid_z, grid_c, grid_q)])

def _save_fakes(G_ema, grid_z, grid_c, grid_q, grid_size, run_dir, tag):
    """`fakes{tag}.png` (sharp) and, for QC generators, `fakes_degraded{tag}.png` from the same z."""
    sep = '_' if tag == 'init' else ''
    save_float_grid(_render_grid(G_ema, grid_z, grid_c), os.path.join(run_dir, f'fakes{sep}{tag}.png'), grid_size, drange=[-1, 1])
    if grid_q is not None:
        save_float_grid(_render_grid(G_ema, grid_z, grid_c, grid_q), os.path.join(run_dir, f'fakes_degraded{sep}{tag}.png'),
                        grid_size, drange=[-1, 1])

#----------------------------------------------------------------------------
# Helpers for QC-StyleGAN fine-tuning and for rebuilding networks on exact resume.

def _arch_of(module):
    """JSON description (class path + constructor kwargs) that rebuilds `module` without the file's code."""
    return json.dumps(dict(class_name=legacy._class_path(module), init_args=list(module.init_args),
                           init_kwargs=dict(module.init_kwargs)), default=legacy._json_default)

def _carry_over_stats(old_dir, run_dir, kimg):
    """Start `run_dir/stats.jsonl` of a resumed run with the history of the run it continues, up to the
    checkpoint (`kimg`); see `dnnlib.util.carry_over_jsonl`."""
    dnnlib.util.carry_over_jsonl(os.path.join(old_dir, 'stats.jsonl'), os.path.join(run_dir, 'stats.jsonl'),
                                 lambda fields: fields['Progress/kimg']['mean'], kimg)

def _build_from_arch(arch):
    arch = json.loads(arch)
    cls = legacy._resolve_class(arch['class_name'].rsplit('.', 1)[-1], arch['init_args'], arch['init_kwargs'])
    return cls(*arch['init_args'], **arch['init_kwargs'])

def _setup_qc_networks(qc_kwargs, checkpoint, resume_pkl, common_kwargs, rank, num_gpus, random_seed, log):
    """(G, D, G_ema, D_degraded, G_teacher) for QC fine-tuning, from a checkpoint or a network file."""
    if checkpoint is not None:
        nets = {name: _build_from_arch(arch) for name, arch in checkpoint['arch'].items()}
        return nets['G'], nets['D'], copy.deepcopy(nets['G']), nets['D_degraded'], nets.get('G_teacher')
    if resume_pkl is None:
        raise ValueError('QC-StyleGAN fine-tunes a pretrained StyleGAN2 network: pass --resume (a network pickle, URL or zoo name)')
    # Every rank builds the same networks (rank 0 first, so only it downloads); weights are broadcast later.
    if num_gpus > 1 and rank != 0:
        torch.distributed.barrier()
    log(f'Loading "{resume_pkl}" for QC fine-tuning')
    data = qc_surgery.load_qc_network(resume_pkl, q_dim=qc_kwargs.get('q_dim', 16), qc_blocks=qc_kwargs.get('qc_blocks', 2),
                                  degrad_width=qc_kwargs.get('degrad_width', 16), degrad_layers=qc_kwargs.get('degrad_layers', 3),
                                  seed=random_seed)
    if num_gpus > 1 and rank == 0:
        torch.distributed.barrier()
    teacher = data.get('G_teacher')
    if qc_kwargs.get('teacher') is not None:
        teacher = legacy.load_network(qc_kwargs['teacher'])['G_ema']
        if misc.is_qc(teacher):
            teacher = qc_surgery.extract_stock_generator(teacher)
    if teacher is None:
        log('No teacher given: distilling from the sharp part of the resumed QC generator (pass --teacher for the original one)')
        teacher = qc_surgery.extract_stock_generator(data['G_ema'])
    G = data['G']
    if G.c_dim != common_kwargs['c_dim']:
        raise ValueError(f'the network has c_dim={G.c_dim} but the dataset labels give {common_kwargs["c_dim"]}; '
                         f'use --cond to match the network')
    return G, data['D'], data['G_ema'], data['D_degraded'], teacher

#----------------------------------------------------------------------------
