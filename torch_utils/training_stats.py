"""Cheap scalar statistics across iterations, devices and processes.

`report(name, value)` accumulates the moments (count, sum, sum of squares) of any tensor of
values on the tensor's device, without a host sync. A `Collector` turns the moments gathered
since its last `update()` into mean/std, summed over all processes with one all-reduce.

Rules for multi-process use: every rank must call `report`/`report0` with the same names in the
same order, and every rank must call `Collector.update()` at the same points.
"""

import re

import numpy as np
import torch

import dnnlib

from . import misc

#----------------------------------------------------------------------------

_num_moments = 3             # [count, sum(x), sum(x**2)]
_reduce_dtype = torch.float32    # Data type for the all-reduce (float64 is unsupported by some backends).
_counter_dtype = torch.float64   # Data type for the running totals.

_rank = 0
_sync_device = None
_sync_called = False
_counters = dict()           # name -> device -> moments tensor (since the last _sync)
_cumulative = dict()         # name -> moments tensor on CPU (everything synced so far)

#----------------------------------------------------------------------------

def init_multiprocessing(rank, sync_device):
    """Set up cross-process reduction; call once per process before any `report`.

    Args:
        rank:        This process's rank; `report0` only counts values from rank 0.
        sync_device: Device used for `torch.distributed.all_reduce` (the process's GPU with NCCL,
                     `torch.device('cpu')` with gloo), or None for a single process.
    """
    global _rank, _sync_device
    # Changing the setup after statistics were synced would mix counts; the same setup again
    # (e.g. a second single-process run in one Python session) is harmless.
    assert not _sync_called or (rank, sync_device) == (_rank, _sync_device), \
        'init_multiprocessing() must be called before the first Collector.update()'
    _rank = rank
    _sync_device = sync_device

#----------------------------------------------------------------------------

@misc.profiled_function
def report(name, value):
    """Accumulate `value` (scalar, array or tensor of any shape) under `name`. Returns `value`.

    Non-finite elements are dropped so that one bad batch cannot poison the statistics.
    """
    if name not in _counters:
        _counters[name] = dict()

    elems = torch.as_tensor(value)
    if elems.numel() == 0:
        return value

    elems = elems.detach().flatten().to(_reduce_dtype)
    finite = torch.isfinite(elems)
    elems = torch.where(finite, elems, torch.zeros_like(elems))
    moments = torch.stack([
        finite.to(_reduce_dtype).sum(),
        elems.sum(),
        elems.square().sum(),
    ])
    assert moments.ndim == 1 and moments.shape[0] == _num_moments
    moments = moments.to(_counter_dtype)

    device = moments.device
    if device not in _counters[name]:
        _counters[name][device] = torch.zeros_like(moments)
    _counters[name][device].add_(moments)
    return value

#----------------------------------------------------------------------------

def report_moments(name, moments):
    """Add raw moments `[count, sum, sum_sq]` (e.g. from `Collector.pending_moments`) under `name`."""
    moments = torch.as_tensor(moments, dtype=_counter_dtype).flatten()
    assert moments.shape[0] == _num_moments
    if name not in _counters:
        _counters[name] = dict()
    device = moments.device
    if device not in _counters[name]:
        _counters[name][device] = torch.zeros_like(moments)
    _counters[name][device].add_(moments)

#----------------------------------------------------------------------------

def report0(name, value):
    """Like `report`, but only rank 0's value counts. Every rank must still call it."""
    report(name, value if _rank == 0 else [])
    return value

#----------------------------------------------------------------------------

