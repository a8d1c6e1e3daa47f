"""Ranger: rectified Adam (RAdam) with Lookahead and optional gradient centralisation.

This is the optimiser that pSp (and the released QC-StyleGAN pSp encoders) train with, written
from the published algorithms:

* RAdam (Liu et al., 2020): Adam whose adaptive step is switched on only once the variance of
  the adaptive learning rate is tractable. With `rho_inf = 2 / (1 - beta2) - 1` and
  `rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)`, a step is

      m_t = beta1 m + (1 - beta1) g,   v_t = beta2 v + (1 - beta2) g^2
      rho_t >  threshold:  p -= lr * r_t * sqrt(1 - beta2^t) / (1 - beta1^t) * m_t / (sqrt(v_t) + eps)
      rho_t <= threshold:  p -= lr / (1 - beta1^t) * m_t          (SGD with momentum warm-up)

  where `r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))`.
  With `threshold=5` (the default, as in Ranger and `torch.optim.RAdam`) the parameter update
  equals `torch.optim.RAdam`'s for zero weight decay.
* Lookahead (Zhang et al., 2019): every `k` steps the slow weights move towards the fast ones,
  `slow += alpha (fast - slow)`, and the fast weights restart from the slow ones.
* Gradient centralisation (Yong et al., 2020): for parameters with more than one dimension
  (conv and linear weights) the gradient's mean over all but the first axis is removed.
* Weight decay is decoupled (`p -= lr * weight_decay * p` before the step), as in Ranger.

pSp's settings are the defaults: lr 1e-4, betas (0.95, 0.999), eps 1e-5, alpha 0.5, k 6,
threshold 5, gradient centralisation on every parameter with dim > 1.

The optimiser state (moments, step counts and the Lookahead slow weights) lives in
`optimizer.state` and therefore in `state_dict()`: saving and loading it continues a run exactly.
"""

import math

import torch

__all__ = ['Ranger', 'RAdam', 'centralize_gradient']

#----------------------------------------------------------------------------

def centralize_gradient(grad, conv_only=False):
    """Remove the mean over all axes but the first (in place) for gradients with dim > 1
    (dim > 3 only, i.e. conv kernels, with `conv_only`). Returns `grad`."""
    min_dim = 3 if conv_only else 1
    if grad.dim() > min_dim:
        grad.sub_(grad.mean(dim=tuple(range(1, grad.dim())), keepdim=True))
    return grad

#----------------------------------------------------------------------------

class Ranger(torch.optim.Optimizer):
    """RAdam + Lookahead (+ gradient centralisation). See the module docstring.

    Args:
        params:           Parameters or parameter groups.
        lr:               Learning rate.
        alpha:            Lookahead interpolation factor in (0, 1].
        k:                Lookahead period in steps; 0 disables Lookahead (plain RAdam).
        n_sma_threshold:  Length of the approximated SMA above which the adaptive step is used.
        betas:            (beta1, beta2).
        eps:              Denominator term.
        weight_decay:     Decoupled weight decay.
        use_gc:           Gradient centralisation on.
        gc_conv_only:     Centralise only conv kernels (dim > 3) instead of every dim > 1 tensor.
    """

    def __init__(self, params, lr=1e-4, alpha=0.5, k=6, n_sma_threshold=5, betas=(0.95, 0.999), eps=1e-5,
                 weight_decay=0, use_gc=True, gc_conv_only=False):
        if not lr > 0:
            raise ValueError(f'Ranger: lr must be positive, got {lr}')
        if not 0 < alpha <= 1:
            raise ValueError(f'Ranger: alpha must be in (0, 1], got {alpha}')
        if int(k) != k or k < 0:
            raise ValueError(f'Ranger: k must be a non-negative integer (0 = no Lookahead), got {k}')
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f'Ranger: betas must be in [0, 1), got {tuple(betas)}')
        if not eps >= 0:
            raise ValueError(f'Ranger: eps must be non-negative, got {eps}')
        if not weight_decay >= 0:
            raise ValueError(f'Ranger: weight_decay must be non-negative, got {weight_decay}')
        defaults = dict(lr=lr, alpha=alpha, k=int(k), n_sma_threshold=n_sma_threshold, betas=tuple(betas), eps=eps,
                        weight_decay=weight_decay, use_gc=use_gc, gc_conv_only=gc_conv_only)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            lr = group['lr']
            beta1, beta2 = group['betas']
            eps = group['eps']
            rho_inf = 2 / (1 - beta2) - 1
            for p in group['params']:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError('Ranger does not support sparse gradients')
                grad = grad.to(torch.float32) if p.dtype in (torch.float16, torch.bfloat16) else grad.clone()
                if group['use_gc']:
                    centralize_gradient(grad, conv_only=group['gc_conv_only'])

                state = self.state[p]
                if len(state) == 0:
                    state['step'] = 0
                    state['exp_avg'] = torch.zeros_like(p, dtype=grad.dtype, memory_format=torch.preserve_format)
                    state['exp_avg_sq'] = torch.zeros_like(p, dtype=grad.dtype, memory_format=torch.preserve_format)
                    if group['k'] > 0:
                        state['slow_buffer'] = p.detach().clone()

                state['step'] += 1
                t = state['step']
                exp_avg, exp_avg_sq = state['exp_avg'], state['exp_avg_sq']
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)

                if group['weight_decay'] != 0:
                    p.mul_(1 - lr * group['weight_decay'])

                bias1 = 1 - beta1 ** t
                bias2 = 1 - beta2 ** t
                rho_t = rho_inf - 2 * t * (beta2 ** t) / bias2
                if rho_t > group['n_sma_threshold']:
                    rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
                    denom = exp_avg_sq.sqrt().add_(eps)
                    update = exp_avg / denom * (lr * rect * math.sqrt(bias2) / bias1)
                else:
                    update = exp_avg * (lr / bias1)
                p.sub_(update.to(p.dtype))

                if group['k'] > 0 and t % group['k'] == 0:
                    slow = state['slow_buffer']
                    slow.add_(p - slow, alpha=group['alpha'])
                    p.copy_(slow)
        return loss

#----------------------------------------------------------------------------

class RAdam(Ranger):
    """Plain rectified Adam: `Ranger` without Lookahead and without gradient centralisation."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, n_sma_threshold=5):
        super().__init__(params, lr=lr, alpha=1.0, k=0, n_sma_threshold=n_sma_threshold, betas=betas, eps=eps,
                         weight_decay=weight_decay, use_gc=False)

#----------------------------------------------------------------------------
