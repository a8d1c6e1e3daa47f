"""Shared pieces of the inversion methods.

* target images: listing (`list_images`), loading any PIL mode / bit depth (`load_image`),
  center-crop + area-resize to a size (`fit_image`), each returning notices instead of printing;
* W statistics (`estimate_w_stats`) and `w_avg`;
* `LatentGenerator`: a frozen generator seen through W (`[N, w_dim]`), W+ (`[N, num_ws, w_dim]`)
  or W++ latents (W+ plus per-layer style offsets added to every affine output, through forward
  hooks), with an optional quality code q for QC generators; `compile_synthesis(True)` renders
  through `torch.compile` (an option: faster steps after a one-off compile per shape);
* degradation helpers that respect an operator's value range (`degrade`, `observe`);
* `tune_generator`: the pivotal-tuning loop (MSE + LPIPS through the degradation, optional
  locality regulariser and QC residual-statistics loss, early stop), shared by PTI, CRI and QC;
* `InversionResult`: what every method returns.

Images are float tensors `[N, C, H, W]` in [-1, 1] unless stated otherwise.
"""

import copy
import os
import warnings

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

import dnnlib
from torch_utils import misc

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff', '.ppm', '.pgm', '.gif')

#----------------------------------------------------------------------------
# Target images.

