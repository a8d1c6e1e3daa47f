"""Restore images by GAN inversion: PTI, CRI, NGD (robust unsupervised), DGP or QC-StyleGAN.

The --target images are the OBSERVED degraded images y (at the degradation's output size, e.g. the
low-res image for sr:4). --synthesize-degradation instead treats them as clean images: they are
fitted to the network and the true operator is applied first (ground truth known).

Examples:

\b
  python invert.py --network ffhq.pkl --target lowres/ --method ngd --degradation sr:4 --outdir out
  python invert.py --network qc.pkl --target img.png --method qc --encoder enc.pt --outdir out
  python invert.py --network ffhq.pkl --target lowres/ --method dgp --degradation sr:4 --dgp-candidates 200 --outdir out
  python invert.py --network ffhq.pkl --target faces/ --method pti --degradation inpaint:M \\
      --synthesize-degradation --outdir out --edit smile.npy --strength 3 --sefa 5
"""

import json
import os
import sys
import time

import click
import numpy as np
import torch
from tqdm import tqdm

import dnnlib
import legacy
from inversion import common
from inversion import editing
from inversion import methods
from inversion import qc as qc_method
from inversion.operators import parse_degradation
from metrics import restoration
from torch_utils import devices
from torch_utils import misc
from torch_utils.image_utils import make_grid, save_image, to_uint8

#----------------------------------------------------------------------------

def parse_steps(method, text):
    """--steps for `method` -> its invert() keywords (see `methods.parse_steps`)."""
    try:
        return methods.parse_steps(method, text)
    except methods.MethodError as err:
        raise click.BadParameter(str(err), param_hint='--steps')

# invert.py options that go to one method's invert() (by method: invert() keyword -> option); an
# option left at None keeps the method's default.
METHOD_OPTIONS = dict(pti=dict(space='w_space', locality='locality'), cri=dict(num_samples='cri_samples', locality='locality'),
                      dgp=dict(num_candidates='dgp_candidates'), qc=dict(locality='locality'))

def find_ground_truth(spec, stem):
    if spec is None:
        return None
    if os.path.isfile(spec):
        return spec
    for name in sorted(os.listdir(spec)):
        if os.path.splitext(name)[0] == stem and name.lower().endswith(common.IMAGE_EXTENSIONS):
            return os.path.join(spec, name)
    return None


def summarize_history(history):
    """Last value of every per-step list, nested per phase."""
    out = {}
    for key, value in history.items():
        if isinstance(value, dict):
            out[key] = summarize_history(value)
        elif isinstance(value, list):
            out[key] = value[-1] if value else None
    return out


def rgb(x):
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


def save_png(img, path):
    save_image(to_uint8(rgb(img[:1].clamp(-1, 1)))[0], path)

#----------------------------------------------------------------------------

@click.command(help=__doc__)
@click.option('--network', 'network_spec', required=True, help='Network pickle / weights file, URL or zoo name')
@click.option('--target', required=True, help='Observed image file or folder of images')
@click.option('--method', type=click.Choice(list(methods.METHODS)), default='ngd', show_default=True, help='Inversion method')
@click.option('--degradation', 'deg_spec', default='none', show_default=True,
              help='Degradation spec: none, sr:K, inpaint:MASK.png|LEVEL, colorize, denoise:LEVEL, jpeg:Q, blur:gauss:S, '
                   'compositions with + (e.g. sr:4+jpeg:15)')
@click.option('--encoder', 'encoder_path', default=None, help='pSp encoder checkpoint (QC method: gives w, q)')
@click.option('--steps', default=None, help='Steps: N for every phase, or a comma list, one per phase '
              '(pti: pivot,tune; cri: offset,tune; ngd: W,W+,W++; dgp: 5 stages; qc: refine,tune)')
@click.option('--seed', type=int, default=0, show_default=True)
@click.option('--outdir', required=True, help='Output folder')
@click.option('--device', default='auto', show_default=True, help=devices.DEVICE_HELP)
@click.option('--save-generator', is_flag=True, help='Also save the tuned generator per image (pickle)')
@click.option('--ground-truth', 'gt_spec', default=None, help='Clean image file or folder (matched by file stem): PSNR/SSIM/LPIPS')
@click.option('--synthesize-degradation', is_flag=True, help='Targets are clean: apply the true degradation first')
@click.option('--w-space', type=click.Choice(['w', 'w+']), default='w', show_default=True, help='PTI pivot space')
@click.option('--locality/--no-locality', default=None,
              help='PTI locality regulariser on/off  [default: off for pti (released PTI), on for cri and qc]')
