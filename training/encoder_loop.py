"""The encoder training loop: pSp-style w and q encoders for a frozen (QC-)StyleGAN generator.

One process per device, like `training.training_loop`: each rank draws its own data shard,
gradients are averaged with one all-reduce per step and BatchNorm statistics before validation
and checkpoints; rank 0 writes every file (stats.jsonl, val.jsonl, TensorBoard events,
panels{step:06d}.png, checkpoint.pt for an exact resume, best.pt).

The loop takes a keyword config in groups (each a dict; missing keys take the defaults below):

    data_kwargs     path, val_path, val_images, degradation, mirror, q_scale, truncation
    encoder_kwargs  backbone, input_size, w_space, backbone_weights   (`encoders.PSPEncoder`)
    loss_kwargs     l2_weight, lpips_weight, lpips_backbone, id_weight, id_weights, id_crop,
                    w_norm_weight, q_reg_weight                       (`encoder_loss.ReconstructionLoss`)
    coach_kwargs    coach, sharp_q, deg_weight, cross_weight, self_weight
    opt_kwargs      name ('ranger' or 'adam'), lr

Coaches, per training step (x: sharp image, y: its degraded version), are described in
train_encoder.py's help.
"""

import json
import os
import time

import numpy as np
import psutil
import torch

import dnnlib
import legacy
from metrics.restoration import psnr_torch
from torch_utils import distributed
from torch_utils import image_utils
from torch_utils import misc
from torch_utils import training_stats
from training import encoders
from training.encoder_data import GENERATOR_DATA, HeldOut, SyntheticPairs
from training.encoder_data import open_dataset, split_dataset, to_float, validation_items
from training.encoder_loss import LOSS_MAX_RES, ReconstructionLoss, load_id_network
from training.ranger import Ranger

#----------------------------------------------------------------------------

COACHES = ['paired', 'paired-alternating', 'alternative', 'degraded', 'sharp']
OPTIMIZERS = ['ranger', 'adam']

DATA_DEFAULTS = dict(path=None, val_path=None, val_images=16, degradation='qc_psp_encoder', mirror=False, q_scale=1.0,
                     truncation=1.0)
ENCODER_DEFAULTS = dict(backbone='resnet34', input_size=256, w_space='w', backbone_weights='auto')
LOSS_DEFAULTS = dict(l2_weight=1.0, lpips_weight=0.8, lpips_backbone=None, id_weight=0.0, id_weights=None, id_crop='ffhq',
                     w_norm_weight=0.0, q_reg_weight=0.0)
COACH_DEFAULTS = dict(coach='paired', sharp_q=None, deg_weight=1.0, cross_weight=1.0, self_weight=1.0)
OPT_DEFAULTS = dict(name='ranger', lr=1e-4)
GROUPS = dict(data_kwargs=DATA_DEFAULTS, encoder_kwargs=ENCODER_DEFAULTS, loss_kwargs=LOSS_DEFAULTS,
              coach_kwargs=COACH_DEFAULTS, opt_kwargs=OPT_DEFAULTS)

# Flat option names (the checkpoints written before the groups; tests) -> (group, key).
_FLAT_NAMES = dict(data=('data_kwargs', 'path'), val_data=('data_kwargs', 'val_path'), opt=('opt_kwargs', 'name'))

class EncoderTrainingError(ValueError):
    """The run cannot go on (an unusable generator or start point, nothing to train, divergence): one line."""

#----------------------------------------------------------------------------

def group_options(flat):
    """Flat options (`lpips_weight=..., lr=..., data=...`) -> the loop's keyword config: every key
    that belongs to a group (see GROUPS) moves into it; the others stay at the top level."""
    config = dnnlib.EasyDict({name: dnnlib.EasyDict() for name in GROUPS})
    for key, value in flat.items():
        if key in GROUPS:
            config[key].update(value)
        elif key in _FLAT_NAMES:
            group, name = _FLAT_NAMES[key]
            config[group][name] = value
        else:
            group = next((g for g, defaults in GROUPS.items() if key in defaults), None)
            if group is None:
                config[key] = value
            else:
                config[group][key] = value
    return config

def _with_defaults(group, kwargs):
    unknown = sorted(set(kwargs or {}) - set(GROUPS[group]))
    if unknown:
        raise TypeError(f'{group}: unknown option(s) {", ".join(unknown)}')
    return dnnlib.EasyDict(GROUPS[group], **(kwargs or {}))

