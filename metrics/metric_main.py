"""Metric registry: names -> functions, `calc_metric`, `report_metric` (JSONL).

A metric is a function `fn(opts: MetricOptions) -> dict(name=value, ...)` registered with
`@register_metric` under its function name (or `register_metric(fn, name='...')`). It may change
`opts.dataset_kwargs` (its own copy) to pick the real set, e.g. `max_size=None, xflip=False`.

Registered metrics (the definitions of stylegan2-ada-pytorch):

    fid50k_full  kid50k_full  pr50k3_full  ppl2_wend  is50k           (recommended)
    fid50k  kid50k  pr50k3  ppl_zfull  ppl_wfull  ppl_zend  ppl_wend  (legacy)

plus cheaper variants of the same definitions for quick checks and smoke tests:
`fid{10k,5k,2k,1k,100}_full`, `kid{10k,1k,100}_full`, `pr{10k,1k}3_full`, `is{10k,1k,100}`,
`ppl2_wend{10k,1k,100}` (the number is the count of generated images / PPL samples).

Real-set sizes: the reference semantics are kept, i.e. the number of real images is an upper
bound (`_full`: the whole dataset; KID: up to 1M; PR: up to 200k; legacy: the first 50k) and a
smaller dataset contributes all of its images. Below the minimum a metric can work with (2 for
FID/KID, k+1 = 4 for PR) a one-line `metric_utils.MetricDataError` is raised instead of an obscure failure.

QC generators: `calc_metric(..., q_mode='sharp'|'degraded')` (see `MetricOptions`) evaluates
any of these metrics on sharp (q = 0) or degraded (q ~ N(0, I)) generated images; the result dict
then carries `q_mode` too.
"""

import json
import os
import time

import numpy as np
import torch

import dnnlib

from . import metric_utils
from . import provenance
from . import frechet_inception_distance
from . import kernel_inception_distance
from . import precision_recall
from . import perceptual_path_length
from . import inception_score

#----------------------------------------------------------------------------

_metric_dict = dict()  # name => fn

def register_metric(fn=None, name=None):
    """Decorator (`@register_metric`) or call (`register_metric(fn, name='x')`); returns `fn`."""
    if fn is None:
        return lambda f: register_metric(f, name=name)
    assert callable(fn)
    _metric_dict[name or fn.__name__] = fn
    return fn


def unregister_metric(name):
    _metric_dict.pop(name, None)


def is_valid_metric(metric):
    return metric in _metric_dict


def list_valid_metrics():
    return list(_metric_dict.keys())


class UnknownMetricError(ValueError):
    """An unregistered metric name (one-line message listing the valid ones)."""

#----------------------------------------------------------------------------

def calc_metric(metric, **kwargs):
    """Compute `metric` on every process; `kwargs` go to `MetricOptions` (G, dataset_kwargs, num_gpus,
    rank, device, progress, cache, G_kwargs, detector_overrides, q_mode, data_loader_kwargs).

    Returns `EasyDict(results=EasyDict(name=float, ...), metric, total_time, total_time_str,
    num_gpus)`; the results are rank 0's, broadcast to every process as float64.
    """
    if not is_valid_metric(metric):
        raise UnknownMetricError(f'unknown metric "{metric}"; valid metrics: {", ".join(list_valid_metrics())}')
    opts = metric_utils.MetricOptions(**kwargs)

    start_time = time.time()
    results = run_metric(metric, opts)
    total_time = time.time() - start_time

    for key, value in list(results.items()):
        value = float(value)
        if opts.num_gpus > 1:
            tensor = torch.as_tensor(value, dtype=torch.float64, device=opts.device)
            torch.distributed.broadcast(tensor=tensor, src=0)
            value = float(tensor.cpu())
        results[key] = value

    result = dnnlib.EasyDict(
        results=dnnlib.EasyDict(results),
        metric=metric,
        total_time=total_time,
        total_time_str=dnnlib.util.format_time(total_time),
        num_gpus=opts.num_gpus,
    )
    if opts.q_mode is not None:
        result.q_mode = opts.q_mode
    result.provenance = provenance.build(detectors=[provenance.detector_record(source, name=metric_utils.detector_name_of(url))
                                                    for url, source in opts.detectors_used.items()])
    return result


def run_metric(metric, opts):
    """Run the registered function of `metric` on `opts` (no broadcasting); returns its dict."""
    results = _metric_dict[metric](opts)
    if not isinstance(results, dict):
        raise TypeError(f'metric "{metric}" returned {type(results).__name__}, expected a dict')
    return dict(results)

#----------------------------------------------------------------------------

def report_metric(result_dict, run_dir=None, snapshot_pkl=None):
    """Print `result_dict` as a JSON line and append it to `<run_dir>/metric-<name>.jsonl`.

    Fields: results, metric, total_time, total_time_str, num_gpus (+ q_mode), snapshot_pkl
    (relative to run_dir when both are given), timestamp. Returns the JSON line.
    """
    metric = result_dict['metric']
    prov = dict(result_dict.get('provenance') or provenance.build())
    if snapshot_pkl is not None:
        prov['network'] = provenance.network_record(snapshot_pkl)
        prov['caveats'] = provenance.caveats(prov)
    if run_dir is not None and snapshot_pkl is not None:
        snapshot_pkl = os.path.relpath(snapshot_pkl, run_dir)
    fields = dict(result_dict, snapshot_pkl=snapshot_pkl, timestamp=time.time(), provenance=prov)
    jsonl_line = json.dumps(fields, default=_json_default)
    print(jsonl_line, flush=True)
    if run_dir is not None and os.path.isdir(run_dir):
        with open(os.path.join(run_dir, f'metric-{metric}.jsonl'), 'at') as f:
            f.write(jsonl_line + '\n')
    return jsonl_line


