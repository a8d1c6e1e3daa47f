"""The launcher shared by train.py and train_encoder.py (torch_utils/distributed.py) and the one
--device path (torch_utils/devices.py): streams restored after main(), the log file, --device
cuda:N kept end to end (CUDA faked), the local rank's GPU with several processes, torchrun's
world size, and the gradient helpers."""

import os
import sys

import click
import pytest
import torch

import bench.restore
import bench.speed
import calc_metrics
import dnnlib
import generate
import invert
import qcode_study
import train
import train_encoder
from torch_utils import devices
from torch_utils import distributed
from torch_utils import image_utils
from training import encoder_loop
from training import training_loop

#----------------------------------------------------------------------------

@pytest.fixture
def fake_loops(monkeypatch):
    """Both training loops replaced by one that prints a line and records its device (or fails)."""
    calls = dnnlib.EasyDict(devices=[], fail=None)
    def loop(rank=0, device=None, **_kwargs):
        print('inside the loop')
        calls.devices.append(device)
        if calls.fail is not None:
            raise calls.fail
        return dnnlib.EasyDict()
    monkeypatch.setattr(training_loop, 'training_loop', loop)
    monkeypatch.setattr(encoder_loop, 'training_loop', loop)
    return calls

@pytest.fixture
def fake_cuda(monkeypatch):
    """Two CUDA devices as far as the launcher can tell; set_device calls are recorded."""
    selected = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    monkeypatch.setattr(torch.cuda, 'set_device', lambda device: selected.append(torch.device(device).index
                                                                                 if not isinstance(device, int) else device))
    return selected

def _train_args(outdir, data, *extra):
    return ['--outdir', str(outdir), '--data', data, '--cfg', 'tiny', '--workers', '0', *extra]

def _encoder_args(outdir, network, *extra):
    return ['--outdir', str(outdir), '--network', network, '--data', 'generator', '--backbone', 'tiny', '--input-size', '32',
            '--batch', '2', '--steps', '1', '--lpips', '0', *extra]

def _main(script, args):
    """Run a click main in this process as the command line would, without CliRunner's own stream swap."""
    try:
        script.main.main(args=args, standalone_mode=False)
    except SystemExit as err:
        assert err.code in (0, None)

def _log(outdir):
    run_dir = [os.path.join(outdir, d) for d in sorted(os.listdir(outdir))][-1]
    with open(os.path.join(run_dir, 'log.txt'), encoding='utf-8') as f:
        return f.read()

#----------------------------------------------------------------------------

@pytest.mark.parametrize('which', ['train', 'train_encoder'])
def test_main_leaves_stdout_and_stderr_as_found(which, faces16, stock16_pkl, fake_loops, tmp_path):
    script, args = (train, _train_args(tmp_path, faces16, '--device', 'cpu')) if which == 'train' else \
                   (train_encoder, _encoder_args(tmp_path, stock16_pkl, '--device', 'cpu'))
    before = sys.stdout, sys.stderr
    _main(script, args)
    assert (sys.stdout, sys.stderr) == before
    print('after main returned')
    log = _log(tmp_path)
    assert 'inside the loop' in log and 'after main returned' not in log
    assert fake_loops.devices == [torch.device('cpu')]

    # A run that fails: one line for the command line, the streams restored all the same.
    fake_loops.fail = training_loop.TrainingDiverged('weights became NaN')
    with pytest.raises(Exception, match='weights became NaN'):
        _main(script, args)
    assert (sys.stdout, sys.stderr) == before

@pytest.mark.parametrize('which', ['train', 'train_encoder'])
def test_device_index_reaches_the_loop(which, faces16, stock16_pkl, fake_loops, fake_cuda, tmp_path):
    script, args = (train, _train_args(tmp_path, faces16, '--gpus', '1', '--device', 'cuda:1')) if which == 'train' else \
                   (train_encoder, _encoder_args(tmp_path, stock16_pkl, '--gpus', '1', '--device', 'cuda:1'))
    _main(script, args)
    assert fake_loops.devices == [torch.device('cuda', 1)]
    assert fake_cuda[-1] == 1
    # --device cuda: the first GPU.
    args[args.index('cuda:1')] = 'cuda'
    _main(script, args)
    assert fake_loops.devices[-1] == torch.device('cuda', 0)

def test_device_parser(fake_cuda):
    assert devices.parse_device('cuda:1') == torch.device('cuda', 1)
    assert devices.parse_device('auto') == torch.device('cuda')
    assert devices.parse_device('cpu') == torch.device('cpu')
    assert devices.device_options('cuda:1') == dict(device_type='cuda', device_index=1)
    assert devices.device_options('cpu') == dict(device_type='cpu')
    with pytest.raises(ValueError, match='only 2 CUDA device'):
        devices.parse_device('cuda:2')
    with pytest.raises(ValueError, match=r'use cpu, cuda, cuda:N, auto'):
        devices.parse_device('tpu:x')
    assert image_utils.parse_device is devices.parse_device  # the old import path still works
    # Several processes: each uses its local rank's GPU, whatever index --device named.
    assert distributed.process_device('cuda', 1, 2, device_index=0) == torch.device('cuda', 1)
    assert distributed.process_device('cuda', 0, 1, device_index=1) == torch.device('cuda', 1)
    assert distributed.process_device('cuda', 0, 1) == torch.device('cuda', 0)

def test_device_parser_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert devices.parse_device('auto') == torch.device('cpu')
    with pytest.raises(ValueError, match='--device cpu'):
        devices.parse_device('cuda:0')

def test_every_script_has_the_same_device_help():
    commands = [train.main, train_encoder.main, invert.main, generate.generate_main, calc_metrics.calc_metrics, qcode_study.main,
                bench.restore.main, bench.speed.main]
    for command in commands:
        option = next(p for p in command.params if isinstance(p, click.Option) and '--device' in p.opts)
        assert devices.DEVICE_HELP in option.help, command.name

def test_torchrun_world_size_and_run_names(monkeypatch):
    assert distributed.torchrun_gpus(3, True) == 3
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '4')
    assert distributed.torchrun_gpus(None, False) == 4
    with pytest.raises(ValueError, match='--gpus 2 disagrees with torchrun WORLD_SIZE=4'):
        distributed.torchrun_gpus(2, True)
    assert distributed.continued_run_desc('/runs/00003-faces-tiny/checkpoint.pt') == 'faces-tiny-continued'

def test_gradient_helpers_in_one_process():
    p = torch.nn.Parameter(torch.zeros(3))
    q = torch.nn.Parameter(torch.zeros(2))  # no gradient: left alone
    p.grad = torch.tensor([float('nan'), float('inf'), -2.0])
    distributed.average_gradients([p, q], 1)
    assert p.grad.tolist() == [0.0, 1e5, -2.0] and q.grad is None
    module = torch.nn.BatchNorm1d(2)
    module.running_mean.fill_(3)
    distributed.average_buffers(module, 1)
    distributed.broadcast_module(module, 1)
    assert module.running_mean.tolist() == [3.0, 3.0]

#----------------------------------------------------------------------------
