"""Smoke tests for bench/speed.py at the tiniest size on CPU (bench/restore.py: test_bench_restore.py)."""

import json
import math
import os
import sys

import torch
from click.testing import CliRunner

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import speed  # noqa: E402


def _run(args):
    result = CliRunner().invoke(speed.main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def _check_row(row):
    for key in ('img_per_s', 'ms_per_call', 'sec_per_kimg', 'first_call_s', 'peak_mem_gb'):
        assert math.isfinite(row[key]), (key, row)
    assert row['img_per_s'] > 0 and row['ms_per_call'] > 0
    assert abs(row['sec_per_kimg'] - row['ms_per_call'] / row['batch']) < 1e-6 * row['sec_per_kimg']
    assert abs(row['img_per_s'] * row['ms_per_call'] / 1e3 - row['batch']) < 1e-6 * row['batch']


def test_speed_every_workload_cpu(tmp_path):
    path = str(tmp_path / 'speed.json')
    output = _run(['--device', 'cpu', '--arch', 'tiny', '--resolutions', '16', '--batches', '2', '--variants', 'ref-fp32',
                   '--min-seconds', '0.05', '--extra-steps', '1', '--no-isolate', '--json', path])
    data = json.load(open(path))
    assert data['env']['device'] == 'cpu'
    rows = data['rows']
    assert [r['workload'] for r in rows] == list(speed.WORKLOADS)
    for row in rows:
        _check_row(row)
        assert (row['resolution'], row['batch'], row['variant'], row['arch']) == (16, 2, 'ref-fp32', 'tiny')
        assert row['speedup'] == 1.0
        assert row['peak_mem_kind'] == 'cpu_rss_growth'
    for row in rows:
        if row['workload'] in speed.INVERSION_WORKLOADS:
            steps = int(row['note'].split()[2])  # 'median of N steps': one interval per timed step after the first
            assert steps >= 2, row
    assert 'GD-qc' in output and 'failed' not in output


def test_speed_variants_side_by_side_isolated(tmp_path, monkeypatch):
    monkeypatch.setattr(speed.misc, 'cpu_bf16_support', lambda: (True, 'pretend native'))  # bf16 is refused without it
    path = str(tmp_path / 'speed.json')
    output = _run(['--device', 'cpu', '--arch', 'tiny', '--resolutions', '16', '--batches', '1', '--workloads', 'G,GD',
                   '--variants', 'ref-fp32,ref-bf16,ref-fp32-cl,cuda-fp16', '--min-seconds', '0.05', '--json', path])
    assert 'skipping variant cuda-fp16' in output  # CUDA-only variants are named and skipped on CPU
    rows = json.load(open(path))['rows']
    assert [(r['workload'], r['variant']) for r in rows] == [(w, v) for w in ('G', 'GD') for v in ('ref-fp32', 'ref-bf16', 'ref-fp32-cl')]
    for row in rows:
        _check_row(row)
        assert row['peak_mem_gb'] > 0  # a fresh process per case: its own allocations show as growth
    for w in ('G', 'GD'):
        base, bf16 = [r for r in rows if r['workload'] == w][:2]
        assert abs(bf16['speedup'] - base['sec_per_kimg'] / bf16['sec_per_kimg']) < 1e-9
        assert bf16['precision'] == 'bf16' and not bf16['channels_last']


def test_speed_rejects_bad_options():
    for args, needle in ((['--workloads', 'G,XX'], 'XX'), (['--resolutions', '48'], '48'),
                         (['--variants', 'ref-fp64'], 'fp64'), (['--batches', '0'], 'positive')):
        result = CliRunner().invoke(speed.main, ['--device', 'cpu'] + args)
        assert result.exit_code == 2 and needle in result.output, result.output


def test_parse_variant():
    v = speed.parse_variant('cuda-fp16-cl-compile')
    assert (v.ops, v.precision, v.channels_last, v.compile) == ('cuda', 'fp16', True, True)
    v = speed.parse_variant('ref-bf16')
    assert (v.ops, v.precision, v.channels_last, v.compile) == ('ref', 'bf16', False, False)
    assert speed.unsupported_reason(speed.parse_variant('cuda-fp32'), torch.device('cpu'))
    assert speed.unsupported_reason(speed.parse_variant('ref-fp16'), torch.device('cpu'))
    assert speed.unsupported_reason(speed.parse_variant('ref-bf16'), torch.device('cpu')) is None
