"""bench/compare_nvlabs.py (qcgan vs NVLabs side by side) and the bf16 refusal of bench/speed.py:
CPU dry runs at the tiniest size. Speed itself is measured by the benchmarks, never here."""

import json
import os

import pytest
import torch
from click.testing import CliRunner

from bench import compare_nvlabs, speed

NVLABS_DIR = os.environ.get('QCGAN_NVLABS_DIR', '')  # a checkout of NVlabs/stylegan2-ada-pytorch, if you have one


def _check_rows(rows, cases):
    assert [(r['workload'], r['resolution'], r['batch']) for r in rows] == compare_nvlabs.parse_cases(cases)
    for r in rows:
        assert r['reps'] == 2
        for key in ('a_median_ms', 'a_min_ms', 'b_median_ms', 'b_min_ms'):
            assert 0 < r[key] < 1e6, (key, r)
        assert r['a_min_ms'] <= r['a_median_ms'] and r['b_min_ms'] <= r['b_median_ms']
        assert abs(r['ratio_of_medians'] - r['b_median_ms'] / r['a_median_ms']) < 1e-9
        assert r['max_abs_output_diff'] == 0  # same weights, same computation, bit-identical outputs


def test_compare_dry_run_against_our_own_code(tmp_path):
    """The machinery (our half, the interleaving, the table and JSON) without a checkout."""
    path = tmp_path / 'cmp.json'
    cases = 'G:16:2,GD:16:2'
    result = CliRunner().invoke(speed.main, ['--compare-nvlabs', 'self', '--arch', 'tiny', '--workloads', 'G,GD',
                                             '--resolutions', '16', '--batches', '2', '--reps', '2', '--json', str(path)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert 'B = qcgan-copy' in result.output and 'B/A' in result.output and 'load average' in result.output
    _check_rows(json.loads(path.read_text())['rows'], cases)


def test_compare_interleaves_and_alternates():
    calls = []
    ta, tb = compare_nvlabs.interleaved(lambda: calls.append('a'), lambda: calls.append('b'), reps=3, warmup=1)
    assert len(ta) == len(tb) == 3
    assert calls == ['a', 'b', 'a', 'b', 'b', 'a', 'a', 'b']  # warm-up, then AB, BA, AB


def test_compare_rejects_bad_input(tmp_path):
    result = CliRunner().invoke(compare_nvlabs.main, ['--cases', 'X:16:2'])
    assert result.exit_code == 2 and 'WORKLOAD:RES:BATCH' in result.output
    result = CliRunner().invoke(compare_nvlabs.main, ['--nvlabs', str(tmp_path), '--cases', 'G:16:1'])
    assert result.exit_code == 2 and 'not a stylegan2-ada-pytorch checkout' in result.output
    result = CliRunner().invoke(compare_nvlabs.main, ['--cases', 'GD:16:1', '--variant', 'compile'])
    assert result.exit_code == 2 and 'only the G workload' in result.output
    result = CliRunner().invoke(compare_nvlabs.main, ['--cases', 'G:16:1', '--variant', 'cl-freeze'])
    assert result.exit_code == 2 and 'freeze is an option of compile' in result.output
    result = CliRunner().invoke(compare_nvlabs.main, ['--cases', 'G:16:1', '--variant', 'fast'])
    assert result.exit_code == 2 and 'bad variant' in result.output


def test_variant_tokens():
    assert compare_nvlabs.parse_variant('eager') == set()
    assert compare_nvlabs.parse_variant('unf-cl-compile-freeze') == {'unf', 'cl', 'compile', 'freeze'}
    v = speed.parse_variant('ref-fp32-unf-cl-compile-freeze')
    assert (v.unfused, v.channels_last, v.compile, v.freeze, v.precision, v.ops) == (True, True, True, True, 'fp32', 'ref')
    assert not speed.parse_variant('ref-fp32').unfused and not speed.parse_variant('ref-fp32').freeze
    with pytest.raises(ValueError, match='freeze is an option of compile'):
        speed.parse_variant('ref-fp32-freeze')


def test_compare_variant_reports_its_own_images():
    """Our non-fused variant against the same network's eager path: equal within float tolerance."""
    rows = compare_nvlabs.compare(None, 'G:16:2', reps=1, arch='tiny', echo=lambda line: None, variant='unf')
    assert rows[0]['variant'] == 'unf' and 0 < rows[0]['max_abs_output_diff'] < 1e-4


@pytest.mark.skipif(not NVLABS_DIR or not os.path.isfile(os.path.join(NVLABS_DIR, 'training', 'networks.py')),
                    reason='needs a checkout of NVlabs/stylegan2-ada-pytorch: set QCGAN_NVLABS_DIR to it')
def test_compare_against_nvlabs_checkout(tmp_path):
    """Both codebases side by side: their modules load beside ours and compute the same images."""
    path = tmp_path / 'cmp.json'
    cases = 'G:16:2,GD:16:2'
    result = CliRunner().invoke(compare_nvlabs.main, ['--nvlabs', NVLABS_DIR, '--arch', 'tiny', '--cases', cases,
                                                      '--reps', '2', '--json', str(path)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert 'B = NVLabs' in result.output
    _check_rows(json.loads(path.read_text())['rows'], cases)
    from training import networks  # our modules are back in place afterwards
    assert networks.__file__.startswith(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_speed_refuses_bf16_without_native_support(monkeypatch, tmp_path):
    monkeypatch.setattr(speed.misc, 'cpu_bf16_support', lambda: (False, 'this CPU has no native bfloat16 (test)'))
    v = speed.parse_variant('ref-bf16')
    assert 'no native bfloat16' in speed.unsupported_reason(v, torch.device('cpu'))
    assert speed.unsupported_reason(speed.parse_variant('ref-fp32'), torch.device('cpu')) is None
    path = tmp_path / 's.json'
    result = CliRunner().invoke(speed.main, ['--device', 'cpu', '--arch', 'tiny', '--resolutions', '16', '--batches', '1',
                                             '--workloads', 'G', '--variants', 'ref-fp32,ref-bf16', '--min-seconds', '0.01',
                                             '--no-isolate', '--json', str(path)])
    assert result.exit_code == 0, result.output
    assert 'skipping variant ref-bf16 on cpu: this CPU has no native bfloat16' in result.output
    assert [r['variant'] for r in json.loads(path.read_text())['rows']] == ['ref-fp32']


def test_cpu_bf16_support_reads_flags():
    native, why = speed.misc.cpu_bf16_support()
    assert isinstance(native, bool) and why
    if os.path.isfile('/proc/cpuinfo'):
        flags = open('/proc/cpuinfo').read()
        assert native == any(f in flags.split() for f in ('avx512_bf16', 'amx_bf16', 'bf16'))


def test_ab_steps_dry_run(tmp_path):
    """bench/ab_steps.py (inversion steps, variants interleaved) at the tiniest size, eager variants only."""
    from bench import ab_steps
    path = tmp_path / 'ab.json'
    result = CliRunner().invoke(ab_steps.main, ['--methods', 'ngd', '--resolution', '16', '--arch', 'tiny', '--variants',
                                                'ref-fp32,ref-fp32-unf', '--steps', '2', '--reps', '2', '--json', str(path)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert 'load average' in result.output and 'speed-up' in result.output
    rows = json.loads(path.read_text())['rows']
    assert [r['variant'] for r in rows] == ['ref-fp32', 'ref-fp32-unf'] and rows[0]['speedup_vs_first'] == 1
    for r in rows:
        assert len(r['phase_median_s']) == 3 and r['steps_timed'] == 2 * 3 * 1  # 2 rounds x 3 phases x 1 interval
        assert 0 < r['min_s_per_step'] <= r['median_s_per_step']
    result = CliRunner().invoke(ab_steps.main, ['--methods', 'G', '--arch', 'tiny'])
    assert result.exit_code == 2 and 'not an inversion method' in result.output


def test_full_inversion_dry_run(tmp_path):
    """bench/full_inversion.py (one whole inversion timed per phase) at the tiniest size."""
    import numpy as np
    import PIL.Image

    from bench import full_inversion
    PIL.Image.fromarray((np.random.RandomState(0).rand(40, 40, 3) * 255).astype(np.uint8)).save(tmp_path / 't.png')
    path = tmp_path / 'full.json'
    result = CliRunner().invoke(full_inversion.main, ['--network', 'init:tiny32', '--target', str(tmp_path / 't.png'),
                                                      '--method', 'pti', '--steps', '3,2', '--no-early-stop', '--json', str(path)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    out = json.loads(path.read_text())
    assert [p['steps'] for p in out['phases']] == [3, 2] and out['total_s'] > 0
    assert 'load average' in result.output
