"""Side-by-side speed of qcgan and a checkout of NVlabs/stylegan2-ada-pytorch, in one process.

Both codebases build the same networks (the same constructor arguments, fp32, eager, weights
copied by name from ours into theirs), and each workload runs as an interleaved A/B series: every
repetition times both sides back to back, alternating which goes first, so load from other
processes on the machine hits both equally. Per workload the table gives the median and minimum
milliseconds per call of each side and `ratio = NVLabs time / our time` (> 1: we are faster), as
the ratio of medians and the median of the per-repetition ratios.

Workloads:
  G    generator inference: mapping + synthesis, no grad, noise_mode='const'
  GD   one training iteration of the real loss: Gmain + Dmain phases (no lazy regularisation),
       an Adam step per network, the G_ema update; conv2d_gradfix enabled as each training
       loop enables it; each side runs its own `training.loss.StyleGAN2Loss`

The NVLabs code is imported under its own package names (`dnnlib`, `torch_utils`, `training`)
from the given folder, then moved out of `sys.modules` so both sets of modules live side by side.
Nothing in the checkout is modified; on CPU its custom ops take their reference paths.
Without --nvlabs (or with `--nvlabs self`) the B side is a second copy of our own code: a dry run
of the machinery that needs no checkout.

\b
Examples:
  python bench/compare_nvlabs.py --nvlabs /path/to/stylegan2-ada-pytorch
  python bench/compare_nvlabs.py --nvlabs /path/to/stylegan2-ada-pytorch --cases G:256:4,GD:256:2 --reps 5
  python bench/speed.py --compare-nvlabs /path/to/stylegan2-ada-pytorch
"""

import copy
import importlib
import json
import os
import statistics
import sys
import time

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dnnlib  # noqa: E402
import legacy  # noqa: E402

DEFAULT_CASES = 'G:32:16,GD:32:16,G:256:4,GD:256:2'
_PACKAGES = ('dnnlib', 'torch_utils', 'training')

#----------------------------------------------------------------------------
# Importing the other codebase beside ours.

def _our_modules():
    return {name: mod for name, mod in sys.modules.items() if name.split('.')[0] in _PACKAGES}

def import_nvlabs(path):
    """(networks, loss, conv2d_gradfix) modules of the NVLabs checkout at `path`, imported under
    their own names and then removed from `sys.modules` (ours are restored)."""
    path = os.path.abspath(path)
    if not os.path.isfile(os.path.join(path, 'training', 'networks.py')):
        raise FileNotFoundError(f'{path} is not a stylegan2-ada-pytorch checkout (no training/networks.py)')
    ours = _our_modules()
    for name in ours:
        del sys.modules[name]
    sys.path.insert(0, path)
    try:
        networks = importlib.import_module('training.networks')
        loss = importlib.import_module('training.loss')
        gradfix = importlib.import_module('torch_utils.ops.conv2d_gradfix')
        # Shim: the construction-time pickle check looks its helpers up by module name, which
        # resolves to our packages once theirs leave sys.modules. It only validates arguments.
        importlib.import_module('torch_utils.persistence')._check_pickleable = lambda obj: None
    finally:
        sys.path.remove(path)
        for name in list(_our_modules()):
            del sys.modules[name]
        sys.modules.update(ours)
    return dnnlib.EasyDict(networks=networks, loss=loss, conv2d_gradfix=gradfix, name='NVLabs')

def our_code():
    from torch_utils.ops import conv2d_gradfix
    from training import loss, networks
    return dnnlib.EasyDict(networks=networks, loss=loss, conv2d_gradfix=conv2d_gradfix, name='qcgan')

#----------------------------------------------------------------------------
# Networks and workloads.

def network_kwargs(res, arch='paper'):
    """Constructor kwargs (G, D) both codebases accept: the reference widths for `res`, fp32."""
    if arch == 'tiny':
        a = legacy.make_arch(res, channel_base=2048, channel_max=64, map_layers=2, w_dim=64, fp16=0)
    else:
        a = legacy.make_arch(res, channel_base=32768 if res >= 512 else 16384, channel_max=512, map_layers=8, fp16=0)
    G_kwargs, D_kwargs = legacy.network_kwargs_from_arch(a)
    return dnnlib.EasyDict(G_kwargs), dnnlib.EasyDict(D_kwargs)

