"""Degradation operators for restoration by GAN inversion.

Every operator is a `Degradation` with two forward models:

- `true(x)`: the degradation used to make targets and to measure fidelity. It may be random and
  non-differentiable. Like the robust-unsupervised benchmark, each true operator ends with an
  8-bit round trip (clamp to the valid range, quantize to 1/255 steps), standing in for its PNG
  save/reload; in a composition every component does its own round trip.
- `forward(x)`: the differentiable approximation f-hat used inside the losses.

Images are float `[N, C, H, W]` in [-1, 1] on both sides. Internally the photometric operators
(noise, JPEG, masking) work in [0, 1] like the reference code and map back.

Level tables (`LEVEL_TABLE`) follow the robust-unsupervised NGD paper (Poirier-Ginter & Lalonde,
CVPR'23, section 6, and its released benchmark code, which agree).
"""

import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from training.degradation_sampler import jpeg_compress

#----------------------------------------------------------------------------
# Levels.

LEVELS = ('XS', 'S', 'M', 'L', 'XL')

# The robust-unsupervised paper's levels (its benchmark code uses the same numbers).
LEVEL_TABLE = {
    'sr':      {'XS': 2, 'S': 4, 'M': 8, 'L': 16, 'XL': 32},                     # downsampling factor k
    'inpaint': {'XS': 1, 'S': 5, 'M': 9, 'L': 13, 'XL': 17},                     # number of strokes
    'denoise': {'XS': (96, 0.04), 'S': (48, 0.08), 'M': (24, 0.16),
                'L': (12, 0.32), 'XL': (6, 0.64)},                                # (photon count lambda, Bernoulli p)
    'jpeg':    {'XS': 18, 'S': 15, 'M': 12, 'L': 9, 'XL': 6},                     # libjpeg quality
}

# Forward order of a composition (robust paper: U -> N -> A -> P). Blur and colorization are not
# part of the paper's compositions; the placement here is our choice: blur happens in the scene
# (before sampling), colorization is a sensor/film property (before noise).
_ORDER = {'identity': 0, 'blur': 1, 'sr': 2, 'colorize': 3, 'denoise': 4, 'jpeg': 5, 'inpaint': 6}
# Compressed sensing turns the image into a measurement vector, so it can only come last.
_ORDER['cs'] = 7

#----------------------------------------------------------------------------
# Helpers.

def _to01(x):
    return (x + 1) * 0.5

def _from01(x):
    return x * 2 - 1

def quantize8(x):
    """8-bit round trip of a [-1, 1] image (the reference's PNG save + reload): clamp and round."""
    return _from01(torch.round(_to01(x).clamp(0, 1) * 255) / 255)

def _to_uint8_hwc(img):  # [C, H, W] in [-1, 1] -> uint8 HWC numpy
    return (_to01(img.detach()).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()

def _from_uint8_hwc(arr, like):
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).to(device=like.device, dtype=like.dtype)
    return _from01(t / 255)


class _SurrogateClamp(torch.autograd.Function):
    """clamp_s (robust-unsupervised paper, eq. 11): forward = clamp to [0, 1]; backward = derivative of
    sigmoid(2 (x - 0.5)), i.e. 2 s (1 - s)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(0, 1)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(2 * (x - 0.5))
        return g * 2 * s * (1 - s)

def surrogate_clamp01(x):
    return _SurrogateClamp.apply(x)


class _SurrogateRound(torch.autograd.Function):
    """DiffJPEG rounding (as in the robust-unsupervised benchmark): forward = exact round; backward = 0.2 + 2.4 (x - round x)^2,
    the gradient of lerp(x, round(x) + (x - round x)^3, 0.8)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        r = x - torch.round(x)
        return g * (0.2 + 2.4 * r * r)

def surrogate_round(x):
    return _SurrogateRound.apply(x)

#----------------------------------------------------------------------------
# Base classes.

class Degradation(torch.nn.Module):
    """Base class: `true(x)` (targets, fidelity), `forward(x)` (differentiable f-hat), `mask`
    (None or `[N or 1, 1, H', W']` float of observed pixels in the output space), `out_size`,
    `to_image_size` (preview of a degraded image at the input size)."""

    name = 'degradation'
    kind = 'identity'
    is_image = True  # False: the output is a measurement vector `[N, m]` (compressed sensing)

    @property
    def mask(self):
        return None

    def out_size(self, in_size):
        return int(in_size)

    def true(self, x):
        return quantize8(self.forward(x))

    def forward(self, x):
        raise NotImplementedError

    def to_image_size(self, y, size):
        if y.shape[-1] == size and y.shape[-2] == size:
            return y
        mode = 'nearest' if y.shape[-1] < size else 'area'  # nearest keeps the pixels of a low-res target visible
        return F.interpolate(y, size=(size, size), mode=mode)

    def extra_repr(self):
        return f'name={self.name!r}'


class Identity(Degradation):
    """'none': f = f-hat = identity (the true forward still quantizes to 8 bits)."""
    name = 'none'
    kind = 'identity'

    def forward(self, x):
        return x

#----------------------------------------------------------------------------
# Super-resolution.

_PIL_FILTERS = ('bicubic', 'bilinear', 'lanczos')

