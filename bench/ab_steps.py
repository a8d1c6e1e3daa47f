"""Inversion steps of our own code, variant against variant, interleaved in one process.

`bench/speed.py` runs each case alone (a fresh process per case), so on a shared machine the load
of other processes moves its numbers between cases. Here every variant of a method is built once
(same networks, target and seeds), warmed up once (the compile happens there), and then the
variants run in turn, `--reps` rounds with the order reversed every other round, so the load hits
every variant alike. Each run is a whole inversion with `--steps` steps per phase; a step is the
interval between two consecutive `step()` calls of the same optimizer (forward through G and the
degradation, loss, backward, update), as in `bench/speed.py`.

Per method and variant the table gives the median seconds per step over all phases and per phase,
and `speed-up = first variant / this variant` (ratio of the medians). Variants are those of
`bench/speed.py` (e.g. ref-fp32, ref-fp32-compile, ref-fp32-unf-compile, ref-fp32-unf-cl-compile).

\b
Example (the README's inversion table):
  python bench/ab_steps.py --methods ngd,pti --resolution 256 --threads 1 \\
      --variants ref-fp32,ref-fp32-compile,ref-fp32-unf,ref-fp32-unf-compile --json out/ab_steps.json
"""

import json
import os
import statistics
import sys
import time

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dnnlib  # noqa: E402
from bench import speed  # noqa: E402
from bench.compare_nvlabs import load_average  # noqa: E402
from inversion import common  # noqa: E402

#----------------------------------------------------------------------------

class StepClock:
    """Step intervals per optimizer (in creation order: one per phase for NGD/PTI) while active."""

    def __init__(self):
        self.optimizers = []  # kept alive, so ids are never reused within a run
        self.last = dict()
        self.intervals = dict()

    def __call__(self, optimizer, _args, _kwargs):
        now = time.perf_counter()
        key = id(optimizer)
        if key not in self.last:
            self.optimizers.append(optimizer)
            self.intervals[key] = []
        else:
            self.intervals[key].append(now - self.last[key])
        self.last[key] = now

    def phases(self):
        return [self.intervals[id(opt)] for opt in self.optimizers]


def timed_run(run, steps):
    """Run one inversion with `steps` per phase -> list (per phase) of step intervals in seconds."""
    from torch.optim.optimizer import register_optimizer_step_post_hook  # pylint: disable=import-outside-toplevel
    clock = StepClock()
    handle = register_optimizer_step_post_hook(clock)
    try:
        run(steps)
    finally:
        handle.remove()
    return clock.phases()


class Variant:
    """One variant's inversion runner with its process-wide inversion options switched on around each run."""

    def __init__(self, method, res, batch, device, text):
        self.v = speed.parse_variant(text)
        reason = speed.unsupported_reason(self.v, device)
        if reason:
            raise click.ClickException(f'variant {text}: {reason}')
        if self.v.freeze:
            raise click.ClickException(f'variant {text}: freeze is for G inference only')
        self.name = text
        torch.manual_seed(0)
        with speed.force_impl(self.v.ops):
            self.runner = speed.inversion_runner(method, res, batch, device, self.v)

    def __call__(self, steps):
        common.compile_synthesis(self.v.compile)
        common.unfused_modconv(self.v.unfused)
        try:
            with speed.force_impl(self.v.ops):
                return timed_run(self.runner, steps)
        finally:
            common.compile_synthesis(False)
            common.unfused_modconv(False)


