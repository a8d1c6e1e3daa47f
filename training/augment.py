"""Adaptive discriminator augmentation (ADA): the differentiable augmentation pipeline of StyleGAN2-ADA.

`AugmentPipe` applies up to 16 random transformations to a batch of images, each one firing
independently per image with probability `multiplier * p`. The training loop adjusts the buffer
`p` (the ADA heuristic); the multipliers and parameter ranges are fixed at construction.

Groups, in execution order:
  * geometric (xflip, rotate90, xint, scale, rotate, aniso, xfrac): composed into one inverse
    3x3 homogeneous matrix per image and executed in a single resampling pass at 2x resolution;
  * colour (brightness, contrast, lumaflip, hue, saturation): composed into one 4x4 matrix;
  * image-space filtering (imgfilter): random gains for four frequency bands;
  * corruptions (noise, cutout).

Every step is differentiable with respect to the input images, to second order when
`grid_sample_gradfix.enabled` and `conv2d_gradfix.enabled` are set (R1 through real images).

This module must import only numpy, torch, dnnlib and torch_utils: its source is embedded in
pickles that carry an AugmentPipe and is executed when they load.
"""

import numpy as np
import torch

from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import grid_sample_gradfix
from torch_utils.ops import upfirdn2d

#----------------------------------------------------------------------------
# Decomposition low-pass filters of Daubechies' least-asymmetric wavelets ("symlets"), in the tap
# order and normalisation (taps sum to sqrt(2)) of PyWavelets' `Wavelet(name).dec_lo`. These are
# mathematical constants; they are written out so that no wavelet library is needed.

_SYM2_DEC_LO = [
    -0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025,
]

_SYM6_DEC_LO = [
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
]

#----------------------------------------------------------------------------
# Ways to execute the geometric transform (see `AugmentPipe`).

GEOM_MODES = ('official', 'exact-copy')

#----------------------------------------------------------------------------
# Presets of the training CLI's `--augpipe` option: the multiplier of every listed op is 1.

def _preset(*names):
    return {name: 1 for name in names}

_BLIT   = ('xflip', 'rotate90', 'xint')
_GEOM   = ('scale', 'rotate', 'aniso', 'xfrac')
_COLOR  = ('brightness', 'contrast', 'lumaflip', 'hue', 'saturation')
_FILTER = ('imgfilter',)
_NOISE  = ('noise',)
_CUTOUT = ('cutout',)

augpipe_specs = {
    'blit':   _preset(*_BLIT),
    'geom':   _preset(*_GEOM),
    'color':  _preset(*_COLOR),
    'filter': _preset(*_FILTER),
    'noise':  _preset(*_NOISE),
    'cutout': _preset(*_CUTOUT),
    'bg':     _preset(*_BLIT, *_GEOM),
    'bgc':    _preset(*_BLIT, *_GEOM, *_COLOR),
    'bgcf':   _preset(*_BLIT, *_GEOM, *_COLOR, *_FILTER),
    'bgcfn':  _preset(*_BLIT, *_GEOM, *_COLOR, *_FILTER, *_NOISE),
    'bgcfnc': _preset(*_BLIT, *_GEOM, *_COLOR, *_FILTER, *_NOISE, *_CUTOUT),
}

#----------------------------------------------------------------------------
# 2-D homogeneous matrices. Entries are Python numbers or per-image tensors `[N]`; the result is
# `[N, 3, 3]` float32 if any entry is a tensor and `[3, 3]` otherwise (broadcasts under `@`).

def _matrix(rows, device):
    entries = [e for row in rows for e in row]
    ref = next((e for e in entries if isinstance(e, torch.Tensor)), None)
    if ref is None:
        return misc.constant(np.asarray(rows, dtype=np.float32), dtype=torch.float32, device=device)
    n = ref.shape[0]
    entries = [e.to(torch.float32).expand(n) if isinstance(e, torch.Tensor)
               else torch.full([n], float(e), dtype=torch.float32, device=device) for e in entries]
    return torch.stack(entries, dim=1).reshape(n, len(rows), len(rows[0]))

def _translate2d(tx, ty, device):
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], device)

def _scale2d(sx, sy, device):
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], device)

def _rotate2d(theta, device):
    c, s = torch.cos(theta), torch.sin(theta)
    return _matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]], device)