def step_kind(coach, step, has_degraded):
    """What training step `step` encodes: 'joint' (degraded and sharp images in one batch),
    'degraded' or 'sharp'."""
    if not has_degraded or coach == 'sharp':
        return 'sharp'
    if coach == 'degraded':
        return 'degraded'
    if coach == 'paired':
        return 'joint'
    return 'degraded' if step % 2 == 0 else 'sharp'  # 'paired-alternating', 'alternative'

def make_optimizer(name, params, lr):
    if name == 'ranger':
        return Ranger(params, lr=lr)  # pSp: alpha 0.5, k 6, betas (0.95, 0.999), eps 1e-5, GC on
    if name == 'adam':
        return torch.optim.Adam(params, lr=lr)
    raise EncoderTrainingError(f'unknown optimizer "{name}"; choose from: {", ".join(OPTIMIZERS)}')

#----------------------------------------------------------------------------

@torch.no_grad()
def run_validation(encoder, G, loss, val_sharp, val_deg, sharp_q, batch=8):
    """Metrics on the held-out pairs (float `[N, 3, H, W]` in [-1, 1] on the CPU; `val_deg` None
    for sharp-only data), and the panel images of the first few.

    Returns (dict of 'val/<name>' -> mean over the pairs, panel grid float `[4 * k, 3, R, R]`, k).
    """
    was_training = encoder.training
    encoder.eval()
    device = encoder.latent_avg.device
    sums = dict()
    panels = []
    n = val_sharp.shape[0]
    for start in range(0, n, batch):
        x = val_sharp[start:start + batch].to(device)
        y = val_deg[start:start + batch].to(device) if val_deg is not None else x
        x_t, y_t = loss.target(x), loss.target(y)
        w, q = encoder(y)
        out_deg = encoders.synthesize(G, w, q)
        out_sharp = encoders.synthesize(G, w, None) if q is not None else out_deg
        ws, qs = encoder(x, skip_q=(sharp_q == 'skip'))
        out_self = encoders.synthesize(G, ws, qs)
        values = dict()
        for tag, out, target in [('deg', out_deg, y_t), ('sharp', out_sharp, x_t), ('self', out_self, x_t)]:
            out_l = loss.to_loss_res(out)
            values[f'{tag}_mse'] = (out_l - target).square().flatten(1).mean(1)
            values[f'{tag}_psnr'] = psnr_torch(out_l.clamp(-1, 1), target.clamp(-1, 1), data_range=2).float()
            if loss.lpips is not None:
                values[f'{tag}_lpips'] = loss.lpips_distance(out_l, target)
        if q is not None:
            values['q_norm_deg'] = q.norm(dim=1)
            values['q_norm_sharp'] = qs.norm(dim=1)
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + float(value.double().sum())
        if len(panels) == 0:
            k = min(8, x.shape[0])
            res = G.img_resolution
            panels = [encoders.resize_images(y[:k], res), out_deg[:k], out_sharp[:k], encoders.resize_images(x[:k], res)]
    result = {f'val/{key}': value / n for key, value in sums.items()}
    # The validation objective: what the default coach optimises on degraded inputs.
    result['val/loss'] = result['val/deg_mse'] + result['val/sharp_mse']
    encoder.train(was_training)
    grid = torch.cat([p.clamp(-1, 1).cpu() for p in panels])
    return result, grid, len(panels[0])

PANEL_ROWS = ('degraded input', 'G(w, q)', 'G(w, 0)', 'sharp target')

def save_panels(grid, columns, path):
    """Validation panel: one column per held-out image, rows `PANEL_ROWS`, labelled and upscaled
    (nearest, >= 256 px cells) -> PNG; returns the uint8 image."""
    return image_utils.save_labelled_grid(image_utils.to_uint8(grid), path, grid_size=(columns, 4), row_labels=PANEL_ROWS)

#----------------------------------------------------------------------------

