"""Restore images by GAN inversion: PTI, CRI, NGD (robust unsupervised), DGP, QC-StyleGAN or SPHInX.

The --target images are the OBSERVED degraded images y (at the degradation's output size, e.g. the
low-res image for sr:4; for compressed sensing, cs:FACTOR, the .npy measurement vectors).
--synthesize-degradation instead treats them as clean images: they are fitted to the network and
the true operator is applied first (ground truth known).

Examples:

\b
  python invert.py --network ffhq.pkl --target lowres/ --method ngd --operator sr:4 --outdir out
  python invert.py --network qc.pkl --target img.png --method qc --encoder enc.pt --outdir out
  python invert.py --network ffhq.pkl --target lowres/ --method dgp --operator sr:4 --dgp-candidates 200 --outdir out
  python invert.py --network ffhq1024.pkl --target lowres/ --method pti --encoder psp_ffhq_encode.pt --w-space w+ \\
      --operator sr:4 --outdir out
  python invert.py --network ffhq.pkl --target faces/ --method pti --operator inpaint:M \\
      --synthesize-degradation --outdir out --edit smile.npy --strength 3 --sefa 5
  python invert.py --network ffhq.pkl --target xray.png --method sphinx --outdir out \\
      --attribute rotate --attribute-fac 0,22.5,45 --interpolate other_xray.png
  python invert.py --network ffhq.pkl --target xray.png --method sphinx --degradation cs:0.01 \\
      --synthesize-degradation --outdir out
"""

import json
import os
import sys
import time

import click
import torch
from tqdm import tqdm

import dnnlib
import legacy
from dnnlib import cli
from inversion import common
from inversion import editing
from inversion import methods
from inversion import outputs
from inversion import qc as qc_method
from inversion.operators import Identity, parse_degradation
from metrics import provenance
from metrics import restoration
from torch_utils import devices
from torch_utils import misc

#----------------------------------------------------------------------------

def parse_steps(method, text):
    """--steps for `method` -> its invert() keywords (see `methods.parse_steps`)."""
    try:
        return methods.parse_steps(method, text)
    except methods.MethodError as err:
        raise click.BadParameter(str(err), param_hint='--steps')

# invert.py options that go to one method's invert() (by method: invert() keyword -> option); an
# option left at None keeps the method's default.
_TUNING = dict(locality='locality', tune_lr='tune_lr', lpips_stop='lpips_stop')
METHOD_OPTIONS = dict(pti=dict(space='w_space', stop_every='stop_every', **_TUNING), cri=dict(num_samples='cri_samples', **_TUNING),
                      dgp=dict(num_candidates='dgp_candidates'), qc=dict(stop_every='stop_every', zero_q='zero_q', **_TUNING),
                      ngd=dict(lr_scale='lr_scale'), sphinx=dict(num_draws='draws'))

#----------------------------------------------------------------------------

@click.command(help=__doc__)
@click.option('--network', 'network_spec', required=True, help='Network: pickle or weights file, URL, zoo name or init:PRESET', metavar='NETWORK')
@click.option('--target', required=True, help='Observed image file or folder of images')
@click.option('--method', type=click.Choice(list(methods.METHODS)), default='ngd', show_default=True, help='Inversion method')
@click.option('--operator', '--degradation', 'deg_spec', default='none', show_default=True, metavar='SPEC',
              help='Degradation operator spec (what degraded the targets; training uses presets instead): none, sr:K[:FILTER[:matched]], inpaint:MASK.png|LEVEL, colorize, denoise:LEVEL, jpeg:Q, blur:gauss:S, '
                   'compositions with + (e.g. sr:4+jpeg:15)')
@click.option('--encoder', 'encoder_path', default=None, help='Encoder: (w, q) for --method qc; the start latent (its W/W+ code of the observation) for pti and ngd. '
              'A train_encoder.py checkpoint, a released pSp file (QC-StyleGAN ffhq_psp.pt, pSp psp_ffhq_encode.pt) or a zoo name (qc-ffhq256-psp)')
@click.option('--steps', default=None, help='Steps: N for every phase, or a comma list, one per phase '
              '(pti: pivot,tune; cri: offset,tune; ngd: W,W+,W++; dgp: 5 stages; qc: refine,tune)')
