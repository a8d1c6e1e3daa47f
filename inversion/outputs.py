"""What `invert.py` reads and writes per image: observations (images or .npy measurement vectors),
ground truths, and the outputs of one restoration (restored image, re-degraded image, labelled panel,
latents, scores, edits, SPHInX fits).

Images are `[N, C, H, W]` float tensors in [-1, 1] (C = 1 or 3; files are written as RGB PNGs);
measurement vectors (cs:) are `[N, m]`. Every file is written atomically.
"""

import os

import numpy as np
import PIL.Image
import torch

import dnnlib
import legacy
from inversion import common
from inversion import editing
from inversion import sphinx
from inversion.operators import load_measurements, measurement_operator
from metrics import restoration
from torch_utils.image_utils import save_image, save_labelled_grid, to_uint8

#----------------------------------------------------------------------------
# Observations and ground truths.

def list_targets(target, degradation, synthesize):
    """Target files: images, or for a measurement operator (cs:) without --synthesize-degradation,
    .npy measurement vectors (a file, or the .npy files of a folder)."""
    if measurement_operator(degradation) is None or synthesize:
        return common.list_images(target)
    if os.path.isdir(target):
        files = sorted(os.path.join(target, n) for n in os.listdir(target) if n.lower().endswith('.npy'))
        if not files:
            raise ValueError(f'no .npy measurement files in folder {target} (with {degradation.name}, the targets are '
                             f'measurement vectors; or pass clean images with --synthesize-degradation)')
    elif not os.path.isfile(target):
        raise FileNotFoundError(f'target not found: {target}')
    elif not target.lower().endswith('.npy'):
        raise ValueError(f'{target}: with {degradation.name} the target is a .npy measurement vector; to measure a '
                         f'clean image, add --synthesize-degradation')
    else:
        files = [target]
    for path in files:  # wrong lengths fail now, before any work
        load_measurements(path, degradation)
    return files



def load_observation(path, degradation, size, res, synthesize, device):
    """-> (observation y, clean image or None, notes). ValueError for unreadable files."""
    if synthesize:
        clean, notes = common.load_target(path, size=res, device=device)
        with torch.no_grad():
            return common.degrade(degradation, clean, true=True), clean, notes
    if path.lower().endswith('.npy'):
        return load_measurements(path, degradation, device), None, []
    y, notes = common.load_target(path, size=size, device=device)
    return y, None, notes



def observation_size(path):
    """(width, height) of an image file, or (length,) of a .npy vector; None if unreadable."""
    try:
        if path.lower().endswith('.npy'):
            return (int(np.load(path, mmap_mode='r', allow_pickle=False).shape[-1]),)
        with PIL.Image.open(path) as img:
            return img.size
    except Exception:  # pylint: disable=broad-except
        return None



def find_ground_truth(spec, stem):
    """The ground-truth file for target `stem`: `spec` itself when a file, else the image of folder `spec`
    with that stem; None when `spec` is None or has no match."""
    if spec is None:
        return None
    if os.path.isfile(spec):
        return spec
    for name in sorted(os.listdir(spec)):
        if os.path.splitext(name)[0] == stem and name.lower().endswith(common.IMAGE_EXTENSIONS):
            return os.path.join(spec, name)
    return None


#----------------------------------------------------------------------------
# Writing.

def save_npy(array, path):
    with dnnlib.util.atomic_write(path, 'wb') as f:
        np.save(f, array)


def uncertainty_image(u):
    """Uncertainty `[N, 1, H, W]` (>= 0) -> a gray image in [-1, 1], white = the largest spread."""
    return u / u.flatten(1).amax(1).clamp_min(1e-8).reshape(-1, 1, 1, 1) * 2 - 1


def rgb(x):
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


def save_png(img, path):
    save_image(to_uint8(rgb(img[:1].clamp(-1, 1)))[0], path)



