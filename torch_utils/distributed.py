"""The launcher shared by train.py, train_encoder.py and calc_metrics.py.

One process per device: `--gpus N` spawns N processes with `torch.multiprocessing.spawn`
(NCCL on CUDA, gloo on CPU, rendezvous through a file in a temporary folder), and `torchrun`
(single or multi node) is detected from its environment variables. A process that fails makes
`spawn` stop the others; the failure is turned into one line for the command line.

A training script calls `start(...)` from its `main` (run directory, options file, spawning or
torchrun) and `run_process(...)` from its per-process function (log file, device, process group,
fresh statistics, user errors; the log file is closed and `sys.stdout`/`sys.stderr` restored on
the way out). The loops average gradients and share weights with `average_gradients`,
`average_buffers` and `broadcast_module`.
"""

import contextlib
import json
import os
import sys
import tempfile

import torch

import dnnlib
from torch_utils import custom_ops
from torch_utils import devices
from torch_utils import misc
from torch_utils import training_stats

#----------------------------------------------------------------------------

def started_by_torchrun():
    """True inside a process started by torchrun (RANK, WORLD_SIZE and LOCAL_RANK are set)."""
    return all(key in os.environ for key in ['RANK', 'WORLD_SIZE', 'LOCAL_RANK'])

def torchrun_ranks():
    """(rank, local_rank, world_size) from torchrun's environment."""
    return int(os.environ['RANK']), int(os.environ['LOCAL_RANK']), int(os.environ['WORLD_SIZE'])

def init_process_group(rank, num_procs, device_type, temp_dir=None):
    """Join the process group: NCCL for CUDA, gloo for CPU; rendezvous through a file in `temp_dir`
    (the folder `launch` passes), or torchrun's env:// when `temp_dir` is None."""
    backend = 'nccl' if device_type == 'cuda' else 'gloo'
    if temp_dir is None:
        torch.distributed.init_process_group(backend=backend)
        return
    init_file = os.path.abspath(os.path.join(temp_dir, '.torch_distributed_init'))
    init_method = 'file:///' + init_file.replace('\\', '/') if os.name == 'nt' else f'file://{init_file}'
    torch.distributed.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=num_procs)

def report_error(temp_dir, rank, message):
    """Leave a one-line error for `launch` to show (a spawned process that exits with an error)."""
    if temp_dir is not None:
        with open(os.path.join(temp_dir, f'error-rank{rank}.txt'), 'w', encoding='utf-8') as f:
            f.write(str(message).strip())

def _reported_error(temp_dir):
    for name in sorted(n for n in os.listdir(temp_dir) if n.startswith('error-rank')):
        try:
            with open(os.path.join(temp_dir, name), encoding='utf-8') as f:
                return f.read().strip()
        except OSError:
            continue
    return None

def process_device(device_type, local_rank, num_procs, device_index=None):
    """The torch.device of one process: with several processes the local rank's GPU, with one the
    GPU `device_index` (`--device cuda:N`; default 0). CPU processes share the cores between them."""
    if device_type == 'cuda':
        index = device_index if (num_procs == 1 and device_index is not None) else local_rank
        device = torch.device('cuda', index)
        torch.cuda.set_device(device)
        return device
    if num_procs > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_procs))
    return torch.device('cpu')

def torchrun_setup(num_procs, device_type, choose_run_dir, device_index=None):
    """In a torchrun process: join the group; rank 0 calls `choose_run_dir()` and every rank gets
    its result. Returns (rank, local_rank, run_dir)."""
    rank, local_rank, _world_size = torchrun_ranks()
    if device_type == 'cuda':
        torch.cuda.set_device(device_index if (num_procs == 1 and device_index is not None) else local_rank)
    init_process_group(rank, num_procs, device_type)
    holder = [choose_run_dir() if rank == 0 else None]
    torch.distributed.broadcast_object_list(holder, src=0)
    return rank, local_rank, holder[0]

@contextlib.contextmanager
def process_errors(errors, temp_dir, rank, exits, wrap):
    """Inside one process: `errors` (user-facing exception types) become one line.

    A spawned or torchrun process (`exits`) prints it, leaves it for `launch` and exits with 1; a
    single process re-raises it as `wrap(message)`. The process group is left on the way out.
    """
    try:
        yield
    except errors as err:
        if exits:
            print(f'Error: {err}', file=sys.stderr)
            report_error(temp_dir, rank, err)
            sys.exit(1)
        raise wrap(str(err)) from err  # the single-process caller prints it once
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

