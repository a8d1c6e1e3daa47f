"""Robust unsupervised restoration (Poirier-Ginter & Lalonde, CVPR'23): W -> W+ -> W++ with
normalised gradient descent and the multiscale LPIPS + L1 loss, one hyperparameter set for all
tasks (150 steps per phase at lr 0.08 / 0.02 / 0.005, times `lr_scale`).

Loss (`losses.MultiscaleLPIPSL1`, as the released code): LPIPS-VGG at every average-pooling level whose
side is above 16 px, plus 0.1 * L1 on [0, 1] images (0.05 on our [-1, 1] images) once at the
coarsest level; for inpainting, fresh N(0, 1) noise is added to both sides in the holes before
every LPIPS call. No regulariser.

W++ is the paper's filter-wise space: one w code per output filter of every layer
(`[N, num_ws, K, w_dim]`), initialised by repeating each W+ row; the synthesis network renders it
natively (one style vector per filter, then the usual demodulation). NGD normalises each code.
"""

import torch
from tqdm import tqdm

from . import common

DEFAULTS = dict(steps=(150, 150, 150), lrs=(0.08, 0.02, 0.005), lr_scale=1.0)
PHASES = ('w', 'w+', 'w++')


class NGD(torch.optim.Optimizer):
    """Normalised gradient descent: theta -= lr * g / ||g||, the norm taken over the last dim of
    each parameter separately (one normalisation per latent code); zero gradients give no step.
    No momentum, no weight decay, no schedule."""

    def __init__(self, params, lr):
        if lr <= 0:
            raise ValueError(f'NGD learning rate must be positive, got {lr}')
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group['params']:
                if p.grad is None:
                    continue
                g = p.grad
                norm = g.norm(dim=-1, keepdim=True)
                update = torch.nan_to_num(g / norm, nan=0.0, posinf=0.0, neginf=0.0)
                p.sub_(update, alpha=group['lr'])
        return loss


def _loss_fn(lpips_module):
    from .losses import MultiscaleLPIPSL1
    return MultiscaleLPIPSL1(lpips_module, l1_weight=0.05)  # the reference's 0.1 on [0, 1] images


def invert(G, target, degradation=None, lpips_module=None, steps=(150, 150, 150), lrs=(0.08, 0.02, 0.005),
           lr_scale=1.0, q=None, progress=False, loss_fn=None, w_init=None):
    """Three-phase NGD on a batch `target` `[N, C, h, w]`; G stays frozen.

    `steps` / `lrs`: per phase (W, W+, W++); an int `steps` applies to every phase. For QC
    generators the sharp branch is used unless a fixed `q` is given.
    `w_init`: start from an encoder's code of the observation instead of w_avg (`inversion.methods.run`
    passes it from `encoder=`): phase W starts from the W code (a W+ code: the mean of its rows);
    phase W+ starts from a W+ code shifted by what phase W moved its mean (exactly the code when
    phase W has 0 steps), or from phase W's result for a W code.
    """
    common.check_batch(target, degradation)
    if isinstance(steps, int):
        steps = (steps,) * 3
    if len(steps) != 3 or len(lrs) != 3:
        raise ValueError('NGD needs three step counts and three learning rates (W, W+, W++)')
    loss_fn = loss_fn or _loss_fn(common.safe_lpips(lpips_module))
    common.requires_grad(G, False)
    gen = common.LatentGenerator(G)
    N = target.shape[0]
    device = target.device
    mask = common.observation_mask(degradation, target)
    w = G.mapping.w_avg.detach().to(device).reshape(1, -1).repeat(N, 1)
    code = None
    if w_init is not None:
        code = common.initial_latent(w_init, 'w+' if torch.as_tensor(w_init).ndim == 3 else 'w', gen.num_ws, w.shape[1], device)
        if code.shape[0] != N:
            raise ValueError(f'w_init has {code.shape[0]} codes for {N} targets')
        w = common.initial_latent(code, 'w', gen.num_ws, w.shape[1], device)
    history = {}
    for phase, n_steps, lr in zip(PHASES, steps, lrs):
        if phase == 'w+':
            w = gen.to_ws(w.detach()) if code is None or code.ndim == 2 else code + (w.detach() - code.mean(dim=1)).unsqueeze(1)
        if phase == 'w++':
            w = gen.to_wpp(w.detach())
        w = w.detach().requires_grad_(True)
        opt = NGD([w], lr=lr * lr_scale)
        h = history[phase] = dict(loss=[])
        for _ in tqdm(range(int(n_steps)), desc=f'NGD {phase}', disable=not progress, leave=False):
            pred = common.degrade(degradation, gen(w, q=q))
            loss = loss_fn(pred, target, mask=mask) if mask is not None else loss_fn(pred, target)
            common.record(h, loss=loss.mean())  # read once at the end: no per-step host sync
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
    common.read_history(history)
    w = w.detach()
    with torch.no_grad():
        pred = common.degrade(degradation, gen(w, q=q))
        final = loss_fn(pred, target, mask=mask) if mask is not None else loss_fn(pred, target)
    return common.finish(gen, gen.to_ws(w), q=q, history=history, loss=final.detach())