def build(code, res, arch, source=None, seed=0):
    """{G, D, G_ema} of `code` at `res`; with `source`, weights and buffers copied from it by name.

    Every network is constructed (no deepcopy: copying a persistent NVLabs module re-imports its
    source, which would then bind to our packages)."""
    G_kwargs, D_kwargs = network_kwargs(res, arch)
    nets = dict()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, cls, kwargs in (('G', 'Generator', G_kwargs), ('D', 'Discriminator', D_kwargs), ('G_ema', 'Generator', G_kwargs)):
            nets[name] = getattr(code.networks, cls)(**copy.deepcopy(kwargs)).eval().requires_grad_(False)
    for name in nets:
        src = source[name] if source is not None else nets['G' if name == 'G_ema' else name]
        nets[name].load_state_dict(src.state_dict(), strict=True)
    return nets

def workload_G(code, nets, res, batch, variant='eager'):
    G = nets['G_ema']
    z = torch.randn([batch, G.z_dim], generator=torch.Generator().manual_seed(1))
    c = torch.zeros([batch, G.c_dim])
    if variant == 'eager':
        def fn():
            with torch.no_grad():
                return G(z, c, noise_mode='const')
        return fn
    # Our added paths (A side only), dash-joined tokens: cl (channels-last weights and activations),
    # compile (torch.compile of the synthesis network; the warm-up call compiles, not timed), unf
    # (fused_modconv=False: styles scale the activations, one shared weight), freeze (with compile:
    # `misc.frozen_forward`, an inference snapshot compiled with inductor freezing).
    from torch_utils import misc  # pylint: disable=import-outside-toplevel
    tokens = parse_variant(variant)
    kwargs = dict(fused_modconv=False) if 'unf' in tokens else dict()
    if 'freeze' in tokens:
        synthesis = misc.frozen_forward(G.synthesis, channels_last=('cl' in tokens))
    else:
        if 'cl' in tokens:
            G = G.to(memory_format=torch.channels_last)
        synthesis = misc.compiled_forward(G.synthesis) if 'compile' in tokens else G.synthesis
    def fn_variant():
        with torch.no_grad():
            return synthesis(G.mapping(z, c), noise_mode='const', **kwargs)
    return fn_variant

VARIANT_TOKENS = ('cl', 'compile', 'unf', 'freeze')

def parse_variant(text):
    """'eager' -> set(); 'unf-cl-compile-freeze' -> its tokens; ValueError on anything else."""
    if text == 'eager':
        return set()
    tokens = text.split('-')
    if any(t not in VARIANT_TOKENS for t in tokens) or len(set(tokens)) != len(tokens):
        raise ValueError(f'bad variant "{text}": use eager or dash-joined tokens of {"|".join(VARIANT_TOKENS)}')
    if 'freeze' in tokens and 'compile' not in tokens:
        raise ValueError(f'bad variant "{text}": freeze is an option of compile')
    return set(tokens)

