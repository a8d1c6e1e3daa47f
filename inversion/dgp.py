"""DGP: deep generative prior (Pan et al., ECCV'20), ported to StyleGAN2 by this project
(the paper uses BigGAN; the StyleGAN2 settings below are ours).

* Observations: as DGP, the loss compares images at full size. A low-resolution observation and
  the prediction f^(G) are both upsampled bilinearly to the generator's resolution before D and
  before the MSE. For inpainting the holes are 0 on [-1, 1] images (mid gray), as DGP sets them.
* Latent: W+, initialised by best-of-n: `num_candidates` (500) mapped samples (truncation
  `init_truncation`) scored by the L1 distance of the last 3 discriminator features between the
  degraded candidate and the observation; D runs on batches of `batch` candidates, with a
  progress bar.
* Loss per stage s: w_D[s] * sum over the last `ftr_num` D features of L1 + w_mse[s] * MSE
  + `nll_weight` (0.02, DGP's scripts) * latent NLL. DGP's NLL is mean(z^2 / 2) on its Gaussian
  z; a W+ latent is not standard normal, so the port whitens it with PTI's W statistics
  (`common.estimate_w_stats`): mean(((w - w_avg) / sigma)^2 / 2), sigma = w_std / sqrt(w_dim)
  the per-coordinate spread (inferred: DGP's StyleGAN settings are in its supplement).
* D features: the outputs of the discriminator blocks b{R} ... b8 and the epilogue's `fc` output
  (forward hooks), shallow to deep. The minibatch-std group size is set to 1 while D runs, so
  a batch gives exactly the features of its images run one at a time (images never mix).
* Progressive reconstruction: G parameter groups [mapping + first block], then one group per
  synthesis block (a ToRGB with its block), except the last block's ToRGB, the output layer,
  which stays frozen as DGP never optimises its output layer. At stage s the first ft_num[s]
  groups train (Adam, betas (0, 0.999)), deeper ones are frozen (lr 0). Defaults: 5 stages x 200
  steps, the 'SR x4 MSE-biased' schedule of the reference (w_D 1,1,1,.5,.1; w_mse 10,10,10,50,100;
  G lr 2e-4,2e-4,1e-4,1e-4,1e-5), the latent lrs x10 of DGP's z lrs (W latents have a larger
  scale, inferred) and ft_num spread linearly from 2 groups to all.
"""

import copy

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import common

DEFAULTS = dict(stage_steps=(200,) * 5, w_d=(1, 1, 1, 0.5, 0.1), w_mse=(10, 10, 10, 50, 100),
                g_lrs=(2e-4, 2e-4, 1e-4, 1e-4, 1e-5), latent_lrs=(1e-2, 1e-2, 1e-3, 1e-3, 1e-4),
                ftr_num=8, num_candidates=500, init_truncation=0.7, select_ftr_num=3)


def discriminator_features(D, images, c=None):
    """D features (shallow to deep) of `[N, C, R, R]` images; every list entry is `[N, ...]`.
    One D call for the batch, with the minibatch-std group size at 1: every image is its own group,
    exactly as if it ran alone."""
    names = [f'b{res}' for res in D.block_resolutions]
    feats = []
    hooks = [getattr(D, n).register_forward_hook(lambda _m, _i, out: feats.append(out[0])) for n in names]
    hooks.append(D.b4.fc.register_forward_hook(lambda _m, _i, out: feats.append(out)))
    mbstd = getattr(D.b4, 'mbstd', None)
    group_size = mbstd.group_size if mbstd is not None else None
    try:
        if mbstd is not None:
            mbstd.group_size = 1
        c = torch.zeros([images.shape[0], D.c_dim], device=images.device) if c is None else c
        D(images, c)
    finally:
        for h in hooks:
            h.remove()
        if mbstd is not None:
            mbstd.group_size = group_size
    return feats


def feature_loss(fake, real, ftr_num):
    """Per-sample sum over the last `ftr_num` features of the mean L1 distance `[N]`."""
    pairs = list(zip(fake, real))[-int(ftr_num):]
    return sum((a - b).abs().flatten(1).mean(1) for a, b in pairs)


def generator_groups(G):
    """Parameter groups shallow to deep: [mapping + first block], then one per block. The last
    block's ToRGB (the output layer) is in no group: it stays frozen, as DGP's output layer."""
    res = G.synthesis.block_resolutions
    last = getattr(G.synthesis, f'b{res[-1]}')
    frozen = {id(p) for p in last.torgb.parameters()} if hasattr(last, 'torgb') else set()
    groups = [list(G.mapping.parameters()) + list(getattr(G.synthesis, f'b{res[0]}').parameters())]
    groups += [list(getattr(G.synthesis, f'b{r}').parameters()) for r in res[1:]]
    return [[p for p in g if id(p) not in frozen] for g in groups]


def to_full(y, size, mask=None):
    """An observation (or f^(prediction)) as DGP compares it: holes set to 0 (with the operator's
    mask, 1 = observed; our inpainting leaves -1 there) and bilinearly upsampled to `size`."""
    if mask is not None:
        y = y + (1 - mask)  # (x + 1) * m - 1 + (1 - m) = x * m: holes 0, observed pixels unchanged
    if y.shape[-2:] != (size, size):
        y = F.interpolate(y, size=(size, size), mode='bilinear', align_corners=False)
    return y


