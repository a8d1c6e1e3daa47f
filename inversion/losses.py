"""Losses for restoration by GAN inversion.

- `MultiscaleLPIPSL1`: the robust-unsupervised NGD loss (reference 1.4): LPIPS summed over an
  average-pooling pyramid plus a weighted L1, with the masked-region noise trick for inpainting.
- `MSELPIPS`: per-sample MSE + LPIPS (PTI, QC-StyleGAN inversion).
- `noise_regularization` / `normalize_noise_`: the StyleGAN2 projector noise regularizer.

All image inputs are `[N, 3, H, W]` in [-1, 1]; the losses return per-sample values `[N]`.
"""

import torch
import torch.nn.functional as F


def _resize_mask(mask, like):
    m = mask.to(device=like.device, dtype=like.dtype)
    if m.shape[-2:] != like.shape[-2:]:
        m = F.interpolate(m, size=like.shape[-2:], mode='area')
    return m


class MultiscaleLPIPSL1(torch.nn.Module):
    """Sum over a 2x average-pooling pyramid of LPIPS(x_l, y_l), plus `l1_weight` * L1(x, y).

    Pyramid: starts at full size, LPIPS at every level whose side is >= `min_size` (32 px, the
    smallest that AlexNet/VGG LPIPS take), at most `max_levels` levels (6 in the reference), all
    with weight 1. For a 1024 px target: 1024, 512, ..., 32 (reference 1.4: stop once the side is
    <= 16). A target smaller than `min_size` still gets one LPIPS evaluation at its own size.

    L1 (mean absolute error per sample, in [-1, 1] units): `l1_at='full'` (default, the project
    contract) at full resolution; `l1_at='coarsest'` after the pyramid loop, i.e. at the first
    level below `min_size`, as the reference code does (reference 1.8).

    Mask (`[N or 1, 1, H, W]`, 1 = observed, area-resized to the images and pooled with them):
    before each LPIPS call the same random field is added to both images in the holes, weighted
    by (1 - mask). The reference draws n = (N(0,1) + 0.5) / 2 in [0, 1] image units; in [-1, 1]
    units that is 2n = N(0,1) + 0.5. One field is drawn per call at full size and pooled with the
    pyramid (the reference draws a fresh one per level; either way it is identical for x and y).
    The L1 term is masked (mean of |x - y| * mask over the pixels, normalized by the mask area).
    """

    def __init__(self, lpips_module, l1_weight=0.1, min_size=32, max_levels=6, l1_at='full'):
        super().__init__()
        if l1_at not in ('full', 'coarsest'):
            raise ValueError(f"MultiscaleLPIPSL1: l1_at must be 'full' or 'coarsest', got {l1_at!r}")
        self.lpips = lpips_module
        self.l1_weight = float(l1_weight)
        self.min_size = max(int(min_size), 1)
        self.max_levels = int(max_levels)
        self.l1_at = l1_at

    @staticmethod
    def _l1(x, y, mask):
        d = (x - y).abs()
        if mask is None:
            return d.flatten(1).mean(1)
        m = mask.expand(x.shape[0], 1, *x.shape[-2:])
        num = (d * m).flatten(1).sum(1)
        den = (m.flatten(1).sum(1) * x.shape[1]).clamp_min(1e-8)
        return num / den

    def forward(self, x, y, mask=None):
        if x.shape != y.shape:
            raise ValueError(f'MultiscaleLPIPSL1: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}')
        if x.ndim == 2:  # measurement vectors `[N, m]` (compressed sensing): MSE in place of LPIPS, plus the L1
            return (x - y).square().mean(1) + self.l1_weight * (x - y).abs().mean(1)
        m = _resize_mask(mask, x) if mask is not None else None
        noise = None
        if m is not None:
            noise = torch.randn(1, *x.shape[1:], device=x.device, dtype=x.dtype) + 0.5  # 2 * (N(0,1)+0.5)/2
        total = x.new_zeros(x.shape[0])
        l1_full = self._l1(x, y, m) if self.l1_at == 'full' else None
        levels = 0
        while True:
            if m is not None:
                fill = noise * (1 - m)
                total = total + self.lpips(x + fill, y + fill)
            else:
                total = total + self.lpips(x, y)
            levels += 1
            if levels >= self.max_levels or min(x.shape[-2:]) // 2 < self.min_size:
                break
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
            if m is not None:
                m, noise = F.avg_pool2d(m, 2), F.avg_pool2d(noise, 2)
        if self.l1_weight:
            if l1_full is None:  # reference: one more pooling step after the loop
                if min(x.shape[-2:]) >= 2:
                    x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
                    m = F.avg_pool2d(m, 2) if m is not None else None
                l1_full = self._l1(x, y, m)
            total = total + self.l1_weight * l1_full
        return total


class MSELPIPS(torch.nn.Module):
    """Per-sample `mse_weight` * MSE(x, y) + `lpips_weight` * LPIPS(x, y) -> [N] (PTI / QC). With
    a mask (1 = observed) both images are multiplied by it first."""

    def __init__(self, lpips_module, mse_weight=1.0, lpips_weight=1.0):
        super().__init__()
        self.lpips = lpips_module
        self.mse_weight = float(mse_weight)
        self.lpips_weight = float(lpips_weight)

    def forward(self, x, y, mask=None):
        if mask is not None:
            m = _resize_mask(mask, x)
            x, y = x * m, y * m
        loss = x.new_zeros(x.shape[0])
        if self.mse_weight:
            loss = loss + self.mse_weight * (x - y).square().flatten(1).mean(1)
        if self.lpips_weight:
            loss = loss + self.lpips_weight * self.lpips(x, y)
        return loss


def noise_regularization(noise_buffers):
    """StyleGAN2 projector noise regularizer: for every noise map `[1 or N, 1, H, W]`, the squared
    normalized autocorrelation at a one-pixel shift (horizontal and vertical, with wrap-around),
    repeated on a 2x average-pooled pyramid down to 8x8. Returns a scalar."""
    reg = 0.0
    for noise in noise_buffers:
        n = noise[None, None] if noise.ndim == 2 else noise
        while True:
            reg = reg + (n * torch.roll(n, shifts=1, dims=3)).mean() ** 2
            reg = reg + (n * torch.roll(n, shifts=1, dims=2)).mean() ** 2
            if n.shape[-1] <= 8 or n.shape[-2] <= 8:
                break
            n = F.avg_pool2d(n, 2)
    if not torch.is_tensor(reg):
        reg = torch.zeros([])
    return reg


@torch.no_grad()
def normalize_noise_(noise_buffers):
    """In place: every noise map to zero mean and unit variance (StyleGAN2 projector)."""
    for n in noise_buffers:
        mean = n.mean()
        std = (n.square().mean() - mean * mean).clamp_min(1e-16).sqrt()
        n.sub_(mean).div_(std)
    return noise_buffers