def workload_GD(code, nets, res, batch, variant='eager'):
    if variant != 'eager':
        raise ValueError('the GD workload compares the eager paths only')
    G, D, G_ema = nets['G'], nets['D'], nets['G_ema']
    D.b4.mbstd.group_size = min(batch, 4)
    G.train()
    D.train()
    kwargs = dict(device=torch.device('cpu'), D=D, r1_gamma=1, pl_weight=2)
    if code.name == 'NVLabs':
        loss = code.loss.StyleGAN2Loss(G_mapping=G.mapping, G_synthesis=G.synthesis, **kwargs)
        step_kwargs = dict(sync=True)
    else:
        loss = code.loss.StyleGAN2Loss(G=G, **kwargs)
        step_kwargs = dict()
    trained = [('G', list(G.parameters())), ('D', list(D.parameters()))]
    opts = {name: torch.optim.Adam(params, lr=0.0025, betas=(0.0, 0.99), eps=1e-8) for name, params in trained}
    gen = torch.Generator().manual_seed(2)
    real = torch.rand([batch, G.img_channels, res, res], generator=gen) * 2 - 1
    c = torch.zeros([batch, 0])
    # As each training loop sets it: NVLabs always (its op then runs only on CUDA), ours on CUDA.
    gradfix = True if code.name == 'NVLabs' else (real.device.type == 'cuda')
    def fn():
        code.conv2d_gradfix.enabled = gradfix
        try:
            for name, params in trained:
                opts[name].zero_grad(set_to_none=True)
                for p in params:
                    p.requires_grad_(True)
                z = torch.randn([batch, G.z_dim], generator=gen)
                loss.accumulate_gradients(phase=name + 'main', real_img=real, real_c=c, gen_z=z, gen_c=c, gain=1, **step_kwargs)
                for p in params:
                    p.requires_grad_(False)
                opts[name].step()
            with torch.no_grad():  # the G_ema update of both training loops (beta for a 10k-image half-life)
                for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                    p_ema.copy_(p.lerp(p_ema, 0.999))
                for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                    b_ema.copy_(b)
        finally:
            code.conv2d_gradfix.enabled = False
    return fn

WORKLOADS = dict(G=workload_G, GD=workload_GD)

#----------------------------------------------------------------------------
# Interleaved A/B timing.

