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
import time
import warnings

import click
import numpy as np
import psutil
import torch
import torch.nn.functional as F

import dnnlib
import legacy
from dnnlib import cli as cli_options
from torch_utils import custom_ops
from torch_utils import distributed
from torch_utils import image_utils
from torch_utils import misc
from torch_utils import training_stats
from training import encoders

#----------------------------------------------------------------------------

class UserError(Exception):
    """Bad options or data: reported as a one-line error."""

COACHES = ['paired', 'paired-alternating', 'alternative', 'degraded', 'sharp']
OPTIMIZERS = ['ranger', 'adam']
LOSS_MAX_RES = 256          # losses are computed at min(G resolution, 256), as pSp
LPIPS_MIN_RES = 32          # AlexNet LPIPS needs at least 32x32: smaller images are upsampled for it
ID_INPUT_RES = 112          # face-embedding network input
ID_CROPS = {'ffhq': (35 / 256, 223 / 256, 32 / 256, 220 / 256), 'none': (0.0, 1.0, 0.0, 1.0)}  # top, bottom, left, right
VAL_SEED_OFFSET = 1000003   # validation degradations use their own stream
BACKBONE_STRIDES = {'resnet34': 16, 'tiny': 4}
GENERATOR_DATA = 'generator'  # --data generator: pairs made by the network itself

# Options that may change when a checkpoint is continued (they do not change the training math).
RESUME_OVERRIDABLE = {'outdir', 'steps', 'snap', 'val_every', 'tick', 'workers', 'device', 'gpus', 'data', 'val_data', 'network', 'resume', 'dry_run'}

#----------------------------------------------------------------------------
# Identity loss network.

class IDNetworkError(ValueError):
    """The face-embedding network for the identity loss is missing or unusable (one line)."""

ID_INTERFACE = ('a face-embedding network saved as TorchScript (torch.jit.script(net).save(PATH)) or as a torch file '
                '{"class_name": "module.Class", "init_kwargs": {...}, "state_dict": {...}}; input [N, 3, 112, 112] in [-1, 1], '
                'output embeddings [N, D]')

def load_id_network(path, device='cpu'):
    """Load the identity-loss network from `path` (see ID_INTERFACE). Raises IDNetworkError."""
    if path is None:
        raise IDNetworkError(f'the identity loss (--id-weight > 0) needs --id-weights PATH: {ID_INTERFACE}')
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise IDNetworkError(f'--id-weights: file not found: "{path}" (expected {ID_INTERFACE})')
    net = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', FutureWarning)  # torch.jit's deprecation notice
            net = torch.jit.load(path, map_location='cpu')
    except Exception:  # pylint: disable=broad-except
        net = None
    if net is None:
        try:
            payload = misc.load_weights_only(path)
        except (ValueError, OSError) as err:
            raise IDNetworkError(f'--id-weights "{path}" is neither TorchScript nor a readable torch file '
                                 f'({err}); expected {ID_INTERFACE}') from None
        if not (isinstance(payload, dict) and 'class_name' in payload and 'state_dict' in payload):
            raise IDNetworkError(f'--id-weights "{path}" holds a bare state dict without its network class; save it as '
                                 f'{ID_INTERFACE}')
        kwargs = payload.get('init_kwargs') or {}
        try:
            cls = dnnlib.util.resolve_allowed_class(payload['class_name'], what=f'--id-weights "{path}"')
        except dnnlib.util.UntrustedFileError as err:
            raise IDNetworkError(str(err)) from None
        except ImportError as err:
            raise IDNetworkError(f'--id-weights "{path}": cannot find class {payload["class_name"]!r} ({err})') from None
        try:
            net = cls(**kwargs)
            net.load_state_dict(payload['state_dict'])
        except Exception as err:  # pylint: disable=broad-except
            raise IDNetworkError(f'--id-weights "{path}": cannot build {payload["class_name"]} '
                                 f'({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""})') from None
    net = net.eval().to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            out = net(torch.zeros([2, 3, ID_INPUT_RES, ID_INPUT_RES], device=device))
    except Exception as err:  # pylint: disable=broad-except
        raise IDNetworkError(f'--id-weights "{path}" fails on a [2, 3, 112, 112] input ({type(err).__name__}); expected {ID_INTERFACE}') from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise IDNetworkError(f'--id-weights "{path}" returns {shape} for a [2, 3, 112, 112] input; expected embeddings [2, D]')
    return net

#----------------------------------------------------------------------------
# Data.