class Downsample(Degradation):
    """Downsampling by `factor` (the robust-unsupervised 'upsampling' task).

    true: PIL resize of the 8-bit image to floor(size / factor) with `true_filter` (PIL's resize is
    antialiased: its kernel is stretched by the factor). `true_filter='random'` draws the filter
    per image from {bilinear, bicubic, lanczos} with a generator seeded by `seed` (the reference
    draws unseeded). f-hat: `avg_pool2d(factor)` (the robust paper's model, which does not know the
    filter), or with `matched=True` (spec `sr:K:FILTER:matched`; not in the papers) the true filter
    itself: torch's antialiased `interpolate` with `true_filter` (bicubic or bilinear). On the embedded
    faces at 32 px, sr:2, it is 0.003 rms ([-1, 1] units) from PIL's 8-bit result where avg_pool2d is
    0.022 (bicubic) and 0.043 (bilinear) off (`test_downsample_matched_model_is_the_true_filter`); a
    restoration then fits the observation without that model error (README "Quick start")."""

    kind = 'sr'
    MATCHED_FILTERS = ('bicubic', 'bilinear')  # the filters torch's antialiased interpolate has

    def __init__(self, factor, true_filter='bicubic', seed=0, matched=False):
        super().__init__()
        factor = int(factor)
        if factor < 1:
            raise ValueError(f'Downsample: factor must be >= 1, got {factor}')
        if true_filter not in _PIL_FILTERS + ('random',):
            raise ValueError(f'Downsample: true_filter must be one of {", ".join(_PIL_FILTERS + ("random",))}, got {true_filter!r}')
        if matched and true_filter not in self.MATCHED_FILTERS:
            raise ValueError(f'Downsample: a matched model needs a filter torch can resize with '
                             f'({" or ".join(self.MATCHED_FILTERS)}), not {true_filter!r}')
        self.factor = factor
        self.true_filter = true_filter
        self.seed = int(seed)
        self.matched = bool(matched)
        self.name = f'sr:{factor}:{true_filter}' + (':matched' if self.matched else '')

    def out_size(self, in_size):
        return int(in_size) // self.factor

    def forward(self, x):
        if self.factor == 1:
            return x
        if self.matched:
            size = (x.shape[-2] // self.factor, x.shape[-1] // self.factor)
            return F.interpolate(x, size=size, mode=self.true_filter, antialias=True, align_corners=False)
        return F.avg_pool2d(x, self.factor)

    def true(self, x):
        from PIL import Image
        rng = np.random.RandomState(self.seed)
        h, w = x.shape[-2] // self.factor, x.shape[-1] // self.factor
        out = []
        for img in x:
            flt = self.true_filter if self.true_filter != 'random' else _PIL_FILTERS[rng.randint(3)]
            resample = {'bicubic': Image.BICUBIC, 'bilinear': Image.BILINEAR, 'lanczos': Image.LANCZOS}[flt]
            arr = _to_uint8_hwc(img)
            chans = [np.asarray(Image.fromarray(arr[:, :, c]).resize((w, h), resample=resample)) for c in range(arr.shape[2])]
            out.append(_from_uint8_hwc(np.stack(chans, axis=2), x))
        return torch.stack(out)

#----------------------------------------------------------------------------
# Inpainting.

def random_strokes(size, level='M', seed=0, num_strokes=None):
    """Stroke mask as in the robust benchmark (its random brush strokes): `[1, 1, size, size]`
    float, 1 = observed, 0 = hole, soft (blurred) edges from two `cv2.pyrDown`. Strokes are lines of
    width int(0.08 size) * 4 drawn at 4x resolution between points whose coordinates lie in the
    outer thirds. The number of strokes comes from the level table (or `num_strokes`). Seeded."""
    import cv2
    n = int(num_strokes) if num_strokes is not None else LEVEL_TABLE['inpaint'][_check_level(level)]
    big = int(size) * 4
    canvas = np.zeros((big, big), dtype=np.float32)
    rng = np.random.RandomState(seed)
    width = max(int(0.08 * size) * 4, 1)

    def coord():
        if rng.rand() < 0.5:
            return int(rng.uniform(0, big / 3))
        return int(rng.uniform(2 * big / 3, big))

    for _ in range(n):
        p0 = (coord(), coord())
        p1 = (coord(), coord())
        cv2.line(canvas, p0, p1, 1.0, width)
        cv2.circle(canvas, p0, 1, 1.0, 1)
    canvas = cv2.pyrDown(cv2.pyrDown(canvas))
    mask = 1 - np.clip(canvas[:size, :size], 0, 1)
    return torch.from_numpy(np.ascontiguousarray(mask))[None, None].float()

def load_mask(path, size=None):
    """Mask image -> `[1, 1, H, W]` float in [0, 1]; white = observed. Wrong size -> ValueError."""
    from PIL import Image
    with Image.open(path) as im:
        arr = np.asarray(im.convert('L'), dtype=np.float32) / 255
    if size is not None and arr.shape != (size, size):
        raise ValueError(f'inpaint mask {path!r} is {arr.shape[1]}x{arr.shape[0]}, expected {size}x{size} (the resolution)')
    return torch.from_numpy(arr.copy())[None, None]


class Inpaint(Degradation):
    """Masking: true = f-hat = x * M in [0, 1] (holes become black, -1 in [-1, 1]). The mask is
    known (as the robust-unsupervised paper does). `mask`: `[N or 1, 1, H, W]`, 1 = observed; may have soft edges (the
    benchmark's stroke masks do). A mask of another size than the input is area-resized."""

    kind = 'inpaint'

    def __init__(self, mask, name='inpaint'):
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.float32)
        while mask.ndim < 4:
            mask = mask[None]
        if mask.shape[1] != 1:
            raise ValueError(f'Inpaint: mask must have one channel, got shape {tuple(mask.shape)}')
        self.register_buffer('_mask', mask.clamp(0, 1))
        self.name = name

    @property
    def mask(self):
        return self._mask

    def _mask_for(self, x):
        m = self._mask.to(device=x.device, dtype=x.dtype)
        if m.shape[-2:] != x.shape[-2:]:
            m = F.interpolate(m, size=x.shape[-2:], mode='area' if m.shape[-1] > x.shape[-1] else 'bicubic').clamp(0, 1)
        return m

    def forward(self, x):
        return _from01(_to01(x) * self._mask_for(x))