@click.option('--seed', type=int, default=0, show_default=True, help='Random seed (initial latents, sampled degradations)')
@click.option('--outdir', required=True, help='Output folder')
@click.option('--device', default='auto', show_default=True, help=devices.DEVICE_HELP)
@click.option('--save-generator', is_flag=True, help='Also save the tuned generator per image (pickle)')
@click.option('--ground-truth', 'gt_spec', default=None, help='Clean image file or folder (matched by file stem): PSNR/SSIM/LPIPS')
@click.option('--synthesize-degradation', is_flag=True, help='Targets are clean: apply the true degradation first')
@click.option('--w-space', type=click.Choice(['w', 'w+']), default='w', show_default=True, help='PTI pivot space')
@click.option('--locality/--no-locality', default=None,
              help='PTI locality regulariser on/off  [default: off for pti (released PTI), on for cri and qc]')
@click.option('--tune-lr', type=click.FloatRange(min=0, min_open=True), default=None,
              help='pti, cri, qc: learning rate of the generator tuning  [default: 3e-4, as the references]')
@click.option('--lpips-stop', type=click.FloatRange(min=0), default=None,
              help='pti, cri, qc: stop the tuning once LPIPS <= this; 0 = never (run every step)  [default: 0.06 for pti and '
                   'cri, 0.002 for qc, as the references; they are calibrated for the pretrained LPIPS]')
@click.option('--lr-scale', type=click.FloatRange(min=0, min_open=True), default=None,
              help='ngd: multiply its three learning rates (0.08, 0.02, 0.005 for 512-d W codes)  [default: 1]')
@click.option('--no-encoder-ok', is_flag=True,
              help='QC: run without --encoder, optimising (w, q) from w_avg (the paper found this fails)')
@click.option('--dgp-candidates', type=click.IntRange(min=1), default=500, show_default=True,
              help='DGP: random latents scored by D to pick the start')
@click.option('--cri-samples', type=int, default=2000, show_default=True, help='CRI: latents sampled for KMeans')
@click.option('--edit', 'edit_path', default=None,
              help='Latent direction .npy, [w_dim] or [num_ws, w_dim], added to the inverted latents (W, W+ or W++)')
@click.option('--strength', type=float, default=3.0, show_default=True, help='Edit / SeFa strength')
@click.option('--sefa', type=int, default=0, help='Render the top K SeFa directions (closed form from G)')
@click.option('--zero-q', is_flag=True,
              help='QC: keep q = 0 (w from the encoder, tuning fits f^(G(w, 0))), for an --operator that models the whole '
                   'degradation: the encoder\'s q would apply it a second time  [default: the encoder\'s q, the paper]')
@click.option('--q-from', 'q_from', default=None, help='QC: reference image; invert it and reuse its q (degradation transfer)')
@click.option('--lpips-backbone', default='pretrained', show_default=True, metavar='pretrained|random|PATH',
              help='LPIPS backbone: "pretrained" (torchvision ImageNet weights in torch hub\'s cache), "random" (tests/demos: drawn from --seed; numbers not comparable), or PATH (a torchvision weights file, or a folder holding them)')
@click.option('--compile', 'compile_synthesis', is_flag=True,
              help='Render every step through torch.compile of the synthesis network (same results; faster long runs after a one-off compile)')
@click.option('--unfused-modconv', is_flag=True,
              help='Modulate activations instead of weights in every step (StyleGAN2\'s training path: same results within float '
                   'tolerance; no weight gradients when only latents train; with --compile the fastest steps on CPU, see README Benchmarks)')
@click.option('--channels-last', is_flag=True,
              help='Generator, discriminator and LPIPS weights (so the activations too) in channels-last memory format: '
                   'faster CPU convolutions with --compile --unfused-modconv (same results within float tolerance)')
@click.option('--bf16', is_flag=True,
              help='Run the inversion under bfloat16 autocast (G, D, LPIPS in bf16; latents, weights and optimizer states '
                   'float32): faster where the hardware computes bf16, NOT exact (see README Benchmarks); refused on a CPU '
                   'without native bf16')
@click.option('--stop-every', type=click.IntRange(min=1), default=None, metavar='K',
              help='PTI/QC tuning: read the LPIPS for the early stop every K steps (default 1, the reference; K > 1 saves '
                   'host reads and may run up to K-1 steps past the threshold)')
