"""Process launching shared by train.py, train_encoder.py and calc_metrics.py.

One process per device: `--gpus N` spawns N processes with `torch.multiprocessing.spawn`
(NCCL on CUDA, gloo on CPU, rendezvous through a file in a temporary folder), and `torchrun`
(single or multi node) is detected from its environment variables. A process that fails makes
`spawn` stop the others; the failure is turned into one line for the command line.
"""

import contextlib
import os
import sys
import tempfile

import torch

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

def process_device(device_type, local_rank, num_procs):
    """The torch.device of one process; CPU processes share the cores between them."""
    if device_type == 'cuda':
        device = torch.device('cuda', local_rank)
        torch.cuda.set_device(device)
        return device
    if num_procs > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_procs))
    return torch.device('cpu')

def torchrun_setup(num_procs, device_type, choose_run_dir):
    """In a torchrun process: join the group; rank 0 calls `choose_run_dir()` and every rank gets
    its result. Returns (rank, local_rank, run_dir)."""
    rank, local_rank, _world_size = torchrun_ranks()
    if device_type == 'cuda':
        torch.cuda.set_device(local_rank)
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