@click.option('--no-encoder-ok', is_flag=True,
              help='QC: run without --encoder, optimising (w, q) from w_avg (the paper found this fails)')
@click.option('--dgp-candidates', type=click.IntRange(min=1), default=500, show_default=True,
              help='DGP: random latents scored by D to pick the start')
@click.option('--cri-samples', type=int, default=2000, show_default=True, help='CRI: latents sampled for KMeans')
@click.option('--edit', 'edit_path', default=None,
              help='Latent direction .npy, [w_dim] or [num_ws, w_dim], added to the inverted latents (W, W+ or W++)')
@click.option('--strength', type=float, default=3.0, show_default=True, help='Edit / SeFa strength')
@click.option('--sefa', type=int, default=0, help='Render the top K SeFa directions (closed form from G)')
@click.option('--q-from', 'q_from', default=None, help='QC: reference image; invert it and reuse its q (degradation transfer)')
@click.option('--lpips-backbone', type=click.Choice(['pretrained', 'random']), default='pretrained', show_default=True,
              help='LPIPS backbone: ImageNet weights (downloaded once into the torch hub cache), or random features for machines without them')
@click.option('--compile', 'compile_synthesis', is_flag=True,
              help='Render every step through torch.compile of the synthesis network (same results; faster long runs after a one-off compile)')
