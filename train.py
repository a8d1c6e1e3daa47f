"""Train a StyleGAN2-ADA network.

\b
Examples:
  # CPU demo on the embedded faces (build the dataset first with dataset_tool.py):
  python dataset_tool.py --source builtin:lfw-faces --dest out/lfw32.zip --resolution 32
  python train.py --outdir out/runs --data out/lfw32.zip --cfg tiny --kimg 10 --device cpu
\b
  # FFHQ 256 on 8 GPUs with the paper's settings:
  python train.py --outdir runs --data ffhq256.zip --gpus 8 --cfg paper256 --mirror 1
\b
  # Same with torchrun (also multi-node):
  torchrun --nproc_per_node 8 train.py --outdir runs --data ffhq256.zip --cfg paper256 --mirror 1
\b
  # Continue a run exactly where it stopped:
  python train.py --outdir runs --data ffhq256.zip --resume runs/00000-ffhq256-paper256/checkpoint.pt
"""

import copy
import json
import os

import click

import dnnlib
import legacy
from dnnlib import cli
from metrics import metric_utils
from metrics import provenance
from torch_utils import devices
from torch_utils import distributed
from training import presets
from training import training_loop
from training.dataset import DatasetError

#----------------------------------------------------------------------------

UserError = presets.ConfigError  # bad options or data: reported as a one-line error
CFG_SPECS, RESUME_SPECS, AUGPIPES = presets.CFG_SPECS, presets.RESUME_SPECS, presets.AUGPIPES
setup_training_loop_kwargs = presets.setup_training_loop_kwargs

# Options that may differ when continuing a checkpoint exactly (they do not change the training math).
EXACT_RESUME_OVERRIDABLE = {'outdir', 'kimg', 'snap', 'metrics', 'workers', 'dry_run', 'device', 'resume', 'data', 'gpus', 'qc'}

#----------------------------------------------------------------------------

def subprocess_fn(rank, args, temp_dir=None, local_rank=None, torchrun=False):
    """Run the training loop in one process (rank); see `distributed.run_process`."""
    loop_kwargs = {k: v for k, v in args.items() if k not in ['device_type', 'device_index', 'run_dir_name']}
    def loop(rank, device):
        training_loop.training_loop(rank=rank, device=device, training_options=copy.deepcopy(dict(args)), **loop_kwargs)
    errors = (training_loop.TrainingDiverged, training_loop.SnapshotWriteError, legacy.NetworkLoadError, dnnlib.DownloadError, DatasetError,
              metric_utils.MetricDataError)
    distributed.run_process(loop, rank, args, temp_dir, local_rank=local_rank, torchrun=torchrun, errors=errors, wrap=UserError)

#----------------------------------------------------------------------------

def print_options(args, desc):
    print()
    print('Training options:')
    print(json.dumps(args, indent=2, default=str))
    print()
    print(f'Output directory:   {args.run_dir}')
    print(f'Training data:      {args.training_set_kwargs.path}')
    print(f'Training duration:  {args.total_kimg} kimg')
    print(f'Number of processes: {args.num_gpus} ({args.device_type})')
    print(f'Number of images:   {args.training_set_kwargs.max_size}')
    print(f'Image resolution:   {args.training_set_kwargs.resolution}')
    print(f'Conditional model:  {args.training_set_kwargs.use_labels}')
    print(f'Dataset x-flips:    {args.training_set_kwargs.xflip}')
    print()