class Collector:
    """Collects the statistics reported since the previous `update()` and exposes mean/std.

    Args:
        regex:          Only names that fully match this regular expression are collected.
        keep_previous:  If a name gets no new values, keep its previous statistics instead of
                        reporting it as empty.
    """
    def __init__(self, regex='.*', keep_previous=True):
        self._regex = re.compile(regex)
        self._keep_previous = keep_previous
        self._cumulative = dict()
        self._moments = dict()
        self.update()
        self._moments.clear()

    def names(self):
        """Names that match the regex, in the order they were first reported."""
        return [name for name in _counters if self._regex.fullmatch(name)]

    def update(self):
        """Fetch the new statistics (one all-reduce across processes). Call on every rank."""
        if not self._keep_previous:
            self._moments.clear()
        for name, cumulative in _sync(self.names()):
            if name not in self._cumulative:
                self._cumulative[name] = torch.zeros([_num_moments], dtype=_counter_dtype)
            delta = cumulative - self._cumulative[name]
            self._cumulative[name].copy_(cumulative)
            if float(delta[0]) != 0:
                self._moments[name] = delta

    def _get_delta(self, name):
        assert self._regex.fullmatch(name)
        if name not in self._moments:
            self._moments[name] = torch.zeros([_num_moments], dtype=_counter_dtype)
        return self._moments[name]

    def num(self, name):
        """Number of scalars collected for `name` between the last two `update()` calls."""
        return int(self._get_delta(name)[0])

    def mean(self, name):
        """Mean of the collected scalars, or NaN if there were none."""
        delta = self._get_delta(name)
        if int(delta[0]) == 0:
            return float('nan')
        return float(delta[1] / delta[0])

    def std(self, name):
        """Standard deviation of the collected scalars, or NaN if there were none."""
        delta = self._get_delta(name)
        if int(delta[0]) == 0 or not np.isfinite(float(delta[1])):
            return float('nan')
        if int(delta[0]) == 1:
            return float(0)
        mean = float(delta[1] / delta[0])
        raw_var = float(delta[2] / delta[0])
        return float(np.sqrt(max(raw_var - np.square(mean), 0)))

    def as_dict(self):
        """`{name: EasyDict(num, mean, std)}` for every name, e.g. for one stats.jsonl line."""
        stats = dnnlib.EasyDict()
        for name in self.names():
            stats[name] = dnnlib.EasyDict(num=self.num(name), mean=self.mean(name), std=self.std(name))
        return stats

    def pending_moments(self, name):
        """Moments `[count, sum, sum_sq]` reported under `name` since this collector's last
        `update()`, summed over processes, without consuming them. Call on every rank.

        Used for exact resume: a checkpoint stores them and `report_moments` restores them.
        """
        assert self._regex.fullmatch(name)
        cumulative = dict(_sync([name])).get(name) if name in _counters else None
        if cumulative is None:
            return torch.zeros([_num_moments], dtype=_counter_dtype)
        previous = self._cumulative.get(name, torch.zeros([_num_moments], dtype=_counter_dtype))
        return (cumulative - previous).clone()

    def __getitem__(self, name):
        """`collector[name]` is a shorthand for `collector.mean(name)`."""
        return self.mean(name)

#----------------------------------------------------------------------------

def _sync(names):
    """Move the per-device counters of `names` into the cumulative totals, summed over processes."""
    if len(names) == 0:
        return []
    global _sync_called
    _sync_called = True

    deltas = []
    device = _sync_device if _sync_device is not None else torch.device('cpu')
    for name in names:
        delta = torch.zeros([_num_moments], dtype=_counter_dtype, device=device)
        for counter in _counters[name].values():
            delta.add_(counter.to(device))
            counter.copy_(torch.zeros_like(counter))
        deltas.append(delta)
    deltas = torch.stack(deltas)

    if _sync_device is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        deltas = deltas.to(_reduce_dtype) if device.type != 'cpu' else deltas
        torch.distributed.all_reduce(deltas)
        deltas = deltas.to(_counter_dtype)

    deltas = deltas.cpu()
    for idx, name in enumerate(names):
        if name not in _cumulative:
            _cumulative[name] = torch.zeros([_num_moments], dtype=_counter_dtype)
        _cumulative[name].add_(deltas[idx])

    return [(name, _cumulative[name]) for name in names]

#----------------------------------------------------------------------------

def reset():
    """Forget all reported values (for tests and for starting a new run in the same process)."""
    global _sync_called
    _counters.clear()
    _cumulative.clear()
    _sync_called = False

#----------------------------------------------------------------------------