#----------------------------------------------------------------------------
# Colorization.

LUMA = (0.299, 0.587, 0.114)

class Colorize(Degradation):
    """Grayscale: luma 0.299 R + 0.587 G + 0.114 B replicated to 3 channels (so LPIPS and the
    generator's RGB space apply unchanged; DGP does the same). true = f-hat (plus the 8-bit round
    trip). The weights sum to 1, so the luma of a [-1, 1] image is the [-1, 1] luma."""

    name = 'colorize'
    kind = 'colorize'

    def forward(self, x):
        w = torch.tensor(LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True).expand(-1, 3, -1, -1)

#----------------------------------------------------------------------------
# Blur.

def gaussian_kernel(sigma, size=None):
    """Normalized 2-D Gaussian `[size, size]`; default size = 2 ceil(3 sigma) + 1. Raises ValueError
    for a sigma that is not a positive finite number or a size below 1."""
    sigma = float(sigma)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f'blur sigma must be a positive number, got {sigma:g}')
    if size is not None and int(size) < 1:
        raise ValueError(f'blur kernel size must be at least 1, got {size}')
    if size is None:
        size = 2 * int(math.ceil(3 * sigma)) + 1
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (r / max(sigma, 1e-8)) ** 2)
    k = g[:, None] * g[None, :]
    return (k / k.sum()).float()

def box_kernel(size):
    size = int(size)
    return torch.full((size, size), 1.0 / (size * size))

def motion_kernel(length, angle=0.0):
    """Linear motion blur: a line of `length` px through the centre at `angle` degrees
    (0 = horizontal), sampled densely and splatted bilinearly into an odd-sized square; normalized."""
    length = float(length)
    size = int(math.ceil(length)) | 1
    k = np.zeros((size + 1, size + 1), dtype=np.float64)
    c = (size - 1) / 2
    a = math.radians(angle)
    for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, max(int(length * 8), 2)):
        px, py = c + t * math.cos(a), c - t * math.sin(a)
        x0, y0 = int(math.floor(px)), int(math.floor(py))
        fx, fy = px - x0, py - y0
        k[y0, x0] += (1 - fx) * (1 - fy)
        k[y0, x0 + 1] += fx * (1 - fy)
        k[y0 + 1, x0] += (1 - fx) * fy
        k[y0 + 1, x0 + 1] += fx * fy
    k = k[:size, :size]
    return torch.from_numpy(k / k.sum()).float()