@click.option('--draws', type=click.IntRange(min=1), default=8, show_default=True,
              help='SPHInX: renders with fresh (z+, s) averaged into the result (1 = one random draw, as the official code)')
@click.option('--interpolate', 'interpolate_with', default=None, metavar='OTHER',
              help='SPHInX: also fit this observation (same size as the targets) and write an interpolation strip')
@click.option('--attribute', type=click.Choice(['rotate']), default=None,
              help='SPHInX: learn an attribute walk from the fit (--steps steps, else 500) and write its strip')
@click.option('--attribute-fac', default='0,22.5,45', show_default=True, help='SPHInX: attribute factors (rotate: degrees, first 0)')
@cli.trust_pickle_option
@cli.os_errors_as_one_line
def main(network_spec, target, method, deg_spec, encoder_path, steps, seed, outdir, device, save_generator, gt_spec,
         synthesize_degradation, w_space, locality, no_encoder_ok, dgp_candidates, cri_samples, edit_path, strength, sefa,
         q_from, lpips_backbone, compile_synthesis=False, draws=8, interpolate_with=None, attribute=None,
         attribute_fac='0,22.5,45', stop_every=None, unfused_modconv=False, channels_last=False, bf16=False,
         tune_lr=None, lpips_stop=None, lr_scale=None, zero_q=False):
    try:
        device = devices.parse_device(device)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint='--device')
    step_kwargs = parse_steps(method, steps)
    if encoder_path is not None:
        try:
            methods.check_encoder(method)
        except methods.MethodError as err:
            raise click.UsageError(f'--encoder: {err}')
    try:
        dnnlib.util.check_output_dir(outdir, '--outdir')
    except OSError as err:
        raise click.ClickException(err.strerror)
    if bf16:
        native, why = misc.cpu_bf16_support() if device.type == 'cpu' else (torch.cuda.is_bf16_supported(), 'this GPU has no bf16')
        if not native:
            raise click.UsageError(f'--bf16: {why}; drop --bf16')
    common.compile_synthesis(compile_synthesis)
    common.unfused_modconv(unfused_modconv)
    try:
        data = legacy.load_network(network_spec, device=device)
    except (legacy.NetworkLoadError, dnnlib.DownloadError, OSError) as err:
        raise click.ClickException(' '.join(f'--network: {err}'.split()))
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
    sphinx_only = [opt for opt, val in (('--interpolate', interpolate_with), ('--attribute', attribute)) if val]
    if sphinx_only and method != 'sphinx':
        raise click.UsageError(f'{", ".join(sphinx_only)}: only for --method sphinx')
    if method == 'sphinx':
        bad = [opt for opt, val in (('--encoder', encoder_path), ('--edit', edit_path), ('--sefa', sefa)) if val]
        if bad:
            raise click.UsageError(f'{", ".join(bad)}: not for --method sphinx (it learns its own heads and renders with its '
                                   f'content input S; edit with --attribute rotate or --interpolate OTHER)')
    try:
        attribute_fac = [float(v) for v in str(attribute_fac).split(',') if v.strip()]
    except ValueError:
        raise click.BadParameter(f'"{attribute_fac}" is not a comma list of numbers', param_hint='--attribute-fac')
    if attribute and len(attribute_fac) < 2:
        raise click.BadParameter('give at least two factors, e.g. 0,22.5,45', param_hint='--attribute-fac')
    res = G.synthesis.img_resolution
    try:
        degradation = parse_degradation(deg_spec, res, device=device, seed=seed, channels=G.synthesis.img_channels)
    except (ValueError, FileNotFoundError) as err:
        raise click.BadParameter(str(err), param_hint='--operator')
    if attribute and not getattr(degradation, 'is_image', True):
        raise click.UsageError(f'--attribute needs image observations, not {degradation.name} measurements')
    if zero_q and method == 'qc' and isinstance(degradation, Identity):
        print('Warning: --zero-q with --operator none: the tuning fits the sharp image G(w, 0) to the observation itself, '
              'so the degradation stays in the result; give the --operator that made the targets, or drop --zero-q')
    obs_size = degradation.out_size(res) if hasattr(degradation, 'out_size') else res
    try:
        files = outputs.list_targets(target, degradation, synthesize_degradation)
    except (FileNotFoundError, ValueError) as err:
        raise click.BadParameter(str(err), param_hint='--target')
    if interpolate_with is not None:
        if not os.path.isfile(interpolate_with):
            raise click.BadParameter(f'{interpolate_with}: file not found', param_hint='--interpolate')
        other_size = outputs.observation_size(interpolate_with)
        if other_size is None:
            raise click.BadParameter(f'cannot read {interpolate_with} (an image, or a .npy measurement vector with cs:)',
                                     param_hint='--interpolate')
        for path in files:
            size = outputs.observation_size(path)
            if size is not None and size != other_size:
                what = 'values' if len(size) == 1 else 'pixels (width, height)'
                raise click.BadParameter(f'{interpolate_with} has size {other_size} but {os.path.basename(path)} has {size} '
                                         f'{what}; interpolate between observations of the same size', param_hint='--interpolate')
    encoder = None
    if encoder_path is not None:
        try:
            encoder = methods.load_encoder(encoder_path, G=G, device=device)
        except methods.MethodError as err:
            raise click.ClickException(f'--encoder: {err}')
        if method == 'pti' and encoder.w_space == 'w+' and w_space == 'w':
            print('Note: the encoder gives W+ codes; with --w-space w the pivot starts from the mean of their rows '
                  '(--w-space w+ keeps them)')
    try:
        direction = editing.load_direction(edit_path, G.w_dim, G.synthesis.num_ws) if edit_path else None
    except (ValueError, FileNotFoundError) as err:
        raise click.ClickException(f'--edit: {err}')
    try:
        lpips_backbone = restoration.check_lpips_backbone(lpips_backbone)
    except FileNotFoundError as err:
        raise click.BadParameter(str(err), param_hint='--lpips-backbone')
    try:
        lpips = methods.build_lpips_modules([method], random_backbone=lpips_backbone, device=device, extra=['alex'], seed=seed)
    except (dnnlib.DownloadError, ImportError) as err:
        raise click.ClickException(' '.join(str(err).split()) + ' (or pass --lpips-backbone random)')
    if channels_last:  # module.to() converts the 4-D weights in place; the activations follow them
        for module in [G, D] + list(lpips.values()):
            if isinstance(module, torch.nn.Module):
                module.to(memory_format=torch.channels_last)
    lpips_alex = lpips['alex']  # also the PSNR/SSIM/LPIPS report's
    cli_options = dict(w_space=w_space, locality=locality, cri_samples=cri_samples, dgp_candidates=dgp_candidates,
                       draws=draws, stop_every=stop_every, tune_lr=tune_lr, lpips_stop=lpips_stop, lr_scale=lr_scale,
                       zero_q=True if zero_q else None)
    for name in ('tune_lr', 'lpips_stop', 'lr_scale', 'stop_every', 'zero_q'):
        if cli_options[name] is not None and name not in METHOD_OPTIONS.get(method, {}).values():
            users = ', '.join(m for m, opts in METHOD_OPTIONS.items() if name in opts.values())
            raise click.UsageError(f'--{name.replace("_", "-")} applies to --method {users}, not {method}')
    options = {key: cli_options[name] for key, name in METHOD_OPTIONS.get(method, {}).items() if cli_options[name] is not None}
    if options.get('lpips_stop') == 0:
        options['lpips_stop'] = None  # 0: no early stop
    lpips_vgg = lpips['vgg']  # SPHInX's attribute walk
    os.makedirs(outdir, exist_ok=True)

    other = None
    if interpolate_with is not None:
        try:
            y_other, _, _ = outputs.load_observation(interpolate_with, degradation, obs_size, res, synthesize_degradation, device)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint='--interpolate')
        torch.manual_seed(seed)
        other = methods.run(method=method, G=G, target=y_other, degradation=degradation, lpips=lpips, steps=step_kwargs,
                            D=D, encoder=encoder, seed=seed, progress=True, bf16=bf16, **options).models[0]

    q_ref = None
    if q_from:
        y_ref, notes = common.load_target(q_from, size=obs_size, device=device)
        for n in notes:
            print(f'Note: {q_from}: {n}')
        q_ref = methods.run(method='qc', G=G, target=y_ref, degradation=degradation, lpips=lpips, steps=step_kwargs,
                            encoder=encoder, seed=seed, bf16=bf16).q

    summary = dict(network=str(network_spec), method=method, degradation=deg_spec, seed=seed, steps=steps,
                   synthesize_degradation=bool(synthesize_degradation), encoder=encoder_path, locality=locality,
                   images={}, skipped={})
    if method == 'dgp':
        summary['dgp_candidates'] = dgp_candidates
    summary['provenance'] = provenance.build(
        network=network_spec, network_resolved=legacy.resolve_network_spec(network_spec) if not str(network_spec).startswith('init:') else None,
        lpips=[lpips['alex'], lpips['vgg']], method=method, seed=seed,
        settings=dict(step_kwargs, **options, degradation=deg_spec, encoder=None if encoder is None else provenance.file_record(encoder.path),
                      synthesize_degradation=bool(synthesize_degradation), compile=bool(compile_synthesis),
                      unfused_modconv=bool(unfused_modconv), channels_last=bool(channels_last), bf16=bool(bf16)))
    start = time.time()
    show_progress = sys.stderr.isatty()  # progress bars only on a terminal: logs stay clean
    for index, path in enumerate(tqdm(files, desc=f'{method} x {len(files)}', unit='img', disable=None if show_progress else True)):
        stem = os.path.splitext(os.path.basename(path))[0]
        image_start = time.time()
        torch.manual_seed(seed)
        try:
            y, clean, notes = outputs.load_observation(path, degradation, obs_size, res, synthesize_degradation, device)
        except ValueError as err:
            tqdm.write(f'Warning: skipping {path}: {err}')
            summary['skipped'][os.path.basename(path)] = str(err)
            continue
        for n in notes:
            tqdm.write(f'Note: {os.path.basename(path)}: {n}')
        gt_path = outputs.find_ground_truth(gt_spec, stem)
        if gt_path is not None:
            clean, _ = common.load_target(gt_path, size=res, device=device)
        out = methods.run(method=method, G=G, target=y, degradation=degradation, lpips=lpips, steps=step_kwargs, D=D,
                          encoder=encoder, seed=seed, progress=show_progress, bf16=bf16, **options)
        outputs.write_restoration(outdir, stem, out, G, y, clean, degradation, res=res, obs_size=obs_size,
                                  title=f'{stem}: {method}, {deg_spec}', synthesize=synthesize_degradation,
                                  save_generator=save_generator)
        record = dict(file=os.path.basename(path), loss=[float(v) for v in torch.as_tensor(out.loss).reshape(-1)],
                      history=outputs.summarize_history(out.history))
        if method == 'sphinx':
            record['draws'], record['spread'] = draws, float(out.spread[0])
            outputs.sphinx_outputs(out, y, degradation, G, lpips_vgg, stem, outdir, deg_spec, seed, step_kwargs, attribute,
                                   attribute_fac, other)
        if clean is not None:
            with torch.no_grad():
                record.update(outputs.image_scores(out.restored, clean, lpips_alex))
                # The baseline to beat: the observation itself, at the image size (bilinear when smaller; the panel
                # shows its pixels).
                record['observation'] = outputs.image_scores(outputs.upsampled_observation(degradation, y, res), clean,
                                                             lpips_alex)
        outputs.write_edits(outdir, stem, out, G, degradation, direction=direction, strength=strength, sefa=sefa, q_ref=q_ref)
        summary['images'][stem] = record
        if not show_progress:  # a log instead of a terminal: one line per image
            scores = f', PSNR {record["psnr"]:.2f} dB (observation {record["observation"]["psnr"]:.2f})' if 'psnr' in record else ''
            print(f'[{index + 1}/{len(files)}] {stem}: {time.time() - image_start:.1f} s{scores}', flush=True)
    summary['seconds'] = time.time() - start
    with dnnlib.util.atomic_write(os.path.join(outdir, 'results.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    done, skipped = len(summary['images']), len(summary['skipped'])
    print(f'Done: {done} image(s) restored with {method} in {summary["seconds"]:.1f} s; results in {outdir}')
    for note in summary['provenance']['caveats']:
        print(f'Note: {note}')
    if skipped:
        print(f'Skipped {skipped} unreadable file(s): ' + ', '.join(summary['skipped']))
    if done == 0:
        sys.exit(1)


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
