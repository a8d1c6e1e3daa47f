"""Smoke tests for bench/restore.py and bench/speed.py at the tiniest size on CPU."""

import csv
import json
import math
import os
import sys

import numpy as np
import PIL.Image
from click.testing import CliRunner

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import restore, speed  # noqa: E402


def _make_images(folder, count=2, size=32):
    os.makedirs(folder)
    for i in range(count):
        small = np.random.RandomState(i).randint(0, 256, size=[8, 8, 3], dtype=np.uint8)
        PIL.Image.fromarray(small).resize((size, size), PIL.Image.BICUBIC).save(os.path.join(folder, f'img{i}.png'))


def _rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def test_restore_runs_and_resumes(tmp_path):
    data = str(tmp_path / 'imgs')
    outdir = str(tmp_path / 'out')
    _make_images(data)
    args = ['--network', 'init:tiny32', '--data', data, '--methods', 'ngd,pti', '--tasks', 'sr,inpaint',
            '--levels', 'XS', '--num-images', '2', '--steps', '2', '--lpips-backbone', 'random',
            '--device', 'cpu', '--outdir', outdir]
    result = CliRunner().invoke(restore.main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = _rows(os.path.join(outdir, 'results.csv'))
    assert len(rows) == 2 * 2 * 2 * 1
    assert {(r['method'], r['task'], r['level']) for r in rows} == {(m, t, 'XS') for m in ('ngd', 'pti') for t in ('sr', 'inpaint')}
    for r in rows:
        for key in ('accuracy_lpips', 'fidelity_lpips', 'psnr', 'ssim'):
            assert math.isfinite(float(r[key])), (key, r)
    md = open(os.path.join(outdir, 'results.md')).read()
    assert '| ngd | sr | XS | 2 |' in md and '| pti | inpaint | XS | 2 |' in md
    with PIL.Image.open(os.path.join(outdir, 'examples.png')) as img:
        assert img.size == (32 * 4, 32 * 2)  # GT | observation | ngd | pti; one row per task x level

    result = CliRunner().invoke(restore.main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert len(_rows(os.path.join(outdir, 'results.csv'))) == len(rows)


def test_restore_rejects_unknown_task(tmp_path):
    data = str(tmp_path / 'imgs')
    _make_images(data, count=1)
    result = CliRunner().invoke(restore.main, ['--network', 'init:tiny32', '--data', data, '--tasks', 'sr+jpeg',
                                               '--outdir', str(tmp_path / 'o'), '--device', 'cpu'])
    assert result.exit_code != 0 and 'sr+jpeg' in result.output


def test_speed_cpu_json(tmp_path):
    path = str(tmp_path / 'speed.json')
    result = CliRunner().invoke(speed.main, ['--device', 'cpu', '--resolutions', '16', '--batches', '1',
                                             '--min-seconds', '0.1', '--json', path])
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = json.load(open(path))
    assert len(rows) == 1 and rows[0]['ops'] == 'ref' and rows[0]['precision'] == 'fp32'
    assert math.isfinite(rows[0]['G_forward_img_per_s']) and rows[0]['G_forward_img_per_s'] > 0
    assert math.isfinite(rows[0]['GD_fwd_bwd_img_per_s']) and rows[0]['GD_fwd_bwd_img_per_s'] > 0
