"""Perceptual Path Length (Karras et al. 2019/2020), as computed by stylegan2-ada-pytorch.

For a pair of latents and t (0 for 'end' sampling, U(0, 1) for 'full'), PPL measures
`|phi(G(lerp(t))) - phi(G(lerp(t + eps)))|^2 / eps^2`, where phi is the LPIPS feature vector of
the NVlabs VGG16 (`return_lpips=True, resize_images=False`) and the interpolation is a lerp of
two mapped ws ('w' space) or a slerp of two zs ('z' space). The noise buffers are re-randomised
for every batch and synthesis runs with `noise_mode='const', force_fp32=True`. Images larger than
256 are box-downsampled to 256; the legacy variants first crop the face region. The result is the
mean of the distances between their 1st ('lower') and 99th ('higher') percentiles.
"""

import copy

import numpy as np
import torch

from . import metric_utils

#----------------------------------------------------------------------------

def slerp(a, b, t):
    """Spherical interpolation between the directions of `a` and `b` (unit-length result)."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    d = (a * b).sum(dim=-1, keepdim=True)
    p = t * torch.acos(d)
    c = b - d * a
    c = c / c.norm(dim=-1, keepdim=True)
    d = a * torch.cos(p) + c * torch.sin(p)
    d = d / d.norm(dim=-1, keepdim=True)
    return d


class PPLSampler(torch.nn.Module):
    """Distances `[batch]` for one batch of labels; holds its own copy of G."""

    def __init__(self, G, G_kwargs, epsilon, space, sampling, crop, vgg16, G_kwargs_fn=None):
        assert space in ['z', 'w']
        assert sampling in ['full', 'end']
        super().__init__()
        self.G = copy.deepcopy(G)
        self.G_kwargs = dict(G_kwargs)      # fixed extra synthesis kwargs
        self.G_kwargs_fn = G_kwargs_fn      # (G, batch) -> per-batch synthesis kwargs (e.g. the QC code q)
        self.epsilon = epsilon
        self.space = space
        self.sampling = sampling
        self.crop = crop
        self.vgg16 = vgg16

    def forward(self, c):
        G = self.G
        n = c.shape[0]
        t = torch.rand([n], device=c.device) * (1 if self.sampling == 'full' else 0)
        z0, z1 = torch.randn([n * 2, G.z_dim], device=c.device).chunk(2)

        if self.space == 'w':
            w0, w1 = G.mapping(torch.cat([z0, z1]), torch.cat([c, c])).chunk(2)
            t3 = t[:, None, None]
            wt0 = w0.lerp(w1, t3)
            wt1 = w0.lerp(w1, t3 + self.epsilon)
        else:
            zt0 = slerp(z0, z1, t[:, None])
            zt1 = slerp(z0, z1, t[:, None] + self.epsilon)
            wt0, wt1 = G.mapping(torch.cat([zt0, zt1]), torch.cat([c, c])).chunk(2)

        for name, buf in G.named_buffers():
            if name.endswith('.noise_const'):
                buf.copy_(torch.randn_like(buf))

        kwargs = dict(noise_mode='const', force_fp32=True)
        kwargs.update(self.G_kwargs)
        if self.G_kwargs_fn is not None:
            kwargs.update(self.G_kwargs_fn(G, n))
        for key in ('truncation_psi', 'truncation_cutoff'):  # mapping options, not synthesis ones
            kwargs.pop(key, None)
        if kwargs.get('q') is not None:
            kwargs['q'] = torch.cat([kwargs['q'], kwargs['q']])  # the same code at both ends of the step
        img = G.synthesis(torch.cat([wt0, wt1]), **kwargs)
        if isinstance(img, (tuple, list)):  # QC synthesis returns (img, features)
            img = img[0]

        if self.crop:
            assert img.shape[2] == img.shape[3]
            s = img.shape[2] // 8
            img = img[:, :, s * 3:s * 7, s * 2:s * 6]

        factor = G.img_resolution // 256
        if factor > 1:
            img = img.reshape([-1, img.shape[1], img.shape[2] // factor, factor, img.shape[3] // factor, factor]).mean([3, 5])

        img = (img + 1) * (255 / 2)
        if G.img_channels == 1:
            img = img.repeat([1, 3, 1, 1])

        lpips_t0, lpips_t1 = self.vgg16(img, resize_images=False, return_lpips=True).chunk(2)
        return (lpips_t0 - lpips_t1).square().sum(1) / self.epsilon ** 2

#----------------------------------------------------------------------------

def ppl_from_distances(dist):
    """Mean of the distances within [P1 (method 'lower'), P99 (method 'higher')]."""
    dist = np.asarray(dist, dtype=np.float64)
    lo = np.percentile(dist, 1, method='lower')
    hi = np.percentile(dist, 99, method='higher')
    return float(dist[(dist >= lo) & (dist <= hi)].mean())


def compute_ppl(opts, num_samples, epsilon, space, sampling, crop, batch_size):
    """PPL over `num_samples` samples, `batch_size` per process and step (NaN off rank 0)."""
    if opts.G is None:
        raise ValueError('PPL needs a generator (MetricOptions(G=...))')
    vgg16 = metric_utils.get_feature_detector(opts.resolve_detector(metric_utils.VGG16_URL), device=opts.device,
                                              num_gpus=opts.num_gpus, rank=opts.rank, verbose=opts.progress.verbose)

    sampler = PPLSampler(G=opts.G, G_kwargs={}, epsilon=epsilon, space=space, sampling=sampling, crop=crop, vgg16=vgg16,
                         G_kwargs_fn=lambda G, n: metric_utils.make_G_kwargs(opts, G, n, opts.device))
    sampler.eval().requires_grad_(False).to(opts.device)

    dist = []
    progress = opts.progress.sub(tag='ppl sampling', num_items=num_samples)
    with torch.no_grad():
        for batch_start in range(0, num_samples, batch_size * opts.num_gpus):
            progress.update(batch_start)
            c = metric_utils.random_labels(opts, sampler.G, batch_size)
            x = sampler(c)
            for src in range(opts.num_gpus):
                y = x.clone()
                if opts.num_gpus > 1:
                    torch.distributed.broadcast(y, src=src)
                dist.append(y)
    progress.update(num_samples)

    if opts.rank != 0:
        return float('nan')
    dist = torch.cat(dist)[:num_samples].cpu().numpy()
    return ppl_from_distances(dist)