def _json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    return str(obj)

#----------------------------------------------------------------------------
# Recommended metrics.

def _full(opts):
    opts.dataset_kwargs.update(max_size=None, xflip=False)


@register_metric
def fid50k_full(opts):
    _full(opts)
    fid = frechet_inception_distance.compute_fid(opts, max_real=None, num_gen=50000)
    return dict(fid50k_full=fid)


@register_metric
def kid50k_full(opts):
    _full(opts)
    kid = kernel_inception_distance.compute_kid(opts, max_real=1000000, num_gen=50000, num_subsets=100, max_subset_size=1000)
    return dict(kid50k_full=kid)


@register_metric
def pr50k3_full(opts):
    _full(opts)
    precision, recall = precision_recall.compute_pr(opts, max_real=200000, num_gen=50000, nhood_size=3,
                                                    row_batch_size=10000, col_batch_size=10000)
    return dict(pr50k3_full_precision=precision, pr50k3_full_recall=recall)


@register_metric
def ppl2_wend(opts):
    ppl = perceptual_path_length.compute_ppl(opts, num_samples=50000, epsilon=1e-4, space='w', sampling='end',
                                             crop=False, batch_size=2)
    return dict(ppl2_wend=ppl)


@register_metric
def is50k(opts):
    _full(opts)
    mean, std = inception_score.compute_is(opts, num_gen=50000, num_splits=10)
    return dict(is50k_mean=mean, is50k_std=std)

#----------------------------------------------------------------------------
# Legacy metrics: the first 50k reals, xflip as in the given dataset kwargs.

@register_metric
def fid50k(opts):
    opts.dataset_kwargs.update(max_size=None)
    fid = frechet_inception_distance.compute_fid(opts, max_real=50000, num_gen=50000)
    return dict(fid50k=fid)


@register_metric
def kid50k(opts):
    opts.dataset_kwargs.update(max_size=None)
    kid = kernel_inception_distance.compute_kid(opts, max_real=50000, num_gen=50000, num_subsets=100, max_subset_size=1000)
    return dict(kid50k=kid)


@register_metric
def pr50k3(opts):
    opts.dataset_kwargs.update(max_size=None)
    precision, recall = precision_recall.compute_pr(opts, max_real=50000, num_gen=50000, nhood_size=3,
                                                    row_batch_size=10000, col_batch_size=10000)
    return dict(pr50k3_precision=precision, pr50k3_recall=recall)


def _legacy_ppl(name, space, sampling):
    def fn(opts):
        ppl = perceptual_path_length.compute_ppl(opts, num_samples=50000, epsilon=1e-4, space=space, sampling=sampling,
                                                 crop=True, batch_size=2)
        return {name: ppl}
    fn.__name__ = fn.__qualname__ = name
    return register_metric(fn, name=name)

ppl_zfull = _legacy_ppl('ppl_zfull', 'z', 'full')
ppl_wfull = _legacy_ppl('ppl_wfull', 'w', 'full')
ppl_zend = _legacy_ppl('ppl_zend', 'z', 'end')
ppl_wend = _legacy_ppl('ppl_wend', 'w', 'end')

#----------------------------------------------------------------------------
# Cheaper variants of the recommended metrics (same definitions, fewer generated samples).

_SIZES = {'10k': 10000, '5k': 5000, '2k': 2000, '1k': 1000, '100': 100}

def _variant(name, fn):
    fn.__name__ = fn.__qualname__ = name
    register_metric(fn, name=name)

def _make_fid(tag, num):
    def fn(opts):
        _full(opts)
        return {f'fid{tag}_full': frechet_inception_distance.compute_fid(opts, max_real=None, num_gen=num)}
    return fn

def _make_kid(tag, num):
    def fn(opts):
        _full(opts)
        kid = kernel_inception_distance.compute_kid(opts, max_real=1000000, num_gen=num, num_subsets=100, max_subset_size=1000)
        return {f'kid{tag}_full': kid}
    return fn

def _make_pr(tag, num):
    def fn(opts):
        _full(opts)
        precision, recall = precision_recall.compute_pr(opts, max_real=200000, num_gen=num, nhood_size=3,
                                                        row_batch_size=10000, col_batch_size=10000)
        return {f'pr{tag}3_full_precision': precision, f'pr{tag}3_full_recall': recall}
    return fn

def _make_is(tag, num):
    def fn(opts):
        _full(opts)
        mean, std = inception_score.compute_is(opts, num_gen=num, num_splits=10)
        return {f'is{tag}_mean': mean, f'is{tag}_std': std}
    return fn

def _make_ppl(tag, num):
    def fn(opts):
        ppl = perceptual_path_length.compute_ppl(opts, num_samples=num, epsilon=1e-4, space='w', sampling='end',
                                                 crop=False, batch_size=2)
        return {f'ppl2_wend{tag}': ppl}
    return fn

for _tag in ['10k', '5k', '2k', '1k', '100']:
    _variant(f'fid{_tag}_full', _make_fid(_tag, _SIZES[_tag]))
for _tag in ['10k', '1k', '100']:
    _variant(f'kid{_tag}_full', _make_kid(_tag, _SIZES[_tag]))
    _variant(f'is{_tag}', _make_is(_tag, _SIZES[_tag]))
    _variant(f'ppl2_wend{_tag}', _make_ppl(_tag, _SIZES[_tag]))
for _tag in ['10k', '1k']:
    _variant(f'pr{_tag}3_full', _make_pr(_tag, _SIZES[_tag]))
