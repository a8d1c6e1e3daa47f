"""Time G forward and G+D forward/backward at several resolutions and batch sizes.

Prints images per second for each case and optionally writes the table as JSON. Networks use
the reference architecture for the resolution (fmaps 0.5 below 512, 1 from 512 up, 8 mapping
layers, FP16 on the 4 highest resolutions with conv_clamp 256; FP16 applies on CUDA only).

\b
Examples:
  python bench/bench_networks.py --device cpu --resolutions 32,64 --batches 1,4
  python bench/bench_networks.py --device cuda --resolutions 256,512,1024 --batches 4,16 --json out/bench.json
"""

import json
import os
import sys
import time

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dnnlib  # noqa: E402
import legacy  # noqa: E402
from torch_utils import image_utils  # noqa: E402
from training import networks  # noqa: E402

#----------------------------------------------------------------------------

def build_networks(resolution, device, fp16=True):
    channel_base = 32768 if resolution >= 512 else 16384
    arch = legacy._arch(resolution, channel_base=channel_base, channel_max=512, map_layers=8, fp16=(4 if fp16 else 0))
    G_kwargs, D_kwargs = legacy.network_kwargs_from_arch(arch)
    G = networks.Generator(**G_kwargs).to(device)
    D = networks.Discriminator(**D_kwargs).to(device)
    return G, D

def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)

def time_call(fn, device, min_seconds, warmup=1, max_repeats=50):
    """Median seconds per call of `fn` over repeats that take at least `min_seconds` together."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    start = time.perf_counter()
    while len(times) < max_repeats and (time.perf_counter() - start < min_seconds or len(times) < 2):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]

def bench_case(resolution, batch, device, min_seconds, fp16=True):
    G, D = build_networks(resolution, device, fp16=fp16)
    z = torch.randn([batch, G.z_dim], device=device)
    c = torch.zeros([batch, 0], device=device)

    G.eval()
    def g_forward():
        with torch.no_grad():
            G(z, c, noise_mode='const')
    g_sec = time_call(g_forward, device, min_seconds)

    G.train().requires_grad_(True)
    D.train().requires_grad_(True)
    mbstd = min(batch, 4)
    D.b4.mbstd.group_size = mbstd
    def gd_step():
        img = G(z, c)
        loss = torch.nn.functional.softplus(-D(img, c)).mean()
        loss.backward()
        G.zero_grad(set_to_none=True)
        D.zero_grad(set_to_none=True)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    gd_sec = time_call(gd_step, device, min_seconds)
    peak_gb = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == 'cuda' else float('nan')
    return dnnlib.EasyDict(resolution=resolution, batch=batch, device=str(device),
                           G_forward_img_per_s=batch / g_sec, GD_fwd_bwd_img_per_s=batch / gd_sec,
                           G_forward_ms=g_sec * 1e3, GD_fwd_bwd_ms=gd_sec * 1e3, peak_mem_gb=peak_gb)

#----------------------------------------------------------------------------

@click.command(help=__doc__)
@click.option('--device', default='auto', show_default=True, help='cpu, cuda, cuda:N or auto')
@click.option('--resolutions', default=None, help='Comma-separated resolutions [default: 32,64 on CPU, 256,512,1024 on CUDA]')
@click.option('--batches', default=None, help='Comma-separated batch sizes [default: 1,4 on CPU, 4,16 on CUDA]')
@click.option('--min-seconds', type=float, default=2.0, show_default=True, help='Minimum timing time per case')
@click.option('--fp32', is_flag=True, help='Disable FP16 blocks (CUDA)')
@click.option('--json', 'json_path', default=None, help='Also write the results to this JSON file')
def main(device, resolutions, batches, min_seconds, fp32, json_path):
    try:
        device = image_utils.parse_device(device)
    except ValueError as err:
        raise click.ClickException(str(err))
    on_gpu = device.type == 'cuda'
    resolutions = [int(r) for r in (resolutions or ('256,512,1024' if on_gpu else '32,64')).split(',')]
    batches = [int(b) for b in (batches or ('4,16' if on_gpu else '1,4')).split(',')]
    if on_gpu:
        torch.backends.cudnn.benchmark = True

    print(f'device: {device} ({torch.cuda.get_device_name(device) if on_gpu else "CPU, %d threads" % torch.get_num_threads()}), '
          f'torch {torch.__version__}, fp16 blocks: {"off" if fp32 or not on_gpu else "on"}')
    header = f'{"res":>5} {"batch":>5} {"G fwd img/s":>12} {"G+D fwd+bwd img/s":>18} {"peak GB":>8}'
    print(header)
    print('-' * len(header))
    rows = []
    for res in resolutions:
        for batch in batches:
            row = bench_case(res, batch, device, min_seconds, fp16=not fp32)
            rows.append(row)
            print(f'{res:>5} {batch:>5} {row.G_forward_img_per_s:>12.2f} {row.GD_fwd_bwd_img_per_s:>18.2f} {row.peak_mem_gb:>8.2f}', flush=True)
    if json_path:
        with dnnlib.util.atomic_write(json_path, 'w') as f:
            json.dump(rows, f, indent=2)
        print(f'wrote {json_path}')

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
