"""PTI: pivotal tuning inversion (Roich et al.), for restoration through a degradation operator.

Stage A (pivot): w (W, or W+ with `space='w+'`) from PTI's own w_avg (600 samples, seed 123),
Adam with the learning rate 0.01 * ramp (5% warm-up, cosine ramp-down over the last 25%), a latent
noise ramp sigma_w * 0.05 * max(0, 1 - t/0.75)^2, loss LPIPS-VGG(f^(G(w)), y) (both area-downsampled
to 256 px first when larger, as the reference does) + 1e5 * noise
regularisation with the `noise_const` buffers optimised on a throw-away copy of G (renormalised
after each step; the original buffers are used in stage B, as upstream does).
Stage B (tuning): `common.tune_generator` with MSE + LPIPS, lr 3e-4, up to 350 steps, early stop
at LPIPS <= 0.06, optional locality regulariser (alpha 30, weight 0.1, psi 0.5).
For QC generators PTI works on the sharp branch (q = None).
"""

import copy

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import common

DEFAULTS = dict(pivot_steps=450, pivot_lr=0.01, noise_ramp=0.75, initial_noise_factor=0.05,
                lr_rampdown=0.25, lr_rampup=0.05, noise_reg_weight=1e5, tune_steps=350, tune_lr=3e-4,
                lpips_stop=0.06, locality=False)


def _noise_reg(buffers):
    from .losses import noise_regularization
    return noise_regularization(buffers)


def _normalize_noise(buffers):
    from .losses import normalize_noise_
    normalize_noise_(buffers)


def pivot_size(x, size=256):
    """Images `[N, C, H, W]` larger than `size` area-downsampled to at most `size` px on the long
    side (the reference does this before its VGG LPIPS); smaller ones pass unchanged."""
    if max(x.shape[-2:]) <= size:
        return x
    scale = size / max(x.shape[-2:])
    return F.interpolate(x, size=(max(1, round(x.shape[-2] * scale)), max(1, round(x.shape[-1] * scale))), mode='area')


def invert_pivot(G, target, degradation, lpips_module, space='w', steps=450, lr=0.01, optimize_noise=True,
                 noise_reg_weight=1e5, initial_noise_factor=0.05, noise_ramp=0.75, lr_rampdown=0.25,
                 lr_rampup=0.05, w_stats=None, q=None, seed=0, progress=False, lpips_size=256, w_init=None):
    """PTI stage A -> (pivot ws `[N, num_ws, w_dim]`, history). LPIPS compares the observation and
    f^(G(w)) area-downsampled to `lpips_size` px when they are larger (reference: 256).
    `w_init`: start from this code (an encoder's W `[N, w_dim]` or W+ `[N, num_ws, w_dim]`, see
    `common.initial_latent`) instead of w_avg; the noise ramp still uses the w_avg statistics."""
    device = target.device
    N = target.shape[0]
    lpips_module = common.safe_lpips(lpips_module)
    w_avg, w_std = w_stats if w_stats is not None else common.estimate_w_stats(G)
    w_avg = w_avg.to(device)
    G_p = copy.deepcopy(G).eval() if optimize_noise else G
    common.requires_grad(G_p, False)
    gen = common.LatentGenerator(G_p)
    if space not in ('w', 'w+'):
        raise ValueError(f'PTI pivot space must be "w" or "w+", got "{space}"')
    if w_init is not None:
        w = common.initial_latent(w_init, space, gen.num_ws, w_avg.numel(), device)
        if w.shape[0] != N:
            raise ValueError(f'w_init has {w.shape[0]} codes for {N} targets')
    elif space == 'w':
        w = w_avg.reshape(1, -1).repeat(N, 1)
    else:
        w = w_avg.reshape(1, 1, -1).repeat(N, gen.num_ws, 1)
    w = w.clone().requires_grad_(True)
    buffers = common.noise_buffers(G_p) if optimize_noise else []
    if optimize_noise:
        gen_noise = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for b in buffers:
                b.copy_(torch.randn(b.shape, generator=gen_noise))
        for b in buffers:
            b.requires_grad_(True)
    opt = torch.optim.Adam([w] + buffers, lr=lr, betas=(0.9, 0.999))
    rng = torch.Generator().manual_seed(int(seed) + 1)
    target_small = pivot_size(target, lpips_size)
    history = dict(loss=[], lpips=[])
    for step in tqdm(range(int(steps)), desc='pivot', disable=not progress, leave=False):
        t = step / max(int(steps), 1)
        noise_strength = w_std * initial_noise_factor * max(0.0, 1.0 - t / noise_ramp) ** 2
        ramp = min(1.0, (1.0 - t) / lr_rampdown)
        ramp = 0.5 - 0.5 * np.cos(ramp * np.pi)
        ramp = ramp * min(1.0, t / lr_rampup) if lr_rampup > 0 else ramp
        for group in opt.param_groups:
            group['lr'] = lr * ramp
        w_in = w + common.to_device(torch.randn(w.shape, generator=rng), device) * noise_strength
        pred = common.degrade(degradation, gen(w_in, q=q))
        lp = lpips_module(pivot_size(pred, lpips_size), target_small).reshape(-1)
        loss = lp.sum()
        if optimize_noise and noise_reg_weight:
            loss = loss + noise_reg_weight * _noise_reg(buffers)
        common.record(history, loss=loss, lpips=lp.mean())  # read once at the end: no per-step host sync
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if optimize_noise:
            _normalize_noise(buffers)
    for b in buffers:
        b.requires_grad_(False)
    return gen.to_ws(w.detach()), common.read_history(history)


def invert(G, target, degradation=None, lpips_module=None, space='w', pivot_steps=450, tune_steps=350,
           pivot_lr=0.01, tune_lr=3e-4, lpips_stop=0.06, locality=False, optimize_noise=True,
           lpips_pivot=None, lpips_size=256, seed=0, progress=False, w_init=None, stop_every=1):
    """PTI on a batch of observations `target` `[N, C, h, w]` (one generator tuned for the batch).

    `w_init`: the pivot optimisation starts from this code (an encoder's W or W+ code of the
    observation; `inversion.methods.run` passes it from `encoder=`) instead of w_avg; with
    `pivot_steps=0` it is the pivot (pSp + PTI tuning). `stop_every`: the tuning reads the LPIPS for
    its early stop every k-th step (1, the reference: every step; see `common.tune_generator`).

    Returns `common.InversionResult`.
    """
    common.check_batch(target, degradation)
    lpips_module = common.safe_lpips(lpips_module)
    lpips_pivot = common.safe_lpips(lpips_pivot) or lpips_module
    ws, h_pivot = invert_pivot(G, target, degradation, lpips_pivot, space=space, steps=pivot_steps, lr=pivot_lr,
                               optimize_noise=optimize_noise, seed=seed, progress=progress, lpips_size=lpips_size,
                               w_init=w_init)
    G_t, h_tune = common.tune_generator(G, ws, target, degradation, lpips_module, steps=tune_steps, lr=tune_lr,
                                        lpips_stop=lpips_stop, locality=locality, seed=seed, progress=progress,
                                        stop_every=stop_every)
    gen = common.LatentGenerator(G)
    with torch.no_grad():
        final, _ = common.mse_lpips(lpips_module, common.degrade(degradation, gen(ws, G=G_t)), target)
    return common.finish(gen, ws, G=G_t, history=dict(pivot=h_pivot, tune=h_tune), loss=final.detach())
