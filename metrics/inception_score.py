"""Inception Score (Salimans et al. 2016), as computed by stylegan2-ada-pytorch.

IS = exp(E_x KL(p(y|x) || p(y))) per split of the generated images, with the softmax of the
NVlabs Inception network evaluated without its output bias; returns the mean and std over splits.
"""

import numpy as np

from . import metric_utils

#----------------------------------------------------------------------------

def inception_score_from_probs(probs, num_splits=10):
    """(mean, std) of the Inception Score over `num_splits` consecutive splits of `probs [n, classes]`."""
    probs = np.asarray(probs, dtype=np.float64)
    n = probs.shape[0]
    if n < num_splits:
        raise ValueError(f'the Inception Score needs at least {num_splits} samples for {num_splits} splits, got {n}')
    scores = []
    for i in range(num_splits):
        part = probs[i * n // num_splits:(i + 1) * n // num_splits]
        marginal = part.mean(axis=0, keepdims=True)
        with np.errstate(divide='ignore', invalid='ignore'):
            kl = part * (np.log(part) - np.log(marginal))
        kl = np.nan_to_num(kl)  # 0 * log(0) = 0
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))

#----------------------------------------------------------------------------

def compute_is(opts, num_gen, num_splits):
    """(mean, std) of the IS of `num_gen` generated images (NaN, NaN off rank 0)."""
    detector_url = metric_utils.INCEPTION_URL
    detector_kwargs = dict(no_output_bias=True)  # softmax of the logits without the output bias

    probs = metric_utils.compute_feature_stats_for_generator(
        opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs,
        capture_all=True, max_items=num_gen).get_all()

    if opts.rank != 0:
        return float('nan'), float('nan')
    return inception_score_from_probs(probs, num_splits=num_splits)
