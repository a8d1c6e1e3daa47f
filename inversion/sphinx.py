"""SPHInX: StyleGAN with projection heads for inverting out-of-distribution images (Subramanyam et
al., ICML'22; shared/reference/sphinx.md, cited as "spec N" below).

The generator is frozen and its mapping network and learned 4x4 constant are bypassed. Per image,
three things are trained from scratch:

* the style projection head P_s (`StyleProjectionHead`, spec 3): z+ ~ N(0, I) `[N, num_ws, w_dim]`
  -> W+ `[N, num_ws, w_dim]`; a shared encoder on every row (w_dim -> w_dim/2, ReLU, -> w_dim/4, -> 32,
  plain `nn.Linear`s) and one decoder per row (32 -> 64, ReLU, -> 128, -> w_dim). Row i depends on
  z+_i only. 1,239,072 parameters at num_ws = 14, w_dim = 512; 1,544,992 at num_ws = 18.
* the content projection head P_c (`ContentProjectionHead`, spec 4): s ~ N(0, I) `[N, 8, 4, 4]` ->
  S `[N, C, 4, 4]`, the first synthesis block's input in place of its constant
  (`G.synthesis(ws, const_input=S)`); 1x1 equalized-LR convs without conv bias, 8 -> 32 -> 128 -> C
  with fused bias + lrelu(0.2) * sqrt(2) after the first two; 70,048 parameters at C = 512.
* the per-layer noise maps B (spec 5): one `[r, r]` map per conv layer (num_ws - 1), drawn N(0, 1),
  added as `noise_strength * B` (the generator's frozen strengths), no regulariser.

Every step draws fresh z+ and s (the "vicinal regularisation", spec 6: every realization must give
the same image) and minimises `mse_weight * MSE + lpips_weight * LPIPS` (1.0 and 1.5) of f^(x) vs
the observation y, with Adam (0.9, 0.999, 1e-8). MSE is in [-1, 1] units at full size; LPIPS (VGG,
as the official code) sees images box-averaged by an integer factor down to `lpips_size` (256).

Choices where the spec says [unknown] / [inferred], or where the official code misbehaves:

* Learning rates (`schedule`): 'official' (default) applies the code's schedule -- linear warm-up
  over the first 5 %, cosine ramp-down over the last 25 % -- to P_s only (peak `lr`, 1e-3) and keeps
  P_c and B at a constant 1e-3 (spec 6, bug 11.1). 'all' is what the poster/CLI intend: the same
  ramp on every group (`rampup` / `rampdown` are honoured in both modes; the code hard-codes 0.05 / 0.25).
* LPIPS below 256 px: the official code switches LPIPS off for images smaller than `lpips_size`;
  it only ever runs at 256 px, so that never happens there. We keep LPIPS on at every size (images
  under 32 px are upsampled for the network, `common.safe_lpips`): a user asking for MSE + LPIPS gets it.
* Measurement operators (`cs:`, `degradation.is_image == False`): MSE on the measurements only
  (LPIPS needs images), as ILO, from which the official CS helper comes (spec 8).
* Result (`result`): 'mean' (default) = the mean of `num_draws` (8) renders with fresh (z+, s), with
  their per-pixel spread (std over draws, RMS over channels) as the uncertainty map; 'draw' = one
  random draw, as the official `gen.png` (which is taken before the last update; ours after it).
  `ws` / `content` of the result are the means of P_s(z+) / P_c(s) over the same draws.
* `draws_per_step` (1 = official): a K-sample estimate of the vicinal expectation per step.
* Seeds: the official code has none; ours seeds the head initialisation, B, and every draw from `seed`.
* The generator is rendered in fp32 with `noise_mode='const'`, its `noise_const` buffers swapped for
  B during a render and put back afterwards; for QC generators q = None (sharp). At 1024 px it
  renders the full 1024 network (spec 12 option (a)), not the official truncated 256 px one.
* Batches: every image gets its own heads and noise (one fit per image, in turn).
* Attribute walk (`learn_attribute`, spec 9): the official code trains P_s, P_c, B, the scales alpha
  and the per-row direction D jointly *from scratch*; we start from the fitted heads and B (the same
  objective, so it converges in fewer steps) and keep the official loss: 1.5 mean_k LPIPS + mean_k MSE
  + 0.5 * monotonic hinge (alpha_0 >= 2, gaps >= 2). Targets are the observations rotated by the
  angles (nearest, no expand, corners filled with 0 = mid-grey, as the code), predictions go through
  f^. The walk renders alpha in [0, alpha_1, ...] with midpoints, from one fresh (z+, s) draw.
* Interpolation (`interpolate`, spec 9 [inferred]): lerp of the two fits' mean W+ rows, mean S and
  noise maps.
"""

