"""One whole inversion at real size, timed per phase: seconds per image and per step.

Runs `inversion.methods.run` once on one image (centre-cropped and resized to the generator's
resolution, then degraded by the operator) with the method's default step counts (or `--steps`)
and a `bench/speed.py` variant (e.g. `ref-fp32-unf-cl-compile`), and prints, per phase (one
optimizer each: NGD W / W+ / W++, PTI pivot / tuning), the number of steps, the seconds and the
median seconds per step, plus the wall time of the whole run (compile included). `--no-early-stop`
switches the PTI/QC tuning's LPIPS early stop off, so every step of the paper's counts runs.

\b
Example (the README's real-size table, 1 thread):
  python bench/full_inversion.py --network init:paper256 --target face.png --method pti --operator sr:2 \\
      --variant ref-fp32-unf-cl-compile --threads 1 --no-early-stop --json out/full_pti.json
"""

import json
import os
import statistics
import sys
import time
import warnings

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dnnlib  # noqa: E402
import legacy  # noqa: E402
from bench.ab_steps import StepClock  # noqa: E402
from bench.compare_nvlabs import load_average  # noqa: E402
from bench import speed  # noqa: E402
from inversion import common, methods  # noqa: E402
from inversion.operators import parse_degradation  # noqa: E402


@click.command(help=__doc__)
@click.option('--network', 'network_spec', required=True, help='Network pickle / weights file or init:PRESET')
@click.option('--target', required=True, help='Clean image file (degraded here by --operator)')
@click.option('--method', type=click.Choice(['ngd', 'pti']), default='pti', show_default=True)
@click.option('--operator', default='sr:2', show_default=True, help='Degradation spec (invert.py --operator)')
@click.option('--variant', default='ref-fp32', show_default=True, help='bench/speed.py variant (ref-fp32[-unf][-cl][-compile])')
@click.option('--steps', default=None, help='Steps per phase as in invert.py --steps (default: the method\'s)')
@click.option('--no-early-stop', is_flag=True, help='PTI: run every tuning step (lpips_stop=None)')
@click.option('--threads', type=int, default=None, help='torch.set_num_threads')
@click.option('--json', 'json_path', default=None, help='Also write the result to this JSON file')
def main(network_spec, target, method, operator, variant, steps, no_early_stop, threads, json_path):
    if threads:
        torch.set_num_threads(threads)
    device = torch.device('cpu')
    v = speed.parse_variant(variant)
    if v.freeze or v.ops != 'ref' or v.precision != 'fp32':
        raise click.BadParameter('use ref-fp32 with unf, cl, compile tokens', param_hint='--variant')
    G = legacy.load_network(network_spec, device=device)['G_ema'].eval()
    res = G.img_resolution
    clean, _notes = common.load_target(target, size=res, device=device)
    degradation = parse_degradation(operator, res, device=device)
    with torch.no_grad():
        observed = common.degrade(degradation, clean, true=True)  # as invert.py --synthesize-degradation
    lpips = dict(alex=methods.build_lpips('alex', True), vgg=methods.build_lpips('vgg', True))  # random backbones
    if v.channels_last:
        G = G.to(memory_format=torch.channels_last)
        lpips = {k: m.to(memory_format=torch.channels_last) for k, m in lpips.items()}
    kwargs = methods.parse_steps(method, steps) if steps else {}
    if no_early_stop and method == 'pti':
        kwargs['lpips_stop'] = None
    print(f'{method} on {target} ({res} px, {operator}), variant {variant}, {torch.get_num_threads()} threads, '
          f'load average {load_average()}', flush=True)
    common.compile_synthesis(v.compile)
    common.unfused_modconv(v.unfused)
    from torch.optim.optimizer import register_optimizer_step_post_hook  # pylint: disable=import-outside-toplevel
    clock = StepClock()
    handle = register_optimizer_step_post_hook(clock)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            methods.run(method=method, G=G, target=observed, degradation=degradation, lpips=lpips, steps=kwargs, seed=0)
    finally:
        handle.remove()
        common.compile_synthesis(False)
        common.unfused_modconv(False)
    total = time.perf_counter() - t0
    phases = []
    for intervals in clock.phases():
        phases.append(dict(steps=len(intervals) + 1, seconds_between_first_and_last_step=sum(intervals),
                           median_s_per_step=statistics.median(intervals) if intervals else float('nan')))
        print(f'  phase {len(phases)}: {phases[-1]["steps"]} steps, median {phases[-1]["median_s_per_step"]:.3f} s/step, '
              f'{phases[-1]["seconds_between_first_and_last_step"]:.1f} s from first to last step', flush=True)
    print(f'total {total:.1f} s per image (compile and set-up included); load average {load_average()}')
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with dnnlib.util.atomic_write(json_path, 'w') as f:
            json.dump(dict(method=method, network=network_spec, variant=variant, operator=operator, threads=torch.get_num_threads(),
                           no_early_stop=no_early_stop, total_s=total, phases=phases, load_average=load_average()), f, indent=2)


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