def _load_data(G, data_kwargs, device, rank, random_seed, log):
    """-> EasyDict(synthetic, train_subset, val_sharp, val_deg, has_degraded)."""
    d = data_kwargs
    out = dnnlib.EasyDict(synthetic=None, train_subset=None, val_sharp=None, val_deg=None)
    if d.path == GENERATOR_DATA:
        out.synthetic = SyntheticPairs(G, seed=random_seed, q_scale=d.q_scale, truncation=d.truncation)
        out.has_degraded = misc.is_qc(G)
        if rank == 0 and d.val_images > 0:
            val_sharp, val_deg, _, _ = out.synthetic.make([-1 - i for i in range(d.val_images)], device)
            out.val_sharp = val_sharp.cpu()
            out.val_deg = val_deg.cpu() if val_deg is not None else None
        return out
    training_set = open_dataset(d.path, d.degradation, mirror=d.mirror, seed=random_seed)
    train_idx, held = split_dataset(training_set, d.val_images, d.val_path is not None)
    out.train_subset = HeldOut(training_set, train_idx)
    out.has_degraded = d.degradation is not None
    if training_set.resolution != G.img_resolution:
        log(f'Note: the dataset images are {training_set.resolution}x{training_set.resolution} and the generator makes '
            f'{G.img_resolution}x{G.img_resolution}: degradations are applied at the dataset resolution, then the targets '
            f'are resized to {min(G.img_resolution, LOSS_MAX_RES)} for the losses.')
    if training_set.num_channels == 1:
        log('Note: the dataset is grayscale; images are repeated to 3 channels.')
    if rank == 0:
        if d.val_path is not None:
            val_set = open_dataset(d.val_path, d.degradation, seed=random_seed)
            out.val_sharp, out.val_deg = validation_items(val_set, num=d.val_images if d.val_images > 0 else None, seed=random_seed)
        elif held:
            out.val_sharp, out.val_deg = validation_items(training_set, raw_indices=held, seed=random_seed)
    return out

def _build_encoder(G, encoder_kwargs, device, random_seed, checkpoint, init_encoder, log):
    """The encoder (seeded), with the weights of `init_encoder` when starting from them."""
    kwargs = dict(encoder_kwargs)
    if checkpoint is not None or init_encoder:
        kwargs['backbone_weights'] = 'none'
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_seed)
        encoder = encoders.PSPEncoder.for_generator(G, **kwargs)
    encoder = encoder.to(device).train()
    if init_encoder is not None and checkpoint is None:
        init = encoders.load_encoder_checkpoint(init_encoder)
        encoders.check_fingerprint(init['fingerprint'], G, what=f'--init checkpoint "{init_encoder}"')
        init_kwargs = json.loads(init['encoder_kwargs_json'])
        if init_kwargs != encoder.init_kwargs:
            raise EncoderTrainingError(f'--init "{init_encoder}" has encoder options {init_kwargs}, this run '
                                       f'{encoder.init_kwargs}: use the same --backbone, --w-space and --input-size')
        encoder.load_state_dict(init['encoder'])
        log(f'Encoder weights from "{init_encoder}" (step {init.get("step")})')
    return encoder

def _step_loss(encoder, G, loss, coach, x, y, kind):
    """The weighted loss of one training step (a scalar tensor); reports every term."""
    c = coach
    x_t = loss.target(x)
    skip = c.sharp_q == 'skip'
    if kind == 'joint':
        # One encoder pass over [degraded; sharp]: BatchNorm sees both kinds in every batch.
        n = y.shape[0]
        w_all, q_all = encoder(torch.cat([y, x]))
        w, w_x = w_all[:n], w_all[n:]
        q, q_x = (None, None) if q_all is None else (q_all[:n], torch.zeros_like(q_all[n:]) if skip else q_all[n:])
    elif kind == 'degraded':
        w, q = encoder(y)
    else:
        w_x, q_x = encoder(x, skip_q=skip)
    total = 0
    if kind in ('joint', 'degraded'):
        out = encoders.synthesize(G, w, q)
        if c.deg_weight > 0:
            total = total + c.deg_weight * loss(out, loss.target(y), 'deg')
        if c.coach != 'alternative' and c.cross_weight > 0:
            out0 = encoders.synthesize(G, w, None) if q is not None else out
            total = total + c.cross_weight * loss(out0, x_t, 'cross')
        total = total + loss.latent_terms(w, q, encoder.latent_avg, encoder.w_dim, sharp=False)
        if q is not None:
            training_stats.report('Latent/q_norm_deg', q.detach().norm(dim=1))
    if kind in ('joint', 'sharp'):
        out = encoders.synthesize(G, w_x, q_x)
        if c.self_weight > 0:
            total = total + c.self_weight * loss(out, x_t, 'sharp')
        total = total + loss.latent_terms(w_x, None if skip else q_x, encoder.latent_avg, encoder.w_dim, sharp=True)
        if q_x is not None and not skip:
            training_stats.report('Latent/q_norm_sharp', q_x.detach().norm(dim=1))
    if not isinstance(total, torch.Tensor):
        raise EncoderTrainingError('every loss weight is zero: nothing to train')
    training_stats.report(f'Loss/total_{kind}', total.detach())
    return total