class Blur(Degradation):
    """Convolution with a fixed kernel, per channel, 'same' size. true = f-hat (plus the 8-bit round
    trip). Padding: `padding='reflect'` (default; no dark borders) or 'zeros'. The kernel is used
    as a correlation (flip it yourself for a true convolution; symmetric kernels do not care)."""

    kind = 'blur'

    def __init__(self, kernel, padding='reflect', name='blur'):
        super().__init__()
        k = torch.as_tensor(kernel, dtype=torch.float32)
        if k.ndim != 2:
            raise ValueError(f'Blur: kernel must be 2-D, got shape {tuple(k.shape)}')
        if padding not in ('reflect', 'zeros'):
            raise ValueError(f"Blur: padding must be 'reflect' or 'zeros', got {padding!r}")
        self.register_buffer('kernel', k)
        self.padding = padding
        self.name = name

    def forward(self, x):
        kh, kw = self.kernel.shape
        pad = (kw // 2, kw - 1 - kw // 2, kh // 2, kh - 1 - kh // 2)
        mode = 'reflect' if self.padding == 'reflect' else 'constant'
        if mode == 'reflect' and (pad[0] >= x.shape[-1] or pad[2] >= x.shape[-2]):
            mode = 'replicate'  # reflect needs the pad to be smaller than the image
        xp = F.pad(x, pad, mode=mode)
        c = x.shape[1]
        w = self.kernel.to(device=x.device, dtype=x.dtype)[None, None].expand(c, 1, kh, kw)
        return F.conv2d(xp, w, groups=c)

#----------------------------------------------------------------------------
# Denoising.

class Denoise(Degradation):
    """Camera noise (the robust-unsupervised 'denoising' task), in [0, 1]:

    true: y = Poisson(lam x) / lam, then whole-pixel "dead pixels": multiply by (U > p) shared
    across channels; clamp; 8-bit round trip. Seeded by `seed` (fixed realization, as the
    reference's fixed seed 2024). f-hat (`approx='gaussian'`, the reference code):
    x' = clamp_s(x); y = ((lam x' - 1/2) + sqrt(lam x' + 1e-3) eps) / lam, eps ~ N(0, 1) per channel,
    then a fresh Bernoulli(p) pixel mask, then clamp_s. `approx='identity'`: y = clamp_s(x) (a
    deterministic f-hat; the Gaussian noise model then lives only in the loss)."""

    kind = 'denoise'

    def __init__(self, level='M', photons=None, p=None, seed=0, approx='gaussian'):
        super().__init__()
        if photons is None or p is None:
            lam, pp = LEVEL_TABLE['denoise'][_check_level(level)]
            photons = lam if photons is None else photons
            p = pp if p is None else p
        if approx not in ('gaussian', 'identity'):
            raise ValueError(f"Denoise: approx must be 'gaussian' or 'identity', got {approx!r}")
        self.photons = float(photons)
        self.p = float(p)
        self.seed = int(seed)
        self.approx = approx
        self.name = f'denoise:{self.photons:g},{self.p:g}'

    def true(self, x):
        g = torch.Generator(device='cpu').manual_seed(self.seed)
        x01 = _to01(x.detach()).clamp(0, 1).cpu().double()
        y = torch.poisson(x01 * self.photons, generator=g) / self.photons
        keep = (torch.rand((x.shape[0], 1) + tuple(x.shape[2:]), generator=g, dtype=torch.float64) > self.p)
        y = (y * keep).to(device=x.device, dtype=x.dtype)
        return quantize8(_from01(y))

    def forward(self, x):
        x01 = surrogate_clamp01(_to01(x))
        if self.approx == 'identity':
            return _from01(x01)
        lam = self.photons
        eps = torch.randn_like(x01)
        y = ((lam * x01 - 0.5) + torch.sqrt(lam * x01 + 1e-3) * eps) / lam
        keep = (torch.rand_like(x01[:, :1]) > self.p).to(x01.dtype)
        return _from01(surrogate_clamp01(y * keep))

class GaussianNoise(Degradation):
    """Additive Gaussian noise of std `sigma` in [0, 1] units (robust paper section 7, the DDRM
    comparison). true: seeded N(0, sigma^2) added, clamped to [0, 1] when `clamp` (the non-linear
    variant), 8-bit round trip. f-hat: x + fresh noise, then clamp_s when `clamp`.

    `grey=True` (`denoise:gauss:SIGMA:grey`): one noise value per pixel, shared by all channels
    (luminance noise), so a grey image stays grey; the default draws every channel independently
    (colour noise)."""

    kind = 'denoise'

    def __init__(self, sigma, clamp=True, seed=0, grey=False):
        super().__init__()
        self.sigma = float(sigma)
        self.clamp = bool(clamp)
        self.seed = int(seed)
        self.grey = bool(grey)
        self.name = f'denoise:gauss:{self.sigma:g}' + (':grey' if self.grey else '')

    def _shape(self, x):
        return (x.shape[0], 1) + tuple(x.shape[2:]) if self.grey else tuple(x.shape)

    def true(self, x):
        g = torch.Generator(device='cpu').manual_seed(self.seed)
        n = torch.randn(self._shape(x), generator=g).to(device=x.device, dtype=x.dtype)
        y = _to01(x.detach()) + self.sigma * n
        return quantize8(_from01(y.clamp(0, 1) if self.clamp else y))

    def forward(self, x):
        y = _to01(x) + self.sigma * torch.randn(self._shape(x), device=x.device, dtype=x.dtype)
        return _from01(surrogate_clamp01(y) if self.clamp else y)

class AdditiveGaussian(GaussianNoise):
    """`gauss:STD`: additive white Gaussian noise of std `std` in [-1, 1] image units (SPHInX's
    denoising task, reference sphinx.md 8: y = clip(x + std * eps, -1, 1)); the same operator as
    `denoise:gauss:SIGMA` with SIGMA = std / 2 in [0, 1] units. true: one seeded realization, then
    the 8-bit round trip; f-hat: fresh noise every call (the official code noises the prediction
    too), clamp with the surrogate gradient."""

    def __init__(self, std, seed=0):
        super().__init__(float(std) / 2, clamp=True, seed=seed)
        self.std = float(std)
        self.name = f'gauss:{self.std:g}'

#----------------------------------------------------------------------------
# Compressed sensing.

CS_MATRICES = ('circulant', 'gaussian')
CS_MAX_DENSE = 2 ** 27  # entries of a dense Gaussian matrix (512 MiB in float32)


class CompressedSensing(Degradation):
    """`cs:FACTOR[:circulant|gaussian]`: m = floor(FACTOR * n) random linear measurements of the
    flattened image (n = C * H * W, [-1, 1] units, the C-major order of `x.flatten(1)`).

    y = A x `[N, m]` float32, with A seeded by `seed` (the same seed gives the same matrix):
    * 'circulant' (default; ILO's `partial_circulant`, reference sphinx.md 8): A x = P_idx(f * (s . x)) / sqrt(m):
      random signs s ~ U{-1, 1}^n, circular convolution with a filter f ~ N(0, 1)^n (by FFT), then
      m distinct uniformly drawn indices. O(n log n) time, O(n) memory: fits any resolution.
    * 'gaussian': a dense matrix with i.i.d. N(0, 1/m) entries (at most `CS_MAX_DENSE` entries).
    Both are scaled so that E[A^T A] = I and E||A x||^2 = ||x||^2.

    `true(x)` = `forward(x)`: one exact, deterministic, differentiable linear map (no 8-bit round
    trip: measurements are not pixels). The observation is the measurement vector (saved as .npy);
    `to_image_size` shows its back-projection (m/n) A^T y reshaped to the image (the least-squares
    estimate for rows that are nearly orthogonal with squared norm ~ n/m). `is_image = False`:
    losses compare measurements with MSE only. In a composition it must be the last operator.
    """

    kind = 'cs'
    is_image = False

    def __init__(self, factor, size, channels=3, matrix='circulant', seed=0):
        super().__init__()
        factor = float(factor)
        if not 0 < factor <= 1:
            raise ValueError(f'cs: the measurement factor must be in (0, 1], got {factor:g}')
        if matrix not in CS_MATRICES:
            raise ValueError(f'cs: matrix must be one of {", ".join(CS_MATRICES)}, got {matrix!r}')
        self.factor, self.matrix, self.seed = factor, matrix, int(seed)
        self.shape = (int(channels), int(size), int(size))
        self.n = self.shape[0] * self.shape[1] * self.shape[2]
        self.m = int(math.floor(factor * self.n))
        if self.m < 1:
            raise ValueError(f'cs: factor {factor:g} gives no measurement of a {size}x{size}x{channels} image; use at least {1 / self.n:.2g}')
        g = torch.Generator().manual_seed(self.seed)
        if matrix == 'gaussian':
            if self.m * self.n > CS_MAX_DENSE:
                raise ValueError(f'cs: a dense {self.m}x{self.n} Gaussian matrix is too large ({self.m * self.n} entries, at most '
                                 f'{CS_MAX_DENSE}); use cs:{factor:g}:circulant')
            self.register_buffer('A', torch.randn([self.m, self.n], generator=g) / math.sqrt(self.m))
        else:
            self.register_buffer('signs', torch.randint(0, 2, [self.n], generator=g).float() * 2 - 1)
            self.register_buffer('filter_fft', torch.fft.rfft(torch.randn([self.n], generator=g)))
            self.register_buffer('index', torch.randperm(self.n, generator=g)[:self.m].sort().values)
        self.name = f'cs:{factor:g}' + (f':{matrix}' if matrix != 'circulant' else '')

    def _check(self, x):
        if tuple(x.shape[1:]) != self.shape:
            c, h, w = self.shape
            raise ValueError(f'{self.name}: expects images [N, {c}, {h}, {w}], got {tuple(x.shape)}')

    def forward(self, x):
        self._check(x)
        v = x.flatten(1).float()
        if self.matrix == 'gaussian':
            return v @ self.A.t()
        conv = torch.fft.irfft(torch.fft.rfft(v * self.signs) * self.filter_fft, n=self.n)
        return conv[:, self.index] / math.sqrt(self.m)

    def true(self, x):
        return self.forward(x)

    def adjoint(self, y):
        """A^T y: `[N, m]` -> `[N, C, H, W]`."""
        y = y.float()
        if self.matrix == 'gaussian':
            v = y @ self.A
        else:
            z = y.new_zeros([y.shape[0], self.n])
            z[:, self.index] = y / math.sqrt(self.m)
            v = torch.fft.irfft(torch.fft.rfft(z) * self.filter_fft.conj(), n=self.n) * self.signs
        return v.reshape(-1, *self.shape)

    def back_project(self, y):
        """(m/n) A^T y `[N, C, H, W]`: the image the measurements show (not clamped)."""
        return self.adjoint(y) * (self.m / self.n)

    def check_measurements(self, y, source='measurements'):
        """`[m]` or `[N, m]` array/tensor -> float tensor `[N, m]`; ValueError naming `source` otherwise."""
        y = torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y, dtype=torch.float32)
        if y.ndim == 1:
            y = y[None]
        if y.ndim != 2 or y.shape[1] != self.m:
            c, h, w = self.shape
            raise ValueError(f'{source} holds {y.shape[-1] if y.ndim else 0} values per image (shape {tuple(y.shape)}), but '
                             f'{self.name} at {h}x{w}x{c} (seed {self.seed}) takes {self.m}; measure with the same factor, '
                             f'matrix, resolution and --seed')
        return y

    def to_image_size(self, y, size):
        if y.ndim == 4:
            return super().to_image_size(y, size)
        return super().to_image_size(self.back_project(y).clamp(-1, 1), size)