def list_images(path):
    """A file -> [file]; a folder -> its image files (by extension, sorted, not recursive).

    Raises FileNotFoundError for a missing path and ValueError for a folder without images.
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f'target not found: {path}')
    files = sorted(os.path.join(path, name) for name in os.listdir(path)
                   if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, name)))
    if not files:
        raise ValueError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in folder {path}')
    return files


def load_image(path, channels=3):
    """Read an image of any PIL mode and bit depth -> (float32 numpy `[H, W, channels]` in [0, 1], notices).

    RGBA/LA are composited on white, palette images are expanded, 16-bit and 32-bit integer
    images keep their precision, and gray <-> RGB conversion happens as needed. Raises
    ValueError for unreadable files.
    """
    notices = []
    try:
        with PIL.Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode == 'P':
                img = img.convert('RGBA' if 'transparency' in img.info else 'RGB')
                mode = img.mode
            if mode in ('I;16', 'I;16B', 'I;16L', 'I;16N'):
                arr = np.asarray(img, dtype=np.float64) / 65535.0
                notices.append(f'16-bit {mode} image scaled to 8-bit range')
            elif mode == 'I':
                arr = np.asarray(img, dtype=np.float64)
                peak = 65535.0 if arr.max() > 255 else 255.0
                arr = arr / peak
                notices.append(f'32-bit integer image scaled by 1/{peak:g}')
            elif mode == 'F':
                arr = np.asarray(img, dtype=np.float64)
                if arr.max() > 1.0:
                    arr = arr / 255.0
                notices.append('float image converted')
            else:
                if mode in ('RGBA', 'LA', 'PA') or (mode in ('RGB', 'L') and 'transparency' in img.info):
                    rgba = img.convert('RGBA')
                    background = PIL.Image.new('RGBA', rgba.size, (255, 255, 255, 255))
                    img = PIL.Image.alpha_composite(background, rgba).convert('RGB')
                    notices.append(f'{mode} image: alpha composited on white')
                elif mode not in ('RGB', 'L'):
                    img = img.convert('RGB')
                    notices.append(f'{mode} image converted to RGB')
                arr = np.asarray(img, dtype=np.float64) / 255.0
    except Exception as err:  # pylint: disable=broad-except
        raise ValueError(f'cannot read image {path}: {type(err).__name__}: {err}') from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] != channels:
        if channels == 3 and arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
            notices.append('grayscale image replicated to RGB')
        elif channels == 1:
            arr = arr[:, :, :3].mean(axis=2, keepdims=True)
            notices.append('color image converted to grayscale')
        else:
            arr = arr[:, :, :channels]
    return np.clip(arr, 0, 1).astype(np.float32), notices


def fit_image(array, size):
    """Center-crop `[H, W, C]` float array to the aspect of `size` (int or (H, W)) and area/Lanczos
    resize -> (array `[h, w, C]`, notices)."""
    th, tw = (size, size) if isinstance(size, int) else tuple(size)
    h, w = array.shape[:2]
    notices = []
    if (h, w) == (th, tw):
        return array, notices
    if h * tw != w * th:  # crop to the target aspect ratio
        if h * tw > w * th:
            ch, cw = max(1, round(w * th / tw)), w
        else:
            ch, cw = h, max(1, round(h * tw / th))
        top, left = (h - ch) // 2, (w - cw) // 2
        array = array[top:top + ch, left:left + cw]
        notices.append(f'center-cropped {w}x{h} to {cw}x{ch}')
        h, w = ch, cw
    if (h, w) != (th, tw):
        t = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None]
        if h >= th and w >= tw:
            t = F.interpolate(t, size=(th, tw), mode='area')
        else:
            t = F.interpolate(t, size=(th, tw), mode='bicubic', align_corners=False).clamp(0, 1)
        array = t[0].permute(1, 2, 0).numpy()
        notices.append(f'resized {w}x{h} to {tw}x{th}')
    return array, notices


def load_target(path, size=None, channels=3, device='cpu'):
    """Load an image file as a tensor `[1, C, H, W]` in [-1, 1], optionally fitted to `size`
    -> (tensor, notices)."""
    array, notices = load_image(path, channels=channels)
    if size is not None:
        array, more = fit_image(array, size)
        notices += more
    t = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].to(device)
    return t * 2 - 1, notices

#----------------------------------------------------------------------------
# Degradation helpers.

def _drange(degradation):
    return tuple(getattr(degradation, 'drange', (-1, 1)))


def degrade(degradation, x, true=False):
    """Apply a degradation to images in [-1, 1], honouring its value range (`drange`, default
    [-1, 1]). true=False: the differentiable approximation f^; true=True: the true operator f."""
    if degradation is None:
        return x
    lo, hi = _drange(degradation)
    fn = degradation.true if true else degradation
    if (lo, hi) == (-1, 1):
        return fn(x)
    y = fn((x + 1) * ((hi - lo) / 2) + lo)
    return (y - lo) * (2 / (hi - lo)) - 1


def observation_mask(degradation, like):
    """The observed-pixel mask of a degradation broadcast to `like` `[N, 1, H, W]`, or None."""
    mask = getattr(degradation, 'mask', None) if degradation is not None else None
    if mask is None:
        return None
    mask = mask.to(like.device, like.dtype)
    if mask.shape[-2:] != like.shape[-2:]:
        mask = F.interpolate(mask, size=like.shape[-2:], mode='area')
    return mask.expand(like.shape[0], 1, *like.shape[-2:])


def to_image_size(degradation, y, size):
    """Bring an observation to `size` x `size` for display / feature comparisons (a measurement
    vector `[N, m]` through its operator's `to_image_size`: the back-projection)."""
    if y.ndim == 4 and y.shape[-1] == size and y.shape[-2] == size:
        return y
    if degradation is not None and hasattr(degradation, 'to_image_size'):
        return degradation.to_image_size(y, size)
    return F.interpolate(y, size=(size, size), mode='bilinear', align_corners=False)

#----------------------------------------------------------------------------
# W statistics.

@torch.no_grad()
def estimate_w_stats(G, num_samples=600, seed=123, batch=100):
    """(w_avg `[w_dim]`, w_std scalar) from `num_samples` mapped z ~ N(0, I) (PTI: 600, seed 123);
    w_std = sqrt(sum ||w - w_avg||^2 / num_samples)."""
    device = G.mapping.w_avg.device if hasattr(G.mapping, 'w_avg') else next(G.parameters()).device
    rng = np.random.RandomState(seed)
    z = torch.from_numpy(rng.randn(num_samples, G.z_dim).astype(np.float32)).to(device)
    c = torch.zeros([num_samples, G.c_dim], device=device)
    ws = torch.cat([G.mapping(z[i:i + batch], c[i:i + batch], skip_w_avg_update=True)[:, 0]
                    for i in range(0, num_samples, batch)])
    w_avg = ws.mean(0)
    w_std = float(((ws - w_avg).square().sum() / num_samples).sqrt())
    return w_avg, w_std


@torch.no_grad()
def sample_ws(G, num, seed=0, truncation_psi=1.0, batch=500):
    """`num` mapped w `[num, w_dim]` (first row) from z ~ N(0, I) with a fixed seed."""
    device = next(G.parameters()).device
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn([num, G.z_dim], generator=gen).to(device)
    c = torch.zeros([num, G.c_dim], device=device)
    return torch.cat([G.mapping(z[i:i + batch], c[i:i + batch], truncation_psi=truncation_psi,
                                skip_w_avg_update=True)[:, 0] for i in range(0, num, batch)])

#----------------------------------------------------------------------------
# Generator seen through W / W+ / W++ latents.

def affine_layers(G):
    """Every style affine of the synthesis network, in forward order: [(name, FullyConnectedLayer)]."""
    return [(name, module) for name, module in G.synthesis.named_modules() if name.endswith('.affine')]


def noise_buffers(G):
    """The `noise_const` buffers of the synthesis layers."""
    return [buf for name, buf in G.synthesis.named_buffers() if name.endswith('noise_const')]


_compile_synthesis = False

def compile_synthesis(enabled=True):
    """Render every inversion step through `torch.compile` of the synthesis network (process-wide).

    Results match the eager path within float tolerance; the first step per image shape pays the
    compile time, so it pays off for long loops (hundreds of steps) and large batches or images.
    """
    global _compile_synthesis
    _compile_synthesis = bool(enabled)


_unfused_modconv = False

def unfused_modconv(enabled=True):
    """Render every inversion step with the non-fused modulated convolution (process-wide).

    Off (default): the generator's inference path, as the references invert: per-sample modulated
    weights and one grouped convolution (`fused_modconv=True`). On: StyleGAN2's training path:
    the activations are scaled by the styles, convolved with the shared weight and demodulated
    (`fused_modconv=False`); equal within float tolerance. The weight gradient of the per-sample
    weights is then not computed when only latents train (NGD, PTI's pivot, the QC refinement), and
    the constant weight suits channels-last convolutions and `torch.compile`. Filter-wise (W++)
    latents always take the fused path (their styles differ per output filter).
    """
    global _unfused_modconv
    _unfused_modconv = bool(enabled)


class LatentGenerator:
    """A generator rendered from latents of one of three spaces, with optional q.

    space 'w':   latent `[N, w_dim]`, broadcast to all num_ws rows;
    space 'w+':  latent `[N, num_ws, w_dim]`;
    space 'w++': latent `[N, num_ws, K, w_dim]`, one code per output filter of every layer
                 (K = `G.synthesis.max_filters`; the robust NGD paper's filter-wise space,
                 rendered natively by the synthesis network). `to_wpp` lifts a W+ latent.

    `G` may be swapped (e.g. for a tuned copy); the wrapper never changes G's weights.
    """

    def __init__(self, G, noise_mode='const'):
        self.G = G
        self.noise_mode = noise_mode

    @property
    def q_dim(self):
        return int(getattr(self.G, 'q_dim', 0) or 0)

    @property
    def num_ws(self):
        return self.G.synthesis.num_ws

    def to_ws(self, latent):
        if latent.ndim == 2:
            return latent.unsqueeze(1).repeat([1, self.num_ws, 1])
        return latent

    def to_wpp(self, latent):
        """W or W+ -> W++: every row repeated once per output filter (renders the same image)."""
        ws = self.to_ws(latent)
        if ws.ndim == 4:
            return ws
        return ws.unsqueeze(2).repeat([1, 1, self.G.synthesis.max_filters, 1])

    def __call__(self, latent, q=None, G=None, noise_mode=None):
        """Render `[N, C, R, R]` in about [-1, 1]. q: None (sharp) or `[N, q_dim]`."""
        G = G or self.G
        ws = self.to_ws(latent)
        if q is not None and self.q_dim == 0:
            q = None
        synthesis = misc.compiled_forward(G.synthesis) if _compile_synthesis else G.synthesis
        fused = dict(fused_modconv=False) if _unfused_modconv else dict()
        return synthesis(ws, q=q, noise_mode=noise_mode or self.noise_mode, force_fp32=True, **fused)

def initial_latent(w_init, space, num_ws, w_dim, device):
    """An encoder's code `w_init` (W `[N, w_dim]` or W+ `[N, num_ws, w_dim]`) as a start in `space`:
    'w' -> `[N, w_dim]` (a W+ code gives the mean of its rows); 'w+' -> `[N, num_ws, w_dim]` (a W
    code is broadcast). Returns a detached float32 copy on `device`; ValueError on a bad shape."""
    w = torch.as_tensor(w_init).detach().to(device=device, dtype=torch.float32)
    if not ((w.ndim == 2 and w.shape[1] == w_dim) or (w.ndim == 3 and w.shape[1:] == (num_ws, w_dim))):
        raise ValueError(f'initial latent must be [N, {w_dim}] (W) or [N, {num_ws}, {w_dim}] (W+), got {list(w.shape)}')
    if space == 'w':
        return (w.mean(dim=1) if w.ndim == 3 else w).clone()
    return (w.unsqueeze(1).repeat([1, num_ws, 1]) if w.ndim == 2 else w).clone()

#----------------------------------------------------------------------------
# Losses shared by the tuning loops.

class MinSizeLPIPS(torch.nn.Module):
    """Wrap an LPIPS module so that images smaller than `min_size` (AlexNet/VGG need about 32 px)
    are bilinearly upsampled first; larger images pass through unchanged."""

    def __init__(self, lpips_module, min_size=32):
        super().__init__()
        self.inner = lpips_module
        self.min_size = int(min_size)

    def forward(self, x, y, *args, **kwargs):
        if x.ndim == 2:  # measurement vectors `[N, m]` (compressed sensing): no perceptual distance, the MSE stands in
            return (x - y).square().mean(1)
        side = min(x.shape[-2:])
        if side < self.min_size:
            scale = int(np.ceil(self.min_size / side))
            size = (x.shape[-2] * scale, x.shape[-1] * scale)
            x = F.interpolate(x, size=size, mode='bilinear', align_corners=False)
            y = F.interpolate(y, size=size, mode='bilinear', align_corners=False)
        return self.inner(x, y, *args, **kwargs)


def safe_lpips(lpips_module, min_size=32):
    """`MinSizeLPIPS(lpips_module)` unless it already is one (or None)."""
    if lpips_module is None or isinstance(lpips_module, MinSizeLPIPS):
        return lpips_module
    return MinSizeLPIPS(lpips_module, min_size)


def residual_stats_loss(delta, delta0):
    """QC StatsLoss: per RGB channel mean and std over (batch, H, W) of the residual images
    `delta` vs `delta0`; mean over channels of the squared differences, summed for mean and std."""
    d = delta.transpose(0, 1).flatten(1)
    d0 = delta0.transpose(0, 1).flatten(1)
    return (d.mean(1) - d0.mean(1)).square().mean() + (d.std(1, unbiased=False) - d0.std(1, unbiased=False)).square().mean()


def mse_lpips(lpips_module, x, y, mse_weight=1.0, lpips_weight=1.0):
    """Per-sample `mse_weight * MSE + lpips_weight * LPIPS` `[N]` (and the LPIPS part)."""
    mse = (x - y).square().flatten(1).mean(1)
    lp = lpips_module(x, y).reshape(-1) if lpips_weight else torch.zeros_like(mse)
    return mse_weight * mse + lpips_weight * lp, lp


def record(history, **values):
    """Append detached scalar tensors to the per-step lists of `history` without reading them:
    reading a value on every step waits for the device (a host synchronisation per step).
    `read_history` turns the lists into floats once, at the end."""
    for key, value in values.items():
        history[key].append(value.detach() if torch.is_tensor(value) else torch.as_tensor(float(value)))


def read_history(history):
    """In place: every list of scalar tensors in `history` (nested dicts too) -> a list of floats,
    one device-to-host transfer per list. Returns `history`."""
    for key, values in history.items():
        if isinstance(values, dict):
            read_history(values)
        elif isinstance(values, list) and values and torch.is_tensor(values[0]):
            history[key] = torch.stack([v.reshape([]).to(values[0].device) for v in values]).tolist()
    return history


def to_device(t, device):
    """A tensor drawn on the CPU (seeded generators) moved to `device` without waiting for the
    device's queue: a blocking host-to-device copy synchronises the stream on CUDA."""
    return t.to(device, non_blocking=True)


def requires_grad(module, flag):
    for p in module.parameters():
        p.requires_grad_(flag)
    return module

#----------------------------------------------------------------------------
# Pivotal tuning.

def tune_generator(G, ws, target, degradation, lpips_module, q=None, steps=350, lr=3e-4,
                   lpips_stop=0.06, mse_weight=1.0, lpips_weight=1.0, locality=False, locality_alpha=30.0,
                   locality_weight=0.1, locality_psi=0.5, stats_weight=0.0, seed=0, progress=False, desc='tune',
                   stop_every=1):
    """Fine-tune a copy of `G` so that f^(G(ws, q)) matches `target` (PTI stage B).

    ws `[N, num_ws, w_dim]` (frozen pivots), q `[N, q_dim]` or None, target the observations.
    Loss = mse_weight * MSE + lpips_weight * LPIPS (batch mean), plus, with `locality`, PTI's
    ball-holder regulariser on clean images (w_r = w_p + alpha * (w_z - w_p)/||w_z - w_p||,
    w_z from the original mapping at truncation psi; locality_weight * (MSE + LPIPS) vs the
    original G), plus `stats_weight` * residual-statistics loss (QC: G(w,q) - G(w,0) vs the
    original generator's). Stops early when the batch-mean LPIPS <= lpips_stop (checked before
    the backward pass of the step). The early stop is the loop's only host synchronisation: it reads
    the LPIPS of every `stop_every`-th step (1, the reference: every step; k > 1 may run up to k - 1
    steps past the threshold; no reads at all with lpips_stop=None). Returns (tuned G, history
    dict of per-step lists of floats).
    """
    from tqdm import tqdm
    device = ws.device
    lpips_module = safe_lpips(lpips_module)
    G0 = G
    G_t = copy.deepcopy(G).eval()
    requires_grad(G_t, True)
    requires_grad(G0, False)
    gen = LatentGenerator(G_t)
    ws = ws.detach()
    q = None if q is None else q.detach()
    opt = torch.optim.Adam([p for p in G_t.parameters() if p.requires_grad], lr=lr)
    history = dict(loss=[], lpips=[], mse=[])
    if stats_weight and q is not None:
        with torch.no_grad():
            delta0 = LatentGenerator(G0)(ws, q=q) - LatentGenerator(G0)(ws)
        history['stats'] = []
    rng = torch.Generator().manual_seed(int(seed))
    stop_every = max(int(stop_every), 1)
    for step in tqdm(range(int(steps)), desc=desc, disable=not progress, leave=False):
        img = gen(ws, q=q)
        pred = degrade(degradation, img)
        total, lp = mse_lpips(lpips_module, pred, target, mse_weight, lpips_weight)
        loss = total.mean()
        record(history, lpips=lp.mean(), mse=(pred.detach() - target).square().mean())
        if lpips_stop is not None and (step + 1) % stop_every == 0 and float(history['lpips'][-1]) <= lpips_stop:
            record(history, loss=loss)
            break
        if stats_weight and q is not None:
            sharp = gen(ws) if q is not None else img
            st = residual_stats_loss(img - sharp, delta0)
            record(history, stats=st)
            loss = loss + stats_weight * st
        if locality:
            z = to_device(torch.randn([ws.shape[0], G0.z_dim], generator=rng), device)
            c = torch.zeros([ws.shape[0], G0.c_dim], device=device)
            with torch.no_grad():
                w_z = G0.mapping(z, c, truncation_psi=locality_psi, skip_w_avg_update=True)
                direction = w_z - ws
                norm = direction.flatten(1).norm(dim=1).clamp_min(1e-8).reshape(-1, 1, 1)
                w_r = ws + locality_alpha * direction / norm
                x_r = G0.synthesis(w_r, noise_mode='none', force_fp32=True)
            x_rt = G_t.synthesis(w_r, noise_mode='none', force_fp32=True)
            reg, _ = mse_lpips(lpips_module, x_rt, x_r)
            loss = loss + locality_weight * reg.mean()
        record(history, loss=loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    requires_grad(G_t, False)
    return G_t, read_history(history)

#----------------------------------------------------------------------------
# Results.

class InversionResult(dnnlib.EasyDict):
    """What every method returns.

    restored  `[N, C, R, R]`: the clean estimate (G(w, 0) for QC), in [-1, 1];
    degraded  `[N, C, R, R]`: the re-degraded estimate before the operator's resampling, i.e.
              G(w, q) for QC and the clean estimate otherwise (apply `degrade(..., true=True)` to
              compare with the observation);
    ws        `[N, num_ws, w_dim]` (or W++ `[N, num_ws, K, w_dim]`), q `[N, q_dim]` or None;
    G         the generator to render with (tuned copy or the original);
    history   {phase: {name: [per-step values]}}; `loss` the final per-sample loss `[N]`.
    """


def finish(gen, ws, q=None, G=None, history=None, loss=None, **extra):
    with torch.no_grad():
        G = G or gen.G
        restored = gen(ws, G=G)
        degraded = gen(ws, q=q, G=G) if q is not None else restored
    return InversionResult(restored=restored.detach(), degraded=degraded.detach(), ws=ws.detach(),
                           q=None if q is None else q.detach(), G=G, history=history or {}, loss=loss, **extra)


def check_batch(target, degradation=None):
    if target.ndim == 2 and not getattr(degradation, 'is_image', True):
        return  # measurement vectors `[N, m]` of a measurement operator (cs:)
    if target.ndim != 4:
        raise ValueError(f'target must be a batch [N, C, H, W], got shape {tuple(target.shape)}')
    mask = getattr(degradation, 'mask', None) if degradation is not None else None
    if mask is not None and mask.shape[-2:] != target.shape[-2:]:
        raise ValueError(f'the degradation mask is {mask.shape[-1]}x{mask.shape[-2]} but the target is '
                         f'{target.shape[-1]}x{target.shape[-2]}')


def warn(message):
    warnings.warn(message, stacklevel=2)

#----------------------------------------------------------------------------