def main(network_spec, target, method, deg_spec, encoder_path, steps, seed, outdir, device, save_generator, gt_spec,
         synthesize_degradation, w_space, locality, no_encoder_ok, dgp_candidates, cri_samples, edit_path, strength, sefa,
         q_from, lpips_backbone, compile_synthesis=False):
    try:
        device = devices.parse_device(device)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint='--device')
    step_kwargs = parse_steps(method, steps)
    common.compile_synthesis(compile_synthesis)
    data = legacy.load_network(network_spec, device=device)
    G = data['G_ema'].eval()
    D = data.get('D')
    if not misc.is_qc(G):
        bad = [opt for opt, val in ((f'--method {method}', methods.get(method).needs_qc), ('--q-from', q_from)) if val]
        if bad:
            raise click.UsageError(f'{", ".join(bad)}: only for QC-StyleGAN networks (q_dim > 0); {network_spec} is a plain StyleGAN2 network')
    if q_from and method != 'qc':
        raise click.UsageError('--q-from needs --method qc')
    if method == 'qc' and encoder_path is None:
        if not no_encoder_ok:
            raise click.UsageError(f'--method qc without --encoder: {qc_method.ENCODER_FREE_NOTE}; '
                                   f'to optimise (w, q) anyway, add --no-encoder-ok')
        print(f'Warning: --method qc without --encoder: {qc_method.ENCODER_FREE_NOTE}')
    res = G.synthesis.img_resolution
    try:
        degradation = parse_degradation(deg_spec, res, device=device, seed=seed)
    except (ValueError, FileNotFoundError) as err:
        raise click.BadParameter(str(err), param_hint='--degradation')
    obs_size = degradation.out_size(res) if hasattr(degradation, 'out_size') else res
    try:
        files = common.list_images(target)
    except (FileNotFoundError, ValueError) as err:
        raise click.BadParameter(str(err), param_hint='--target')
    encoder = None
    if encoder_path is not None:
        if method != 'qc':
            print(f'Note: --encoder is only used by --method qc; ignored for {method}')
        else:
            try:
                encoder = methods.load_encoder(encoder_path, G=G, device=device)
            except methods.MethodError as err:
                raise click.ClickException(f'--encoder: {err}')
    try:
        direction = editing.load_direction(edit_path, G.w_dim, G.synthesis.num_ws) if edit_path else None
    except (ValueError, FileNotFoundError) as err:
        raise click.ClickException(f'--edit: {err}')
    lpips = methods.build_lpips_modules([method], random_backbone=(lpips_backbone == 'random'), device=device, extra=['alex'],
                                        seed=seed)
    lpips_alex = lpips['alex']  # also the PSNR/SSIM/LPIPS report's
    cli_options = dict(w_space=w_space, locality=locality, cri_samples=cri_samples, dgp_candidates=dgp_candidates)
    options = {key: cli_options[name] for key, name in METHOD_OPTIONS.get(method, {}).items() if cli_options[name] is not None}
    os.makedirs(outdir, exist_ok=True)

    q_ref = None
    if q_from:
        y_ref, notes = common.load_target(q_from, size=obs_size, device=device)
        for n in notes:
            print(f'Note: {q_from}: {n}')
        q_ref = methods.run(method='qc', G=G, target=y_ref, degradation=degradation, lpips=lpips, steps=step_kwargs,
                            encoder=encoder, seed=seed).q

    summary = dict(network=str(network_spec), method=method, degradation=deg_spec, seed=seed, steps=steps,
                   synthesize_degradation=bool(synthesize_degradation), encoder=encoder_path, locality=locality,
                   images={}, skipped={})
    if method == 'dgp':
        summary['dgp_candidates'] = dgp_candidates
    start = time.time()
    for path in tqdm(files, desc=f'{method} x {len(files)}', unit='img', disable=len(files) < 1):
        stem = os.path.splitext(os.path.basename(path))[0]
        torch.manual_seed(seed)
        try:
            clean = None
            if synthesize_degradation:
                clean, notes = common.load_target(path, size=res, device=device)
                with torch.no_grad():
                    y = common.degrade(degradation, clean, true=True)
            else:
                y, notes = common.load_target(path, size=obs_size, device=device)
        except ValueError as err:
            tqdm.write(f'Warning: skipping {path}: {err}')
            summary['skipped'][os.path.basename(path)] = str(err)
            continue
        for n in notes:
            tqdm.write(f'Note: {os.path.basename(path)}: {n}')
        gt_path = find_ground_truth(gt_spec, stem)
        if gt_path is not None:
            clean, _ = common.load_target(gt_path, size=res, device=device)
        out = methods.run(method=method, G=G, target=y, degradation=degradation, lpips=lpips, steps=step_kwargs, D=D,
                          encoder=encoder, seed=seed, progress=True, **options)
        Gr = out.G
        gen = common.LatentGenerator(Gr)
        with torch.no_grad():
            restored = out.restored
            redeg = out.degraded if out.q is not None else restored
            redeg = common.degrade(degradation, redeg, true=True)
        save_png(restored, os.path.join(outdir, f'{stem}_restored.png'))
        save_png(redeg, os.path.join(outdir, f'{stem}_degraded.png'))
        panel = [common.to_image_size(degradation, y, res), restored, common.to_image_size(degradation, redeg, res)]
        if clean is not None:
            panel.append(clean)
        save_image(make_grid(to_uint8(torch.cat([rgb(p[:1]) for p in panel]).clamp(-1, 1)), (len(panel), 1)),
                   os.path.join(outdir, f'{stem}_panel.png'))
        arrays = dict(ws=out.ws.cpu().numpy())
        if out.q is not None:
            arrays['q'] = out.q.cpu().numpy()
        if 'centroid_index' in out:
            arrays['centroid_index'] = out.centroid_index.cpu().numpy()
        with dnnlib.util.atomic_write(os.path.join(outdir, f'{stem}_latents.npz'), 'wb') as f:
            np.savez(f, **arrays)
        if save_generator and Gr is not G:
            legacy.save_network_pkl(dict(G_ema=Gr), os.path.join(outdir, f'{stem}_G.pkl'))
        record = dict(file=os.path.basename(path), loss=[float(v) for v in torch.as_tensor(out.loss).reshape(-1)],
                      history=summarize_history(out.history))
        if clean is not None:
            with torch.no_grad():
                record['psnr'] = float(restoration.psnr(restored.clamp(-1, 1), clean, data_range=2)[0])
                record['ssim'] = float(restoration.ssim(restored.clamp(-1, 1), clean, data_range=2)[0])
                record['lpips'] = float(common.safe_lpips(lpips_alex)(restored.clamp(-1, 1), clean).reshape(-1)[0])
        # Editing.
        with torch.no_grad():
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
                save_image(make_grid(to_uint8(rgb(grid)), (3, len(rows))), os.path.join(outdir, f'{stem}_sefa.png'))
            if q_ref is not None:
                qs = editing.interpolate_q(out.q, q_ref.expand_as(out.q), 5)
                imgs = torch.cat([gen(out.ws, q=qq)[:1] for qq in qs]).clamp(-1, 1)
                save_png(imgs[-1:], os.path.join(outdir, f'{stem}_q_transfer.png'))
                save_image(make_grid(to_uint8(imgs), (len(imgs), 1)), os.path.join(outdir, f'{stem}_q_interp.png'))
        summary['images'][stem] = record
    summary['seconds'] = time.time() - start
    with dnnlib.util.atomic_write(os.path.join(outdir, 'results.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    done, skipped = len(summary['images']), len(summary['skipped'])
    print(f'Done: {done} image(s) restored with {method} in {summary["seconds"]:.1f} s; results in {outdir}')
    if skipped:
        print(f'Skipped {skipped} unreadable file(s): ' + ', '.join(summary['skipped']))
    if done == 0:
        sys.exit(1)


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