class _HeldOut(torch.utils.data.Dataset):
    """A subset of a dataset by index that passes `(index, position)` pairs through."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self):
        return int(self.indices.size)

    def __getitem__(self, idx):
        if isinstance(idx, (tuple, list)):
            idx, position = idx
            return self.dataset[(int(self.indices[idx]), position)]
        return self.dataset[int(self.indices[idx])]

def open_dataset(path, degradation, mirror=False, seed=0):
    from training.dataset import ImageFolderDataset
    return ImageFolderDataset(path=path, degradation=degradation, xflip=mirror, random_seed=seed)

def split_dataset(dataset, val_images, has_val_data):
    """(train indices, validation raw indices): the last `val_images` stored images are held out
    (with their mirrored copies) unless a separate validation set is given."""
    num_raw = dataset._raw_shape[0]  # pylint: disable=protected-access
    held = set()
    if not has_val_data and val_images > 0:
        if val_images >= num_raw:
            raise UserError(f'--val-images {val_images} leaves no training images (the dataset has {num_raw}); '
                            f'lower it or pass --val-data')
        held = set(range(num_raw - val_images, num_raw))
    train_idx = [i for i in range(len(dataset)) if dataset.get_details(i).raw_idx not in held]
    return train_idx, sorted(held)

def validation_items(dataset, raw_indices=None, num=None, seed=0):
    """Fixed validation pairs as float [-1, 1] CPU tensors: (sharp, degraded or None); the
    degradations are reproducible (keyed by the image index)."""
    if raw_indices is None:
        raw_indices = list(range(dataset._raw_shape[0] if num is None else min(num, dataset._raw_shape[0])))  # pylint: disable=protected-access
    items = []
    sampler = getattr(dataset, '_degradation', None)
    for i in raw_indices:
        image = dataset._load_raw_image(i)  # pylint: disable=protected-access
        if sampler is not None:
            degraded, _ = sampler(image.transpose(1, 2, 0), rng=np.random.default_rng([seed + VAL_SEED_OFFSET, int(i)]))
            items.append((image, degraded.transpose(2, 0, 1)))
        else:
            items.append((image,))
    if not items:
        return None, None
    sharp = to_float(torch.from_numpy(np.stack([item[0] for item in items])), 'cpu')
    degraded = to_float(torch.from_numpy(np.stack([item[1] for item in items])), 'cpu') if sampler is not None else None
    return sharp, degraded

def to_float(images, device, channels=3):
    """uint8 [N, C, H, W] -> float [-1, 1] on device with `channels` channels."""
    x = images.to(device).to(torch.float32) / 127.5 - 1
    if x.shape[1] == 1 and channels == 3:
        x = x.repeat([1, 3, 1, 1])
    return x

class SyntheticPairs:
    """`--data generator`: training pairs made by the generator itself.

    Sample number p of the stream (a global position, as the dataset's) draws z (and a class
    label for conditional networks) and q ~ N(0, I) * q_scale from a torch generator seeded with
    (seed, p); x = G(w, 0) and y = G(w, q) with w = mapping(z) (truncation `truncation`), as the
    generator's float output (not clamped or quantised). Plain StyleGAN2 networks give x only.
    """

    def __init__(self, G, seed=0, q_scale=1.0, truncation=1.0):
        self.G = G
        self.seed = int(seed)
        self.q_scale = float(q_scale)
        self.truncation = float(truncation)
        self.q_dim = int(getattr(G, 'q_dim', 0))

    def latents(self, positions):
        zs, cs, qs = [], [], []
        for p in positions:
            gen = torch.Generator().manual_seed((self.seed * 1000003 + int(p)) % (2**63))
            zs.append(torch.randn([self.G.z_dim], generator=gen))
            c = torch.zeros([self.G.c_dim])
            if self.G.c_dim > 0:
                c[int(torch.randint(self.G.c_dim, [], generator=gen))] = 1
            cs.append(c)
            qs.append(torch.randn([max(self.q_dim, 1)], generator=gen)[:self.q_dim] * self.q_scale)
        return torch.stack(zs), torch.stack(cs), torch.stack(qs)

    @torch.no_grad()
    def make(self, positions, device):
        """-> (x, y or None, w, q or None) for the given stream positions, on `device`."""
        z, c, q = (t.to(device) for t in self.latents(positions))
        w = self.G.mapping(z, c, truncation_psi=self.truncation)
        x = self.G.synthesis(w, noise_mode='const', force_fp32=True)
        if self.q_dim == 0:
            return x, None, w, None
        y = self.G.synthesis(w, q=q, noise_mode='const', force_fp32=True)
        return x, y, w, q

#----------------------------------------------------------------------------
# Losses.

class ReconstructionLoss:
    """L2 + LPIPS + identity on images in [-1, 1] at the loss resolution; reports each term."""

    def __init__(self, G, device, l2_weight=1.0, lpips_weight=0.8, lpips_backbone=None, id_weight=0.0, id_net=None,
                 id_crop='ffhq', w_norm_weight=0.0, q_reg_weight=0.0, need_lpips=False):
        self.G = G
        self.device = device
        self.res = min(G.img_resolution, LOSS_MAX_RES)
        self.l2_weight = l2_weight
        self.lpips_weight = lpips_weight
        self.id_weight = id_weight
        self.w_norm_weight = w_norm_weight
        self.q_reg_weight = q_reg_weight
        self.id_net = id_net
        self.id_crop = ID_CROPS[id_crop]
        self.lpips = None
        if lpips_weight > 0 or need_lpips:
            from metrics.restoration import LPIPS
            rand = lpips_backbone == 'random'
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # the random backbone (tests) is the same whatever ran before
                self.lpips = LPIPS(net='alex', pnet_rand=rand, backbone_path=None if rand else lpips_backbone).to(device)

    def to_loss_res(self, img):
        """Generator output -> loss resolution (pSp: adaptive average pooling)."""
        if img.shape[-1] > self.res:
            return F.adaptive_avg_pool2d(img, self.res)
        return img

    def target(self, images):
        """Dataset images (float) -> loss resolution."""
        return encoders.resize_images(images, self.res)

    def lpips_distance(self, a, b):
        if a.shape[-1] < LPIPS_MIN_RES:
            a = F.interpolate(a, size=LPIPS_MIN_RES, mode='bilinear', align_corners=False)
            b = F.interpolate(b, size=LPIPS_MIN_RES, mode='bilinear', align_corners=False)
        return self.lpips(a, b)

    def id_embed(self, img):
        top, bottom, left, right = self.id_crop
        h, w = img.shape[-2:]
        crop = img[:, :, int(round(top * h)):int(round(bottom * h)), int(round(left * w)):int(round(right * w))]
        if crop.shape[-1] >= ID_INPUT_RES and crop.shape[-2] >= ID_INPUT_RES:
            crop = F.adaptive_avg_pool2d(crop, ID_INPUT_RES)
        else:
            crop = F.interpolate(crop, size=(ID_INPUT_RES, ID_INPUT_RES), mode='bilinear', align_corners=False)
        return F.normalize(self.id_net(crop).float(), dim=1)

    def __call__(self, out, target, tag):
        """Weighted loss (scalar) between generator output `out` and loss-resolution `target`."""
        out = self.to_loss_res(out)
        total = 0
        if self.l2_weight > 0:
            l2 = (out - target).square().mean()
            training_stats.report(f'Loss/{tag}/l2', l2)
            total = total + self.l2_weight * l2
        if self.lpips_weight > 0:
            dist = self.lpips_distance(out, target).mean()
            training_stats.report(f'Loss/{tag}/lpips', dist)
            total = total + self.lpips_weight * dist
        if self.id_weight > 0:
            cos = (self.id_embed(out) * self.id_embed(target).detach()).sum(dim=1)
            id_loss = (1 - cos).mean()
            training_stats.report(f'Loss/{tag}/id', id_loss)
            total = total + self.id_weight * id_loss
        return total

    def latent_terms(self, w, q, latent_avg, w_dim, sharp):
        total = 0
        if self.w_norm_weight > 0:
            diff = w - (latent_avg[:w_dim] if w.ndim == 2 else latent_avg[:w_dim].reshape(1, 1, -1))
            w_norm = diff.flatten(1).norm(dim=1).mean()
            training_stats.report('Loss/w_norm', w_norm)
            total = total + self.w_norm_weight * w_norm
        if sharp and q is not None and self.q_reg_weight > 0:
            q_reg = q.square().sum(dim=1).mean()
            training_stats.report('Loss/q_reg', q_reg)
            total = total + self.q_reg_weight * q_reg
        return total

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

#----------------------------------------------------------------------------
# RNG state (tensors and numbers only, so checkpoints load with weights_only=True).

#----------------------------------------------------------------------------

def make_optimizer(name, params, lr):
    from training.ranger import Ranger
    if name == 'ranger':
        return Ranger(params, lr=lr)  # pSp: alpha 0.5, k 6, betas (0.95, 0.999), eps 1e-5, GC on
    if name == 'adam':
        return torch.optim.Adam(params, lr=lr)
    raise UserError(f'unknown optimizer "{name}"; choose from: {", ".join(OPTIMIZERS)}')

def _average_gradients(params, num_gpus):
    if num_gpus > 1 and params:
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
        torch.distributed.all_reduce(flat)
        flat /= num_gpus
        offset = 0
        for p in params:
            p.grad = flat[offset:offset + p.numel()].reshape(p.shape)
            offset += p.numel()
    for p in params:
        if p.grad is not None:
            torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)

def _sync_buffers(module, num_gpus):
    """Average BatchNorm running statistics over the processes (each rank sees other images)."""
    if num_gpus > 1:
        for name, buf in module.named_buffers():
            if buf.is_floating_point() and name != 'latent_avg':
                torch.distributed.all_reduce(buf)
                buf /= num_gpus

def _broadcast(module, num_gpus):
    if num_gpus > 1:
        for tensor in misc.params_and_buffers(module):
            torch.distributed.broadcast(tensor.data, src=0)

#----------------------------------------------------------------------------

@torch.no_grad()
def run_validation(encoder, G, loss, val_sharp, val_deg, sharp_q, batch=8):
    """Metrics on the held-out pairs, and the panel images of the first few."""
    from metrics.restoration import psnr_torch
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

def save_panels(grid, columns, path):
    image = image_utils.make_grid(image_utils.to_uint8(grid), grid_size=(columns, 4))
    image_utils.save_image(image, path)
    return image

#----------------------------------------------------------------------------

def training_loop(
    run_dir             = '.',          # Output directory.
    network             = None,         # Generator: path, URL, zoo name (the G_ema of the file is used).
    data                = None,         # Training images (folder or zip), or 'generator' (SyntheticPairs).
    val_data            = None,         # Validation images; None = hold out the last `val_images` of `data`.
    val_images          = 16,           # Held-out validation images when val_data is None (0 = no validation).
    degradation         = 'qc_psp_encoder',  # Degradation preset for the on-the-fly degraded inputs; None = none.
    mirror              = False,        # Add x-flipped copies of the training images.
    q_scale             = 1.0,          # data='generator': q ~ N(0, I) * q_scale.
    truncation          = 1.0,          # data='generator': truncation psi of the mapping.
    backbone            = 'resnet34',   # Encoder backbone: 'resnet34' (released) or 'tiny'.
    input_size          = 256,          # Encoder input resolution.
    w_space             = 'w',          # 'w' (released) or 'w+' (GradualStyle head).
    backbone_weights    = 'auto',       # ImageNet weights: 'auto' (torch hub cache), 'none' or a file.
    coach               = 'paired',     # See COACHES.
    sharp_q             = None,         # Sharp steps: 'predict' q or 'skip' it (q = 0); None = skip for 'alternative', else predict.
    deg_weight          = 1.0,          # Weight of L(G(w, q), y).
    cross_weight        = 1.0,          # Weight of L(G(w, 0), x) for degraded inputs (not used by 'alternative').
    self_weight         = 1.0,          # Weight of L(G(w_x, q_x), x) for sharp inputs.
    l2_weight           = 1.0,
    lpips_weight        = 0.8,
    lpips_backbone      = None,         # None = torchvision's AlexNet from torch hub's cache; 'random'; or a file.
    id_weight           = 0.0,
    id_weights          = None,         # Face-embedding network file for the identity loss.
    id_crop             = 'ffhq',
    w_norm_weight       = 0.0,
    q_reg_weight        = 0.0,
    opt                 = 'ranger',
    lr                  = 1e-4,
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
    """Train the encoders; returns EasyDict(encoder, optimizer, step, checkpoint, val)."""
    start_time = time.time()
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
        raise UserError(f'--network has {G.img_channels}-channel images; the encoders need an RGB generator')
    q_dim = int(getattr(G, 'q_dim', 0))

    # Data.
    checkpoint = encoders.load_encoder_checkpoint(resume_checkpoint) if resume_checkpoint is not None else None
    if checkpoint is not None:
        encoders.check_fingerprint(checkpoint['fingerprint'], G, what=f'--resume checkpoint "{resume_checkpoint}"')
    synthetic = None
    train_subset = None
    val_sharp = val_deg = None
    if data == GENERATOR_DATA:
        synthetic = SyntheticPairs(G, seed=random_seed, q_scale=q_scale, truncation=truncation)
        has_degraded = q_dim > 0
        if rank == 0 and val_images > 0:
            val_sharp, val_deg, _, _ = synthetic.make([-1 - i for i in range(val_images)], device)
            val_sharp = val_sharp.cpu()
            val_deg = val_deg.cpu() if val_deg is not None else None
    else:
        training_set = open_dataset(data, degradation, mirror=mirror, seed=random_seed)
        train_idx, held = split_dataset(training_set, val_images, val_data is not None)
        train_subset = _HeldOut(training_set, train_idx)
        has_degraded = degradation is not None
        if training_set.resolution != G.img_resolution:
            log(f'Note: the dataset images are {training_set.resolution}x{training_set.resolution} and the generator makes '
                f'{G.img_resolution}x{G.img_resolution}: degradations are applied at the dataset resolution, then the targets '
                f'are resized to {min(G.img_resolution, LOSS_MAX_RES)} for the losses.')
        if training_set.num_channels == 1:
            log('Note: the dataset is grayscale; images are repeated to 3 channels.')
        if rank == 0:
            if val_data is not None:
                val_set = open_dataset(val_data, degradation, seed=random_seed)
                val_sharp, val_deg = validation_items(val_set, num=val_images if val_images > 0 else None, seed=random_seed)
            elif held:
                val_sharp, val_deg = validation_items(training_set, raw_indices=held, seed=random_seed)
    if sharp_q is None:
        sharp_q = 'skip' if coach == 'alternative' else 'predict'
    if not has_degraded and coach != 'sharp':
        log(f'Note: no degraded images (no degradation preset, or a generator without q): every step reconstructs '
            f'the sharp image (--coach {coach} acts as sharp).')

    # Encoder and optimizer.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_seed)
        encoder = encoders.PSPEncoder.for_generator(G, backbone=backbone, w_space=w_space, input_size=input_size,
                                                    backbone_weights='none' if (checkpoint is not None or init_encoder) else backbone_weights)
    encoder = encoder.to(device).train()
    if init_encoder is not None and checkpoint is None:
        init = encoders.load_encoder_checkpoint(init_encoder)
        encoders.check_fingerprint(init['fingerprint'], G, what=f'--init checkpoint "{init_encoder}"')
        init_kwargs = json.loads(init['encoder_kwargs_json'])
        if init_kwargs != encoder.init_kwargs:
            raise UserError(f'--init "{init_encoder}" has encoder options {init_kwargs}, this run {encoder.init_kwargs}: '
                            f'use the same --backbone, --w-space and --input-size')
        encoder.load_state_dict(init['encoder'])
        log(f'Encoder weights from "{init_encoder}" (step {init.get("step")})')
    optimizer = make_optimizer(opt, list(encoder.parameters()), lr)
    loss = ReconstructionLoss(G, device, l2_weight=l2_weight, lpips_weight=lpips_weight, lpips_backbone=lpips_backbone,
                              id_weight=id_weight, id_net=load_id_network(id_weights, device) if id_weight > 0 else None,
                              id_crop=id_crop, w_norm_weight=w_norm_weight, q_reg_weight=q_reg_weight)

    step = 0
    best_val = None
    if checkpoint is not None:
        encoder.load_state_dict(checkpoint['encoder'])
        optimizer.load_state_dict(checkpoint['optimizer'])
        step = int(checkpoint['step'])
        best_val = checkpoint.get('best_val')
        log(f'Resuming exactly from "{resume_checkpoint}" at step {step}')
    _broadcast(encoder, num_gpus)

    # Data loader: positions key the degradations, so the stream is the same after a resume
    # and whichever worker loads a sample.
    loader = None
    if synthetic is None:
        sampler = misc.InfiniteSampler(train_subset, rank=rank, num_replicas=num_gpus, seed=random_seed,
                                       start_idx=step * batch_size, with_positions=True)
        loader_kwargs = dict(num_workers=num_workers, pin_memory=(device.type == 'cuda'))
        if num_workers > 0:
            loader_kwargs['prefetch_factor'] = 2
        loader = iter(torch.utils.data.DataLoader(train_subset, sampler=sampler, batch_size=batch_gpu, **loader_kwargs))
    if checkpoint is not None:
        rngs = checkpoint['rng']
        misc.set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0], device)

    # Logs.
    stats_collector = training_stats.Collector(regex='.*')
    stats_jsonl = val_jsonl = tfevents = None
    if rank == 0 and write_files:
        os.makedirs(run_dir, exist_ok=True)
        stats_jsonl = open(os.path.join(run_dir, 'stats.jsonl'), 'at', encoding='utf-8')
        val_jsonl = open(os.path.join(run_dir, 'val.jsonl'), 'at', encoding='utf-8')
        try:
            import torch.utils.tensorboard as tensorboard
            tfevents = tensorboard.SummaryWriter(run_dir)
        except ImportError as err:
            log('Skipping tfevents export:', err)

    params = list(encoder.parameters())
    result = dnnlib.EasyDict(checkpoint=None, val=None)
    log(f'Training encoders ({encoder.backbone}, {encoder.w_space.upper()}, input {encoder.input_size}, '
        f'q_dim {q_dim}) for {total_steps} steps from step {step}; coach {coach}, batch {batch_size}, {opt} lr {lr:g}')
    steps_done = 0
    tick_start_step = step
    tick_start_time = time.time()
    done = step >= total_steps or (max_steps is not None and max_steps <= 0)

    def write_checkpoint(path, current_step, rng_states=None):
        """checkpoint.pt (rng_states given): everything for an exact resume; best.pt: the encoder only."""
        full = rng_states is not None
        encoders.save_encoder_checkpoint(path, encoder, network=str(network), step=current_step, best_val=best_val,
            optimizer=optimizer.state_dict() if full else None, opt_name=opt, rng=rng_states if full else None,
            options_json=json.dumps(training_options, default=str) if (full and training_options is not None) else None)

    while not done:
        if synthetic is not None:
            x, y, _, _ = synthetic.make(range(step * batch_size + rank, (step + 1) * batch_size, num_gpus), device)
        else:
            batch = next(loader)
            x = to_float(batch[0], device)
            y = to_float(batch[1], device) if len(batch) == 3 else None
        kind = step_kind(coach, step, y is not None)

        optimizer.zero_grad(set_to_none=True)
        x_t = loss.target(x)
        skip = sharp_q == 'skip'
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
            if deg_weight > 0:
                total = total + deg_weight * loss(out, loss.target(y), 'deg')
            if coach != 'alternative' and cross_weight > 0:
                out0 = encoders.synthesize(G, w, None) if q is not None else out
                total = total + cross_weight * loss(out0, x_t, 'cross')
            total = total + loss.latent_terms(w, q, encoder.latent_avg, encoder.w_dim, sharp=False)
            if q is not None:
                training_stats.report('Latent/q_norm_deg', q.detach().norm(dim=1))
        if kind in ('joint', 'sharp'):
            out = encoders.synthesize(G, w_x, q_x)
            if self_weight > 0:
                total = total + self_weight * loss(out, x_t, 'sharp')
            total = total + loss.latent_terms(w_x, None if skip else q_x, encoder.latent_avg, encoder.w_dim, sharp=True)
            if q_x is not None and not skip:
                training_stats.report('Latent/q_norm_sharp', q_x.detach().norm(dim=1))
        if not isinstance(total, torch.Tensor):
            raise UserError('every loss weight is zero: nothing to train')
        training_stats.report(f'Loss/total_{kind}', total.detach())
        total.backward()
        _average_gradients(params, num_gpus)
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
            _sync_buffers(encoder, num_gpus)
        if is_val and rank == 0 and val_sharp is not None:
            with torch.random.fork_rng(devices=[device] if device.type == 'cuda' else []):
                val, grid, columns = run_validation(encoder, G, loss, val_sharp, val_deg, sharp_q)
            result.val = val
            if write_files:
                save_panels(grid, columns, os.path.join(run_dir, f'panels{step:06d}.png'))
                val_jsonl.write(json.dumps(dict(step=step, **val)) + '\n')
                val_jsonl.flush()
                if tfevents is not None:
                    for key, value in val.items():
                        tfevents.add_scalar('Val/' + key.split('/', 1)[1], value, global_step=step)
                    tfevents.add_image('panels', image_utils.make_grid(image_utils.to_uint8(grid), grid_size=(columns, 4)),
                                       global_step=step, dataformats='HWC')
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
            fields = [f'step {step:<7d}', f'time {dnnlib.util.format_time(now - start_time):<10s}',
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
            log('  '.join(fields))
            if stats_jsonl is not None:
                stats_jsonl.write(json.dumps(dict({k: v for k, v in stats.items()}, step=step, timestamp=now)) + '\n')
                stats_jsonl.flush()
            if tfevents is not None:
                for name, value in stats.items():
                    tfevents.add_scalar(name, value.mean, global_step=step)
                tfevents.flush()
            tick_start_step = step
            tick_start_time = time.time()
        if not all(torch.isfinite(p).all() for p in params):
            raise UserError(f'training diverged at step {step}: non-finite encoder weights; lower --lr')

    for handle in [stats_jsonl, val_jsonl]:
        if handle is not None:
            handle.close()
    if tfevents is not None:
        tfevents.close()
    log('Done.')
    result.update(encoder=encoder, optimizer=optimizer, step=step, G=G, best_val=best_val)
    return result

#----------------------------------------------------------------------------
# CLI plumbing (mirrors train.py).

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
    args.lpips_backbone = lpips_backbone
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
        from training import degradation_sampler
        try:
            degradation_sampler.load_preset(args.degradation)
        except ValueError as err:
            raise UserError(f'--degradation: {err}') from err
    from training.dataset import DatasetError
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
        dev = image_utils.parse_device(device or 'auto')
    except ValueError as err:
        raise UserError(str(err)) from err
    args.device_type = dev.type
    desc += f'-{args.coach}-{args.w_space.replace("+", "plus")}-{args.backbone}-{args.input_size}'
    return desc, args

def resume_args(ckpt_path, cli, explicit):
    """Options stored in a checkpoint, with the few that may change taken from the CLI."""
    try:
        ckpt = encoders.load_encoder_checkpoint(ckpt_path)
    except (encoders.EncoderError, FileNotFoundError) as err:
        raise UserError(f'--resume: {err}') from err
    if not ckpt.get('options_json') or ckpt.get('optimizer') is None:
        raise UserError(f'--resume "{ckpt_path}" is an encoder checkpoint without training state; start a new run with --init')
    args = dnnlib.EasyDict(json.loads(ckpt['options_json']))
    conflicting = sorted(set(explicit) - RESUME_OVERRIDABLE)
    if conflicting:
        raise UserError(f'--resume continues a run exactly; these options cannot change: '
                        f'{", ".join("--" + c.replace("_", "-") for c in conflicting)} (drop them, or start a new run with --init)')
    for key, target in [('steps', 'total_steps'), ('snap', 'snap_steps'), ('val_every', 'val_every'), ('tick', 'tick_steps'),
                        ('workers', 'num_workers'), ('data', 'data'), ('val_data', 'val_data'), ('network', 'network')]:
        if key in explicit:
            args[target] = cli[key]
    if 'gpus' in explicit and cli['gpus'] != args.num_gpus:
        print(f'Note: the checkpoint was trained with {args.num_gpus} processes; continuing with {cli["gpus"]} changes '
              f'the per-process data shards (not an exact continuation).')
        args.num_gpus = cli['gpus']
        if args.batch_size % args.num_gpus != 0:
            raise UserError(f'the batch size {args.batch_size} is not divisible by --gpus {args.num_gpus}')
    try:
        G = legacy.load_network(args.network, verbose=False)['G_ema']
        encoders.check_fingerprint(ckpt['fingerprint'], G, what=f'--resume checkpoint "{ckpt_path}"')
    except (legacy.NetworkLoadError, dnnlib.DownloadError, OSError) as err:
        raise UserError(f'--network: {err}') from err
    except encoders.EncoderMismatchError as err:
        raise UserError(str(err)) from err
    if int(ckpt['step']) >= args.total_steps:
        print(f'Note: the checkpoint is at step {ckpt["step"]}, at or past --steps {args.total_steps}; pass a larger --steps to train on.')
    if 'device' in explicit:
        try:
            args.device_type = image_utils.parse_device(cli['device'] or 'auto').type
        except ValueError as err:
            raise UserError(str(err)) from err
    elif args.get('device_type') == 'cuda' and not torch.cuda.is_available():
        raise UserError('the checkpoint was trained on CUDA, which is not available here; pass --device cpu')
    args.resume_checkpoint = os.path.abspath(ckpt_path)
    args.init_encoder = None
    return args

def loop_kwargs(args):
    import inspect
    names = set(inspect.signature(training_loop).parameters)
    return {k: v for k, v in args.items() if k in names}

def subprocess_fn(rank, args, temp_dir=None, local_rank=None, torchrun=False):
    """Run the training loop in one process with logging and the distributed setup."""
    from training.dataset import DatasetError
    if local_rank is None:
        local_rank = rank
    logger = dnnlib.util.Logger(file_name=os.path.join(args.run_dir, 'log.txt'), file_mode='a', should_flush=True) if rank == 0 else None
    device = distributed.process_device(args.device_type, local_rank, args.num_gpus)
    if args.num_gpus > 1 and not torchrun:
        distributed.init_process_group(rank, args.num_gpus, args.device_type, temp_dir)
    training_stats.reset()  # a new run (also when called again in the same process)
    training_stats.init_multiprocessing(rank=rank, sync_device=device if args.num_gpus > 1 else None)
    if rank != 0:
        custom_ops.verbosity = 'none'
    errors = (UserError, legacy.NetworkLoadError, dnnlib.DownloadError, DatasetError, encoders.EncoderError,
              IDNetworkError, FileNotFoundError)
    try:
        with distributed.process_errors(errors, temp_dir, rank, exits=(args.num_gpus > 1 or torchrun), wrap=UserError):
            return training_loop(rank=rank, device=device, training_options=dict(args), **loop_kwargs(args))
    finally:
        if logger is not None:
            logger.close()

def print_options(args):
    print()
    print('Encoder training options:')
    print(json.dumps(args, indent=2, default=str))
    print()
    print(f'Output directory:  {args.run_dir}')
    print(f'Network:           {args.network}')
    print(f'Training data:     {args.data}')
    print(f'Processes:         {args.num_gpus} ({args.device_type})')
    print()

#----------------------------------------------------------------------------

@click.command(help=__doc__)
@click.pass_context
@click.option('--outdir', help='Where to make the run directory', required=True, metavar='DIR')
@click.option('--network', help='Generator: QC-StyleGAN or StyleGAN2 pickle, URL or zoo name', metavar='PKL')
@click.option('--data', help='Sharp training images (folder or zip), or "generator" for pairs made by the network', metavar='PATH')
@click.option('--val-data', help='Validation images [default: hold out the last --val-images of --data]', metavar='PATH')
@click.option('--val-images', help='Validation images held out of --data (0 = no validation), or taken from --val-data (0 = all) [default: 16]', type=click.IntRange(min=0), metavar='INT')
@click.option('--degradation', help='Degradation preset (name or .json) or "none" [default: qc_psp_encoder]', metavar='PRESET')
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
@click.option('--lpips-backbone', help='AlexNet weights for LPIPS: a file, or "random" [default: torch hub cache]', metavar='PATH')
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
@click.option('--device', help='auto, cuda or cpu [default: auto]', metavar='DEV')
# Logging.
@click.option('--tick', help='Status line and stats every N steps [default: 50]', type=click.IntRange(min=1), metavar='INT')
@click.option('--val-every', help='Validation and panels every N steps [default: 1000]', type=click.IntRange(min=1), metavar='INT')
@click.option('--snap', help='checkpoint.pt every N steps [default: 5000]', type=click.IntRange(min=1), metavar='INT')
@click.option('--resume', help='checkpoint.pt of a run to continue exactly', metavar='CKPT')
@click.option('-n', '--dry-run', help='Print the options and exit', is_flag=True)
@cli_options.trust_pickle_option
def main(ctx, outdir, resume, dry_run, **cli):
    torchrun = distributed.started_by_torchrun()
    explicit = {name for name in cli if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
    if torchrun:
        world_size = int(os.environ['WORLD_SIZE'])
        if 'gpus' in explicit and cli['gpus'] != world_size:
            raise click.ClickException(f'--gpus {cli["gpus"]} disagrees with torchrun WORLD_SIZE={world_size}; drop --gpus under torchrun')
        cli['gpus'] = world_size
        explicit.add('gpus')
    try:
        if not dry_run:
            dnnlib.util.check_output_dir(outdir, '--outdir')
        if resume is not None:
            args = resume_args(resume, cli, explicit)
            desc = dnnlib.util.continued_run_desc(resume)
            if not dry_run:  # temp files of the killed run it continues
                dnnlib.util.remove_stale_tmp_files(os.path.dirname(os.path.abspath(resume)))
        else:
            desc, args = setup_args(**cli)
    except UserError as err:
        raise click.ClickException(str(err))
    except OSError as err:
        raise click.ClickException(err.strerror or str(err))

    if torchrun:
        _run_torchrun(args, outdir, desc, dry_run)
        return
    args.run_dir = dnnlib.util.next_run_dir(outdir, desc)
    print_options(args)
    if dry_run:
        print('Dry run; exiting.')
        return
    args.run_dir = dnnlib.util.make_run_dir(outdir, desc)  # atomic: concurrent runs get distinct folders
    try:
        with dnnlib.util.atomic_write(os.path.join(args.run_dir, 'options.json'), 'w') as f:
            json.dump(args, f, indent=2, default=str)
        distributed.launch(subprocess_fn, args, args.num_gpus, log_hint=os.path.join(args.run_dir, 'log.txt'))
    except (UserError, distributed.LaunchError, OSError) as err:
        dnnlib.util.remove_unused_run_dir(args.run_dir, ['options.json', 'log.txt'])
        raise click.ClickException(str(err) if not isinstance(err, OSError) else f'{args.run_dir}: {dnnlib.util.describe_os_error(err)}')

def _run_torchrun(args, outdir, desc, dry_run):
    """Started by torchrun: every process exists already; rank 0 picks the run directory."""
    def choose_run_dir():
        return dnnlib.util.next_run_dir(outdir, desc) if dry_run else dnnlib.util.make_run_dir(outdir, desc)
    rank, local_rank, args.run_dir = distributed.torchrun_setup(args.num_gpus, args.device_type, choose_run_dir)
    if rank == 0:
        print_options(args)
        if not dry_run:
            with dnnlib.util.atomic_write(os.path.join(args.run_dir, 'options.json'), 'w') as f:
                json.dump(args, f, indent=2, default=str)
    if dry_run:
        torch.distributed.destroy_process_group()
        return
    try:
        subprocess_fn(rank, args, None, local_rank=local_rank, torchrun=True)
    except UserError as err:
        raise click.ClickException(str(err))

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