def _rotate2d_quarter(k, device):
    """Rotation by k * 90 degrees (k: integer-valued tensor `[N]`), with exact 0/1 entries
    (cos(pi/2) in floating point is not 0, which would defeat the exact blit path)."""
    k = torch.remainder(k.to(torch.int64), 4)
    c = misc.constant([1, 0, -1, 0], dtype=torch.float32, device=device)[k]
    s = misc.constant([0, 1, 0, -1], dtype=torch.float32, device=device)[k]
    return _matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]], device)

#----------------------------------------------------------------------------
# Colour-space constants for 4x4 homogeneous RGB matrices (row/column 3 is the affine part).

_LUMA = np.asarray([1, 1, 1, 0], dtype=np.float64) / np.sqrt(3)        # Unit luma axis v.
_LUMA_OUTER = np.outer(_LUMA, _LUMA)                                    # v v^T (projection onto v).
_RGB_DIAG = np.diag([1, 1, 1, 0]).astype(np.float64)                    # Identity on RGB, 0 on the affine slot.
_AFFINE_ONE = np.diag([0, 0, 0, 1]).astype(np.float64)                  # Keeps the homogeneous 1.
_OFFSET_ALL = np.zeros([4, 4]); _OFFSET_ALL[:3, 3] = 1                  # Adds the same offset to R, G, B.
_LUMA_CROSS = np.zeros([4, 4])                                          # Cross-product matrix [v]_x.
_LUMA_CROSS[:3, :3] = [[0, -_LUMA[2], _LUMA[1]], [_LUMA[2], 0, -_LUMA[0]], [-_LUMA[1], _LUMA[0], 0]]

def _color_const(a, device):
    return misc.constant(a, dtype=torch.float32, device=device)

def _per_image(x):
    return x.to(torch.float32).reshape(-1, 1, 1)

#----------------------------------------------------------------------------

def _build_filter_bank():
    """Four-band undecimated octave filter bank from sym2, as a `[4, 43]` float32 array.

    With h the sym2 low-pass and g[n] = (-1)^n h[n] the matching high-pass, L = h * h_rev / 2
    and B = g * g_rev / 2 are zero-phase and power complementary (L + B = delta, because h is
    an orthogonal wavelet filter). Iterating the split on the low band with dilated copies
    (a trous) gives, from low to high frequencies:
        band 0 = L(z) L(z^2) L(z^4)     band 1 = L(z) L(z^2) B(z^4)
        band 2 = L(z) B(z^2)            band 3 = B(z)
    The bands sum to a unit impulse, so equal gains leave an image unchanged.
    """
    h = np.asarray(_SYM2_DEC_LO, dtype=np.float64)
    g = h * (-1.0) ** np.arange(h.size)
    lo = np.convolve(h, h[::-1]) / 2
    hi = np.convolve(g, g[::-1]) / 2

    def dilate(f, k):  # f(z) -> f(z^k): insert k-1 zeros between taps.
        out = np.zeros((f.size - 1) * k + 1)
        out[::k] = f
        return out

    bands = [
        np.convolve(np.convolve(lo, dilate(lo, 2)), dilate(lo, 4)),
        np.convolve(np.convolve(lo, dilate(lo, 2)), dilate(hi, 4)),
        np.convolve(lo, dilate(hi, 2)),
        hi,
    ]
    taps = max(b.size for b in bands)
    bank = np.zeros([len(bands), taps])
    for i, b in enumerate(bands):  # All bands are symmetric with odd length: centre them.
        start = (taps - b.size) // 2
        bank[i, start : start + b.size] = b
    return bank.astype(np.float32)

#----------------------------------------------------------------------------

def _reflect_pad(x, pad):
    """Mirror-pad the last two dims of `x` by `pad` on every side.

    torch's reflect mode needs pad < size; larger pads (small images under the 43-tap image
    filter) are done in several rounds, each reflecting the already padded image.
    """
    while pad > 0:
        step = min(pad, x.shape[2] - 1, x.shape[3] - 1)
        assert step > 0, 'cannot reflect-pad an image of size 1'
        x = torch.nn.functional.pad(x, [step] * 4, mode='reflect')
        pad -= step
    return x

#----------------------------------------------------------------------------

