"""Kernel Inception Distance (Binkowski et al. 2018), as computed by stylegan2-ada-pytorch.

The unbiased MMD^2 estimate with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged
over `num_subsets` random subsets of m = min(n_real, n_gen, max_subset_size) items each.
"""

import numpy as np

from . import metric_utils

#----------------------------------------------------------------------------

def kid_from_features(gen_features, real_features, num_subsets=100, max_subset_size=1000, rng=np.random):
    """KID between two feature sets `[n, d]` (float). Subsets are drawn with `rng.choice`."""
    gen_features = np.asarray(gen_features, dtype=np.float64)
    real_features = np.asarray(real_features, dtype=np.float64)
    d = real_features.shape[1]
    if gen_features.shape[1] != d:
        raise ValueError(f'feature sizes differ: {gen_features.shape[1]} vs {d}')
    m = min(real_features.shape[0], gen_features.shape[0], max_subset_size)
    if m < 2:
        raise ValueError(f'KID needs at least 2 real and 2 generated samples (got {real_features.shape[0]} and '
                         f'{gen_features.shape[0]})')
    total = 0.0
    for _ in range(num_subsets):
        x = gen_features[rng.choice(gen_features.shape[0], m, replace=False)]
        y = real_features[rng.choice(real_features.shape[0], m, replace=False)]
        k_xx_yy = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
        k_xy = (x @ y.T / d + 1) ** 3
        total += (k_xx_yy.sum() - np.trace(k_xx_yy)) / (m - 1) - k_xy.sum() * 2 / m
    return float(total / num_subsets / m)

#----------------------------------------------------------------------------

def compute_kid(opts, max_real, num_gen, num_subsets, max_subset_size, detector_url=None):
    """KID between up to `max_real` real images and `num_gen` generated ones (NaN off rank 0).
    `detector_url`: another feature detector (default Inception)."""
    detector_url = detector_url or metric_utils.INCEPTION_URL
    detector_kwargs = dict(return_features=True)

    real_features = metric_utils.compute_feature_stats_for_dataset(
        opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs,
        rel_lo=0, rel_hi=0, capture_all=True, max_items=max_real).get_all()
    metric_utils.check_num_items(opts, real_features.shape[0], 2, 'KID')

    gen_features = metric_utils.compute_feature_stats_for_generator(
        opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs,
        rel_lo=0, rel_hi=1, capture_all=True, max_items=num_gen).get_all()

    if opts.rank != 0:
        return float('nan')
    return kid_from_features(gen_features, real_features, num_subsets=num_subsets, max_subset_size=max_subset_size)
