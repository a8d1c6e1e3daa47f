"""Losses for restoration by GAN inversion.

- `MultiscaleLPIPSL1`: the robust-unsupervised NGD loss (Poirier-Ginter & Lalonde, CVPR'23, and its released code): LPIPS summed over an
  average-pooling pyramid (sides > 16 px) plus a weighted L1 at the coarsest level, with fresh
  noise in the masked holes at every level for inpainting.
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
    """The robust-unsupervised NGD loss on `[N, C, H, W]` images in [-1, 1] -> `[N]`.

    Pyramid: LPIPS(x_l, y_l) at every level whose side is larger than `min_res` (16 px, the
    reference's `min_loss_res`), all with weight 1, at most `max_levels` levels (6), each followed
    by a 2x average pooling. A 1024 px target gets LPIPS at 1024, 512, ..., 32; a 32 px one at 32
    only; a target of 16 px or less gets no LPIPS at all (L1 only), as in the reference.

    L1: `l1_weight` * mean |x - y| taken once, after the loop, i.e. at the coarsest pooled level
    (16 px for power-of-two targets of 32 px and more, the target's own size when it is 16 px or
    less). The reference's 0.1 on [0, 1] images is 0.05 on [-1, 1] images (the default). It is a
    plain mean over all pixels and channels: neither masked nor normalised by the mask area (for
    inpainting both sides went through the known mask, so the holes cost nothing anyway).

    Mask (`[N or 1, 1, H, W]`, 1 = observed; area-resized to the images, then pooled with them):
    before every LPIPS call a fresh random field, the same for x and y, is added in the holes,
    weighted by (1 - mask). The reference draws n = (N(0,1) + 0.5) / 2 per level on [0, 1]
    images; in [-1, 1] units that is 2n = N(0,1) + 0.5, so the field has std 1 at every level.
    """

    def __init__(self, lpips_module, l1_weight=0.05, min_res=16, max_levels=6):
        super().__init__()
        self.lpips = lpips_module
        self.l1_weight = float(l1_weight)
        self.min_res = int(min_res)
        self.max_levels = int(max_levels)

    def forward(self, x, y, mask=None):
        if x.shape != y.shape:
            raise ValueError(f'MultiscaleLPIPSL1: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}')
        if x.ndim == 2:  # measurement vectors `[N, m]` (compressed sensing): MSE in place of LPIPS, plus the L1
            return (x - y).square().mean(1) + self.l1_weight * (x - y).abs().mean(1)
        m = _resize_mask(mask, x) if mask is not None else None
        total = x.new_zeros(x.shape[0])
        for _level in range(self.max_levels):
            if min(y.shape[-2:]) <= self.min_res:
                break
            if m is not None:
                fill = (torch.randn_like(x) + 0.5) * (1 - m)  # fresh at every level: std 1 in [-1, 1] units
                total = total + self.lpips(x + fill, y + fill).reshape(-1)
            else:
                total = total + self.lpips(x, y).reshape(-1)
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
            if m is not None:
                m = F.avg_pool2d(m, 2)
        if self.l1_weight:
            total = total + self.l1_weight * (x - y).abs().flatten(1).mean(1)
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