def _source_pixels(G_inv, height, width):
    """Input pixel indices (float, column and row) `[N, H, W]` read by each output pixel."""
    device = G_inv.device
    cx, cy = (width - 1) / 2, (height - 1) / 2
    ox = (torch.arange(width, dtype=torch.float32, device=device) - cx).reshape(1, 1, -1)
    oy = (torch.arange(height, dtype=torch.float32, device=device) - cy).reshape(1, -1, 1)
    g = G_inv.to(torch.float32).reshape(-1, 9, 1, 1)
    sx = g[:, 0] * ox + g[:, 1] * oy + g[:, 2] + cx
    sy = g[:, 3] * ox + g[:, 4] * oy + g[:, 5] + cy
    return sx, sy

def _is_blit(G_inv, height, width):
    """Per image `[N]` bool: does G_inv map every output pixel onto an input pixel centre?

    True when the linear part is a signed permutation (flips, quarter turns) and the pixel at
    the top-left corner reads from an integer position (integer translation; quarter turns of
    non-square images with an odd size difference fail this).
    """
    lin = G_inv[:, :2, :2]
    ok = ((lin == lin.round()) & (lin.abs() <= 1)).flatten(1).all(dim=1)
    ok = ok & (lin.abs().sum(dim=1) == 1).all(dim=1) & (lin.abs().sum(dim=2) == 1).all(dim=1)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    sx = G_inv[:, 0, 0] * -cx + G_inv[:, 0, 1] * -cy + G_inv[:, 0, 2] + cx
    sy = G_inv[:, 1, 0] * -cx + G_inv[:, 1, 1] * -cy + G_inv[:, 1, 2] + cy
    return ok & (sx == sx.round()) & (sy == sy.round())

def _blit(images, G_inv):
    """Exact pixel copy for the transforms accepted by `_is_blit()` (others: nearest pixel).

    Positions outside the image read its mirror image (like the reflect padding of the
    resampling path, including its limit of size - 1 pixels; zeros beyond).
    """
    batch_size, num_channels, height, width = images.shape
    sx, sy = _source_pixels(G_inv, height, width)
    sx = sx.round().to(torch.int64)
    sy = sy.round().to(torch.int64)
    inside = (sx >= -(width - 1)) & (sx <= 2 * (width - 1)) & (sy >= -(height - 1)) & (sy <= 2 * (height - 1))
    sx = sx.abs()
    sx = torch.where(sx > width - 1, 2 * (width - 1) - sx, sx).clamp(0, width - 1)
    sy = sy.abs()
    sy = torch.where(sy > height - 1, 2 * (height - 1) - sy, sy).clamp(0, height - 1)
    index = (sy * width + sx).reshape(batch_size, 1, height * width).expand(batch_size, num_channels, height * width)
    out = images.reshape(batch_size, num_channels, height * width).gather(2, index)
    out = out.reshape(batch_size, num_channels, height, width)
    return out * inside.unsqueeze(1).to(images.dtype)

#----------------------------------------------------------------------------

class _Draws:
    """Random parameter draws for one forward pass, or their fixed percentile in debug mode."""

    def __init__(self, batch_size, device, debug_percentile):
        self.batch_size = batch_size
        self.device = device
        self.debug_percentile = debug_percentile

    def uniform(self, *shape):
        """U(0, 1) of shape `[N, *shape]`; the percentile itself in debug mode."""
        shape = [self.batch_size, *shape]
        if self.debug_percentile is not None:
            return torch.full(shape, self.debug_percentile, dtype=torch.float32, device=self.device)
        return torch.rand(shape, device=self.device)

    def normal(self, *shape):
        """N(0, 1) of shape `[N, *shape]`; its quantile at the percentile in debug mode (0 -> -inf, 1 -> +inf)."""
        shape = [self.batch_size, *shape]
        if self.debug_percentile is not None:
            z = torch.erfinv(torch.as_tensor(self.debug_percentile * 2 - 1, dtype=torch.float64)).item() * np.sqrt(2)
            return torch.full(shape, z, dtype=torch.float32, device=self.device)
        return torch.randn(shape, device=self.device)

    def gate(self, value, identity, prob, enabled=True):
        """Per image, keep `value` with probability `prob` (a tensor or number), else use `identity`.

        `value` has shape `[N, ...]`. In debug mode every enabled op fires, so the output depends
        only on the percentile; ops whose strength is 0 (`enabled=False`) never fire.
        """
        if self.debug_percentile is not None:
            return value if enabled else torch.full_like(value, identity)
        fire = torch.rand([self.batch_size], device=self.device) < prob
        fire = fire.reshape([-1] + [1] * (value.ndim - 1))
        return torch.where(fire, value, torch.full_like(value, identity))

