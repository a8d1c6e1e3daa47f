"""Speed table: every workload x resolution x batch x variant, measured side by side in one run.

Workloads (--workloads):
  G        generator inference (mapping + synthesis, no grad)
  GD       one StyleGAN2-ADA training iteration: Gmain + Dmain phases of the real loss, Adam steps
           and the G_ema update (lazy regularisation excluded)
  GD-qc    the same for QC-StyleGAN fine-tuning (Gmain + Dmain + D_degradedmain of the QC loss,
           distillation from a frozen teacher, last 3 blocks trained)
  encoder  pSp encoder forward (ResNet-34 backbones for w and q)
  pti, cri, ngd, dgp, qc
           one optimisation step of each inversion method (forward through G and the degradation,
           loss, backward, update): the median interval between consecutive optimizer steps of a
           full inversion with 1 + --extra-steps steps per phase, so set-up work such as CRI
           clustering or DGP candidate search is not counted

Variants (--variants, comma list; each is dash-joined tokens):
  ops        ref (pure PyTorch bias_act / upfirdn2d) | cuda (custom kernels, CUDA only)
  precision  fp32 | fp16 (StyleGAN2 mixed precision: FP16 in the 4 highest-resolution blocks,
             CUDA only) | bf16 (torch.autocast bfloat16 around the whole workload)
  layout     cl = channels-last memory format (weights and inputs), otherwise NCHW
  compile    compile = torch.compile of the synthesis network (G, inversion) or of the
             encoder; the compile time is excluded (warm-up) and reported separately
  unf        the non-fused modulated convolution (fused_modconv=False: styles scale the
             activations, one shared weight; `inversion.common.unfused_modconv`) for G and the
             inversion steps (W++ latents stay fused)
  freeze     G only, with compile: inductor freezing (weights become constants of the compiled
             code, prepacked for the CPU convolutions); one compile per network instance
e.g. `ref-fp32`, `cuda-fp16`, `cuda-fp16-cl`, `cuda-bf16-compile`. Variants a device cannot run
are skipped with a note, and so is bf16 on a CPU without native bfloat16 (no avx512_bf16/amx_bf16),
where autocast emulates it and one step takes minutes instead of a fraction of a second.

Per row: images/s, ms per call, seconds per kimg (training workloads: 1000 images; inference:
1000 generated images; inversion: 1000 images x one step), peak memory (CUDA: max allocated;
CPU: peak growth of the process RSS while the case ran), and the speed-up against the first
variant of the same workload/resolution/batch. Prints a table and writes JSON (--json). Each
case runs in a fresh process (--no-isolate: all in this one, faster to start but memory and
compile caches carry over between cases).

Networks use the reference architecture for the resolution (fmaps 0.5 below 512, 1 from 512 up,
8 mapping layers, conv_clamp 256 with FP16), or with --arch tiny 64-channel ones for smoke tests. LPIPS backbones are randomly initialised (same
compute as the pretrained ones, nothing to download).

\b
Examples:
  python bench/speed.py --device cpu --resolutions 32 --batches 1 --workloads G,GD --json out/speed.json
  python bench/speed.py --device cuda --resolutions 256,1024 --batches 4,16 --json out/speed-gpu.json
  python bench/speed.py --device cuda --workloads G --variants ref-fp32,cuda-fp32,cuda-fp16,cuda-fp16-cl,cuda-fp16-compile
  python bench/speed.py --compare-nvlabs ../stylegan2-ada-pytorch   (qcgan vs NVLabs, bench/compare_nvlabs.py)
  python bench/speed.py --compare-nvlabs ../stylegan2-ada-pytorch --workloads G,GD --resolutions 32,256 --batches 4
"""

import contextlib
import copy
import functools
import json
import math
import os
import sys
import threading
import time
import warnings

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dnnlib  # noqa: E402
from dnnlib import cli  # noqa: E402
import legacy  # noqa: E402
from inversion import common  # noqa: E402
from inversion import methods  # noqa: E402
from inversion.operators import parse_degradation  # noqa: E402
from torch_utils import devices  # noqa: E402
from torch_utils import misc  # noqa: E402
from torch_utils.ops import bias_act, upfirdn2d  # noqa: E402
from training import loss as loss_module  # noqa: E402
from training import networks  # noqa: E402
from training import qc as qc_surgery  # noqa: E402
from training.encoders import PSPEncoder  # noqa: E402
from training.training_loop import update_ema  # noqa: E402

