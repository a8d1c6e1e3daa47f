"""CRI: clustering & regularised inversion (Wang et al., AAAI'23), then PTI tuning.

1. Sample M latents w = mapping(z) (first row), KMeans (scikit-learn) into `num_clusters` (10) clusters.
2. Algorithm 1's centroid choice: render every centroid, I_cen = G.synthesis(w_cen) (not degraded,
   as in the pseudocode), and pick the centroid whose VGG features are nearest (L2 distance) to
   the VGG features of the degraded input I_d. The pseudocode's `argmax` is a typo for the text's
   "nearest": argmin.
3. Stage 1: freeze w_cen, optimise a zero-initialised W+ offset with Adam:
   LPIPS + lambda1 * MSE (through f^) + lambda2 * ||w_off||_2 (per sample L2 norm).
4. Stage 2: PTI tuning of G around the pivot w_cen + w_off (with PTI's locality regulariser,
   as in the paper's eq. 7).

Choices the paper leaves open (this project's):
- M = 2000 samples, KMeans with 3 initialisations (scikit-learn, seeded).
- Feature space: VGG16 (ImageNet weights; the backbone of LPIPS-VGG, `vgg.features`) at relu4_3,
  the raw feature map (no LPIPS normalisation or weighting); distance = the Euclidean norm of
  the difference of the whole feature maps.
- Sizes: I_d is bilinearly upsampled to the generator's resolution when smaller (SR), then both
  images are brought to `feature_size` = the resolution clamped to [32, 256] px (area down,
  bilinear up; 256 px like PTI's VGG; at 32 px relu4_3 still has a 4x4 map).
- The holes of an inpainting input stay as observed (black), as in the pseudocode.
- lambda1 = 1, lambda2 = 0.01, Adam lr 0.01; 500 + 20 steps (the paper's FFHQ setting).
"""

import numpy as np
import torch
import torch.nn.functional as F
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


def _feature_images(x, size):
    if x.shape[-2:] == (size, size):
        return x
    mode = 'area' if x.shape[-1] > size else 'bilinear'
    return F.interpolate(x, size=(size, size), mode=mode, **({} if mode == 'area' else dict(align_corners=False)))


@torch.no_grad()
def centroid_distances(G, centroids, target, vgg, layer=3, batch=16):
    """L2 distances `[N, K]` between the VGG features (tap `layer`, 3 = relu4_3) of the rendered
    centroids and of the observations (see the module docstring for the sizes)."""
    vgg = getattr(vgg, 'inner', vgg)  # a common.MinSizeLPIPS wrapper
    if not hasattr(vgg, 'features'):
        raise ValueError("CRI's centroid choice needs a feature network with .features(x), e.g. "
                         "metrics.restoration.LPIPS(net='vgg')")
    gen = common.LatentGenerator(G)
    res = G.synthesis.img_resolution
    size = int(min(max(res, 32), 256))
    t = target if target.shape[-2:] == (res, res) else F.interpolate(target, size=(res, res), mode='bilinear',
                                                                       align_corners=False)
    t_feat = vgg.features(_feature_images(t, size))[layer].flatten(1)
    c_feat = torch.cat([vgg.features(_feature_images(gen(centroids[i:i + batch]), size))[layer].flatten(1)
                        for i in range(0, centroids.shape[0], batch)])
    return torch.cdist(t_feat.double(), c_feat.double()).float()


def select_centroids(G, centroids, target, vgg, layer=3):
    """-> (index `[N]` of the nearest centroid per observation, distances `[N, K]`)."""
    dist = centroid_distances(G, centroids, target, vgg, layer=layer)
    return dist.argmin(dim=1), dist


def invert(G, target, degradation=None, lpips_module=None, vgg=None, num_samples=2000, num_clusters=10, offset_steps=500,
           offset_lr=0.01, mse_weight=1.0, offset_weight=0.01, tune_steps=20, tune_lr=3e-4, lpips_stop=0.06,
           locality=True, centroids=None, seed=0, progress=False):
    """CRI on a batch `target` `[N, C, h, w]` -> `common.InversionResult` (with `centroid_index`).

    `vgg`: the feature network of the centroid choice (`metrics.restoration.LPIPS(net='vgg')`);
    None uses `lpips_module`'s backbone (with a warning unless it is a VGG one).
    """
    common.check_batch(target, degradation)
    lpips_module = common.safe_lpips(lpips_module)
    common.requires_grad(G, False)
    gen = common.LatentGenerator(G)
    if centroids is None:
        centroids = cluster_latents(G, num_samples, num_clusters, seed=seed)
    if vgg is None:
        vgg = lpips_module
        if getattr(getattr(vgg, 'inner', vgg), 'net', None) != 'vgg':
            common.warn('CRI: no VGG network given; the centroid is chosen with the LPIPS backbone\'s features')
    index, dist = select_centroids(G, centroids, target, vgg)
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