#----------------------------------------------------------------------------

@persistence.persistent_class
class AugmentPipe(torch.nn.Module):
    r"""ADA augmentation pipeline.

    Each `xflip ... cutout` argument is the probability multiplier of one op (0 disables it); an
    op fires per image with probability `multiplier * p`. The other arguments set the ranges:

        xint_max:        integer translation, U(-xint_max, xint_max) * image size, rounded.
        scale_std:       isotropic scale 2^N(0, scale_std).
        rotate_max:      rotation angle U(-pi, pi) * rotate_max (applied twice, see forward()).
        aniso_std:       anisotropic scale (s, 1/s), s = 2^N(0, aniso_std).
        xfrac_std:       fractional translation N(0, xfrac_std) * image size.
        brightness_std:  brightness offset N(0, brightness_std).
        contrast_std:    contrast factor 2^N(0, contrast_std).
        hue_max:         hue rotation angle U(-pi, pi) * hue_max.
        saturation_std:  saturation factor 2^N(0, saturation_std).
        imgfilter_bands: per-band probability multipliers of the image filter (4 bands, low to high).
        imgfilter_std:   per-band gain 2^N(0, imgfilter_std).
        noise_std:       additive noise sigma = |N(0, noise_std)|.
        cutout_size:     side of the cutout square relative to the image size.
        geom_mode:       how the geometric transform is executed (the random draws are the same):
                         'official' (default) resamples every image whenever a geometric op is
                         enabled, as the official StyleGAN2-ADA pipe does: sym6 2x upsampling,
                         bilinear warp, sym6 2x downsampling. Flips and quarter turns are then
                         not exact copies (sym6 is not linear-phase).
                         'exact-copy' copies images whose transform moves whole pixels only (the
                         identity, any mix of xflip, rotate90 and xint) and resamples the rest.
    """

    def __init__(self,
        xflip=0, rotate90=0, xint=0, xint_max=0.125,
        scale=0, rotate=0, aniso=0, xfrac=0, scale_std=0.2, rotate_max=1, aniso_std=0.2, xfrac_std=0.125,
        brightness=0, contrast=0, lumaflip=0, hue=0, saturation=0, brightness_std=0.2, contrast_std=0.5, hue_max=1, saturation_std=1,
        imgfilter=0, imgfilter_bands=[1,1,1,1], imgfilter_std=1,
        noise=0, cutout=0, noise_std=0.1, cutout_size=0.5,
        geom_mode='official',
    ):
        super().__init__()
        self.register_buffer('p', torch.ones([]))  # Overall strength; the training loop sets it in place.

        # Pixel blitting.
        self.xflip            = float(xflip)
        self.rotate90         = float(rotate90)
        self.xint             = float(xint)
        self.xint_max         = float(xint_max)

        # General geometric transformations.
        self.scale            = float(scale)
        self.rotate           = float(rotate)
        self.aniso            = float(aniso)
        self.xfrac            = float(xfrac)
        self.scale_std        = float(scale_std)
        self.rotate_max       = float(rotate_max)
        self.aniso_std        = float(aniso_std)
        self.xfrac_std        = float(xfrac_std)

        # Colour transformations.
        self.brightness       = float(brightness)
        self.contrast         = float(contrast)
        self.lumaflip         = float(lumaflip)
        self.hue              = float(hue)
        self.saturation       = float(saturation)
        self.brightness_std   = float(brightness_std)
        self.contrast_std     = float(contrast_std)
        self.hue_max          = float(hue_max)
        self.saturation_std   = float(saturation_std)

        # Image-space filtering.
        self.imgfilter        = float(imgfilter)
        self.imgfilter_bands  = [float(b) for b in imgfilter_bands]
        self.imgfilter_std    = float(imgfilter_std)

        # Image-space corruptions.
        self.noise            = float(noise)
        self.cutout           = float(cutout)
        self.noise_std        = float(noise_std)
        self.cutout_size      = float(cutout_size)

        # Execution of the geometric transform.
        if geom_mode not in GEOM_MODES:
            raise ValueError(f'geom_mode must be one of {", ".join(GEOM_MODES)}, got {geom_mode!r}')
        self.geom_mode        = geom_mode

        # sym6 low-pass for the 2x up/downsampling of the geometric pass. It is an orthogonal
        # wavelet filter, so upsampling by convolution and downsampling by correlation with it
        # reconstruct an image exactly when the transform is the identity.
        self.register_buffer('Hz_geom', upfirdn2d.setup_filter(_SYM6_DEC_LO))

        # Four-band filter bank for the image-space filter, lowest band first.
        self.register_buffer('Hz_fbank', torch.as_tensor(_build_filter_bank()))
        assert len(self.imgfilter_bands) == self.Hz_fbank.shape[0]

    #------------------------------------------------------------------------

    def forward(self, images, debug_percentile=None):
        r"""Augment a batch of images.

        Args:
            images:           Float tensor `[N, C, H, W]`, C = 1 or 3 (colour ops need one of
                              these), values in about [-1, 1].
            debug_percentile: None for random augmentation, or a float in [0, 1]: every enabled
                              op then fires for every image (whatever `p` is), and every random
                              parameter is replaced by its percentile (0.5 gives identity
                              parameters for all but the discrete ops, e.g. xflip and lumaflip
                              fire for percentiles >= 0.5). Normal draws become -inf / +inf at 0 /
                              1, which is meaningful only where the limit is (saturation 0 = gray).
                              As in the official pipe, the post-rotation stays 0 (only the
                              pre-rotation turns). The noise field is drawn from a fixed seed, so
                              the output is fully deterministic, and no random numbers are drawn.

        Returns:
            Tensor of the same shape, dtype and device.
        """
        assert isinstance(images, torch.Tensor) and images.ndim == 4
        batch_size, num_channels, height, width = images.shape
        device = images.device
        if debug_percentile is not None:
            debug_percentile = float(debug_percentile)
            assert 0 <= debug_percentile <= 1
        draw = _Draws(batch_size, device, debug_percentile)

        images = self._geometric(images, draw)
        images = self._color(images, draw)
        images = self._imgfilter(images, draw)
        images = self._corruptions(images, draw)
        return images

    #------------------------------------------------------------------------

    def _geometric(self, images, draw):
        """Ops 1-8. G_inv maps output pixel positions to the input positions they read from
        (centred pixel coordinates: x right, y down, origin at the image centre)."""
        batch_size, num_channels, height, width = images.shape
        device = images.device
        I_3 = _matrix([[1, 0, 0], [0, 1, 0], [0, 0, 1]], device)
        G_inv = I_3.expand(batch_size, 3, 3)
        used = False

        # Each transform A appends its inverse on the right: G_inv = A1^-1 A2^-1 ..., i.e. the
        # forward mapping applies A1 first. Draws, gates and matrices follow the official pipe
        # op by op, so one torch seed gives the same augmentations.
        if self.xflip > 0:
            i = torch.floor(draw.uniform() * 2).clamp(max=1)
            i = draw.gate(i, 0, self.xflip * self.p)
            G_inv = G_inv @ _scale2d(1 - 2 * i, 1, device)
            used = True

        if self.rotate90 > 0:
            i = torch.floor(draw.uniform() * 4).clamp(max=3)
            i = draw.gate(i, 0, self.rotate90 * self.p)
            # Output = torch.rot90(input, i, dims=[2, 3]). The official pipe builds the matrix from
            # cos/sin of i * pi / 2 (entries like 4e-8 instead of 0), which only 'exact-copy' needs exact.
            rot = _rotate2d_quarter(i, device) if self.geom_mode == 'exact-copy' else _rotate2d(i * (np.pi / 2), device)
            G_inv = G_inv @ rot
            used = True

        if self.xint > 0:
            t = (draw.uniform(2) * 2 - 1) * self.xint_max
            t = draw.gate(t, 0, self.xint * self.p)
            G_inv = G_inv @ _translate2d(-torch.round(t[:, 0] * width), -torch.round(t[:, 1] * height), device)
            used = True

        if self.scale > 0:
            s = torch.exp2(draw.normal() * self.scale_std)
            s = draw.gate(s, 1, self.scale * self.p)
            G_inv = G_inv @ _scale2d(1 / s, 1 / s, device)
            used = True

        # Rotation is split into a pre- and a post-rotation around the anisotropic scale, each
        # firing with p_rot, so that at least one of them fires with probability rotate * p.
        p_rot = 1 - torch.sqrt((1 - self.rotate * self.p).clamp(0, 1))
        if self.rotate > 0:
            theta = (draw.uniform() * 2 - 1) * np.pi * self.rotate_max
            theta = draw.gate(theta, 0, p_rot)
            G_inv = G_inv @ _rotate2d(theta, device)
            used = True

        if self.aniso > 0:
            s = torch.exp2(draw.normal() * self.aniso_std)
            s = draw.gate(s, 1, self.aniso * self.p)
            G_inv = G_inv @ _scale2d(1 / s, s, device)
            used = True

        if self.rotate > 0:
            # In debug mode the official pipe turns only the pre-rotation (the post-rotation is 0).
            theta = (draw.uniform() * 2 - 1) * np.pi * self.rotate_max
            theta = draw.gate(theta, 0, p_rot, enabled=False)
            G_inv = G_inv @ _rotate2d(theta, device)

        if self.xfrac > 0:
            t = draw.normal(2) * self.xfrac_std
            t = draw.gate(t, 0, self.xfrac * self.p)
            G_inv = G_inv @ _translate2d(-t[:, 0] * width, -t[:, 1] * height, device)
            used = True

        if not used:
            return images

        if self.geom_mode == 'official':
            return self._resample(images, G_inv)

        # 'exact-copy': images whose transform only moves whole pixels (the identity, or any
        # combination of xflip, rotate90 and xint alone) are copied exactly; the rest are resampled.
        # The resampling reproduces the identity and integer translations to rounding error, but
        # not flips and quarter turns: sym6 is not linear-phase, so mirroring the upsampled image
        # changes its high frequencies (errors of ~0.5 on white noise).
        blit = _is_blit(G_inv, height, width)
        out = _blit(images, G_inv)
        idx = torch.nonzero(~blit)[:, 0]  # Host sync; the resampling needs one anyway (padding size).
        if idx.numel() > 0:
            out = out.index_copy(0, idx, self._resample(images.index_select(0, idx), G_inv.index_select(0, idx)))
        return out

    def _resample(self, images, G_inv):
        """Warp `images` `[N, C, H, W]` by the per-image inverse transforms `G_inv` `[N, 3, 3]`."""
        batch_size, num_channels, height, width = images.shape
        device = images.device
        Hz = self.Hz_geom
        Hz_pad = Hz.shape[0] // 4  # Filter reach in input pixels, per 2x resampling step (3 for sym6).
        cx, cy = (width - 1) / 2, (height - 1) / 2

        # Reflect-pad so that the positions read for the output corners, plus the reach of the
        # up- and downsampling filters, lie inside real or mirrored content. Mirroring can add at
        # most size - 1 pixels; beyond that, grid_sample reads zeros.
        corners = _matrix([[-cx, cx, cx, -cx], [-cy, -cy, cy, cy], [1, 1, 1, 1]], device)
        src = G_inv @ corners  # [N, 3, 4]
        reach = torch.stack([(-src[:, 0]).max(), (-src[:, 1]).max(), src[:, 0].max(), src[:, 1].max()])
        reach = reach - misc.constant([cx, cy, cx, cy], dtype=torch.float32, device=device) + Hz_pad * 2
        reach = torch.nan_to_num(reach, nan=float('inf'))  # Degenerate transforms (debug percentile 0 or 1).
        reach = reach.clamp(min=0).minimum(misc.constant([width - 1, height - 1] * 2, dtype=torch.float32, device=device))
        mx0, my0, mx1, my1 = [int(m) for m in reach.ceil().to(torch.int64).tolist()]
        x = torch.nn.functional.pad(images, [mx0, mx1, my0, my1], mode='reflect')
        # The padded image's centre moves by half the padding difference.
        G = _translate2d((mx0 - mx1) / 2, (my0 - my1) / 2, device) @ G_inv

        # Upsample 2x. sym6 is not symmetric: its group delay is about 5 taps rather than the 5.5 of
        # a linear-phase 12-tap filter, so upsample2d puts upsampled pixel j at input position j/2,
        # not j/2 - 1/4. In centred coordinates, upsampled v and input u relate by v = 2u - 1/2.
        # (The identity and integer translations do not care, but flips and rotations do.)
        # downsample2d with the flipped filter uses the same correspondence.
        x = upfirdn2d.upsample2d(x, Hz, up=2)
        G = _translate2d(-0.5, -0.5, device) @ _scale2d(2, 2, device) @ G @ _scale2d(0.5, 0.5, device) @ _translate2d(0.5, 0.5, device)

        # Sample the output at 2x resolution with a margin of Hz_pad input pixels on each side,
        # which the downsampling filter consumes. affine_grid works in normalised coordinates
        # (align_corners=False): centred pixel coordinate = normalised * size / 2.
        out_h, out_w = (height + Hz_pad * 2) * 2, (width + Hz_pad * 2) * 2
        theta = _scale2d(2 / x.shape[3], 2 / x.shape[2], device) @ G @ _scale2d(out_w / 2, out_h / 2, device)
        grid = torch.nn.functional.affine_grid(theta[:, :2, :].to(x.dtype), [batch_size, num_channels, out_h, out_w], align_corners=False)
        x = grid_sample_gradfix.grid_sample(x, grid)

        # Downsample 2x by correlation with the same filter (the adjoint of the upsampling),
        # cropping the margin: the result is [N, C, H, W] again.
        x = upfirdn2d.downsample2d(x, Hz, down=2, padding=-Hz_pad * 2, flip_filter=True)
        return x

    #------------------------------------------------------------------------

    def _color(self, images, draw):
        """Ops 9-13, as one 4x4 matrix C acting on homogeneous RGB: rgb' = C[:3, :3] rgb + C[:3, 3]."""
        batch_size, num_channels, height, width = images.shape
        device = images.device
        eye = _color_const(np.eye(4), device)
        C = eye.expand(batch_size, 4, 4)
        used = False

        # Each op is applied after the previous ones: C = A @ C.
        if self.brightness > 0:
            b = draw.normal() * self.brightness_std
            b = draw.gate(b, 0, self.brightness * self.p)
            C = (eye + _per_image(b) * _color_const(_OFFSET_ALL, device)) @ C
            used = True

        if self.contrast > 0:
            c = torch.exp2(draw.normal() * self.contrast_std)
            c = draw.gate(c, 1, self.contrast * self.p)
            # Scales around 0, the middle of the [-1, 1] range.
            C = (_per_image(c) * _color_const(_RGB_DIAG, device) + _color_const(_AFFINE_ONE, device)) @ C
            used = True

        if self.lumaflip > 0:
            # Householder reflection I - 2 v v^T: inverts the luma component, keeps the chroma.
            i = torch.floor(draw.uniform() * 2).clamp(max=1)
            i = draw.gate(i, 0, self.lumaflip * self.p)
            C = (eye - 2 * _per_image(i) * _color_const(_LUMA_OUTER, device)) @ C
            used = True

        if self.hue > 0 and num_channels > 1:
            # Rodrigues rotation about v: v v^T + cos (I - v v^T) + sin [v]_x.
            theta = (draw.uniform() * 2 - 1) * np.pi * self.hue_max
            theta = draw.gate(theta, 0, self.hue * self.p)
            vv = _color_const(_LUMA_OUTER, device)
            rot = (vv + _per_image(torch.cos(theta)) * (_color_const(_RGB_DIAG, device) - vv)
                   + _per_image(torch.sin(theta)) * _color_const(_LUMA_CROSS, device) + _color_const(_AFFINE_ONE, device))
            C = rot @ C
            used = True

        if self.saturation > 0 and num_channels > 1:
            # Scale the chroma (the part orthogonal to v) by s.
            s = torch.exp2(draw.normal() * self.saturation_std)
            s = draw.gate(s, 1, self.saturation * self.p)
            vv = _color_const(_LUMA_OUTER, device)
            C = (vv + _per_image(s) * (_color_const(_RGB_DIAG, device) - vv) + _color_const(_AFFINE_ONE, device)) @ C
            used = True

        if not used:
            return images
        C = C.to(images.dtype)
        if num_channels == 3:
            x = images.reshape(batch_size, 3, height * width)
            x = C[:, :3, :3] @ x + C[:, :3, 3:]
        elif num_channels == 1:
            # A gray value g stands for (g, g, g); the result is the mean of the three outputs.
            gain = C[:, :3, :3].sum(dim=[1, 2]).reshape(-1, 1, 1) / 3
            offset = C[:, :3, 3].mean(dim=1).reshape(-1, 1, 1)
            x = images.reshape(batch_size, 1, height * width) * gain + offset
        else:
            raise ValueError(f'colour augmentation needs 1 or 3 channels, got {num_channels}')
        return x.reshape(batch_size, num_channels, height, width)

    #------------------------------------------------------------------------

    def _imgfilter(self, images, draw):
        """Op 14: random per-band gains of the four-band filter bank."""
        if self.imgfilter <= 0:
            return images
        batch_size, num_channels, height, width = images.shape
        device = images.device
        num_bands, taps = self.Hz_fbank.shape
        assert len(self.imgfilter_bands) == num_bands
        # Typical share of each band in the power of natural images; the gains are normalised so
        # that the expected power of the result stays that of the input.
        expected_power = _color_const(np.asarray([10, 1, 1, 1]) / 13, device)

        g = torch.ones([batch_size, num_bands], device=device)
        unchanged = torch.ones([batch_size], dtype=torch.bool, device=device)
        for i, band_strength in enumerate(self.imgfilter_bands):
            t_i = torch.exp2(draw.normal() * self.imgfilter_std)
            t_i = draw.gate(t_i, 1, self.imgfilter * self.p * band_strength, enabled=(band_strength > 0))
            unchanged = unchanged & (t_i == 1)
            t = torch.ones([batch_size, num_bands], device=device)
            t[:, i] = t_i
            t = t / (expected_power * t.square()).sum(dim=-1, keepdim=True).sqrt()
            g = g * t
        Hz_prime = (g @ self.Hz_fbank).to(images.dtype)  # [N, taps]: one symmetric 1-D filter per image.

        # Separable: the same 1-D filter horizontally, then vertically, per image and channel.
        w = Hz_prime.repeat_interleave(num_channels, dim=0)  # [N * C, taps]
        x = images.reshape(1, batch_size * num_channels, height, width)
        x = _reflect_pad(x, taps // 2)
        x = conv2d_gradfix.conv2d(input=x, weight=w.reshape(-1, 1, 1, taps), groups=batch_size * num_channels)
        x = conv2d_gradfix.conv2d(input=x, weight=w.reshape(-1, 1, taps, 1), groups=batch_size * num_channels)
        x = x.reshape(batch_size, num_channels, height, width)

        # Unfiltered images pass through exactly (the bank sums to an impulse only up to rounding).
        return torch.where(unchanged.reshape(-1, 1, 1, 1), images, x)

    #------------------------------------------------------------------------

    def _corruptions(self, images, draw):
        """Ops 15-16: additive Gaussian noise and cutout."""
        batch_size, num_channels, height, width = images.shape
        device = images.device

        if self.noise > 0:
            sigma = draw.normal(1, 1, 1).abs() * self.noise_std
            sigma = draw.gate(sigma, 0, self.noise * self.p)
            if draw.debug_percentile is not None:
                gen = torch.Generator(device=device)
                gen.manual_seed(0)
                field = torch.randn(images.shape, generator=gen, device=device, dtype=images.dtype)
            else:
                field = torch.randn_like(images)
            images = images + field * sigma.to(images.dtype)

        if self.cutout > 0:
            size = torch.full([batch_size, 1, 1], self.cutout_size, device=device)
            size = draw.gate(size, 0, self.cutout * self.p)
            center = draw.uniform(1, 1, 2)  # Relative (x, y) of the square's centre.
            coord_x = ((torch.arange(width, device=device) + 0.5) / width).reshape(1, 1, -1)
            coord_y = ((torch.arange(height, device=device) + 0.5) / height).reshape(1, -1, 1)
            outside = ((coord_x - center[..., 0]).abs() >= size / 2) | ((coord_y - center[..., 1]).abs() >= size / 2)
            images = images * outside.unsqueeze(1).to(images.dtype)

        return images

#----------------------------------------------------------------------------
