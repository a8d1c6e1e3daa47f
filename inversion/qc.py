"""QC-StyleGAN restoration (stage 2 of the QC-StyleGAN paper's inversion, section 3.4): (w, q) from a pSp encoder, or found by
optimisation, then PTI-style tuning with the residual-statistics loss so that the degradation
stays in q. The restored image is G(w, 0), the re-degraded one G(w, q).

* With an encoder (`training.encoders.load_encoder(path, G=G)`): (w, q) = encoder.encode(y);
  `refine_steps` (default 0, as upstream) optionally refines both.
* Without: w starts at w_avg (W space), q at ~0 (N(0, 0.01^2): the DegradBlock's ReLU has a
  zero gradient at exactly q = 0), and both are optimised (`refine_steps`, default
  300) with Adam (w lr 0.01, q lr 0.03 = upstream's unused `q_inv_lr`) on MSE + LPIPS of
  f^(G(w, q)) vs y.
* Tuning: MSE + LPIPS + 1000 * StatsLoss, lr 3e-4, up to 500 steps, early stop at LPIPS <= 0.002,
  with PTI's locality regulariser on (`locality=True`: alpha 30, 0.1 * MSE + 0.1 * LPIPS, psi 0.5)
  as in the released `hyperparameters.py` (its `inversion.py` entry point switches it off, and its
  regulariser would call the synthesis without q; ours renders the sharp branch, q = 0).
* The paper found encoder-free optimisation fails for QC (its sharp images come out distorted),
  hence the encoder; `ENCODER_FREE_NOTE` says so and invert.py asks for an explicit flag.
The degradation operator f^ (default none) is applied on top of G(w, q), so e.g. an SR
observation is matched at its own size while q models the remaining degradation.
* `zero_q=True` (invert.py `--zero-q`; not in the paper, whose restoration is blind) keeps q = 0
  throughout: the encoder gives w only, the refinement moves w only, and the tuning fits
  f^(G(w, 0)) (the residual-statistics loss is then identically zero and skipped). Use it when f^
  models the whole degradation: the encoder sees the observation upsampled to the network's size and
  puts its blur into q, and f^(G(w, q)) then applies that degradation twice, which the tuning
  answers with an over-sharpened G(w, 0). Measured on the demo's sr:2 targets (README "Quick start"):
  held-out faces 22.6 -> 24.7 dB, generator-made 28.3 -> 32.2 dB.
"""

import torch
from tqdm import tqdm

from torch_utils import misc

from . import common

DEFAULTS = dict(refine_steps=300, w_lr=0.01, q_lr=0.03, tune_steps=500, tune_lr=3e-4, stats_weight=1000.0,
                lpips_stop=0.002, locality=True, zero_q=False)

ENCODER_FREE_NOTE = ('the QC-StyleGAN paper found that encoder-free optimisation (PTI stage 1 on degraded images) fails: '
                     'it fits the degraded input but picks embeddings whose sharp image G(w, 0) is distorted, which is '
                     'why it trains a pSp encoder for (w, q); pass --encoder ENC.pt (train_encoder.py)')


def check_qc(G):
    if not misc.is_qc(G):
        raise ValueError('the QC method needs a QC-StyleGAN generator (q_dim > 0); this network is a plain '
                         'StyleGAN2 one: use --method pti|cri|ngd|dgp')


def encode(encoder, target, size):
    """(w `[N, w_dim]` or `[N, num_ws, w_dim]`, q `[N, q_dim]`) from an encoder wrapper."""
    images = common.to_image_size(None, target, size)
    w, q = encoder.encode(images)
    return w.to(target.device), None if q is None else q.to(target.device)


def refine(G, target, degradation, lpips_module, w, q, steps=300, w_lr=0.01, q_lr=0.03, progress=False):
    """Jointly optimise (w, q) with Adam on MSE + LPIPS of f^(G(w, q)) vs target -> (w, q, history).
    q_lr = 0 keeps q fixed (only w moves)."""
    lpips_module = common.safe_lpips(lpips_module)
    gen = common.LatentGenerator(G)
    w = w.detach().clone().requires_grad_(True)
    q = q.detach().clone().requires_grad_(bool(q_lr))
    opt = torch.optim.Adam([dict(params=[w], lr=w_lr)] + ([dict(params=[q], lr=q_lr)] if q_lr else []))
    history = dict(loss=[], lpips=[])
    for _ in tqdm(range(int(steps)), desc='QC w,q', disable=not progress, leave=False):
        pred = common.degrade(degradation, gen(w, q=q))
        loss, lp = common.mse_lpips(lpips_module, pred, target)
        common.record(history, loss=loss.mean(), lpips=lp.mean())  # read once at the end: no per-step host sync
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
    return w.detach(), q.detach(), common.read_history(history)


def invert(G, target, degradation=None, lpips_module=None, encoder=None, refine_steps=None, w_lr=0.01, q_lr=0.03,
           tune_steps=500, tune_lr=3e-4, stats_weight=1000.0, lpips_stop=0.002, locality=True, w_init=None, q_init=None,
           q_init_std=0.01, seed=0, progress=False, stop_every=1, zero_q=False):
    """QC restoration of a batch `target` `[N, C, h, w]` -> `common.InversionResult` (q set; all zero
    with `zero_q`, see the module docstring).

    The refinement never reads a value during its loop; the tuning reads the LPIPS for its early
    stop every `stop_every`-th step (1, the reference: every step; see `common.tune_generator`)."""
    check_qc(G)
    common.check_batch(target, degradation)
    lpips_module = common.safe_lpips(lpips_module)
    common.requires_grad(G, False)
    gen = common.LatentGenerator(G)
    N, device = target.shape[0], target.device
    history = {}
    if encoder is not None:
        w, q = encode(encoder, target, G.synthesis.img_resolution)
        if q is None:
            raise ValueError('the encoder gives no q: it was trained for a plain StyleGAN2 generator')
        refine_steps = 0 if refine_steps is None else refine_steps
    else:
        w = G.mapping.w_avg.detach().to(device).reshape(1, -1).repeat(N, 1) if w_init is None else w_init.to(device)
        if q_init is None:  # ~0: the DegradBlock's ReLU has no gradient at exactly q = 0
            q_init = torch.randn([N, G.q_dim], generator=torch.Generator().manual_seed(int(seed))) * q_init_std
        q = q_init.to(device)
        refine_steps = DEFAULTS['refine_steps'] if refine_steps is None else refine_steps
    if zero_q:
        q, q_lr = torch.zeros_like(q), 0.0
    if refine_steps:
        w, q, history['refine'] = refine(G, target, degradation, lpips_module, w, q, refine_steps, w_lr, q_lr, progress)
    ws = gen.to_ws(w)
    G_t = G
    if tune_steps:  # with zero_q, q = None: the sharp branch, the same image as q = 0 without the zero residual's work
        G_t, history['tune'] = common.tune_generator(G, ws, target, degradation, lpips_module, q=None if zero_q else q,
                                                     steps=tune_steps, lr=tune_lr, lpips_stop=lpips_stop, stats_weight=stats_weight,
                                                     locality=locality, seed=seed, progress=progress,
                                                     stop_every=stop_every)
    with torch.no_grad():
        final, _ = common.mse_lpips(lpips_module, common.degrade(degradation, gen(ws, q=q, G=G_t)), target)
    return common.finish(gen, ws, q=q, G=G_t, history=history, loss=final)
