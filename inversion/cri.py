"""CRI: clustering & regularised inversion (Wang et al., AAAI'23), then PTI tuning.

1. Sample M latents w = mapping(z) (first row), KMeans (scikit-learn) into `num_clusters` clusters.
2. Render every centroid, degrade it with f^, and pick the centroid nearest the observation in a
   perceptual feature space (LPIPS distance; the paper's pseudocode `argmax` is a typo for argmin).
3. Stage 1: freeze w_cen, optimise a zero-initialised W+ offset with Adam:
   LPIPS + lambda1 * MSE (through f^) + lambda2 * ||w_off||_2 (per sample L2 norm).
4. Stage 2: PTI tuning of G around the pivot w_cen + w_off (with PTI's locality regulariser,
   as in the paper's eq. 7).
Defaults for FFHQ-style SG2: 500 + 20 steps (paper); M, lambda1, lambda2, lr are not in the paper
and are this project's choices (M 2000, lambda1 1, lambda2 0.01, Adam lr 0.01).
"""

import numpy as np
import torch
from tqdm import tqdm

from . import common

DEFAULTS = dict(num_samples=2000, num_clusters=10, offset_steps=500, offset_lr=0.01, mse_weight=1.0,
                offset_weight=0.01, tune_steps=20, tune_lr=3e-4, lpips_stop=0.06, locality=True)


def cluster_latents(G, num_samples=2000, num_clusters=10, seed=0):
    """KMeans centroids `[num_clusters, w_dim]` of `num_samples` mapped latents."""
    from sklearn.cluster import KMeans
    ws = common.sample_ws(G, num_samples, seed=seed)
    k = min(int(num_clusters), ws.shape[0])
    km = KMeans(n_clusters=k, n_init=3, random_state=int(seed)).fit(ws.cpu().double().numpy())
    return torch.from_numpy(km.cluster_centers_.astype(np.float32)).to(ws.device)


@torch.no_grad()
def select_centroids(G, centroids, target, degradation, lpips_module, batch=16):
    """-> (index `[N]` of the nearest centroid per target, distances `[N, K]`)."""
    lpips_module = common.safe_lpips(lpips_module)
    gen = common.LatentGenerator(G)
    images = torch.cat([common.degrade(degradation, gen(centroids[i:i + batch]))
                        for i in range(0, centroids.shape[0], batch)])
    dist = torch.stack([torch.stack([lpips_module(images[k:k + 1], target[n:n + 1]).reshape(())
                                     for k in range(images.shape[0])]) for n in range(target.shape[0])])
    return dist.argmin(dim=1), dist


def invert(G, target, degradation=None, lpips_module=None, num_samples=2000, num_clusters=10, offset_steps=500,
           offset_lr=0.01, mse_weight=1.0, offset_weight=0.01, tune_steps=20, tune_lr=3e-4, lpips_stop=0.06,
           locality=True, centroids=None, seed=0, progress=False):
    """CRI on a batch `target` `[N, C, h, w]` -> `common.InversionResult` (with `centroid_index`)."""
    common.check_batch(target, degradation)
    lpips_module = common.safe_lpips(lpips_module)
    common.requires_grad(G, False)
    gen = common.LatentGenerator(G)
    if centroids is None:
        centroids = cluster_latents(G, num_samples, num_clusters, seed=seed)
    index, dist = select_centroids(G, centroids, target, degradation, lpips_module)
    w_start = gen.to_ws(centroids[index]).detach()
    offset = torch.zeros_like(w_start, requires_grad=True)
    opt = torch.optim.Adam([offset], lr=offset_lr)
    h_off = dict(loss=[], lpips=[])
    for _ in tqdm(range(int(offset_steps)), desc='CRI offset', disable=not progress, leave=False):
        pred = common.degrade(degradation, gen(w_start + offset))
        rec, lp = common.mse_lpips(lpips_module, pred, target, mse_weight=mse_weight)
        loss = rec + offset_weight * offset.flatten(1).norm(dim=1)
        h_off['loss'].append(float(loss.detach().mean()))
        h_off['lpips'].append(float(lp.detach().mean()))
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
    ws = (w_start + offset).detach()
    G_t, h_tune = common.tune_generator(G, ws, target, degradation, lpips_module, steps=tune_steps, lr=tune_lr,
                                        lpips_stop=lpips_stop, locality=locality, seed=seed, progress=progress)
    with torch.no_grad():
        final, _ = common.mse_lpips(lpips_module, common.degrade(degradation, gen(ws, G=G_t)), target)
    return common.finish(gen, ws, G=G_t, history=dict(offset=h_off, tune=h_tune), loss=final,
                         centroid_index=index, centroid_distances=dist, centroids=centroids)