import contextlib
import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import dnnlib
from . import common

DEFAULTS = dict(steps=5000, lr=1e-3, content_lr=1e-3, noise_lr=1e-3, rampup=0.05, rampdown=0.25, schedule='official',
                mse_weight=1.0, lpips_weight=1.5, lpips_size=256, draws_per_step=1, num_draws=8, result='mean',
                enc_dim=32, code_dim=8, content_hidden=(32, 128))
SCHEDULES = ('official', 'all')
RESULTS = ('mean', 'draw')
ATTRIBUTES = ('rotate',)

#----------------------------------------------------------------------------
# Projection heads.

class RowwiseLinear(torch.nn.Module):
    """`rows` independent linear layers applied to the rows of `[N, rows, in_features]`; each is
    initialised like `torch.nn.Linear` (weight and bias ~ U(+-1/sqrt(in_features)))."""

    def __init__(self, rows, in_features, out_features):
        super().__init__()
        bound = 1 / math.sqrt(in_features)
        self.weight = torch.nn.Parameter(torch.empty([rows, out_features, in_features]).uniform_(-bound, bound))
        self.bias = torch.nn.Parameter(torch.empty([rows, out_features]).uniform_(-bound, bound))

    def forward(self, x):
        return torch.einsum('nri,roi->nro', x, self.weight) + self.bias

    def extra_repr(self):
        rows, out_features, in_features = self.weight.shape
        return f'rows={rows}, in_features={in_features}, out_features={out_features}'


class StyleProjectionHead(torch.nn.Module):
    """P_s: z+ `[N, num_ws, w_dim]` -> W+ `[N, num_ws, w_dim]` (shared encoder, one decoder per row)."""

    def __init__(self, num_ws, w_dim, enc_dim=32):
        super().__init__()
        self.num_ws, self.w_dim, self.enc_dim = int(num_ws), int(w_dim), int(enc_dim)
        self.encoder = torch.nn.Sequential(torch.nn.Linear(w_dim, w_dim // 2), torch.nn.ReLU(),
                                           torch.nn.Linear(w_dim // 2, w_dim // 4), torch.nn.Linear(w_dim // 4, enc_dim))
        self.decoders = torch.nn.Sequential(RowwiseLinear(num_ws, enc_dim, 2 * enc_dim), torch.nn.ReLU(),
                                            RowwiseLinear(num_ws, 2 * enc_dim, 4 * enc_dim),
                                            RowwiseLinear(num_ws, 4 * enc_dim, w_dim))

    def forward(self, z):
        return self.decoders(self.encoder(z))


class ContentProjectionHead(torch.nn.Module):
    """P_c: s `[N, code_dim, r, r]` -> S `[N, channels, r, r]`: per-position MLP of equalized-LR 1x1
    convs (weights ~ N(0, 1) scaled by 1/sqrt(fan_in) at run time, no conv bias), fused bias (init 0)
    + lrelu(0.2) * sqrt(2) after every hidden layer, linear output."""

    def __init__(self, channels, code_dim=8, hidden=(32, 128)):
        super().__init__()
        widths = [int(code_dim)] + [int(h) for h in hidden] + [int(channels)]
        self.code_dim, self.channels = widths[0], widths[-1]
        self.weights = torch.nn.ParameterList([torch.nn.Parameter(torch.randn([widths[i + 1], widths[i]]))
                                               for i in range(len(widths) - 1)])
        self.biases = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros([w])) for w in widths[1:-1]])

    def forward(self, s):
        x = s
        for i, weight in enumerate(self.weights):
            x = torch.einsum('nihw,oi->nohw', x, weight * (1 / math.sqrt(weight.shape[1])))
            if i < len(self.biases):
                x = F.leaky_relu(x + self.biases[i].reshape(1, -1, 1, 1), 0.2) * math.sqrt(2)
        return x

#----------------------------------------------------------------------------
# The generator with S and B.

def noise_layers(G):
    """The synthesis layers that add noise (`noise_const` buffers), in forward order."""
    return [m for m in G.synthesis.modules() if 'noise_const' in getattr(m, '_buffers', {})]


