"""Editing of inverted images: latent directions, SeFa, and QC degradation transfer.

* `load_direction(path, w_dim)`: a `.npy` direction `[w_dim]`, `[1, w_dim]` or `[num_ws, w_dim]`
  (e.g. an InterFaceGAN boundary), normalised to unit norm.
* `apply_direction(ws, direction, strength)`: ws + strength * direction (W, W+ or W++; a
  per-row direction is added along the rows, broadcast over W++'s K codes per row).
* `sefa_directions(G, k)`: SeFa closed-form directions = the top-k eigenvectors of A^T A, A the
  stacked (row-normalised) weights of every style affine of the synthesis network.
* `interpolate_q(q_a, q_b, steps)`: linear interpolation of quality codes (QC networks).
"""

import numpy as np
import torch

from . import common


def load_direction(path, w_dim, num_ws=None):
    d = np.load(path)
    d = np.asarray(d, dtype=np.float32)
    if d.ndim == 2 and d.shape[0] == 1:
        d = d[0]
    if d.shape[-1] != w_dim or d.ndim > 2 or (d.ndim == 2 and num_ws is not None and d.shape[0] != num_ws):
        raise ValueError(f'direction {path} has shape {list(d.shape)}; expected [{w_dim}], [1, {w_dim}] or '
                         f'[{num_ws or "num_ws"}, {w_dim}]')
    norm = float(np.linalg.norm(d))
    if norm == 0:
        raise ValueError(f'direction {path} is all zeros')
    return torch.from_numpy(d / norm)


def apply_direction(ws, direction, strength):
    """Latents moved by strength * direction, row by row.

    ws: W `[N, w_dim]`, W+ `[N, num_ws, w_dim]` or W++ `[N, num_ws, K, w_dim]` (NGD's filter-wise
    codes); direction: `[w_dim]` (every row) or `[num_ws, w_dim]` (one per row; for W++ the row's
    vector is added to all K codes of that row).
    """
    d = direction.to(ws.device, ws.dtype)
    if d.ndim == 2:
        if ws.ndim < 3 or d.shape[0] != ws.shape[1]:
            raise ValueError(f'a per-row direction {list(d.shape)} needs W+ or W++ latents with {d.shape[0]} rows, '
                             f'got {list(ws.shape)}')
        d = d.reshape(1, d.shape[0], *([1] * (ws.ndim - 3)), d.shape[1])
    return ws + float(strength) * d


@torch.no_grad()
def sefa_directions(G, k=5):
    """Top-k SeFa directions `[k, w_dim]` (unit norm) and their eigenvalues `[k]`."""
    weights = [m.weight.detach().float() * m.weight_gain for _, m in common.affine_layers(G)]
    A = torch.cat(weights, dim=0)
    A = A / A.norm(dim=1, keepdim=True).clamp_min(1e-8)
    values, vectors = torch.linalg.eigh(A.T @ A)
    order = torch.argsort(values, descending=True)[:int(k)]
    return vectors[:, order].T.contiguous(), values[order]


def interpolate_q(q_a, q_b, steps=5):
    """`steps` codes from q_a to q_b (inclusive) `[steps, N, q_dim]`."""
    t = torch.linspace(0, 1, int(steps), device=q_a.device).reshape(-1, 1, 1)
    return q_a[None] * (1 - t) + q_b[None] * t


@torch.no_grad()
def render_edits(G, ws, strengths, direction, q=None):
    """Sharp (and, with q, degraded) renders `[S, N, C, R, R]` for each strength."""
    gen = common.LatentGenerator(G)
    sharp, degraded = [], []
    for s in strengths:
        e = apply_direction(ws, direction, s)
        sharp.append(gen(e))
        if q is not None:
            degraded.append(gen(e, q=q))
    return torch.stack(sharp), (torch.stack(degraded) if q is not None else None)
