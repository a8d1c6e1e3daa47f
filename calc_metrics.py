"""Compute quality metrics (FID, KID, precision/recall, PPL, IS) of a trained network.

\b
Examples:
  # FID of a snapshot against the dataset it was trained on (results also go to
  # metric-fid50k_full.jsonl in the snapshot's run directory):
  python calc_metrics.py --network runs/00000-ffhq/network-snapshot-001000.pkl --metrics fid50k_full
\b
  # Several metrics of a zoo model on 8 GPUs:
  python calc_metrics.py --network ffhq256 --data ffhq256.zip --mirror 1 --gpus 8 --metrics fid50k_full,kid50k_full,pr50k3_full,ppl2_wend
\b
  # Offline, with detector files downloaded by hand:
  python calc_metrics.py --network net.pkl --data data.zip --metrics fid10k_full \\
      --detector-inception ~/inception-2015-12-05.pt --detector-vgg ~/vgg16.pt
\b
Recommended metrics: fid50k_full, kid50k_full, pr50k3_full, ppl2_wend, is50k.
Legacy metrics: fid50k, kid50k, pr50k3, ppl_zfull, ppl_wfull, ppl_zend, ppl_wend.
Quick variants: fid10k_full, fid1k_full, fid100_full, kid10k_full, is10k, pr10k3_full, ... (--list).
"""

import copy
import os

import click
import numpy as np
import torch

import dnnlib
import legacy
from dnnlib import cli
from metrics import metric_main
from metrics import metric_utils
from torch_utils import custom_ops
from torch_utils import devices
from torch_utils import distributed
from torch_utils import misc
from torch_utils import training_stats

#----------------------------------------------------------------------------

class UserError(Exception):
    """Bad options or data: reported as a one-line error."""

_USER_ERRORS = (UserError, legacy.NetworkLoadError, dnnlib.DownloadError, FileNotFoundError, ValueError)

#----------------------------------------------------------------------------

def subprocess_fn(rank, args, temp_dir):
    """Evaluate every requested metric in one process (rank)."""
    device = distributed.process_device(args.device_type, rank, args.num_gpus, args.device_index)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    if args.num_gpus > 1:
        distributed.init_process_group(rank, args.num_gpus, args.device_type, temp_dir)
    training_stats.init_multiprocessing(rank=rank, sync_device=(device if args.num_gpus > 1 else None))
    if rank != 0 or not args.verbose:
        custom_ops.verbosity = 'none'

    # Every process draws different latents.
    torch.manual_seed(args.seed * args.num_gpus + rank)
    np.random.seed((args.seed * args.num_gpus + rank) % (1 << 31))

    with distributed.process_errors(_USER_ERRORS, temp_dir, rank, exits=args.num_gpus > 1, wrap=UserError):
        G = copy.deepcopy(args.G).eval().requires_grad_(False).to(device)
        if rank == 0 and args.verbose:
            print(f'Network: {args.network_spec} ({G.img_resolution}x{G.img_resolution}, {G.img_channels} channels'
                  f'{f", {G.c_dim} classes" if G.c_dim else ""}); device {device}, {args.num_gpus} process(es)')
        progress = metric_utils.ProgressMonitor(verbose=args.verbose)
        for metric in args.metrics:
            if rank == 0 and args.verbose:
                print(f'Calculating {metric}...')
            result = metric_main.calc_metric(metric=metric, G=G, dataset_kwargs=args.dataset_kwargs,
                                             num_gpus=args.num_gpus, rank=rank, device=device, progress=progress,
                                             detector_overrides=args.detector_overrides, q_mode=args.q_mode,
                                             data_loader_kwargs=args.data_loader_kwargs)
            if rank == 0:
                metric_main.report_metric(result, run_dir=args.run_dir, snapshot_pkl=args.network_pkl)

#----------------------------------------------------------------------------

class CommaSeparatedList(click.ParamType):
    name = 'list'

    def convert(self, value, param, ctx):
        _ = param, ctx
        if isinstance(value, list):
            return value
        if value is None or value.lower() == 'none' or value == '':
            return []
        return [v.strip() for v in value.split(',') if v.strip()]