def _tick_line(stats, step, elapsed, device):
    """The status line of one tick from the collected statistics."""
    fields = [f'step {step:<7d}', f'time {dnnlib.util.format_time(elapsed):<10s}',
              f'sec/step {stats["Timing/sec_per_step"].mean:<6.3f}']
    for name in sorted(stats):
        if name.startswith('Loss/') and not name.startswith('Loss/total'):
            fields.append(f'{name[5:]} {stats[name].mean:.4f}')
    if 'Latent/q_norm_deg' in stats:
        fields.append(f'|q|deg {stats["Latent/q_norm_deg"].mean:.3f}')
    if 'Latent/q_norm_sharp' in stats:
        fields.append(f'|q|sharp {stats["Latent/q_norm_sharp"].mean:.3f}')
    if device.type == 'cuda':
        fields.append(f'gpumem {torch.cuda.max_memory_allocated(device) / 2**30:.2f}')
    return '  '.join(fields)

class _RunFiles:
    """stats.jsonl, val.jsonl and TensorBoard events of rank 0 (nothing when not writing)."""

    def __init__(self, run_dir, enabled, log, provenance=None, continues=None):
        self.stats = self.val = self.tfevents = None
        self.provenance = provenance  # written with every validation line
        if not enabled:
            return
        os.makedirs(run_dir, exist_ok=True)
        if continues is not None:  # (run folder of the checkpoint, its step): carry that history over
            old_dir, old_step = continues
            for name in ['stats.jsonl', 'val.jsonl']:
                dnnlib.util.carry_over_jsonl(os.path.join(old_dir, name), os.path.join(run_dir, name), lambda f: f['step'], old_step)
        self.stats = open(os.path.join(run_dir, 'stats.jsonl'), 'at', encoding='utf-8')
        self.val = open(os.path.join(run_dir, 'val.jsonl'), 'at', encoding='utf-8')
        try:
            import torch.utils.tensorboard as tensorboard  # lazy: an optional package, slow to import
            self.tfevents = tensorboard.SummaryWriter(run_dir)
        except ImportError as err:
            log('Skipping tfevents export:', err)

    def write_val(self, step, val, grid, columns):
        self.val.write(json.dumps(dict(step=step, **val, provenance=self.provenance)) + '\n')
        self.val.flush()
        if self.tfevents is not None:
            for key, value in val.items():
                self.tfevents.add_scalar('Val/' + key.split('/', 1)[1], value, global_step=step)
            self.tfevents.add_image('panels', image_utils.make_grid(image_utils.to_uint8(grid), grid_size=(columns, 4)),
                                    global_step=step, dataformats='HWC')

    def write_stats(self, step, stats, now):
        if self.stats is not None:
            self.stats.write(json.dumps(dict({k: v for k, v in stats.items()}, step=step, timestamp=now)) + '\n')
            self.stats.flush()
        if self.tfevents is not None:
            for name, value in stats.items():
                self.tfevents.add_scalar(name, value.mean, global_step=step)
            self.tfevents.flush()

    def close(self):
        for handle in [self.stats, self.val]:
            if handle is not None:
                handle.close()
        if self.tfevents is not None:
            self.tfevents.close()

#----------------------------------------------------------------------------