@contextlib.contextmanager
def swapped_noise(G, maps):
    """Within the block, the generator's `noise_const` buffers are `maps` (a list of `[r, r]` tensors,
    possibly requiring grad); the original buffers are put back afterwards."""
    layers = noise_layers(G)
    if len(maps) != len(layers):
        raise ValueError(f'{len(maps)} noise maps for a generator with {len(layers)} noise layers')
    old = [layer._buffers['noise_const'] for layer in layers]  # pylint: disable=protected-access
    try:
        for layer, m in zip(layers, maps):
            layer._buffers['noise_const'] = m  # pylint: disable=protected-access
        yield
    finally:
        for layer, m in zip(layers, old):
            layer._buffers['noise_const'] = m  # pylint: disable=protected-access


def render(G, ws, content, noise):
    """G.synthesis(ws `[N, num_ws, w_dim]`, first-block input `content` `[N, C, 4, 4]`, noise maps B)
    -> `[N, img_channels, R, R]`, fp32, sharp (q = None)."""
    with swapped_noise(G, noise):
        return G.synthesis(ws, const_input=content, noise_mode='const', force_fp32=True)


class SphinxModel(torch.nn.Module):
    """P_s, P_c and B for one image; `sample(n)` draws (z+, s), `latents(z, s)` -> (W+, S)."""

    def __init__(self, num_ws, w_dim, channels, resolutions, enc_dim=32, code_dim=8, content_hidden=(32, 128)):
        super().__init__()
        self.style = StyleProjectionHead(num_ws, w_dim, enc_dim)
        self.content = ContentProjectionHead(channels, code_dim, content_hidden)
        self.noise = torch.nn.ParameterList([torch.nn.Parameter(torch.randn([r, r])) for r in resolutions])
        self.settings = dict(num_ws=int(num_ws), w_dim=int(w_dim), channels=int(channels),
                             resolutions=[int(r) for r in resolutions], enc_dim=int(enc_dim), code_dim=int(code_dim),
                             content_hidden=[int(h) for h in content_hidden])

    @classmethod
    def for_generator(cls, G, **kwargs):
        b4 = G.synthesis.b4
        return cls(G.synthesis.num_ws, G.synthesis.w_dim, b4.out_channels,
                   [layer.resolution for layer in noise_layers(G)], **kwargs)

    def sample(self, n, generator=None):
        device = self.noise[0].device
        z = torch.randn([n, self.settings['num_ws'], self.settings['w_dim']], generator=generator).to(device)
        s = torch.randn([n, self.settings['code_dim'], 4, 4], generator=generator).to(device)
        return z, s

    def latents(self, z, s):
        return self.style(z), self.content(s)

    def render(self, G, z, s, ws_offset=None):
        ws, S = self.latents(z, s)
        if ws_offset is not None:
            ws = ws + ws_offset
        return render(G, ws, S, list(self.noise))

    @torch.no_grad()
    def draws(self, G, num, seed=0):
        """`num` renders with fresh (z+, s) -> (images `[num, C, R, R]`, W+ `[num, ...]`, S `[num, ...]`)."""
        gen = torch.Generator().manual_seed(int(seed))
        imgs, wss, Ss = [], [], []
        for _ in range(int(num)):
            z, s = self.sample(1, gen)
            ws, S = self.latents(z, s)
            imgs.append(render(G, ws, S, list(self.noise)))
            wss.append(ws)
            Ss.append(S)
        return torch.cat(imgs), torch.cat(wss), torch.cat(Ss)

    def state(self, extra=None):
        """Everything needed to re-render: a dict of tensors and plain values (`torch.save`-able,
        loadable with `weights_only=True`)."""
        return dict(format='qcgan-sphinx-1', settings=dict(self.settings),
                    state_dict={k: v.detach().cpu() for k, v in self.state_dict().items()}, **(extra or {}))

    @classmethod
    def from_state(cls, state, device='cpu'):
        if not isinstance(state, dict) or state.get('format') != 'qcgan-sphinx-1':
            raise ValueError('not a SPHInX fit (expected a file written by inversion.sphinx.save_fit)')
        s = state['settings']
        model = cls(s['num_ws'], s['w_dim'], s['channels'], s['resolutions'], s['enc_dim'], s['code_dim'], s['content_hidden'])
        model.load_state_dict(state['state_dict'])
        return model.to(device)


def check_generator(G, model):
    s = model.settings
    got = dict(num_ws=G.synthesis.num_ws, w_dim=G.synthesis.w_dim, channels=G.synthesis.b4.out_channels,
               resolutions=[layer.resolution for layer in noise_layers(G)])
    bad = [k for k in got if got[k] != s[k]]
    if bad:
        raise ValueError('this SPHInX fit was made for another generator (' +
                         ', '.join(f'{k} {s[k]} vs {got[k]}' for k in bad) + ')')