def interleaved(fn_a, fn_b, reps, warmup=1):
    """Lists of seconds per call (a, b): `warmup` untimed calls each, then `reps` pairs, the order
    alternating between pairs."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    ta, tb = [], []
    for r in range(reps):
        order = [(fn_a, ta), (fn_b, tb)] if r % 2 == 0 else [(fn_b, tb), (fn_a, ta)]
        for fn, out in order:
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return ta, tb

def parse_cases(text):
    cases = []
    for item in text.split(','):
        parts = item.strip().split(':')
        if len(parts) != 3 or parts[0] not in WORKLOADS or not parts[1].isdigit() or not parts[2].isdigit():
            raise ValueError(f'bad case "{item}": use WORKLOAD:RES:BATCH with WORKLOAD in {"|".join(WORKLOADS)}, e.g. G:256:4')
        res, batch = int(parts[1]), int(parts[2])
        if res < 4 or res & (res - 1) or batch < 1:
            raise ValueError(f'bad case "{item}": the resolution must be a power of two >= 4 and the batch >= 1')
        cases.append((parts[0], res, batch))
    return cases

def load_average():
    try:
        return ' '.join(open('/proc/loadavg').read().split()[:3])
    except OSError:
        return 'n/a'

def compare(nvlabs=None, cases=DEFAULT_CASES, reps=5, arch='paper', echo=print, variant='eager'):
    """Run the cases side by side -> list of row dicts. `nvlabs`: checkout folder, or None/'self'
    for a dry run against a second copy of our own code. `variant` (G only, our side): eager,
    or dash-joined tokens of cl, compile, unf, freeze (see `workload_G`)."""
    ours = our_code()
    theirs = import_nvlabs(nvlabs) if nvlabs not in (None, 'self') else dnnlib.EasyDict(our_code(), name='qcgan-copy')
    rows = []
    echo(f'A = qcgan ({variant}), B = {theirs.name} (eager){"" if theirs.name != "NVLabs" else " (" + os.path.abspath(nvlabs) + ")"}; '
         f'torch {torch.__version__}, {torch.get_num_threads()} threads; load average {load_average()}')
    header = f'{"workload":>8} {"res":>4} {"batch":>5} {"A med ms":>9} {"A min ms":>9} {"B med ms":>9} {"B min ms":>9} {"B/A med":>8} {"B/A pairs":>9} {"max|dA-B|":>9}'
    echo(header)
    echo('-' * len(header))
    for workload, res, batch in (parse_cases(cases) if isinstance(cases, str) else cases):
        nets_a = build(ours, res, arch)
        nets_b = build(theirs, res, arch, source=nets_a)
        with torch.no_grad():  # same weights, same output: the comparison is of the same computation
            z = torch.randn([1, nets_a['G'].z_dim], generator=torch.Generator().manual_seed(3))
            c = torch.zeros([1, nets_a['G'].c_dim])
            diff = float((nets_a['G'](z, c, noise_mode='const') - nets_b['G'](z, c, noise_mode='const')).abs().max())
        torch.manual_seed(0)
        fn_a = WORKLOADS[workload](ours, nets_a, res, batch, variant=variant)
        fn_b = WORKLOADS[workload](theirs, nets_b, res, batch)
        if workload == 'G' and variant != 'eager':  # our variant's own images (the call also compiles)
            t0 = time.perf_counter()
            diff = float((fn_a() - fn_b()).abs().max())
            echo(f'{workload} {res} {batch}: variant {variant} ready in {time.perf_counter() - t0:.1f} s (compile included)')
        ta, tb = interleaved(fn_a, fn_b, reps)
        row = dict(workload=workload, resolution=res, batch=batch, reps=reps, variant=variant,
                   a_median_ms=statistics.median(ta) * 1e3, a_min_ms=min(ta) * 1e3,
                   b_median_ms=statistics.median(tb) * 1e3, b_min_ms=min(tb) * 1e3,
                   ratio_of_medians=statistics.median(tb) / statistics.median(ta),
                   median_pair_ratio=statistics.median(b / a for a, b in zip(ta, tb)),
                   max_abs_output_diff=diff, load_average=load_average())
        rows.append(row)
        echo(f'{workload:>8} {res:>4} {batch:>5} {row["a_median_ms"]:>9.1f} {row["a_min_ms"]:>9.1f} {row["b_median_ms"]:>9.1f} '
             f'{row["b_min_ms"]:>9.1f} {row["ratio_of_medians"]:>7.3f}x {row["median_pair_ratio"]:>8.3f}x {diff:>9.2e}')
    echo(f'B/A > 1: qcgan is faster. Load average at the end: {load_average()}')
    return rows

#----------------------------------------------------------------------------

@click.command(help=__doc__)
@click.option('--nvlabs', 'nvlabs', default=None, metavar='DIR', help='stylegan2-ada-pytorch checkout (default: a dry run against our own code)')
@click.option('--cases', default=DEFAULT_CASES, show_default=True, help='Comma list of WORKLOAD:RES:BATCH')
@click.option('--reps', type=click.IntRange(min=1), default=5, show_default=True, help='Timed A/B pairs per case')
@click.option('--arch', type=click.Choice(['paper', 'tiny']), default='paper', show_default=True)
@click.option('--variant', default='eager', show_default=True,
              help='Our side of the G workload: eager (the same path as NVLabs), or dash-joined cl (channels-last), compile '
                   '(torch.compile), unf (fused_modconv=False), freeze (compile with inductor freezing), e.g. unf-cl-compile-freeze')
@click.option('--threads', type=int, default=None, help='torch.set_num_threads (default: torch\'s)')
@click.option('--json', 'json_path', default=None, help='Also write the rows to this JSON file')
def main(nvlabs, cases, reps, arch, variant, threads, json_path):
    run_cli(nvlabs, cases, reps, arch, threads, json_path, variant)

def run_cli(nvlabs, cases=DEFAULT_CASES, reps=5, arch='paper', threads=None, json_path=None, variant='eager'):
    try:
        parse_cases(cases)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint='--cases')
    if nvlabs not in (None, 'self') and not os.path.isfile(os.path.join(nvlabs, 'training', 'networks.py')):
        raise click.BadParameter(f'{nvlabs} is not a stylegan2-ada-pytorch checkout (no training/networks.py)', param_hint='--nvlabs')
    if threads:
        torch.set_num_threads(threads)
    try:
        parse_variant(variant)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint='--variant')
    if variant != 'eager' and any(w != 'G' for w, _r, _b in parse_cases(cases)):
        raise click.BadParameter('only the G workload has our faster variants', param_hint='--variant')
    rows = compare(nvlabs, cases, reps, arch, echo=lambda line: print(line, flush=True), variant=variant)
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with dnnlib.util.atomic_write(json_path, 'w') as f:
            json.dump(dict(nvlabs=nvlabs, torch=torch.__version__, threads=torch.get_num_threads(), rows=rows), f, indent=2)
        print(f'wrote {json_path}')
    return rows

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