class LaunchError(RuntimeError):
    """A launched process failed; the message is one line."""

def launch(fn, args, num_procs, log_hint=None):
    """Run `fn(rank, args, temp_dir)` in this process (num_procs == 1) or in `num_procs` spawned ones.

    Exceptions of the single-process case propagate unchanged. A failed spawned process raises
    LaunchError naming the failure (its last error line) and `log_hint` (e.g. the log file).
    """
    torch.multiprocessing.set_start_method('spawn', force=True)
    with tempfile.TemporaryDirectory() as temp_dir:
        if num_procs == 1:
            return fn(0, args, temp_dir)
        hint = f'; see {log_hint}' if log_hint else ''
        try:
            torch.multiprocessing.spawn(fn=fn, args=(args, temp_dir), nprocs=num_procs)
        except torch.multiprocessing.ProcessExitedException as err:
            reported = _reported_error(temp_dir)
            if reported is not None:
                raise LaunchError(reported) from err
            raise LaunchError(f'a process failed ({err}); the other processes were stopped{hint}') from err
        except torch.multiprocessing.ProcessRaisedException as err:
            last = [line for line in str(err).strip().splitlines() if line.strip()][-1]
            raise LaunchError(f'a process failed: {last}; the other processes were stopped{hint}') from err
    return None

#----------------------------------------------------------------------------
# Training scripts: from main() to the loop.

def torchrun_gpus(gpus, explicit):
    """The process count: torchrun's WORLD_SIZE when started by torchrun (a ValueError if an
    explicit --gpus disagrees), else `gpus`."""
    if not started_by_torchrun():
        return gpus
    world_size = int(os.environ['WORLD_SIZE'])
    if explicit and gpus != world_size:
        raise ValueError(f'--gpus {gpus} disagrees with torchrun WORLD_SIZE={world_size}; drop --gpus under torchrun')
    return world_size

def continued_run_desc(ckpt_path):
    """Run description of a run continued from `.../NNNNN-desc/checkpoint.pt`: 'desc-continued' (also
    when that run was itself continued: no '-continued-continued' chains)."""
    return dnnlib.util.continued_run_desc(ckpt_path)

def continue_run(args, explicit, gpus, device):
    """Exact resume: the process count and device that may change from the command line (`explicit`
    names the options given there). Another --gpus changes the per-process data shards and random
    streams, which is said; the batch must still split evenly. Raises ValueError."""
    if 'gpus' in explicit and gpus != args.num_gpus:
        print(f'Note: the checkpoint was trained with {args.num_gpus} processes; continuing with {gpus} changes '
              f'the per-process data shards and random streams (not an exact continuation).')
        if args.batch_size % gpus != 0:
            raise ValueError(f'the batch size {args.batch_size} is not divisible by --gpus {gpus}')
        args.num_gpus = gpus
    if 'device' in explicit:
        args.pop('device_index', None)
        args.update(devices.device_options(device))

def write_options(args, file_name, content=None):
    """`content(args)` (default: `args` itself) as indented JSON in `args.run_dir/file_name`, atomically."""
    with dnnlib.util.atomic_write(os.path.join(args.run_dir, file_name), 'w') as f:
        json.dump(args if content is None else content(args), f, indent=2, default=str)

