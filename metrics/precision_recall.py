"""Improved Precision and Recall (Kynkaanniemi et al. 2019), as computed by stylegan2-ada-pytorch.

Each feature set defines a manifold: the union of balls around its points whose radius is the
distance to the k-th nearest neighbour (self excluded). Precision is the fraction of generated
samples inside the real manifold; recall the fraction of real samples inside the generated one.
Features are the 4096-d fc features of the NVlabs VGG16, held in float16 on CUDA (float32 on CPU,
where half-precision `cdist` is unavailable). Distance blocks are split over the processes.
"""

import torch

from . import metric_utils

#----------------------------------------------------------------------------

def compute_distances(row_features, col_features, num_gpus=1, rank=0, col_batch_size=10000):
    """Pairwise distances `[rows, cols]`; every process computes a share of the column blocks.
    Returns the full matrix on rank 0 (on CPU) and None elsewhere."""
    assert 0 <= rank < num_gpus
    num_cols = col_features.shape[0]
    num_batches = ((num_cols - 1) // col_batch_size // num_gpus + 1) * num_gpus
    padded = torch.nn.functional.pad(col_features, [0, 0, 0, -num_cols % num_batches])
    col_batches = padded.chunk(num_batches)  # equal pieces: the padded length is a multiple of num_batches
    assert len(col_batches) == num_batches
    blocks = []
    for col_batch in col_batches[rank::num_gpus]:
        block = torch.cdist(row_features.unsqueeze(0), col_batch.unsqueeze(0))[0]
        for src in range(num_gpus):
            shared = block.clone()
            if num_gpus > 1:
                torch.distributed.broadcast(shared, src=src)
            if rank == 0:
                blocks.append(shared.cpu())
    return torch.cat(blocks, dim=1)[:, :num_cols] if rank == 0 else None


def precision_recall_from_features(real_features, gen_features, nhood_size=3, row_batch_size=10000,
                                   col_batch_size=10000, num_gpus=1, rank=0):
    """(precision, recall) of two feature tensors `[n, d]` (float; NaN off rank 0)."""
    for what, feats in [('real', real_features), ('generated', gen_features)]:
        if feats.shape[0] < nhood_size + 1:
            raise ValueError(f'precision/recall with k={nhood_size} needs at least {nhood_size + 1} {what} samples, '
                             f'got {feats.shape[0]}')
    results = dict()
    for name, manifold, probes in [('precision', real_features, gen_features), ('recall', gen_features, real_features)]:
        kth = []
        for manifold_batch in manifold.split(row_batch_size):
            dist = compute_distances(manifold_batch, manifold, num_gpus=num_gpus, rank=rank, col_batch_size=col_batch_size)
            if rank == 0:
                kth.append(dist.to(torch.float32).kthvalue(nhood_size + 1).values.to(manifold.dtype))
        kth = torch.cat(kth) if rank == 0 else None
        inside = []
        for probes_batch in probes.split(row_batch_size):
            dist = compute_distances(probes_batch, manifold, num_gpus=num_gpus, rank=rank, col_batch_size=col_batch_size)
            if rank == 0:
                inside.append((dist <= kth.unsqueeze(0)).any(dim=1))
        results[name] = float(torch.cat(inside).to(torch.float32).mean()) if rank == 0 else float('nan')
    return results['precision'], results['recall']

#----------------------------------------------------------------------------

def compute_pr(opts, max_real, num_gen, nhood_size, row_batch_size, col_batch_size):
    """Precision and recall of `num_gen` generated vs up to `max_real` real images (NaN off rank 0)."""
    detector_url = metric_utils.VGG16_URL
    detector_kwargs = dict(return_features=True)
    dtype = torch.float16 if opts.device.type == 'cuda' else torch.float32

    real_features = metric_utils.compute_feature_stats_for_dataset(
        opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs,
        rel_lo=0, rel_hi=0, capture_all=True, max_items=max_real).get_all_torch()
    metric_utils.check_num_items(opts, real_features.shape[0], nhood_size + 1, f'Precision/recall (k={nhood_size})')
    real_features = real_features.to(dtype).to(opts.device)

    gen_features = metric_utils.compute_feature_stats_for_generator(
        opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs,
        rel_lo=0, rel_hi=1, capture_all=True, max_items=num_gen).get_all_torch().to(dtype).to(opts.device)

    return precision_recall_from_features(real_features, gen_features, nhood_size=nhood_size,
                                          row_batch_size=row_batch_size, col_batch_size=col_batch_size,
                                          num_gpus=opts.num_gpus, rank=opts.rank)