def image_scores(img, clean, lpips_module):
    """PSNR (dB), SSIM and LPIPS of `img` against `clean` (both `[N, C, H, W]` in [-1, 1]), first image."""
    img = img.clamp(-1, 1)
    return dict(psnr=float(restoration.psnr(img, clean, data_range=2)[0]),
                ssim=float(restoration.ssim(img, clean, data_range=2)[0]),
                lpips=float(common.safe_lpips(lpips_module)(img, clean).reshape(-1)[0]))



def summarize_history(history):
    """Last value of every per-step list, nested per phase."""
    out = {}
    for key, value in history.items():
        if isinstance(value, dict):
            out[key] = summarize_history(value)
        elif isinstance(value, list):
            out[key] = value[-1] if value else None
    return out



def sphinx_outputs(out, y, degradation, G, lpips_vgg, stem, outdir, spec, seed, step_kwargs, attribute, attribute_fac,
                   other):
    """SPHInX's own outputs for one image: the fit (.pt), the attribute walk and the interpolation strips."""
    model = out.models[0]
    sphinx.save_fit(os.path.join(outdir, f'{stem}_sphinx.pt'), model, run=dict(degradation=spec, seed=seed, **step_kwargs),
                    observation=y.detach().cpu())
    if attribute:
        trained, alpha, direction, _ = sphinx.learn_attribute(G, model, y, degradation, lpips_vgg, attribute, attribute_fac,
                                                              steps=step_kwargs.get('steps', 500), seed=seed, progress=True)
        frames, alphas = sphinx.attribute_walk(G, trained, alpha, direction, seed=seed)
        save_labelled_grid(to_uint8(rgb(frames.clamp(-1, 1))), os.path.join(outdir, f'{stem}_walk_{attribute}.png'),
                           grid_size=(len(frames), 1), col_labels=[f'alpha {a:.2f}' for a in alphas.tolist()],
                           title=f'{stem}: SPHInX {attribute} walk')
        save_npy(alphas.numpy(), os.path.join(outdir, f'{stem}_walk_{attribute}_alphas.npy'))
    if other is not None:
        frames = sphinx.interpolate(G, model, other, seed=seed)
        save_labelled_grid(to_uint8(rgb(frames.clamp(-1, 1))), os.path.join(outdir, f'{stem}_interp.png'),
                           grid_size=(len(frames), 1), col_labels=[f't {t:.2f}' for t in np.linspace(0, 1, len(frames))],
                           title=f'{stem}: SPHInX interpolation')


def write_restoration(outdir, stem, out, G, y, clean, degradation, *, res, obs_size, title, synthesize, save_generator=False):
    """The files of one restoration: `{stem}_restored.png`, `_degraded.png` (the result through the true
    operator; for measurements also `.npy`), `_observed.png`, `_panel.png` (observation | restored |
    re-degraded | ground truth | uncertainty, labelled), `_latents.npz` and, with `save_generator`, the tuned
    generator `_G.pkl`.

    out:    a `methods.run` result (restored `[1, C, res, res]`, ws, optional q/degraded/uncertainty/...).
    y:      the observation, `[1, C, h, w]` image or `[1, m]` measurements; clean: `[1, C, res, res]` or None.
    Returns the observation at the image size `[1, C, res, res]` (the panel's first column)."""
    Gr = out.G
    with torch.no_grad():
        restored = out.restored
        redeg = out.degraded if out.q is not None else restored
        redeg = common.degrade(degradation, redeg, true=True)
    save_png(restored, os.path.join(outdir, f'{stem}_restored.png'))
    if redeg.ndim == 2:  # measurements (cs:): the vectors as .npy, their back-projections as PNG
        save_npy(redeg[0].cpu().numpy(), os.path.join(outdir, f'{stem}_degraded.npy'))
        if synthesize:
            save_npy(y[0].cpu().numpy(), os.path.join(outdir, f'{stem}_observation.npy'))
    save_png(common.to_image_size(degradation, redeg, obs_size), os.path.join(outdir, f'{stem}_degraded.png'))
    panel = [common.to_image_size(degradation, y, res), restored, common.to_image_size(degradation, redeg, res)]
    labels = ['observation', 'restored', 're-degraded']
    if clean is not None:
        panel.append(clean)
        labels.append('ground truth')
    if 'uncertainty' in out:
        panel.append(uncertainty_image(out.uncertainty))
        labels.append('uncertainty')
    save_labelled_grid(to_uint8(torch.cat([rgb(p[:1]) for p in panel]).clamp(-1, 1)), os.path.join(outdir, f'{stem}_panel.png'),
                       grid_size=(len(panel), 1), col_labels=labels, title=title)
    save_png(panel[0], os.path.join(outdir, f'{stem}_observed.png'))
    arrays = dict(ws=out.ws.cpu().numpy())
    if out.q is not None:
        arrays['q'] = out.q.cpu().numpy()
    if 'centroid_index' in out:
        arrays['centroid_index'] = out.centroid_index.cpu().numpy()
    if 'content' in out:  # SPHInX: mean S and the noise maps B (ws = the mean W+ over the draws)
        arrays['content'] = out.content.cpu().numpy()
        arrays.update({f'noise{i}': n.detach().cpu().numpy() for i, n in enumerate(out.models[0].noise)})
    with dnnlib.util.atomic_write(os.path.join(outdir, f'{stem}_latents.npz'), 'wb') as f:
        np.savez(f, **arrays)
    if save_generator and Gr is not G:
        legacy.save_network_pkl(dict(G_ema=Gr), os.path.join(outdir, f'{stem}_G.pkl'))
    return panel[0]