def start(process_fn, args, outdir, desc, options_file, print_options, dry_run=False, options_content=None):
    """Run a training script's processes from its `main`.

    Picks the run directory `outdir/NNNNN-desc` (into `args.run_dir`), prints the options with
    `print_options(args)`, writes them (or `options_content(args)`) to `options_file` there, then runs
    `process_fn(rank, args, temp_dir, local_rank=None, torchrun=False)` in one process, in
    `args.num_gpus` spawned ones, or in this torchrun process. Nothing is created on `dry_run`.
    Raises LaunchError (a spawned process failed) or what the single process raised.
    """
    if started_by_torchrun():
        def choose_run_dir():
            return dnnlib.util.next_run_dir(outdir, desc) if dry_run else dnnlib.util.make_run_dir(outdir, desc)
        rank, local_rank, args.run_dir = torchrun_setup(args.num_gpus, args.device_type, choose_run_dir,
                                                        args.get('device_index'))
        if rank == 0:
            print_options(args)
            if not dry_run:
                write_options(args, options_file, options_content)
        if dry_run:
            torch.distributed.destroy_process_group()
            return None
        return process_fn(rank, args, None, local_rank=local_rank, torchrun=True)

    if dry_run:
        args.run_dir = dnnlib.util.next_run_dir(outdir, desc)
        print_options(args)
        print('Dry run; exiting.')
        return None
    try:
        args.run_dir = dnnlib.util.make_run_dir(outdir, desc)  # atomic: runs started at once get distinct folders
    except OSError as err:
        raise LaunchError(f'--outdir "{outdir}": cannot create a run folder: {dnnlib.util.describe_os_error(err)}') from err
    print_options(args)
    print(f'Created output directory {args.run_dir}')
    try:
        write_options(args, options_file, options_content)
        print('Launching processes...')
        return launch(process_fn, args, args.num_gpus, log_hint=os.path.join(args.run_dir, 'log.txt'))
    except OSError as err:  # full disk, ...: one line; a folder with no results yet is removed
        dnnlib.util.remove_unused_run_dir(args.run_dir, [options_file, 'log.txt'])
        raise LaunchError(f'{args.run_dir}: {dnnlib.util.describe_os_error(err)}') from err
    except BaseException:  # a failed start (bad data, unloadable network, Ctrl-C) leaves no empty run folder
        dnnlib.util.remove_unused_run_dir(args.run_dir, [options_file, 'log.txt'])
        raise

def run_process(loop_fn, rank, args, temp_dir, local_rank=None, torchrun=False, errors=(), wrap=RuntimeError):
    """One training process: `loop_fn(rank=rank, device=device)` with everything around it.

    Tees this process's output into `args.run_dir/log.txt`, picks the device (`process_device`),
    joins the process group (spawned processes), starts the statistics afresh and quiets custom-op
    builds on ranks > 0. `errors` become one line (`process_errors`). On the way out the log file
    is closed and `sys.stdout`/`sys.stderr` are what they were before.
    """
    if local_rank is None:
        local_rank = rank
    with dnnlib.util.Logger(file_name=os.path.join(args.run_dir, 'log.txt'), file_mode='a', should_flush=True):
        device = process_device(args.device_type, local_rank, args.num_gpus, args.get('device_index'))
        if args.num_gpus > 1 and not torchrun:
            init_process_group(rank, args.num_gpus, args.device_type, temp_dir)
        training_stats.reset()  # a new run (also when called again in the same process)
        training_stats.init_multiprocessing(rank=rank, sync_device=device if args.num_gpus > 1 else None)
        if rank != 0:
            custom_ops.verbosity = 'none'
        with process_errors(errors, temp_dir, rank, exits=(args.num_gpus > 1 or torchrun), wrap=wrap):
            return loop_fn(rank=rank, device=device)

#----------------------------------------------------------------------------
# Inside the loops.

def average_gradients(params, num_procs):
    """All-reduce the gradients of `params` in one flat buffer and average them over the processes;
    then replace NaN/Inf in every gradient (NaN -> 0, +-Inf -> +-1e5). Missing gradients count as 0."""
    if num_procs > 1 and len(params) > 0:
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
        torch.distributed.all_reduce(flat)
        flat /= num_procs
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].reshape(p.shape)
            offset += n
    for p in params:
        if p.grad is not None:
            torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)

def broadcast_module(module, num_procs):
    """Every parameter and buffer of `module` <- rank 0's (no-op for one process or None)."""
    if num_procs > 1 and module is not None:
        for tensor in misc.params_and_buffers(module):
            torch.distributed.broadcast(tensor.data, src=0)

def average_buffers(module, num_procs, skip=()):
    """Average the floating-point buffers of `module` (e.g. BatchNorm running statistics, which
    differ because each rank sees other images) over the processes; buffers named in `skip` stay."""
    if num_procs > 1:
        for name, buf in module.named_buffers():
            if buf.is_floating_point() and name not in skip:
                torch.distributed.all_reduce(buf)
                buf /= num_procs

#----------------------------------------------------------------------------