def save_fit(path, model, **extra):
    """Write the fitted heads, noise maps and settings (`torch.save`, atomic)."""
    with dnnlib.util.atomic_write(path, 'wb') as f:
        torch.save(model.state(extra), f)


def load_fit(path, G=None, device='cpu'):
    """-> (`SphinxModel`, the saved dict); never runs code from the file (`weights_only=True`)."""
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # pylint: disable=broad-except
        raise ValueError(f'cannot read SPHInX fit {path}: {type(err).__name__}: {err}') from None
    model = SphinxModel.from_state(state, device)
    if G is not None:
        check_generator(G, model)
    return model, state

#----------------------------------------------------------------------------
# Fitting.

def lr_ramp(t, rampup=0.05, rampdown=0.25):
    """Official schedule factor at t = step / steps: min(1, t / rampup) * (1/2 - 1/2 cos(pi min(1, (1 - t) / rampdown)))."""
    up = min(1.0, t / rampup) if rampup > 0 else 1.0
    down = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    return up * (0.5 - 0.5 * math.cos(math.pi * down))


def _lpips_view(x, size):
    side = min(x.shape[-2:])
    if side > size and side // size > 1:
        return F.avg_pool2d(x, side // size)
    return x


def reconstruction_loss(pred, target, degradation, lpips_module, mse_weight=1.0, lpips_weight=1.5, lpips_size=256):
    """Per-sample `mse_weight * MSE + lpips_weight * LPIPS` `[K]` (MSE only for measurement operators)
    and the two parts."""
    mse = (pred - target).square().flatten(1).mean(1)
    lp = torch.zeros_like(mse)
    if lpips_weight and lpips_module is not None and getattr(degradation, 'is_image', True) and pred.ndim == 4:
        lp = lpips_module(_lpips_view(pred, lpips_size), _lpips_view(target, lpips_size)).reshape(-1)
    return mse_weight * mse + lpips_weight * lp, mse, lp


def fit(G, target, degradation=None, lpips_module=None, steps=5000, lr=1e-3, content_lr=1e-3, noise_lr=1e-3,
        rampup=0.05, rampdown=0.25, schedule='official', mse_weight=1.0, lpips_weight=1.5, lpips_size=256,
        draws_per_step=1, enc_dim=32, code_dim=8, content_hidden=(32, 128), seed=0, progress=False, desc='sphinx'):
    """Fit P_s, P_c and B to one observation `target` `[1, ...]` -> (`SphinxModel`, history)."""
    if schedule not in SCHEDULES:
        raise ValueError(f'SPHInX schedule must be one of {", ".join(SCHEDULES)}, got {schedule!r}')
    if target.shape[0] != 1:
        raise ValueError(f'sphinx.fit takes one observation [1, ...], got {tuple(target.shape)}')
    device = target.device
    common.requires_grad(G, False)
    lpips_module = common.safe_lpips(lpips_module)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = SphinxModel.for_generator(G, enc_dim=enc_dim, code_dim=code_dim, content_hidden=content_hidden).to(device)
    model.train()
    groups = [dict(params=model.style.parameters(), lr=lr), dict(params=model.content.parameters(), lr=content_lr),
              dict(params=model.noise.parameters(), lr=noise_lr)]
    opt = torch.optim.Adam(groups, betas=(0.9, 0.999), eps=1e-8)
    base = [g['lr'] for g in opt.param_groups]
    ramped = (0,) if schedule == 'official' else (0, 1, 2)
    rng = torch.Generator().manual_seed(int(seed) + 1)
    k = max(int(draws_per_step), 1)
    target_k = target.expand(k, *target.shape[1:])
    history = dict(loss=[], mse=[], lpips=[], lr=[], lr_content=[])
    for step in tqdm(range(int(steps)), desc=desc, disable=not progress, leave=False):
        ramp = lr_ramp(step / max(int(steps), 1), rampup, rampdown)
        for i in ramped:
            opt.param_groups[i]['lr'] = base[i] * ramp
        z, s = model.sample(k, rng)
        pred = common.degrade(degradation, model.render(G, z, s))
        loss, mse, lp = reconstruction_loss(pred, target_k, degradation, lpips_module, mse_weight, lpips_weight, lpips_size)
        loss = loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history['loss'].append(float(loss.detach()))
        history['mse'].append(float(mse.detach().mean()))
        history['lpips'].append(float(lp.detach().mean()))
        history['lr'].append(opt.param_groups[0]['lr'])
        history['lr_content'].append(opt.param_groups[1]['lr'])
    model.eval()
    return model, history


def summarize(G, model, num_draws=8, result='mean', seed=0):
    """Render `num_draws` draws -> dict(image `[1, C, R, R]`, uncertainty `[1, 1, R, R]`, ws, content
    (means over the draws), spread (mean per-pixel std, scalar))."""
    if result not in RESULTS:
        raise ValueError(f'SPHInX result must be one of {", ".join(RESULTS)}, got {result!r}')
    imgs, wss, Ss = model.draws(G, max(int(num_draws), 1), seed=seed)
    std = imgs.std(0, unbiased=False) if imgs.shape[0] > 1 else torch.zeros_like(imgs[0])
    uncertainty = std.square().mean(0, keepdim=True).sqrt()[None]
    image = imgs.mean(0, keepdim=True) if result == 'mean' else imgs[:1]
    return dict(image=image, uncertainty=uncertainty, ws=wss.mean(0, keepdim=True), content=Ss.mean(0, keepdim=True),
                spread=float(std.mean()))


def invert(G, target, degradation=None, lpips_module=None, steps=5000, num_draws=8, result='mean', seed=0,
           progress=False, **kwargs):
    """SPHInX on a batch of observations `target` `[N, ...]` (one fit per image) -> `common.InversionResult`
    with `uncertainty` `[N, 1, R, R]`, `content` (mean S) `[N, C, 4, 4]`, `spread` `[N]` and `models`
    (one `SphinxModel` per image). `restored == degraded` (no q). kwargs: see `fit`."""
    unknown = sorted(set(kwargs) - set(DEFAULTS))
    if unknown:
        raise TypeError(f'sphinx.invert() got unexpected keyword arguments: {", ".join(unknown)}')
    if target.ndim == 4:
        common.check_batch(target, degradation)
    lpips_module = common.safe_lpips(lpips_module)
    outs, models, history = [], [], {}
    for i in range(target.shape[0]):
        model, h = fit(G, target[i:i + 1], degradation, lpips_module, steps=steps, seed=seed, progress=progress,
                       desc=f'sphinx {i + 1}/{target.shape[0]}' if target.shape[0] > 1 else 'sphinx', **kwargs)
        outs.append(summarize(G, model, num_draws, result, seed=seed + 2))
        models.append(model)
        history = h if target.shape[0] == 1 else {**history, f'image{i}': h}
    restored = torch.cat([o['image'] for o in outs])
    with torch.no_grad():
        pred = common.degrade(degradation, restored)
        final, _, _ = reconstruction_loss(pred, target, degradation, lpips_module,
                                          kwargs.get('mse_weight', 1.0), kwargs.get('lpips_weight', 1.5))
    return common.InversionResult(restored=restored, degraded=restored, ws=torch.cat([o['ws'] for o in outs]), q=None,
                                  G=G, history=dict(fit=history), loss=final,
                                  uncertainty=torch.cat([o['uncertainty'] for o in outs]),
                                  content=torch.cat([o['content'] for o in outs]),
                                  spread=torch.tensor([o['spread'] for o in outs]), models=models)

#----------------------------------------------------------------------------
# OOD editing.

def rotate(x, degrees):
    """Rotate `[N, C, H, W]` by `degrees` (counter-clockwise) about the centre: nearest sampling, same
    size, outside filled with 0 (mid-grey in [-1, 1]), like the official torchvision call."""
    a = math.radians(float(degrees))
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta[None].expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode='nearest', padding_mode='zeros', align_corners=False)