def load_measurements(path, degradation, device='cpu'):
    """A `.npy` measurement vector (`[m]` or `[1, m]`) for a measurement operator -> `[1, m]` tensor.
    ValueError (naming the file) for unreadable files and wrong lengths."""
    op = measurement_operator(degradation)
    if op is None:
        raise ValueError(f'{path}: measurement files (.npy) need a cs:FACTOR degradation')
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f'cannot read measurements {path}: {err}') from None
    return op.check_measurements(arr, source=f'measurement file {path}')[:1].to(device)


def measurement_operator(degradation):
    """The `CompressedSensing` operator at the end of `degradation` (alone or last of a composition), or None."""
    if isinstance(degradation, CompressedSensing):
        return degradation
    ops = getattr(degradation, 'ops', None)
    if ops is not None and len(ops) and isinstance(ops[-1], CompressedSensing):
        return ops[-1]
    return None

#----------------------------------------------------------------------------
# JPEG.

# ITU-T T.81 Annex K, tables K.1 (luminance) and K.2 (chrominance), natural (row-major) order:
# row = vertical frequency, column = horizontal frequency.
JPEG_LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
JPEG_CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
)

def jpeg_quant_tables(quality):
    """IJG quality scaling (libjpeg `jpeg_quality_scaling` + baseline clamp to [1, 255]):
    -> (luma [8, 8], chroma [8, 8]) float tensors."""
    q = min(max(int(quality), 1), 100)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    def scaled(t):
        t = (torch.tensor(t, dtype=torch.float64) * scale + 50) // 100
        return t.clamp(1, 255).float()
    return scaled(JPEG_LUMA_TABLE), scaled(JPEG_CHROMA_TABLE)