@torch.no_grad()
def write_edits(outdir, stem, out, G, degradation, *, direction=None, strength=3.0, sefa=0, q_ref=None):
    """Edits of one restoration `out`: `{stem}_edit_sharp.png`/`_edit_degraded.png` along `direction`
    (`[num_ws, w_dim]` or `[w_dim]`) at `strength`; `_sefa.png`, the top `sefa` SeFa directions of G at
    -strength, 0, +strength; and with `q_ref` (`[1, q_dim]`, QC) `_q_transfer.png` and `_q_interp.png`."""
    Gr = out.G
    if direction is not None:
        sharp, degr = editing.render_edits(Gr, out.ws, [strength], direction, q=out.q)
        save_png(sharp[0], os.path.join(outdir, f'{stem}_edit_sharp.png'))
        degr = common.degrade(degradation, degr[0] if degr is not None else sharp[0], true=True)
        save_png(degr, os.path.join(outdir, f'{stem}_edit_degraded.png'))
    if sefa > 0:
        dirs, _ = editing.sefa_directions(G, sefa)
        rows = []
        for d in dirs:
            sharp, _ = editing.render_edits(Gr, out.ws, [-strength, 0.0, strength], d)
            rows.append(sharp[:, 0])
        grid = torch.cat(rows).clamp(-1, 1)
        save_labelled_grid(to_uint8(rgb(grid)), os.path.join(outdir, f'{stem}_sefa.png'), grid_size=(3, len(rows)),
                           col_labels=[f'strength {-strength:g}', '0', f'strength +{strength:g}'],
                           row_labels=[f'SeFa {k}' for k in range(len(rows))])
    if q_ref is not None:
        gen = common.LatentGenerator(Gr)
        qs = editing.interpolate_q(out.q, q_ref.expand_as(out.q), 5)
        imgs = torch.cat([gen(out.ws, q=qq)[:1] for qq in qs]).clamp(-1, 1)
        save_png(imgs[-1:], os.path.join(outdir, f'{stem}_q_transfer.png'))
        save_labelled_grid(to_uint8(imgs), os.path.join(outdir, f'{stem}_q_interp.png'), grid_size=(len(imgs), 1),
                           col_labels=[f'q {1 - t:.2f}:{t:.2f}' for t in np.linspace(0, 1, len(imgs))],
                           title='q interpolated from this image (left) to --q-from (right)')

#----------------------------------------------------------------------------
