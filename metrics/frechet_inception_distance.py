"""Frechet Inception Distance (Heusel et al. 2017), as computed by stylegan2-ada-pytorch.

FID = |mu_g - mu_r|^2 + Tr(S_g + S_r - 2 sqrtm(S_g S_r)), real part, on the 2048-d pool
features of the NVlabs Inception network; the covariances are the biased (1/N) estimates.
"""

import warnings

import numpy as np
import scipy.linalg

from . import metric_utils

#----------------------------------------------------------------------------

def frechet_distance(mu1, sigma1, mu2, sigma2):
    """Frechet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2) (float).

    `scipy.linalg.sqrtm` of the product gives the trace term; its (numerically) imaginary part
    is dropped. If the product is too ill-conditioned for a finite root, a tiny multiple of the
    identity is added to both covariances (as pytorch-fid does).
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f'mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}')
    diff = np.square(mu1 - mu2).sum()
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.all(np.isfinite(covmean)):
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    fid = diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)
    return float(np.real(fid))


def _sqrtm(matrix):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # LinAlgWarning for singular products (few samples)
        root = scipy.linalg.sqrtm(matrix)
    return np.real(root)

#----------------------------------------------------------------------------

def compute_fid(opts, max_real, num_gen, detector_url=None):
    """FID between up to `max_real` real images (None = all) and `num_gen` generated ones.
    Returns NaN on ranks other than 0. `detector_url`: another feature detector (default Inception)."""
    detector_url = detector_url or metric_utils.INCEPTION_URL
    detector_kwargs = dict(return_features=True)  # pool3 features of the NVlabs network

    real = metric_utils.compute_feature_stats_for_dataset(
        opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs,
        rel_lo=0, rel_hi=0, capture_mean_cov=True, max_items=max_real)
    metric_utils.check_num_items(opts, real.num_items, 2, 'FID')
    mu_real, sigma_real = real.get_mean_cov()

    mu_gen, sigma_gen = metric_utils.compute_feature_stats_for_generator(
        opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs,
        rel_lo=0, rel_hi=1, capture_mean_cov=True, max_items=num_gen).get_mean_cov()

    if opts.rank != 0:
        return float('nan')
    return frechet_distance(mu_gen, sigma_gen, mu_real, sigma_real)