def monotonic_hinge(alpha, margin=2.0):
    """Official hinge: alpha_0 >= margin and successive gaps >= margin (K = 2: max(0, margin - alpha_0))."""
    if alpha.numel() == 1:
        return F.relu(margin - alpha[0])
    terms = [F.relu(margin - alpha[i]) + F.relu(margin - (alpha[i + 1] - alpha[i])) for i in range(alpha.numel() - 1)]
    return torch.stack(terms).sum()


def learn_attribute(G, model, target, degradation=None, lpips_module=None, attribute='rotate', factors=(0, 22.5, 45),
                    steps=500, lr=1e-3, attribute_lr=1e-3, mse_weight=1.0, lpips_weight=1.5, mono_weight=0.5,
                    lpips_size=256, seed=0, progress=False):
    """Learn scales alpha `[K-1]` and a per-row unit direction D `[num_ws, w_dim]` so that
    G(P_s(z+) + alpha_k D) matches the attribute-transformed observations (K = len(factors)),
    training a copy of the fitted heads and B jointly -> (the trained copy, alpha, D, history)."""
    if attribute not in ATTRIBUTES:
        raise ValueError(f'unknown SPHInX attribute {attribute!r}; choose from {", ".join(ATTRIBUTES)}')
    if len(factors) < 2:
        raise ValueError('the attribute walk needs at least two factors (e.g. 0,22.5,45)')
    if not getattr(degradation, 'is_image', True):
        raise ValueError(f'the attribute walk needs image observations, not {degradation.name} measurements')
    model = copy.deepcopy(model).train()
    lpips_module = common.safe_lpips(lpips_module)
    with torch.no_grad():
        targets = torch.cat([rotate(target, a) for a in factors])
    K, (num_ws, w_dim) = len(factors), (model.settings['num_ws'], model.settings['w_dim'])
    gen = torch.Generator().manual_seed(int(seed) + 3)
    alpha = torch.zeros([K - 1], device=target.device, requires_grad=True)
    D = torch.randn([num_ws, w_dim], generator=gen).to(target.device).requires_grad_(True)
    opt = torch.optim.Adam([dict(params=model.style.parameters(), lr=lr), dict(params=model.content.parameters(), lr=lr),
                            dict(params=model.noise.parameters(), lr=lr), dict(params=[alpha, D], lr=attribute_lr)])
    history = dict(loss=[], mono=[])
    for _ in tqdm(range(int(steps)), desc=f'attribute {attribute}', disable=not progress, leave=False):
        z, s = model.sample(1, gen)
        ws, S = model.latents(z, s)
        d = D / D.norm(dim=1, keepdim=True).clamp_min(1e-8)
        offsets = torch.cat([alpha.new_zeros([1]), alpha]).reshape(K, 1, 1) * d[None]
        imgs = render(G, ws + offsets, S.expand(K, -1, -1, -1), list(model.noise))
        pred = common.degrade(degradation, imgs)
        rec, _, _ = reconstruction_loss(pred, targets, degradation, lpips_module, mse_weight, lpips_weight, lpips_size)
        mono = monotonic_hinge(alpha)
        loss = rec.mean() + mono_weight * mono
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history['loss'].append(float(loss.detach()))
        history['mono'].append(float(mono.detach()))
    model.eval()
    with torch.no_grad():
        D = D / D.norm(dim=1, keepdim=True).clamp_min(1e-8)
    return model, alpha.detach(), D.detach(), history