def _dct_matrix(n=8):
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos((2 * i + 1) * k * math.pi / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d.float()  # orthonormal DCT-II: coef = D @ block @ D^T (equals JPEG's 1/4 C(u) C(v) scaling)


class JPEG(Degradation):
    """JPEG artifacts at `quality` (the robust-unsupervised 'deartifacting' task).

    true: the real codec (`training.degradation_sampler.jpeg_compress`, OpenCV/libjpeg, default 4:2:0
    chroma subsampling) on the 8-bit image, per image. f-hat: DiffJPEG: RGB -> YCbCr (JFIF),
    2x2 average-pooled chroma (4:2:0), 8x8 orthonormal DCT of (value - 128), division by the
    IJG-scaled standard tables, surrogate rounding (exact round forward, gradient
    0.2 + 2.4 r^2), dequantize, IDCT, 2x chroma upsample, RGB. No clamp (as the reference). `chroma_upsample='bilinear'`
    (default) matches the libjpeg decoder's fancy upsampling and so the true codec more closely;
    'nearest' is the reference DiffJPEG's choice.
    Sides that are not multiples of 16 are replicate-padded and cropped back. `tables`
    (luma, chroma) overrides the quality-derived tables (e.g. read from a file with PIL's
    `im.quantization`)."""

    kind = 'jpeg'

    def __init__(self, quality, tables=None, chroma_upsample='bilinear'):
        super().__init__()
        if chroma_upsample not in ('bilinear', 'nearest'):
            raise ValueError(f"JPEG: chroma_upsample must be 'bilinear' or 'nearest', got {chroma_upsample!r}")
        self.chroma_upsample = chroma_upsample
        self.quality = int(quality)
        if not 1 <= self.quality <= 100:
            raise ValueError(f'JPEG: quality must be in 1..100, got {quality}')
        luma, chroma = jpeg_quant_tables(self.quality) if tables is None else tables
        self.register_buffer('luma_table', torch.as_tensor(luma, dtype=torch.float32).reshape(8, 8))
        self.register_buffer('chroma_table', torch.as_tensor(chroma, dtype=torch.float32).reshape(8, 8))
        self.register_buffer('dct', _dct_matrix())
        self.name = f'jpeg:{self.quality}'

    def true(self, x):
        out = [_from_uint8_hwc(jpeg_compress(_to_uint8_hwc(img), self.quality, channel_order='rgb'), x) for img in x]
        return torch.stack(out)

    def _code(self, plane, table):  # plane [N, H, W] (multiple of 8), values 0..255
        n, h, w = plane.shape
        d = self.dct.to(plane)
        blocks = (plane - 128).reshape(n, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)
        coef = d @ blocks @ d.t()
        t = table.to(plane)
        coef = surrogate_round(coef / t) * t
        rec = d.t() @ coef @ d + 128
        return rec.permute(0, 1, 3, 2, 4).reshape(n, h, w)

    def forward(self, x):
        if x.shape[1] != 3:
            raise ValueError(f'JPEG: expects RGB [N, 3, H, W], got shape {tuple(x.shape)}')
        h, w = x.shape[-2:]
        ph, pw = (-h) % 16, (-w) % 16
        v = _to01(x) * 255
        if ph or pw:
            v = F.pad(v, (0, pw, 0, ph), mode='replicate')
        r, g, b = v[:, 0], v[:, 1], v[:, 2]
        yy = 0.299 * r + 0.587 * g + 0.114 * b
        cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
        cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
        yy = self._code(yy, self.luma_table)
        chroma = F.avg_pool2d(torch.stack([cb, cr], 1), 2)
        cb = self._code(chroma[:, 0], self.chroma_table)
        cr = self._code(chroma[:, 1], self.chroma_table)
        if self.chroma_upsample == 'nearest':
            chroma = F.interpolate(torch.stack([cb, cr], 1), scale_factor=2, mode='nearest')
        else:  # libjpeg's "fancy" h2v2 upsampling = 3/4, 1/4 triangle filter = bilinear, edges replicated
            chroma = F.interpolate(torch.stack([cb, cr], 1), scale_factor=2, mode='bilinear', align_corners=False)
        cb, cr = chroma[:, 0] - 128, chroma[:, 1] - 128
        r = yy + 1.402 * cr
        g = yy - 0.344136 * cb - 0.714136 * cr
        b = yy + 1.772 * cb
        out = torch.stack([r, g, b], 1)[..., :h, :w] / 255
        return _from01(out)

#----------------------------------------------------------------------------
# Composition.

class Compose(Degradation):
    """Sequence of degradations applied in the robust paper's forward order U -> N -> A -> P
    (downsample, noise, JPEG, mask), with blur first and colorization after downsampling (our
    choice). `reorder=False` keeps the given order. Each component's true forward does its own
    8-bit round trip (as the reference). The mask is the last component's mask (non-None only
    when inpainting is last), resized to the final output size."""

    kind = 'compose'

    def __init__(self, degradations, reorder=True):
        super().__init__()
        ops = [d for d in degradations if not isinstance(d, Identity)]
        if reorder:
            ops = sorted(ops, key=lambda d: _ORDER.get(d.kind, 0))  # stable
        for d in ops[:-1]:
            if not getattr(d, 'is_image', True):
                raise ValueError(f'{d.name} must be the last operator of a composition (it turns the image into '
                                 f'measurements); got {"+".join(o.name for o in ops)}')
        self.ops = torch.nn.ModuleList(ops)
        self.name = '+'.join(d.name for d in ops) if ops else 'none'
        self.is_image = getattr(ops[-1], 'is_image', True) if ops else True

    def to_image_size(self, y, size):
        if len(self.ops):
            return self.ops[-1].to_image_size(y, size)
        return super().to_image_size(y, size)

    @property
    def mask(self):
        return self.ops[-1].mask if len(self.ops) else None

    def out_size(self, in_size):
        for d in self.ops:
            in_size = d.out_size(in_size)
        return in_size

    def forward(self, x):
        for d in self.ops:
            x = d(x)
        return x

    def true(self, x):
        x = quantize8(x) if not len(self.ops) else x
        for d in self.ops:
            x = d.true(x)
        return x

#----------------------------------------------------------------------------
# Spec parsing.

SPEC_FORMS = ('none', 'sr:K', 'sr:K:bicubic|bilinear|lanczos|random', 'sr:K:bicubic|bilinear:matched', 'sr:LEVEL', 'inpaint:MASK.png', 'inpaint:LEVEL',
              'colorize', 'denoise:LEVEL', 'denoise:PHOTONS,P', 'denoise:gauss:SIGMA[:grey]', 'jpeg:Q', 'jpeg:LEVEL', 'blur:gauss:SIGMA',
              'blur:motion:LENGTH[:ANGLE]', 'blur:box:SIZE', 'gauss:STD', 'cs:FACTOR[:circulant|gaussian]',
              'A+B (composition; cs last)')

def _check_level(level):
    level = str(level).upper()
    if level not in LEVELS:
        raise ValueError(f'unknown level {level!r}; expected one of {", ".join(LEVELS)}')
    return level

def _spec_error(spec, why=''):
    why = f' ({why})' if why else ''
    return ValueError(f'unknown degradation spec {spec!r}{why}; valid forms: {"; ".join(SPEC_FORMS)}; LEVEL in {"/".join(LEVELS)}')

def _is_level(s):
    return s.upper() in LEVELS

def _number(text, spec, cast=float):
    try:
        return cast(text)
    except ValueError:
        raise _spec_error(spec, f'{text!r} is not a number') from None

def _parse_one(part, size, resolution, seed, channels=3):
    fields = part.split(':')
    head = fields[0].strip().lower()
    args = [f.strip() for f in fields[1:]]
    if head in ('none', 'identity') and not args:
        return Identity()
    if head == 'colorize' and not args:
        return Colorize()
    matched = head == 'sr' and len(args) == 3 and args[2].lower() == 'matched'
    if head == 'sr' and (1 <= len(args) <= 2 or matched):
        k = LEVEL_TABLE['sr'][args[0].upper()] if _is_level(args[0]) else _number(args[0], part, int)
        flt = args[1].lower() if len(args) >= 2 else 'bicubic'
        if flt not in _PIL_FILTERS + ('random',):
            raise _spec_error(part, f'unknown filter {flt!r}')
        if matched and flt not in Downsample.MATCHED_FILTERS:
            raise _spec_error(part, f'a matched model needs the filter known and resizable in torch: '
                                    f'{" or ".join(Downsample.MATCHED_FILTERS)}, not {flt}')
        if k < 1 or size // k < 1:
            raise _spec_error(part, f'factor {k} does not fit size {size}')
        return Downsample(k, true_filter=flt, seed=seed, matched=matched)
    if head == 'inpaint' and len(args) >= 1:
        arg = ':'.join(args)  # allow paths with ':' (drive letters)
        if _is_level(arg):
            m = random_strokes(size, arg, seed=seed)
            return Inpaint(m, name=f'inpaint:{arg.upper()}')
        if os.path.splitext(arg)[1].lower() in ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp') or os.path.exists(arg):
            if not os.path.exists(arg):
                raise ValueError(f'inpaint mask file not found: {arg!r}')
            m = load_mask(arg)
            mh, mw = m.shape[-2:]
            if (mh, mw) not in ((size, size), (resolution, resolution)):
                raise ValueError(f'inpaint mask {arg!r} is {mw}x{mh}, expected {size}x{size}'
                                 + (f' (or {resolution}x{resolution})' if size != resolution else ''))
            if mh != size:
                m = F.interpolate(m, size=(size, size), mode='area')
            return Inpaint(m, name=f'inpaint:{os.path.basename(arg)}')
        raise _spec_error(part)
    if head == 'denoise' and len(args) in (2, 3) and args[0].lower() in ('gauss', 'gaussian'):
        sigma = _number(args[1], part)
        if sigma < 0:
            raise _spec_error(part, 'sigma must be >= 0')
        if len(args) == 3 and args[2].lower() not in ('grey', 'gray'):
            raise _spec_error(part, f'unknown noise option {args[2]!r}; use grey (one value per pixel for all channels)')
        return GaussianNoise(sigma, seed=seed, grey=len(args) == 3)
    if head == 'denoise' and len(args) == 1:
        if _is_level(args[0]):
            return Denoise(args[0], seed=seed)
        vals = args[0].split(',')
        if len(vals) == 2:
            lam, p = _number(vals[0], part), _number(vals[1], part)
            if lam <= 0 or not 0 <= p < 1:
                raise _spec_error(part, 'need photons > 0 and 0 <= p < 1')
            return Denoise(photons=lam, p=p, seed=seed)
        raise _spec_error(part)
    if head == 'gauss' and len(args) == 1:
        std = _number(args[0], part)
        if not std >= 0:
            raise _spec_error(part, 'the noise std must be >= 0 (in [-1, 1] image units)')
        return AdditiveGaussian(std, seed=seed)
    if head == 'cs' and 1 <= len(args) <= 2:
        factor = _number(args[0], part)
        matrix = args[1].lower() if len(args) == 2 else 'circulant'
        if not 0 < factor <= 1:
            raise ValueError(f'{part!r}: the compressed-sensing factor is the fraction of measurements and must be in '
                             f'(0, 1], e.g. cs:0.1; got {factor:g}')
        if matrix not in CS_MATRICES:
            raise _spec_error(part, f'unknown matrix {matrix!r}; use {" or ".join(CS_MATRICES)}')
        return CompressedSensing(factor, size, channels=channels, matrix=matrix, seed=seed)
    if head == 'jpeg' and len(args) == 1:
        q = LEVEL_TABLE['jpeg'][args[0].upper()] if _is_level(args[0]) else _number(args[0], part, int)
        if not 1 <= q <= 100:
            raise _spec_error(part, 'quality must be in 1..100')
        return JPEG(q)
    if head == 'blur' and len(args) >= 2:
        kind = args[0].lower()
        if kind in ('gauss', 'gaussian') and len(args) == 2:
            s = _number(args[1], part)
            if not (math.isfinite(s) and s > 0):
                raise _spec_error(part, 'the blur sigma must be a positive number')
            return Blur(gaussian_kernel(s), name=f'blur:gauss:{s:g}')
        if kind == 'motion' and len(args) in (2, 3):
            length = _number(args[1], part)
            angle = _number(args[2], part) if len(args) == 3 else 0.0
            if not (math.isfinite(length) and length >= 1 and math.isfinite(angle)):
                raise _spec_error(part, 'the motion length must be at least 1 pixel')
            return Blur(motion_kernel(length, angle), name=f'blur:motion:{length:g}:{angle:g}')
        if kind == 'box' and len(args) == 2:
            s = _number(args[1], part, int)
            if s < 1:
                raise _spec_error(part, 'the box size must be at least 1')
            return Blur(box_kernel(s), name=f'blur:box:{s}')
    raise _spec_error(part)


def parse_degradation(spec, resolution, device='cpu', seed=0, channels=3):
    """Build a `Degradation` from a spec string (see `SPEC_FORMS`); compositions join parts with '+'
    and are applied in the robust paper's order (U -> N -> A -> P). Size-dependent parts (stroke
    masks, mask files, compressed sensing) are made at the size reached at their place in the chain.
    `cs:` measures the image, so it must be written last (e.g. `gauss:0.1+cs:0.1`); `channels` is the
    image channel count it measures."""
    if not isinstance(spec, str) or not spec.strip():
        raise _spec_error(spec, 'empty')
    resolution = int(resolution)
    parts = [p.strip() for p in spec.split('+')]
    if any(not p for p in parts):
        raise _spec_error(spec, 'empty part')
    # Sort the parts by kind first so that size-dependent parts see the right size.
    heads = [p.split(':')[0].strip().lower() for p in parts]
    kinds = {'none': 'identity', 'identity': 'identity', 'colorize': 'colorize', 'sr': 'sr', 'inpaint': 'inpaint',
             'denoise': 'denoise', 'jpeg': 'jpeg', 'blur': 'blur', 'gauss': 'denoise', 'cs': 'cs'}
    for p, h in zip(parts, heads):
        if h not in kinds:
            raise _spec_error(p)
    if 'cs' in heads and (heads.count('cs') > 1 or heads[-1] != 'cs'):
        raise ValueError(f'{spec!r}: cs:FACTOR turns the image into measurements, so it must be the last (and only) '
                         f'cs part of a composition, e.g. gauss:0.1+cs:0.1')
    order = sorted(range(len(parts)), key=lambda i: _ORDER[kinds[heads[i]]])
    size = resolution
    ops = []
    for i in order:
        d = _parse_one(parts[i], size, resolution, seed, channels)
        size = d.out_size(size)
        ops.append(d)
    deg = ops[0] if len(ops) == 1 else Compose(ops)
    return deg.to(device)