def training_loop(
    run_dir             = '.',          # Output directory.
    network             = None,         # Generator: path, URL, zoo name (the G_ema of the file is used).
    data_kwargs         = None,         # Training / validation data (see DATA_DEFAULTS; path 'generator' = SyntheticPairs).
    encoder_kwargs      = None,         # Encoder architecture (see ENCODER_DEFAULTS).
    loss_kwargs         = None,         # Reconstruction loss weights (see LOSS_DEFAULTS).
    coach_kwargs        = None,         # What each step reconstructs (see COACH_DEFAULTS, COACHES).
    opt_kwargs          = None,         # Optimizer (see OPT_DEFAULTS).
    batch_size          = 4,            # Total batch over all processes.
    num_gpus            = 1,
    rank                = 0,
    device              = None,
    total_steps         = 500000,       # Train until this many steps.
    max_steps           = None,         # Stop after this many steps in this call (tests).
    tick_steps          = 50,           # Status line / stats interval.
    snap_steps          = 5000,         # checkpoint.pt interval (also written at the end); None = only at the end.
    val_every           = 1000,         # Validation, panels interval; None = only at the end.
    random_seed         = 0,
    num_workers         = 2,
    resume_checkpoint   = None,         # checkpoint.pt to continue exactly.
    init_encoder        = None,         # Encoder checkpoint whose weights start a new run.
    training_options    = None,         # JSON-able options stored in checkpoints.
    log_fn              = None,         # print-like function (None = print on rank 0).
    write_files         = True,         # Write run_dir files (rank 0).
):
    """Train the encoders; returns EasyDict(encoder, optimizer, step, checkpoint, val, G, best_val)."""
    start_time = time.time()
    data_kwargs = _with_defaults('data_kwargs', data_kwargs)
    encoder_kwargs = _with_defaults('encoder_kwargs', encoder_kwargs)
    loss_kwargs = _with_defaults('loss_kwargs', loss_kwargs)
    coach = _with_defaults('coach_kwargs', coach_kwargs)
    opt_kwargs = _with_defaults('opt_kwargs', opt_kwargs)
    device = torch.device('cpu') if device is None else torch.device(device)
    log = log_fn if log_fn is not None else (print if rank == 0 else (lambda *a, **k: None))
    np.random.seed(random_seed * num_gpus + rank)
    torch.manual_seed(random_seed * num_gpus + rank)
    batch_gpu = batch_size // num_gpus
    assert batch_gpu * num_gpus == batch_size

    # Generator (frozen).
    G = legacy.load_network(network, device=device, verbose=False)['G_ema']
    G = G.eval().requires_grad_(False).to(device)
    if G.img_channels != 3:
        raise EncoderTrainingError(f'--network has {G.img_channels}-channel images; the encoders need an RGB generator')
    q_dim = int(G.q_dim) if misc.is_qc(G) else 0

    # Data.
    checkpoint = encoders.load_encoder_checkpoint(resume_checkpoint) if resume_checkpoint is not None else None
    if checkpoint is not None:
        encoders.check_fingerprint(checkpoint['fingerprint'], G, what=f'--resume checkpoint "{resume_checkpoint}"')
    data = _load_data(G, data_kwargs, device, rank, random_seed, log)
    if coach.sharp_q is None:
        coach.sharp_q = 'skip' if coach.coach == 'alternative' else 'predict'
    if not data.has_degraded and coach.coach != 'sharp':
        log(f'Note: no degraded images (no degradation preset, or a generator without q): every step reconstructs '
            f'the sharp image (--coach {coach.coach} acts as sharp).')

    # Encoder, optimizer, loss.
    encoder = _build_encoder(G, encoder_kwargs, device, random_seed, checkpoint, init_encoder, log)
    optimizer = make_optimizer(opt_kwargs.name, list(encoder.parameters()), opt_kwargs.lr)
    loss_args = {k: v for k, v in loss_kwargs.items() if k != 'id_weights'}
    id_net = load_id_network(loss_kwargs.id_weights, device) if loss_kwargs.id_weight > 0 else None
    loss = ReconstructionLoss(G, device, id_net=id_net, **loss_args)

    step = 0
    best_val = None
    if checkpoint is not None:
        encoder.load_state_dict(checkpoint['encoder'])
        optimizer.load_state_dict(checkpoint['optimizer'])
        step = int(checkpoint['step'])
        best_val = checkpoint.get('best_val')
        log(f'Resuming exactly from "{resume_checkpoint}" at step {step}')
    distributed.broadcast_module(encoder, num_gpus)

    # Data loader: positions key the degradations, so the stream is the same after a resume
    # and whichever worker loads a sample.
    loader = None
    if data.synthetic is None:
        sampler = misc.InfiniteSampler(data.train_subset, rank=rank, num_replicas=num_gpus, seed=random_seed,
                                       start_idx=step * batch_size, with_positions=True)
        loader_kwargs = dict(num_workers=num_workers, pin_memory=(device.type == 'cuda'))
        if num_workers > 0:
            loader_kwargs['prefetch_factor'] = 2
        loader = iter(torch.utils.data.DataLoader(data.train_subset, sampler=sampler, batch_size=batch_gpu, **loader_kwargs))
    if checkpoint is not None:
        rngs = checkpoint['rng']
        misc.set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0], device)

    # Logs.
    stats_collector = training_stats.Collector(regex='.*')
    continues = (os.path.dirname(os.path.abspath(resume_checkpoint)), step) if checkpoint is not None else None
    files = _RunFiles(run_dir, rank == 0 and write_files, log, provenance=(training_options or {}).get('provenance'),
                      continues=continues)
    params = list(encoder.parameters())
    result = dnnlib.EasyDict(checkpoint=None, val=None)
    log(f'Training encoders ({encoder.backbone}, {encoder.w_space.upper()}, input {encoder.input_size}, '
        f'q_dim {q_dim}) for {total_steps} steps from step {step}; coach {coach.coach}, batch {batch_size}, '
        f'{opt_kwargs.name} lr {opt_kwargs.lr:g}')
    steps_done = 0
    tick_start_step = step
    tick_start_time = time.time()
    done = step >= total_steps or (max_steps is not None and max_steps <= 0)

    def write_checkpoint(path, current_step, rng_states=None):
        """checkpoint.pt (rng_states given): everything for an exact resume; best.pt: the encoder only."""
        full = rng_states is not None
        encoders.save_encoder_checkpoint(path, encoder, network=str(network), step=current_step, best_val=best_val,
            optimizer=optimizer.state_dict() if full else None, opt_name=opt_kwargs.name, rng=rng_states if full else None,
            options_json=json.dumps(training_options, default=str) if (full and training_options is not None) else None)

    while not done:
        if data.synthetic is not None:
            x, y, _, _ = data.synthetic.make(range(step * batch_size + rank, (step + 1) * batch_size, num_gpus), device)
        else:
            batch = next(loader)
            x = to_float(batch[0], device)
            y = to_float(batch[1], device) if len(batch) == 3 else None
        optimizer.zero_grad(set_to_none=True)
        _step_loss(encoder, G, loss, coach, x, y, step_kind(coach.coach, step, y is not None)).backward()
        distributed.average_gradients(params, num_gpus)
        optimizer.step()
        step += 1
        steps_done += 1
        done = step >= total_steps or (max_steps is not None and steps_done >= max_steps)

        is_tick = done or step % tick_steps == 0
        is_val = done or (val_every is not None and step % val_every == 0)
        is_snap = done or (snap_steps is not None and step % snap_steps == 0)
        if not (is_tick or is_val or is_snap):
            continue

        if is_val or is_snap:
            distributed.average_buffers(encoder, num_gpus, skip=('latent_avg',))
        if is_val and rank == 0 and data.val_sharp is not None:
            with torch.random.fork_rng(devices=[device] if device.type == 'cuda' else []):
                val, grid, columns = run_validation(encoder, G, loss, data.val_sharp, data.val_deg, coach.sharp_q)
            result.val = val
            if write_files:
                save_panels(grid, columns, os.path.join(run_dir, f'panels{step:06d}.png'))
                files.write_val(step, val, grid, columns)
            log(f'validation at step {step}: ' + '  '.join(f'{k[4:]} {v:.4g}' for k, v in val.items()))
            if best_val is None or val['val/loss'] < best_val:
                best_val = float(val['val/loss'])
                if write_files:
                    write_checkpoint(os.path.join(run_dir, 'best.pt'), step)
        if is_snap:
            rng_states = misc.all_gather_objects(misc.rng_state(device), num_gpus)
            if rank == 0 and write_files:
                path = os.path.join(run_dir, 'checkpoint.pt')
                write_checkpoint(path, step, rng_states)
                result.checkpoint = path
        if is_tick:
            now = time.time()
            training_stats.report0('Progress/step', step)
            training_stats.report0('Timing/sec_per_step', (now - tick_start_time) / max(step - tick_start_step, 1))
            training_stats.report0('Resources/cpu_mem_gb', psutil.Process(os.getpid()).memory_info().rss / 2**30)
            stats_collector.update()
            stats = stats_collector.as_dict()
            log(_tick_line(stats, step, now - start_time, device))
            files.write_stats(step, stats, now)
            tick_start_step = step
            tick_start_time = time.time()
        if not all(torch.isfinite(p).all() for p in params):
            raise EncoderTrainingError(f'training diverged at step {step}: non-finite encoder weights; lower --lr')

    files.close()
    log('Done.')
    result.update(encoder=encoder, optimizer=optimizer, step=step, G=G, best_val=best_val)
    return result

#----------------------------------------------------------------------------