WORKLOADS = ('G', 'GD', 'GD-qc', 'encoder', 'pti', 'cri', 'ngd', 'dgp', 'qc')
INVERSION_WORKLOADS = ('pti', 'cri', 'ngd', 'dgp', 'qc')
CPU_VARIANTS = 'ref-fp32,ref-bf16,ref-fp32-cl,ref-fp32-compile'
CUDA_VARIANTS = 'ref-fp32,cuda-fp32,ref-fp16,cuda-fp16,cuda-bf16,cuda-fp16-cl,cuda-fp16-compile'

#----------------------------------------------------------------------------
# Variants.

def parse_variant(text):
    """'cuda-fp16-cl-compile' -> EasyDict(name, ops, precision, channels_last, compile)."""
    v = dnnlib.EasyDict(name=text, ops='ref', precision='fp32', channels_last=False, compile=False, unfused=False,
                        freeze=False)
    for token in text.lower().split('-'):
        if token in ('ref', 'cuda'):
            v.ops = token
        elif token in ('fp32', 'fp16', 'bf16'):
            v.precision = token
        elif token in ('cl', 'channels_last'):
            v.channels_last = True
        elif token == 'compile':
            v.compile = True
        elif token in ('unf', 'unfused'):
            v.unfused = True
        elif token == 'freeze':
            v.freeze = True
        else:
            raise ValueError(f'unknown variant token "{token}" in "{text}"; use ref|cuda, fp32|fp16|bf16, cl, compile, unf, freeze')
    if v.freeze and not v.compile:
        raise ValueError(f'"{text}": freeze is an option of compile')
    return v

def unsupported_reason(variant, device):
    if device.type != 'cuda' and variant.ops == 'cuda':
        return 'CUDA ops need a CUDA device'
    if device.type != 'cuda' and variant.precision == 'fp16':
        return 'FP16 blocks run in FP32 on CPU'
    if device.type == 'cpu' and variant.precision == 'bf16':
        native, why = misc.cpu_bf16_support()
        if not native:
            return why  # minutes for a step that takes a fraction of a second in fp32
    return None

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

def autocast(variant, device):
    if variant.precision == 'bf16':
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()

def to_layout(module, variant):
    return module.to(memory_format=torch.channels_last) if variant.channels_last else module

#----------------------------------------------------------------------------
# Timing and memory.

def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)

def time_call(fn, device, min_seconds, warmup=1, max_repeats=50):
    """(median seconds per call, seconds of the first warm-up call) of `fn`."""
    t0 = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        fn()
    _sync(device)
    times = []
    start = time.perf_counter()
    while len(times) < max_repeats and (time.perf_counter() - start < min_seconds or len(times) < 3):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], first

class PeakMemory:
    """Peak memory while the `with` block runs, in GB: CUDA max allocated, or CPU RSS growth."""

    def __init__(self, device):
        self.device = device
        self.peak_gb = float('nan')
        self.kind = 'cuda_max_allocated' if device.type == 'cuda' else 'cpu_rss_growth'

    def __enter__(self):
        if self.device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        import psutil
        self._proc = psutil.Process()
        self._base = self._peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        def sample():
            while not self._stop.wait(0.005):
                self._peak = max(self._peak, self._proc.memory_info().rss)
        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == 'cuda':
            self.peak_gb = torch.cuda.max_memory_allocated(self.device) / 2**30
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, self._proc.memory_info().rss)
            self.peak_gb = (self._peak - self._base) / 2**30
        return False

#----------------------------------------------------------------------------
# Networks.