@torch.no_grad()
def select_initial_latent(G, D, target, degradation, num_candidates=500, truncation=0.7, ftr_num=3, seed=0, batch=50,
                          progress=False):
    """Best-of-n W latent per target `[N, w_dim]` (and the candidate scores `[N, n]`)."""
    gen = common.LatentGenerator(G)
    size = G.synthesis.img_resolution
    mask = common.observation_mask(degradation, target)
    cand = common.sample_ws(G, num_candidates, seed=seed, truncation_psi=truncation)
    real = discriminator_features(D, to_full(target, size, mask))
    scores = []
    for i in tqdm(range(0, cand.shape[0], batch), desc='DGP candidates', disable=not progress, leave=False):
        chunk = cand[i:i + batch]
        m = None if mask is None else mask[:1].expand(chunk.shape[0], -1, -1, -1)
        fake = discriminator_features(D, to_full(common.degrade(degradation, gen(chunk)), size, m))
        scores.append(torch.stack([feature_loss(fake, [r[n:n + 1].expand_as(f) for r, f in zip(real, fake)], ftr_num)
                                   for n in range(target.shape[0])]))
    scores = torch.cat(scores, dim=1)
    return cand[scores.argmin(dim=1)], scores


def latent_nll(ws, w_avg, sigma):
    """DGP's prior term for W+ latents: per-sample mean of ((w - w_avg) / sigma)^2 / 2 `[N]`."""
    return ((ws - w_avg) / sigma).square().flatten(1).mean(1) / 2


def invert(G, target, degradation=None, lpips_module=None, D=None, stage_steps=(200,) * 5, w_d=(1, 1, 1, 0.5, 0.1),
           w_mse=(10, 10, 10, 50, 100), g_lrs=(2e-4, 2e-4, 1e-4, 1e-4, 1e-5), latent_lrs=(1e-2, 1e-2, 1e-3, 1e-3, 1e-4),
           ft_nums=None, ftr_num=8, num_candidates=500, init_truncation=0.7, select_ftr_num=3, nll_weight=0.02,
           batch=50, q=None, seed=0, progress=False):
    """DGP on a batch `target` `[N, C, h, w]` (one tuned generator for the batch).

    Needs the discriminator `D`; without it the feature terms are dropped (MSE only, a warning).
    """
    common.check_batch(target, degradation)
    if isinstance(stage_steps, int):
        stage_steps = (stage_steps,) * 5
    S = len(stage_steps)
    if not (len(w_d) == len(w_mse) == len(g_lrs) == len(latent_lrs) == S):
        raise ValueError('DGP: stage_steps, w_d, w_mse, g_lrs and latent_lrs need one entry per stage')
    size = G.synthesis.img_resolution
    common.requires_grad(G, False)
    if D is None:
        common.warn('DGP without a discriminator: using the MSE term only')
        w0 = G.mapping.w_avg.detach().reshape(1, -1).repeat(target.shape[0], 1).to(target.device)
        h_init = None
    else:
        D = copy.deepcopy(D).eval()
        common.requires_grad(D, False)
        w0, scores = select_initial_latent(G, D, target, degradation, num_candidates, init_truncation,
                                           select_ftr_num, seed=seed, batch=batch, progress=progress)
        h_init = dict(best_score=[float(v) for v in scores.min(dim=1).values])
    G_t = copy.deepcopy(G).eval()
    common.requires_grad(G_t, False)
    groups = generator_groups(G_t)  # everything but the output ToRGB trains
    for g in groups:
        for p in g:
            p.requires_grad_(True)
    n_groups = len(groups)
    if ft_nums is None:
        ft_nums = [int(round(v)) for v in np.linspace(min(2, n_groups), n_groups, S)]
    gen = common.LatentGenerator(G_t)
    ws = gen.to_ws(w0.to(target.device)).clone().requires_grad_(True)
    opt_g = torch.optim.Adam([dict(params=g, lr=0.0) for g in groups], betas=(0.0, 0.999), eps=1e-8)
    opt_w = torch.optim.Adam([ws], lr=latent_lrs[0], betas=(0.0, 0.999), eps=1e-8)
    mask = common.observation_mask(degradation, target)
    target_full = to_full(target, size, mask)
    real = None if D is None else [r.detach() for r in discriminator_features(D, target_full)]
    w_avg, w_std = common.estimate_w_stats(G)
    w_avg, sigma = w_avg.to(target.device), w_std / np.sqrt(G.w_dim)
    history = dict(loss=[], mse=[], ftr=[], nll=[], stage=[])
    if h_init:
        history['init'] = h_init
    for s in range(S):
        for i, group in enumerate(opt_g.param_groups):
            group['lr'] = g_lrs[s] if i < ft_nums[s] else 0.0
        for group in opt_w.param_groups:
            group['lr'] = latent_lrs[s]
        for _ in tqdm(range(int(stage_steps[s])), desc=f'DGP stage {s + 1}/{S}', disable=not progress, leave=False):
            pred = to_full(common.degrade(degradation, gen(ws, q=q)), size, mask)
            mse = (pred - target_full).square().flatten(1).mean(1)
            loss = w_mse[s] * mse
            if D is not None and w_d[s]:
                ftr = feature_loss(discriminator_features(D, pred), real, ftr_num)
                loss = loss + w_d[s] * ftr
                common.record(history, ftr=ftr.mean())
            if nll_weight:
                nll = latent_nll(ws, w_avg, sigma)
                loss = loss + nll_weight * nll
                common.record(history, nll=nll.mean())
            common.record(history, loss=loss.mean(), mse=mse.mean())  # read once at the end: no per-step host sync
            history['stage'].append(s)
            opt_g.zero_grad(set_to_none=True)
            opt_w.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt_g.step()
            opt_w.step()
    common.requires_grad(G_t, False)
    ws = ws.detach()
    with torch.no_grad():
        final = (to_full(common.degrade(degradation, gen(ws, q=q)), size, mask) - target_full).square().flatten(1).mean(1)
    return common.finish(common.LatentGenerator(G), ws, q=q, G=G_t, history=common.read_history(history), loss=final,
                         ft_nums=ft_nums)