def run_method(method, res, batch, device, variants, steps, reps, echo):
    built = [Variant(method, res, batch, device, text) for text in variants]
    for v in built:  # warm-up: compile, allocator, first-touch
        t0 = time.perf_counter()
        v(2)
        echo(f'{method} {res}px b{batch} {v.name}: warm-up run (2 steps per phase, compile included) {time.perf_counter() - t0:.1f} s')
    phases = {v.name: None for v in built}
    for r in range(reps):
        for v in (built if r % 2 == 0 else built[::-1]):
            per_phase = v(steps)
            if phases[v.name] is None:
                phases[v.name] = [[] for _ in per_phase]
            for acc, intervals in zip(phases[v.name], per_phase):
                acc.extend(intervals)
        echo(f'  round {r + 1}/{reps} done, load average {load_average()}')
    rows = []
    base = None
    for v in built:
        all_steps = [t for p in phases[v.name] for t in p]
        med = statistics.median(all_steps)
        base = base or med
        rows.append(dict(method=method, resolution=res, batch=batch, variant=v.name, steps_timed=len(all_steps),
                         median_s_per_step=med, min_s_per_step=min(all_steps),
                         phase_median_s=[statistics.median(p) if p else float('nan') for p in phases[v.name]],
                         speedup_vs_first=base / med, load_average=load_average()))
    return rows


@click.command(help=__doc__)
@click.option('--methods', default='ngd,pti', show_default=True, help='Comma list of inversion methods (bench/speed.py workloads)')
@click.option('--resolution', type=int, default=256, show_default=True)
@click.option('--batch', type=click.IntRange(min=1), default=1, show_default=True)
@click.option('--variants', default='ref-fp32,ref-fp32-compile,ref-fp32-unf,ref-fp32-unf-compile', show_default=True,
              help='Comma list of bench/speed.py variants; the first is the reference of the speed-up')
@click.option('--steps', type=click.IntRange(min=2), default=3, show_default=True, help='Steps per phase in each timed run')
@click.option('--reps', type=click.IntRange(min=1), default=2, show_default=True, help='Rounds over all variants')
@click.option('--arch', type=click.Choice(['paper', 'tiny']), default='paper', show_default=True)
@click.option('--threads', type=int, default=None, help='torch.set_num_threads (default: torch\'s)')
@click.option('--json', 'json_path', default=None, help='Also write the rows to this JSON file')
def main(methods, resolution, batch, variants, steps, reps, arch, threads, json_path):
    if threads:
        torch.set_num_threads(threads)
    device = torch.device('cpu')
    names = [m for m in methods.split(',') if m]
    for m in names:
        if m not in speed.INVERSION_WORKLOADS:
            raise click.BadParameter(f'"{m}" is not an inversion method; use {"|".join(speed.INVERSION_WORKLOADS)}', param_hint='--methods')
    texts = [t for t in variants.split(',') if t]
    for t in texts:
        try:
            speed.parse_variant(t)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint='--variants')
    echo = lambda line: print(line, flush=True)
    echo(f'qcgan inversion steps, {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; '
         f'load average {load_average()}')
    rows = []
    original = speed.build_networks
    if arch == 'tiny':  # smoke runs: the tiny widths at the given resolution
        speed.build_networks = lambda res, dev, variant, **kw: original(res, dev, dnnlib.EasyDict(variant, arch='tiny'), **kw)
    try:
        for m in names:
            rows += run_method(m, resolution, batch, device, texts, steps, reps, echo)
    finally:
        speed.build_networks = original
    header = f'{"method":>6} {"res":>4} {"batch":>5} {"variant":>26} {"s/step med":>10} {"min":>7} {"per phase (median s)":>26} {"speed-up":>8}'
    echo(header)
    echo('-' * len(header))
    for r in rows:
        phases = ' / '.join(f'{p:.2f}' for p in r['phase_median_s'])
        echo(f'{r["method"]:>6} {r["resolution"]:>4} {r["batch"]:>5} {r["variant"]:>26} {r["median_s_per_step"]:>10.3f} '
             f'{r["min_s_per_step"]:>7.3f} {phases:>26} {r["speedup_vs_first"]:>7.2f}x')
    echo(f'speed-up = the first variant\'s median / this one\'s. Load average at the end: {load_average()}')
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with dnnlib.util.atomic_write(json_path, 'w') as f:
            json.dump(dict(torch=torch.__version__, threads=torch.get_num_threads(), steps=steps, reps=reps, rows=rows), f, indent=2)
        echo(f'wrote {json_path}')
    return rows


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