def build_networks(resolution, device, variant, qc=False, seed=0):
    """{G, D, G_ema} (and for qc: the QC G, G_ema, D, D_degraded, G_teacher) at the reference
    architecture for `resolution`, FP16 blocks only for the fp16 variant."""
    fp16 = 4 if variant.precision == 'fp16' else 0
    if variant.get('arch', 'paper') == 'tiny':  # smoke tests: the init:tiny32 widths at any resolution
        arch = legacy.make_arch(resolution, channel_base=2048, channel_max=64, map_layers=2, w_dim=64, fp16=fp16)
    else:
        channel_base = 32768 if resolution >= 512 else 16384
        arch = legacy.make_arch(resolution, channel_base=channel_base, channel_max=512, map_layers=8, fp16=fp16)
    G_kwargs, D_kwargs = legacy.network_kwargs_from_arch(arch)
    if variant.channels_last:
        G_kwargs.synthesis_kwargs.update(fp16_channels_last=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = networks.Generator(**G_kwargs).eval().requires_grad_(False)
        D = networks.Discriminator(**D_kwargs).eval().requires_grad_(False)
        nets = dict(G=G, D=D, G_ema=copy.deepcopy(G))
        if qc:
            nets = qc_surgery.convert_to_qc(nets, seed=seed)
    return {k: (to_layout(v.to(device), variant) if isinstance(v, torch.nn.Module) else v) for k, v in nets.items()}

#----------------------------------------------------------------------------
# Workloads. Each returns (fn, images per call, note); fn runs one call.

def workload_G(res, batch, device, variant):
    G = build_networks(res, device, variant)['G_ema']
    z = torch.randn([batch, G.z_dim], device=device)
    if variant.freeze:
        synthesis = misc.frozen_forward(G.synthesis)
    else:
        synthesis = misc.compiled_forward(G.synthesis) if variant.compile else G.synthesis
    kwargs = dict(fused_modconv=False) if variant.unfused else dict()
    def fn():
        with torch.no_grad(), autocast(variant, device):
            ws = G.mapping(z, None)
            synthesis(ws, noise_mode='const', **kwargs)
    return fn, batch, ''

def workload_GD(res, batch, device, variant, qc=False):
    nets = build_networks(res, device, variant, qc=qc)
    G, D, G_ema = nets['G'], nets['D'], nets['G_ema']
    mbstd = min(batch, 4)
    kwargs = dict(device=device, G=G, D=D, r1_gamma=1, pl_weight=2)
    trained = [('G', G, list(G.parameters())), ('D', D, list(D.parameters()))]
    if qc:
        D_deg = nets['D_degraded']
        kwargs.update(D_degraded=D_deg, G_teacher=nets['G_teacher'])
        trained = [('G', G, qc_surgery.trainable_parameters(G, 3)), ('D', D, list(D.parameters())),
                   ('D_degraded', D_deg, list(D_deg.parameters()))]
        D_deg.b4.mbstd.group_size = mbstd
        D_deg.train()
    D.b4.mbstd.group_size = mbstd
    G.train()
    D.train()
    loss = (loss_module.QCStyleGAN2Loss if qc else loss_module.StyleGAN2Loss)(**kwargs)
    opts = {name: torch.optim.Adam(params, lr=0.0025, betas=(0.0, 0.99), eps=1e-8) for name, _m, params in trained}
    real = torch.rand([batch, G.img_channels, res, res], device=device) * 2 - 1
    real_deg = (real + 0.1 * torch.randn_like(real)).clamp(-1, 1) if qc else None
    c = torch.zeros([batch, 0], device=device)
    if variant.compile:  # compile G's synthesis inside the loss through the same per-class helper
        G.synthesis.forward = misc.compiled_forward(G.synthesis)
    def fn():
        with autocast(variant, device):
            for name, _module, params in trained:
                opts[name].zero_grad(set_to_none=True)
                for p in params:
                    p.requires_grad_(True)
                z = torch.randn([batch, G.z_dim], device=device)
                loss.accumulate_gradients(phase=name + 'main', real_img=real, real_c=c, gen_z=z, gen_c=c, gain=1,
                                          real_img_degraded=real_deg)
                for p in params:
                    p.requires_grad_(False)
                opts[name].step()
            update_ema(G_ema, G, 0.999)
    return fn, batch, ''

def workload_encoder(res, batch, device, variant):
    nets = build_networks(res, device, variant, qc=True)
    input_size = max(64, min(256, res))
    backbone = 'tiny' if variant.get('arch') == 'tiny' else 'resnet34'
    encoder = PSPEncoder.for_generator(nets['G_ema'], w_space='w+', backbone=backbone, input_size=input_size,
                                       backbone_weights='none').to(device).eval()
    encoder = to_layout(encoder, variant)
    x = torch.rand([batch, 3, res, res], device=device) * 2 - 1
    if variant.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    forward = misc.compiled_forward(encoder) if variant.compile else encoder
    def fn():
        with torch.no_grad(), autocast(variant, device):
            forward(x)
    return fn, batch, f'{backbone} {input_size}px'

# Per-method invert() options of the speed runs: LPIPS early stops off, small CRI / DGP candidate sets.
SPEED_OPTIONS = dict(pti=dict(lpips_stop=None), cri=dict(num_samples=32, num_clusters=2, lpips_stop=None),
                     dgp=dict(num_candidates=4), qc=dict(lpips_stop=None))

def inversion_runner(method, res, batch, device, variant):
    """`run(steps_per_phase)` doing one full inversion of a random target (LPIPS early stops off)."""
    nets = build_networks(res, device, variant, qc=(method == 'qc'))
    G, D = nets['G_ema'], nets['D']
    degradation = parse_degradation('sr:2', res, device=device)  # resolutions are >= 16
    torch.manual_seed(0)
    target = torch.rand([batch, 3, res // 2, res // 2], device=device) * 2 - 1
    lpips = dict(alex=methods.build_lpips('alex', True).to(device), vgg=methods.build_lpips('vgg', True).to(device))
    if variant.channels_last:
        lpips = {net: to_layout(module, variant) for net, module in lpips.items()}
    options = SPEED_OPTIONS.get(method, {})

    def run(steps):
        kw = methods.parse_steps(method, str(steps))
        with autocast(variant, device), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            out = methods.run(method=method, G=G, target=target, degradation=degradation, lpips=lpips, steps=kw, D=D, **options)
        return out
    return run

def time_inversion_steps(run, device, extra_steps):
    """(median seconds per optimisation step, seconds of the warm-up inversion, steps timed).

    A step is the interval between two consecutive `step()` calls of the same optimizer (forward,
    loss, backward and update), so the set-up before each phase is not counted. One warm-up run
    (compilation, allocator, cudnn autotuning), then one timed run with 1 + extra_steps steps per phase.
    """
    t0 = time.perf_counter()
    run(1 + extra_steps)
    _sync(device)
    first = time.perf_counter() - t0
    last_step = dict()
    intervals = []
    def after_step(optimizer, _args, _kwargs):
        _sync(device)
        now = time.perf_counter()
        if id(optimizer) in last_step:
            intervals.append(now - last_step[id(optimizer)])
        last_step[id(optimizer)] = now
    from torch.optim.optimizer import register_optimizer_step_post_hook
    handle = register_optimizer_step_post_hook(after_step)
    try:
        run(1 + extra_steps)
    finally:
        handle.remove()
    if not intervals:
        return float('nan'), first, 0
    intervals.sort()
    return intervals[len(intervals) // 2], first, len(intervals)

#----------------------------------------------------------------------------

def measure(workload, res, batch, device, variant, min_seconds, extra_steps):
    """One row of the table (an EasyDict)."""
    row = dnnlib.EasyDict(workload=workload, resolution=res, batch=batch, device=str(device), variant=variant.name,
                          ops=variant.ops, precision=variant.precision, channels_last=variant.channels_last,
                          compile=variant.compile, arch=variant.get('arch', 'paper'), note='')
    if variant.freeze and workload != 'G':
        raise ValueError('freeze is for G inference only (the other workloads change weights or need gradients)')
    common.compile_synthesis(variant.compile and workload in INVERSION_WORKLOADS)
    common.unfused_modconv(variant.unfused and workload in INVERSION_WORKLOADS)
    try:
        with force_impl(variant.ops), PeakMemory(device) as mem:
            torch.manual_seed(0)
            if workload in INVERSION_WORKLOADS:
                run = inversion_runner(workload, res, batch, device, variant)
                sec, first, steps = time_inversion_steps(run, device, extra_steps)
                row.note = f'median of {steps} steps'
            else:
                fn, _images, row.note = dict(G=workload_G, GD=workload_GD, encoder=workload_encoder)[workload.split('-')[0]](
                    res, batch, device, variant, **(dict(qc=True) if workload == 'GD-qc' else {}))
                sec, first = time_call(fn, device, min_seconds)
    finally:
        common.compile_synthesis(False)
        common.unfused_modconv(False)
    row.ms_per_call = sec * 1e3
    row.img_per_s = batch / sec if sec > 0 else float('nan')
    row.sec_per_kimg = 1000 * sec / batch
    row.first_call_s = first
    row.peak_mem_gb = mem.peak_gb
    row.peak_mem_kind = mem.kind
    return row

def _measure_in_child(queue, args):
    try:
        torch.set_num_threads(args.pop('num_threads'))
        queue.put(('ok', dict(measure(**args))))
    except BaseException as err:  # pylint: disable=broad-except
        queue.put(('error', f'{type(err).__name__}: {(str(err).splitlines() or [""])[0][:200]}'))

def measure_isolated(**args):
    """`measure` in a fresh process: its peak memory is the case's own, compile caches and
    allocator state do not leak from one case into the next, and a crash ends only that case."""
    import multiprocessing
    ctx = multiprocessing.get_context('spawn')
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure_in_child, args=(queue, dict(args, num_threads=torch.get_num_threads())), daemon=True)
    proc.start()
    try:
        status, value = queue.get()
    except KeyboardInterrupt:
        proc.terminate()
        raise
    proc.join()
    if status != 'ok':
        raise RuntimeError(value)
    return dnnlib.EasyDict(value)

def format_row(r):
    speedup = '' if r.get('speedup') is None or not math.isfinite(r.speedup) else f'{r.speedup:.2f}x'
    return (f'{r.workload:>8} {r.resolution:>5} {r.batch:>5} {r.variant:>20} {r.img_per_s:>10.2f} {r.ms_per_call:>10.1f} '
            f'{r.sec_per_kimg:>10.1f} {r.peak_mem_gb:>8.3f} {speedup:>7}  {r.note}')

HEADER = (f'{"workload":>8} {"res":>5} {"batch":>5} {"variant":>20} {"img/s":>10} {"ms/call":>10} {"s/kimg":>10} '
          f'{"peak GB":>8} {"vs 1st":>7}  note')

def run_table(device, workloads, resolutions, batches, variants, min_seconds, extra_steps, isolate=True, echo=print):
    rows = []
    echo(HEADER)
    echo('-' * len(HEADER))
    for workload in workloads:
        for res in resolutions:
            for batch in batches:
                baseline = None
                for variant in variants:
                    why = unsupported_reason(variant, device)
                    if why is not None or (variant.freeze and workload != 'G'):  # freeze: G inference only
                        continue
                    try:
                        row = (measure_isolated if isolate else measure)(workload=workload, res=res, batch=batch, device=device,
                                    variant=variant, min_seconds=min_seconds, extra_steps=extra_steps)
                    except Exception as err:  # pylint: disable=broad-except
                        # One failing variant (e.g. torch.compile without a C++ compiler) must not end the table.
                        first_line = (str(err).splitlines() or [''])[0][:200]
                        echo(f'{workload:>8} {res:>5} {batch:>5} {variant.name:>20}  failed: {type(err).__name__}: {first_line}')
                        continue
                    baseline = baseline or row
                    row.speedup = baseline.sec_per_kimg / row.sec_per_kimg if row.sec_per_kimg > 0 else float('nan')
                    rows.append(row)
                    echo(format_row(row))
    return rows

#----------------------------------------------------------------------------

def _int_list(text, name):
    try:
        values = [int(v) for v in text.split(',') if v.strip()]
    except ValueError:
        raise click.BadParameter(f'"{text}" is not a comma-separated list of integers', param_hint=name) from None
    if not values or any(v < 1 for v in values):
        raise click.BadParameter('expected positive integers', param_hint=name)
    return values

@click.command(help=__doc__)
@click.option('--device', default='auto', show_default=True, help=devices.DEVICE_HELP)
@click.option('--workloads', default=','.join(WORKLOADS), show_default=True, help='Comma list of ' + ', '.join(WORKLOADS))
@click.option('--resolutions', default=None, help='Comma list, powers of two 16..1024 [default: 32 on CPU, 256,1024 on CUDA]')
@click.option('--batches', default=None, help='Comma list [default: 1,4 on CPU, 4,16 on CUDA]')
@click.option('--variants', default=None, help=f'Comma list [default: {CPU_VARIANTS} on CPU; {CUDA_VARIANTS} on CUDA]')
@click.option('--min-seconds', type=float, default=1.0, show_default=True, help='Minimum timing time per case')
@click.option('--extra-steps', type=click.IntRange(min=1), default=3, show_default=True, help='Inversion: timed steps per phase')
@click.option('--arch', type=click.Choice(['paper', 'tiny']), default='paper', show_default=True,
              help='paper: the reference widths for the resolution; tiny: 64-channel networks (smoke tests)')
@click.option('--isolate/--no-isolate', default=True, show_default=True, help='Measure each case in a fresh process')
@click.option('--json', 'json_path', default=None, help='Also write the rows (and the environment) to this JSON file')
@click.option('--compare-nvlabs', 'nvlabs_dir', default=None, metavar='DIR',
              help='Instead: qcgan vs the stylegan2-ada-pytorch checkout DIR side by side (G, GD on CPU; see bench/compare_nvlabs.py)')
@click.option('--reps', type=click.IntRange(min=1), default=5, show_default=True, help='--compare-nvlabs: timed A/B pairs per case')
@cli.os_errors_as_one_line
def main(device, workloads, resolutions, batches, variants, min_seconds, extra_steps, arch, isolate, json_path, nvlabs_dir, reps):
    if nvlabs_dir is not None:
        from bench import compare_nvlabs  # pylint: disable=import-outside-toplevel
        cases = compare_nvlabs.DEFAULT_CASES
        if resolutions or batches or workloads != ','.join(WORKLOADS):
            cases = ','.join(f'{w}:{r}:{b}' for w in workloads.split(',') if w in compare_nvlabs.WORKLOADS
                             for r in _int_list(resolutions or '32,256', '--resolutions') for b in _int_list(batches or '4', '--batches'))
            if not cases:
                raise click.BadParameter(f'--compare-nvlabs runs the workloads {", ".join(compare_nvlabs.WORKLOADS)}', param_hint='--workloads')
        compare_nvlabs.run_cli(None if nvlabs_dir == 'self' else nvlabs_dir, cases=cases, reps=reps, arch=arch, json_path=json_path)
        return
    try:
        device = devices.parse_device(device)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint='--device')
    on_gpu = device.type == 'cuda'
    workloads = [w.strip() for w in workloads.split(',') if w.strip()]
    for w in workloads:
        if w not in WORKLOADS:
            raise click.BadParameter(f'unknown workload "{w}"; choose from {", ".join(WORKLOADS)}', param_hint='--workloads')
    resolutions = _int_list(resolutions or ('256,1024' if on_gpu else '32'), '--resolutions')
    for r in resolutions:
        if r < 16 or r > 1024 or r & (r - 1):
            raise click.BadParameter(f'resolution {r} is not a power of two in 16..1024', param_hint='--resolutions')
    batches = _int_list(batches or ('4,16' if on_gpu else '1,4'), '--batches')
    try:
        variants = [parse_variant(v.strip()) for v in (variants or (CUDA_VARIANTS if on_gpu else CPU_VARIANTS)).split(',') if v.strip()]
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint='--variants')
    for v in variants:
        v.arch = arch
        why = unsupported_reason(v, device)
        if why:
            print(f'Note: skipping variant {v.name} on {device}: {why}.')
    if on_gpu:
        torch.backends.cudnn.benchmark = True
    env = dict(device=str(device), device_name=torch.cuda.get_device_name(device) if on_gpu else f'CPU ({torch.get_num_threads()} threads)',
               torch=torch.__version__, time=time.strftime('%Y-%m-%d %H:%M:%S'))
    print(f'device: {env["device_name"]}, torch {env["torch"]}')
    rows = run_table(device, workloads, resolutions, batches, variants, min_seconds, extra_steps, isolate=isolate,
                     echo=lambda line: print(line, flush=True))
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with dnnlib.util.atomic_write(json_path, 'w') as f:
            json.dump(dict(env=env, rows=rows), f, indent=2)
        print(f'wrote {json_path}')

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
