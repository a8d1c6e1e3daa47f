"""Side-by-side speed table: reference ops vs CUDA ops, fp32 vs mixed precision.

For each resolution x batch, times G inference and a G+D forward/backward step (via
`bench/bench_networks.py`) under each variant that the device supports:

- ops `ref` (pure PyTorch bias_act / upfirdn2d) or `cuda` (custom kernels; CUDA only);
- precision `fp32` or `mixed` (FP16 on the 4 highest-resolution blocks; CUDA only).

On CPU only the ref/fp32 row is measured. Prints a table and optionally writes JSON.

\b
Examples:
  python bench/speed.py --device cpu --resolutions 32 --batches 1 --json out/speed.json
  python bench/speed.py --device cuda --resolutions 256,1024 --batches 4,16 --json out/speed.json
"""

import contextlib
import functools
import json
import os
import sys

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dnnlib  # noqa: E402
from bench.bench_networks import bench_case  # noqa: E402
from torch_utils.image_utils import parse_device  # noqa: E402
from torch_utils.ops import bias_act, upfirdn2d  # noqa: E402

#----------------------------------------------------------------------------

@contextlib.contextmanager
def force_impl(impl):
    """Make every bias_act / upfirdn2d call (looked up through the module) use `impl`."""
    originals = dict(bias_act=bias_act.bias_act, upfirdn2d=upfirdn2d.upfirdn2d)
    bias_act.bias_act = functools.partial(originals['bias_act'], impl=impl)
    upfirdn2d.upfirdn2d = functools.partial(originals['upfirdn2d'], impl=impl)
    try:
        yield
    finally:
        bias_act.bias_act = originals['bias_act']
        upfirdn2d.upfirdn2d = originals['upfirdn2d']

def variants(device):
    if device.type != 'cuda':
        return [('ref', 'fp32')]
    return [('ref', 'fp32'), ('cuda', 'fp32'), ('ref', 'mixed'), ('cuda', 'mixed')]

def run(device, resolutions, batches, min_seconds):
    rows = []
    for res in resolutions:
        for batch in batches:
            for impl, precision in variants(device):
                torch.manual_seed(0)
                with force_impl(impl):
                    r = bench_case(res, batch, device, min_seconds, fp16=(precision == 'mixed'))
                r.update(ops=impl, precision=precision)
                rows.append(r)
                yield r

#----------------------------------------------------------------------------

@click.command(help=__doc__)
@click.option('--device', default='auto', show_default=True, help='cpu, cuda, cuda:N or auto')
@click.option('--resolutions', default=None, help='Comma list [default: 32 on CPU, 256,1024 on CUDA]')
@click.option('--batches', default=None, help='Comma list [default: 1 on CPU, 4,16 on CUDA]')
@click.option('--min-seconds', type=float, default=1.0, show_default=True, help='Minimum timing time per case')
@click.option('--json', 'json_path', default=None, help='Also write the rows to this JSON file')
def main(device, resolutions, batches, min_seconds, json_path):
    try:
        device = parse_device(device)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint='--device')
    on_gpu = device.type == 'cuda'
    resolutions = [int(r) for r in (resolutions or ('256,1024' if on_gpu else '32')).split(',')]
    batches = [int(b) for b in (batches or ('4,16' if on_gpu else '1')).split(',')]
    if on_gpu:
        torch.backends.cudnn.benchmark = True
    else:
        print('Note: CPU device: only reference ops in fp32 are measured (CUDA ops and mixed precision need CUDA).')
    header = f'{"res":>5} {"batch":>5} {"ops":>5} {"prec":>6} {"G img/s":>10} {"G+D img/s":>10} {"peak GB":>8}'
    print(header)
    print('-' * len(header))
    rows = []
    for r in run(device, resolutions, batches, min_seconds):
        rows.append(r)
        print(f'{r.resolution:>5} {r.batch:>5} {r.ops:>5} {r.precision:>6} {r.G_forward_img_per_s:>10.2f} '
              f'{r.GD_fwd_bwd_img_per_s:>10.2f} {r.peak_mem_gb:>8.2f}', flush=True)
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with dnnlib.util.atomic_write(json_path, 'w') as f:
            json.dump(rows, f, indent=2)
        print(f'wrote {json_path}')

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