def exact_resume_args(ckpt_path, cli, explicit):
    """Training options from a checkpoint, with the few options that may change taken from the CLI."""
    ckpt = training_loop.load_checkpoint(ckpt_path)
    options = ckpt.get('training_options_json')
    if options is None:
        raise UserError(f'{ckpt_path}: the checkpoint holds no training options')
    args = dnnlib.EasyDict(json.loads(options))
    for key in ['training_set_kwargs', 'data_loader_kwargs', 'G_kwargs', 'D_kwargs', 'G_opt_kwargs', 'D_opt_kwargs', 'loss_kwargs', 'augment_kwargs', 'qc_kwargs']:
        if isinstance(args.get(key), dict):
            args[key] = dnnlib.EasyDict(args[key])
    conflicting = sorted(set(explicit) - EXACT_RESUME_OVERRIDABLE)
    if conflicting:
        raise UserError(f'--resume of a training checkpoint continues its run exactly; these options cannot change: '
                        f'{", ".join("--" + c.replace("_", "-") for c in conflicting)} (drop them, or resume from the snapshot .pkl to start a new run)')
    if 'kimg' in explicit:
        args.total_kimg = cli['kimg']
    if 'snap' in explicit:
        args.image_snapshot_ticks = args.network_snapshot_ticks = cli['snap']
    if 'metrics' in explicit:
        args.metrics = cli['metrics']
    if 'workers' in explicit:
        args.data_loader_kwargs.num_workers = cli['workers']
    if 'data' in explicit and cli['data'] is not None:
        args.training_set_kwargs.path = cli['data']
    try:
        distributed.continue_run(args, explicit, cli['gpus'], cli['device'])
    except ValueError as err:
        raise UserError(str(err)) from err
    args.batch_gpu = min(args.batch_gpu, args.batch_size // args.num_gpus)
    try:
        training_loop.check_class_names(args, ckpt_path)
    except (dnnlib.util.UntrustedFileError, ImportError) as err:
        raise UserError(str(err)) from err
    args.pop('resume_pkl', None)
    args.resume_checkpoint = os.path.abspath(ckpt_path)
    return args

#----------------------------------------------------------------------------

class CommaSeparatedList(click.ParamType):
    name = 'list'
    def convert(self, value, param, ctx):
        _ = param, ctx
        if value is None or value.lower() == 'none' or value == '':
            return []
        return value.split(',')

@click.command(help=__doc__)
@click.pass_context
# General options.
@click.option('--outdir', help='Where to save the results', required=True, metavar='DIR')
@click.option('--gpus', help='Number of processes: GPUs, or CPU processes with --device cpu [default: 1]', type=int, metavar='INT')
@click.option('--snap', help='Snapshot interval [default: 50 ticks]', type=click.IntRange(min=1), metavar='INT')
@click.option('--metrics', help='Comma-separated list or "none" [default: none]', type=CommaSeparatedList())
@click.option('--seed', help='Random seed [default: 0]', type=int, metavar='INT')
@click.option('-n', '--dry-run', help='Print training options and exit', is_flag=True)
@click.option('--device', help=f'{devices.DEVICE_HELP} [default: auto]', metavar='DEV')
# Dataset.
@click.option('--data', help='Training data (directory or zip)', metavar='PATH')
@click.option('--cond', help='Train conditional model based on dataset labels [default: false]', type=bool, metavar='BOOL')
@click.option('--subset', help='Train with only N images [default: all]', type=int, metavar='INT')
@click.option('--mirror', help='Enable dataset x-flips [default: false]', type=bool, metavar='BOOL')
# Base config.
@click.option('--cfg', help='Base config [default: auto]', type=click.Choice(list(CFG_SPECS)))
@click.option('--gamma', help='Override R1 gamma', type=cli.FiniteFloat(min=0))
@click.option('--kimg', help='Override training duration', type=click.IntRange(min=1), metavar='INT')
@click.option('--batch', help='Override batch size', type=click.IntRange(min=1), metavar='INT')
# Discriminator augmentation.
@click.option('--aug', help='Augmentation mode [default: ada]', type=click.Choice(['noaug', 'ada', 'fixed']))
@click.option('--p', help='Augmentation probability for --aug=fixed', type=cli.FiniteFloat(min=0, max=1))
@click.option('--target', help='ADA target value for --aug=ada', type=cli.FiniteFloat(min=0, max=1))
@click.option('--augpipe', help='Augmentation pipeline [default: bgc]', type=click.Choice(AUGPIPES))
@click.option('--aug-geom', help='How ADA executes whole-pixel flips/quarter turns/integer shifts: resampled as the official code (official) or copied exactly (exact-copy) [default: official]', type=click.Choice(presets.AUG_GEOM_MODES))
# Transfer learning and resume.
@click.option('--resume', help='Network pickle/URL/zoo name to start from, or a checkpoint.pt to continue exactly', metavar='PKL')
@click.option('--freezed', help='Freeze-D [default: 0 layers]', type=click.IntRange(min=0), metavar='INT')
# Performance options.
@click.option('--fp32', help='Disable mixed-precision training', type=bool, metavar='BOOL')
@click.option('--nhwc', help='Use NHWC memory format with FP16', type=bool, metavar='BOOL')
@click.option('--nobench', help='Disable cuDNN benchmarking', type=bool, metavar='BOOL')
@click.option('--allow-tf32', help='Allow PyTorch to use TF32 internally', type=bool, metavar='BOOL')
@click.option('--workers', help='Override number of DataLoader workers', type=click.IntRange(min=0), metavar='INT')
# QC-StyleGAN.
@click.option('--qc', help='Fine-tune --resume into a quality-controllable QC-StyleGAN', is_flag=True, default=None)
@click.option('--q-dim', help='Quality code size D_q [default: 16]', type=click.IntRange(min=1), metavar='INT')
@click.option('--qc-blocks', help='DegradBlocks in the last M synthesis blocks [default: 2]', type=click.IntRange(min=1), metavar='INT')
@click.option('--train-blocks', help='Train the last N synthesis blocks (released models: 3, paper: 2) [default: 3]', type=click.IntRange(min=1), metavar='INT')
@click.option('--kd-weight', help='Feature distillation weight [default: 3]', type=cli.FiniteFloat(min=0))
@click.option('--teacher', help='Frozen source generator for distillation: network pickle or released G_teacher_*.pth.tar state dict [default: the resumed stock network]', metavar='PKL|PTH')
@click.option('--degradation-preset', '--degradation', 'degradation', help='Degradation preset (name or JSON file) that degrades the real images [default: qc_stylegan_train]', metavar='PRESET')
@click.option('--qc-ema', help='G_ema during QC fine-tuning: EMA of the last two blocks minus one conv0, rest copied (released), or of everything (full) [default: released]', type=click.Choice(['released', 'full']))
@cli.trust_pickle_option
def main(ctx, outdir, dry_run, **config_kwargs):
    explicit = {name for name in config_kwargs if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
    try:
        if not dry_run:
            dnnlib.util.check_output_dir(outdir, '--outdir')
        config_kwargs['gpus'] = distributed.torchrun_gpus(config_kwargs['gpus'], 'gpus' in explicit)
        if distributed.started_by_torchrun():
            explicit.add('gpus')
        resume = config_kwargs.get('resume')
        if resume is not None and training_loop.is_checkpoint_file(resume):
            args = exact_resume_args(resume, config_kwargs, explicit)
            desc = distributed.continued_run_desc(resume)
        else:
            desc, args = setup_training_loop_kwargs(**config_kwargs)
            for what, spec in [('--resume', resume), ('--teacher', (args.get('qc_kwargs') or {}).get('teacher'))]:
                if spec is not None and spec not in RESUME_SPECS:
                    try:
                        path = legacy.resolve_network_spec(spec)
                    except legacy.NetworkLoadError as err:
                        raise legacy.NetworkLoadError(f'{what}: {err}') from None
                    legacy.check_network_file(path, what)  # fail before making a run folder
    except (UserError, legacy.NetworkLoadError, ValueError, OSError) as err:
        raise click.ClickException(err.strerror if isinstance(err, OSError) and err.filename is None and err.strerror else str(err))
    try:
        distributed.start(subprocess_fn, args, outdir, desc, 'training_options.json', lambda a: print_options(a, desc), dry_run,
                          options_content=options_with_provenance)
    except (UserError, distributed.LaunchError) as err:
        raise click.ClickException(str(err))

def options_with_provenance(args):
    """The options file's content: the options plus `provenance` (start network, teacher, detectors, seed)."""
    spec = args.get('resume_pkl') or args.get('resume_checkpoint')
    resolved = None
    if args.get('resume_pkl') and not str(spec).startswith('init:'):
        try:
            resolved = legacy.resolve_network_spec(spec)
        except legacy.NetworkLoadError:
            pass
    teacher = (args.get('qc_kwargs') or {}).get('teacher')
    detectors = []
    if args.get('metrics'):
        opts = metric_utils.MetricOptions(device='cpu')
        detectors = [provenance.detector_record(opts.resolve_detector(url), name=name)
                     for name, url in metric_utils.DETECTOR_URLS.items()]
    record = provenance.build(network=spec, network_resolved=resolved, detectors=detectors, method='train',
                              seed=args.get('random_seed'), teacher=provenance.network_record(teacher) if teacher else None)
    return dict(args, provenance=record)

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