def setup_args(network_spec, metrics, data, mirror, gpus, device, detector_inception, detector_vgg, verbose, q_mode,
               workers, seed):
    """Validate the options, load the network and build the per-process arguments (raises UserError)."""
    args = dnnlib.EasyDict(metrics=metrics, num_gpus=gpus, verbose=verbose, q_mode=q_mode, seed=seed,
                           network_spec=network_spec)
    if not metrics:
        raise UserError('--metrics: give at least one metric')
    unknown = [m for m in metrics if not metric_main.is_valid_metric(m)]
    if unknown:
        raise UserError(f'--metrics: unknown metric(s) {", ".join(unknown)}; valid: {", ".join(metric_main.list_valid_metrics())}')
    if gpus < 1:
        raise UserError(f'--gpus must be at least 1, got {gpus}')

    dev = devices.parse_device(device)
    args.device_type = dev.type
    args.device_index = dev.index
    if dev.type == 'cuda' and gpus > torch.cuda.device_count():
        raise UserError(f'--gpus {gpus} but only {torch.cuda.device_count()} CUDA device(s) are available')

    args.detector_overrides = dict()
    for name, path in [('inception', detector_inception), ('vgg16', detector_vgg)]:
        if path is None:
            continue
        local = metric_utils._local_path(path)
        if local is not None and not os.path.isfile(local):
            option = '--detector-inception' if name == 'inception' else '--detector-vgg'
            raise UserError(f'{option}: file not found: {local}')
        args.detector_overrides[name] = path

    if verbose:
        print(f'Loading network from "{network_spec}"...')
    network = legacy.load_network(network_spec, verbose=verbose)
    if network.get('G_ema') is None:
        raise UserError(f'"{network_spec}" holds no generator (G_ema)')
    args.G = network['G_ema']
    if q_mode == 'degraded' and not misc.is_qc(args.G):
        raise UserError('--q-mode degraded needs a quality-conditioned network (G.q_dim > 0)')

    # Real data: --data, else what the network was trained on.
    if data is not None:
        args.dataset_kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data)
    elif network.get('training_set_kwargs'):
        args.dataset_kwargs = dnnlib.EasyDict(network['training_set_kwargs'])
    else:
        args.dataset_kwargs = None
    needs_data = [m for m in metrics if not m.startswith('ppl')] + ([m for m in metrics if m.startswith('ppl')] if args.G.c_dim else [])
    if args.dataset_kwargs is None:
        if needs_data:
            raise UserError(f'--data is required for {", ".join(needs_data)}: the network file has no training_set_kwargs')
        args.dataset_kwargs = dnnlib.EasyDict()
    else:
        if data is None:  # the class name comes from the network file: only this project's dataset classes
            dnnlib.util.resolve_allowed_class(args.dataset_kwargs.get('class_name'), what=f'{network_spec}: training_set_kwargs.class_name')
        args.dataset_kwargs.resolution = args.G.img_resolution
        args.dataset_kwargs.use_labels = (args.G.c_dim != 0)
        if mirror is not None:
            args.dataset_kwargs.xflip = mirror
        path = args.dataset_kwargs.get('path')
        if data is None and path is not None and not os.path.exists(path):
            raise UserError(f'the dataset the network was trained on ("{path}") does not exist here: pass --data PATH')

    args.data_loader_kwargs = None
    if workers is not None:
        args.data_loader_kwargs = dict(num_workers=workers, pin_memory=(dev.type == 'cuda'))
        if workers > 0:
            args.data_loader_kwargs['prefetch_factor'] = 2

    # JSONL output next to a local snapshot whose folder is a run directory.
    args.run_dir = None
    args.network_pkl = None
    if os.path.isfile(network_spec):
        args.network_pkl = network_spec
        pkl_dir = os.path.dirname(os.path.abspath(network_spec))
        if os.path.isfile(os.path.join(pkl_dir, 'training_options.json')):
            args.run_dir = pkl_dir
    return args


@click.command(help=__doc__)
@click.option('--network', 'network_spec', help='Network: pickle or weights file, URL, zoo name or init:PRESET  [required]', metavar='NETWORK')
@click.option('--metrics', help='Comma-separated list of metrics', type=CommaSeparatedList(), default='fid50k_full', show_default=True)
@click.option('--data', help='Dataset to evaluate against [default: look up from the network]', metavar='PATH')
@click.option('--mirror', help='Include x-flipped reals (legacy metrics) [default: look up]', type=bool, metavar='BOOL')
@click.option('--gpus', help='Number of processes (GPUs, or CPU processes with --device cpu)', type=int, default=1, show_default=True, metavar='INT')
@click.option('--device', help=devices.DEVICE_HELP, default='auto', show_default=True, metavar='DEV')
@click.option('--detector-inception', help='Local file or URL of inception-2015-12-05 (.pt or .pkl)', metavar='PATH')
@click.option('--detector-vgg', help='Local file or URL of vgg16 (.pt or .pkl)', metavar='PATH')
@click.option('--q-mode', help='Quality code of QC networks: sharp (q=0) or degraded (q~N(0,I)) [default: sharp]', type=click.Choice(['sharp', 'degraded']))
@click.option('--workers', help='DataLoader worker processes [default: 3 on CUDA, 0 on CPU]', type=click.IntRange(min=0), metavar='INT')
@click.option('--seed', help='Random seed of the generated samples', type=int, default=0, show_default=True, metavar='INT')
@click.option('--verbose', help='Print progress', type=bool, default=True, show_default=True, metavar='BOOL')
@click.option('--list', 'list_metrics', help='List the available metrics and exit', is_flag=True)
@cli.trust_pickle_option
def calc_metrics(network_spec, metrics, data, mirror, gpus, device, detector_inception, detector_vgg, q_mode, workers, seed,
                 verbose, list_metrics):
    if list_metrics:
        print('\n'.join(metric_main.list_valid_metrics()))
        return
    if network_spec is None:
        raise click.UsageError("Missing option '--network'.")
    try:
        args = setup_args(network_spec, metrics, data, mirror, gpus, device, detector_inception, detector_vgg, verbose,
                          q_mode, workers, seed)
    except _USER_ERRORS as err:
        raise click.ClickException(str(err))

    if verbose:
        print('Launching processes...')
    try:
        distributed.launch(subprocess_fn, args, args.num_gpus)
    except (UserError, distributed.LaunchError) as err:
        raise click.ClickException(str(err))

#----------------------------------------------------------------------------

if __name__ == '__main__':
    calc_metrics()  # pylint: disable=no-value-for-parameter