@torch.no_grad()
def attribute_walk(G, model, alpha, direction, seed=0):
    """Render the walk: alpha values [0, alpha_1, ...] with the midpoints inserted (2 (K-1) + 1
    frames) from one fresh (z+, s) draw -> (frames `[F, C, R, R]`, alphas `[F]`)."""
    knots = torch.cat([alpha.new_zeros([1]), alpha.reshape(-1)])
    values = [float(knots[0])]
    for a, b in zip(knots[:-1].tolist(), knots[1:].tolist()):
        values += [(a + b) / 2, b]
    z, s = model.sample(1, torch.Generator().manual_seed(int(seed) + 4))
    ws, S = model.latents(z, s)
    frames = torch.cat([render(G, ws + v * direction[None], S, list(model.noise)) for v in values])
    return frames, torch.tensor(values)


@torch.no_grad()
def interpolate(G, model_a, model_b, frames=7, num_draws=8, seed=0):
    """Frames `[F, C, R, R]` from fit A to fit B (inclusive): lerp of the mean W+ rows and mean S (over
    `num_draws` draws each) and of the noise maps."""
    check_generator(G, model_b)
    _, ws_a, S_a = model_a.draws(G, num_draws, seed)
    _, ws_b, S_b = model_b.draws(G, num_draws, seed)
    ws_a, S_a, ws_b, S_b = ws_a.mean(0, keepdim=True), S_a.mean(0, keepdim=True), ws_b.mean(0, keepdim=True), S_b.mean(0, keepdim=True)
    out = []
    for t in np.linspace(0.0, 1.0, max(int(frames), 2)):
        noise = [torch.lerp(a, b, float(t)) for a, b in zip(model_a.noise, model_b.noise)]
        out.append(render(G, torch.lerp(ws_a, ws_b, float(t)), torch.lerp(S_a, S_b, float(t)), noise))
    return torch.cat(out)
