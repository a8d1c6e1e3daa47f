"""Loading a file never runs code from it unless the user opts in (--trust-pickle / QCGAN_TRUST_PICKLE=1).

Every test crafts hostile files whose code, if it ran, would create a marker file, feeds them to the
loaders and CLIs that read them, and checks for a one-line refusal that names the opt-in and for the
absence of the marker. Official-format pickles and the weights-only formats keep loading, bit-identically.
"""

import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import dnnlib
import legacy
from torch_utils import persistence
from training import networks

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_TRUST = {'QCGAN_TRUST_PICKLE': None}  # CliRunner env: unset during the call, restored after

@pytest.fixture(autouse=True)
def _no_trust(monkeypatch):
    monkeypatch.delenv('QCGAN_TRUST_PICKLE', raising=False)

#----------------------------------------------------------------------------
# Hostile payloads.

class Payload:
    """Pickles as a call of `func(*args)`: what a malicious `__reduce__` does."""
    def __init__(self, func, args):
        self.func, self.args = func, args
    def __reduce__(self):
        return (self.func, self.args)

def payloads(marker):
    marker = str(marker)
    return {
        'os.system': Payload(os.system, (f'touch {marker}',)),
        'subprocess.run': Payload(subprocess.run, (['touch', marker],)),
        'builtins.exec': Payload(exec, (f'open({marker!r}, "w").close()',)),
        'builtins.eval': Payload(eval, (f'open({marker!r}, "w").close()',)),
    }

PAYLOAD_NAMES = ['os.system', 'subprocess.run', 'builtins.exec', 'builtins.eval']

class PersistentWithSource:
    """Pickles as a persistent object of an unknown class whose embedded module source creates the marker."""
    def __init__(self, marker, class_name='Sneaky'):
        self.marker, self.class_name = str(marker), class_name
    def __reduce__(self):
        src = f'open({self.marker!r}, "w").close()\nclass {self.class_name}:\n    pass\n'
        meta = dict(type='class', version=6, module_src=src, class_name=self.class_name, state={})
        return (persistence._reconstruct_persistent_obj, (meta,))

def tiny_nets(seed=1):
    torch.manual_seed(seed)
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=64, channel_max=8))
    D = networks.Discriminator(c_dim=0, img_resolution=8, img_channels=3, channel_base=64, channel_max=8)
    for p in list(G.parameters()) + list(D.parameters()):
        p.data.add_(torch.randn_like(p) * 0.1)
    G.mapping.w_avg.normal_()
    return dict(G=G.eval(), D=D.eval(), G_ema=G.eval())

def hostile_network_files(tmp_path, marker):
    """name -> path of network files that would run code: __reduce__ payloads in several places,
    an unknown persistent class with embedded source, a weights-only .pt file carrying a payload."""
    files = dict()
    for name, payload in payloads(marker).items():
        path = tmp_path / f'reduce-{name}.pkl'
        path.write_bytes(pickle.dumps(dict(tiny_nets(), augment_pipe=None, training_set_kwargs=payload)))
        files[f'reduce-{name}'] = path
    path = tmp_path / 'reduce-as-G_ema.pkl'
    path.write_bytes(pickle.dumps(dict(G_ema=payloads(marker)['subprocess.run'])))
    files['reduce-as-G_ema'] = path
    path = tmp_path / 'unknown-persistent.pkl'
    path.write_bytes(pickle.dumps(dict(tiny_nets(), augment_pipe=PersistentWithSource(marker))))
    files['unknown-persistent'] = path
    path = tmp_path / 'weights-with-payload.pt'
    buf = io.BytesIO()
    torch.save(dict(format='qcgan-weights', format_version=1, modules={}, extras_json='{}', x=payloads(marker)['os.system']), buf)
    path.write_bytes(buf.getvalue())
    files['weights-with-payload'] = path
    return files

def assert_one_line_refusal(text, marker):
    assert not os.path.exists(marker), 'code from the file ran'
    assert 'Traceback' not in text, text[-3000:]
    errors = [line for line in text.splitlines() if line.startswith('Error:')]
    assert len(errors) == 1, text[-3000:]
    return errors[0]

#----------------------------------------------------------------------------
# Network files: the loader itself.

@pytest.mark.parametrize('name', [f'reduce-{n}' for n in PAYLOAD_NAMES] + ['reduce-as-G_ema', 'unknown-persistent'])
def test_load_network_refuses_code(tmp_path, name):
    marker = tmp_path / 'MARKER'
    path = hostile_network_files(tmp_path, marker)[name]
    for load in [lambda: legacy.load_network(str(path)),
                 lambda: legacy.load_network_pkl(open(path, 'rb')),
                 lambda: legacy.check_network_file(str(path), '--resume')]:
        with pytest.raises(legacy.UntrustedPickleError) as info:
            load()
        message = str(info.value)
        assert '\n' not in message and '--trust-pickle' in message and 'QCGAN_TRUST_PICKLE=1' in message
        assert not marker.exists()
    assert str(path) in str(pytest.raises(legacy.UntrustedPickleError, legacy.load_network, str(path)).value)

def test_weights_file_with_payload_is_refused_quietly(tmp_path):
    marker = tmp_path / 'MARKER'
    path = hostile_network_files(tmp_path, marker)['weights-with-payload']
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        with pytest.raises(legacy.NetworkLoadError) as info:
            legacy.load_network(str(path))
    assert '\n' not in str(info.value) and 'posix.system' in str(info.value)
    assert 'weights_only=False' not in str(info.value)  # torch's advice to run code is not passed on
    assert not [w for w in caught if 'torch' in str(w.filename) or 'pickle protocol' in str(w.message)]
    assert not marker.exists()

def test_plain_unpickling_refuses_unknown_embedded_source(tmp_path):
    marker = tmp_path / 'MARKER'
    blob = pickle.dumps(dict(x=PersistentWithSource(marker, 'Sneaky2')))
    with pytest.raises(dnnlib.util.UntrustedFileError, match='QCGAN_TRUST_PICKLE=1'):
        pickle.loads(blob)
    assert not marker.exists()

def test_trusted_custom_class_pickle_loads_with_opt_in(tmp_path, monkeypatch):
    module_dir = tmp_path / 'custom'
    module_dir.mkdir()
    (module_dir / 'trusted_pipe.py').write_text(textwrap.dedent('''
        import torch
        from torch_utils import persistence
        @persistence.persistent_class
        class TrustedPipe(torch.nn.Module):
            def __init__(self, scale=2.0):
                super().__init__()
                self.register_buffer('p', torch.tensor(scale))
            def forward(self, x):
                return x * self.p
    '''))
    sys.path.insert(0, str(module_dir))
    try:
        import trusted_pipe  # pylint: disable=import-error
        path = tmp_path / 'custom.pkl'
        path.write_bytes(pickle.dumps(dict(tiny_nets(), augment_pipe=trusted_pipe.TrustedPipe(scale=3.0))))
    finally:
        sys.path.remove(str(module_dir))
        sys.modules.pop('trusted_pipe', None)
    with pytest.raises(legacy.UntrustedPickleError, match="'TrustedPipe'"):
        legacy.load_network(str(path))
    # The CLI flag and the environment variable both opt in.
    runner = CliRunner()
    result = runner.invoke(legacy.convert_network_pickle, ['--source', str(path), '--dest', str(tmp_path / 'out.pkl')], env=NO_TRUST)
    assert result.exit_code == 1 and '--trust-pickle' in result.output
    result = runner.invoke(legacy.convert_network_pickle, ['--source', str(path), '--dest', str(tmp_path / 'out.pkl'), '--trust-pickle'], env=NO_TRUST)
    assert result.exit_code == 0, result.output
    assert 'QCGAN_TRUST_PICKLE' not in os.environ  # the flag does not leak out of the command
    monkeypatch.setenv('QCGAN_TRUST_PICKLE', '1')
    loaded = legacy.load_network(str(path))
    assert float(loaded['augment_pipe'](torch.ones([]))) == 3.0

#----------------------------------------------------------------------------
# Network files: every CLI that loads one.

def _cli_cases(tmp_path, path):
    import calc_metrics
    import generate
    import invert
    import train
    import train_encoder
    from bench import restore
    out = str(tmp_path / 'out')
    img = tmp_path / 'target.png'
    if not img.exists():
        import PIL.Image
        PIL.Image.fromarray(np.zeros([8, 8, 3], np.uint8)).save(img)
    return {
        'generate': (generate.generate_main, ['--network', path, '--seeds', '0', '--outdir', out, '--device', 'cpu']),
        'invert': (invert.main, ['--network', path, '--target', str(img), '--outdir', out, '--device', 'cpu']),
        'legacy': (legacy.convert_network_pickle, ['--source', path, '--dest', str(tmp_path / 'x.pkl')]),
        'calc_metrics': (calc_metrics.calc_metrics, ['--network', path, '--device', 'cpu', '--metrics', 'fid50k_full']),
        'train --resume': (train.main, ['--outdir', out, '--data', str(tmp_path / 'data'), '--resume', path, '--device', 'cpu']),
        'train_encoder --network': (train_encoder.main, ['--outdir', out, '--network', path, '--data', 'generator', '--device', 'cpu']),
        'bench/restore': (restore.main, ['--network', path, '--data', str(tmp_path / 'data'), '--outdir', out, '--device', 'cpu']),
    }

@pytest.mark.parametrize('cli', ['generate', 'invert', 'legacy', 'calc_metrics', 'train --resume', 'train_encoder --network', 'bench/restore'])
@pytest.mark.parametrize('name', ['reduce-subprocess.run', 'unknown-persistent'])
def test_every_network_cli_refuses_code(tmp_path, faces16, cli, name):
    marker = tmp_path / 'MARKER'
    path = str(hostile_network_files(tmp_path, marker)[name])
    (tmp_path / 'data').mkdir()
    import PIL.Image
    PIL.Image.fromarray(np.zeros([8, 8, 3], np.uint8)).save(tmp_path / 'data' / 'a.png')
    command, args = _cli_cases(tmp_path, path)[cli]
    if cli == 'train --resume':
        args = ['--outdir', str(tmp_path / 'out'), '--data', faces16, '--cfg', 'tiny', '--resume', path, '--device', 'cpu']
    result = CliRunner().invoke(command, args, env=NO_TRUST)
    line = assert_one_line_refusal(result.output, marker)
    assert result.exit_code == 1, result.output
    assert '--trust-pickle' in line
    assert not os.path.exists(tmp_path / 'out') or os.listdir(tmp_path / 'out') == []  # no run folder, no outputs

def test_every_loading_cli_has_the_trust_flag():
    import calc_metrics
    import generate
    import invert
    import qcode_study
    import train
    import train_encoder
    from bench import restore
    for command in [generate.generate_main, invert.main, legacy.convert_network_pickle, calc_metrics.calc_metrics, train.main,
                    train_encoder.main, qcode_study.main, restore.main]:
        assert '--trust-pickle' in [opt for param in command.params for opt in param.opts], command.name

def test_qcode_study_refuses_hostile_encoder_checkpoint(tmp_path):
    import qcode_study
    marker = tmp_path / 'MARKER'
    path = tmp_path / 'encoder.pt'
    torch.save(dict(format='qcgan-encoder', x=payloads(marker)['subprocess.run']), path)
    result = CliRunner().invoke(qcode_study.main, ['--encoder', str(path), '--generate', '8', '--device', 'cpu'], env=NO_TRUST)
    assert_one_line_refusal(result.output, marker)
    assert result.exit_code == 1

#----------------------------------------------------------------------------
# Class names read from files: checkpoints, training options, --id-weights.

def _hostile_checkpoint(tmp_path, marker, key='loss_kwargs'):
    from training import training_loop
    import train
    _desc, args = train.setup_training_loop_kwargs(data=str(tmp_path / 'data.zip'), cfg='tiny', device='cpu') \
        if os.path.exists(tmp_path / 'data.zip') else (None, None)
    options = dict(args) if args is not None else dict(loss_kwargs=dict(class_name='training.loss.StyleGAN2Loss'))
    options[key] = dict(class_name='subprocess.run', args=['touch', str(marker)])
    path = tmp_path / 'run' / 'checkpoint.pt'
    path.parent.mkdir(exist_ok=True)
    torch.save(dict(format=training_loop.CHECKPOINT_FORMAT, cur_nimg=0, training_options_json=json.dumps(options, default=str)), path)
    return path, options

@pytest.mark.parametrize('key', ['loss_kwargs', 'augment_kwargs', 'training_set_kwargs', 'G_opt_kwargs'])
def test_checkpoint_class_names_go_through_the_allow_list(tmp_path, faces16, key):
    import shutil
    import train
    from training import training_loop
    shutil.copy(faces16, tmp_path / 'data.zip')
    marker = tmp_path / 'MARKER'
    path, options = _hostile_checkpoint(tmp_path, marker, key)
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path / 'out'), '--resume', str(path)], env=NO_TRUST)
    line = assert_one_line_refusal(result.output, marker)
    assert result.exit_code == 1 and 'subprocess.run' in line and f'{key}.class_name' in line
    assert not os.path.exists(tmp_path / 'out') or os.listdir(tmp_path / 'out') == []
    # The training loop itself (fed the same options) refuses too.
    with pytest.raises(dnnlib.util.UntrustedFileError):
        training_loop.check_class_names(options, str(path))
    assert not marker.exists()

@pytest.mark.parametrize('name', ['subprocess.run', 'os.system', 'training.training_loop.os.system', 'builtins.eval',
                                  'dnnlib.util.Logger', 'torch.optim.Adam.__init__', 'torch.load', 'torch.nn.functional.conv2d',
                                  'torch.nn.modules.module.torch.load'])
def test_allow_list_refuses_names(name):
    with pytest.raises(dnnlib.util.UntrustedFileError) as info:
        dnnlib.util.construct_allowed_class(class_name=name, what='x.json: loss_kwargs.class_name')
    assert '\n' not in str(info.value) and 'x.json' in str(info.value)

@pytest.mark.parametrize('name', ['training.loss.StyleGAN2Loss', 'training.networks.Generator', 'training.dataset.ImageFolderDataset',
                                  'training.augment.AugmentPipe', 'torch.optim.Adam', 'torch.optim.SGD', 'training.ranger.Ranger',
                                  'torch.nn.Linear', 'torch.nn.Sequential'])
def test_allow_list_accepts_project_classes(name):
    assert isinstance(dnnlib.util.resolve_allowed_class(name), type)

def test_id_weights_class_name_is_refused(tmp_path):
    import train_encoder
    marker = tmp_path / 'MARKER'
    path = tmp_path / 'id.pt'
    torch.save(dict(class_name='subprocess.run', init_kwargs=dict(args=['touch', str(marker)]), state_dict={}), path)
    with pytest.raises(train_encoder.IDNetworkError) as info:
        train_encoder.load_id_network(str(path))
    assert '\n' not in str(info.value) and '--trust-pickle' in str(info.value) and 'subprocess.run' in str(info.value)
    # A pickle payload inside the torch file is refused by the weights-only reader.
    torch.save(dict(class_name='x.Y', state_dict=payloads(marker)['os.system']), path)
    with pytest.raises(train_encoder.IDNetworkError) as info:
        train_encoder.load_id_network(str(path))
    assert '\n' not in str(info.value) and 'weights_only=False' not in str(info.value)
    assert not marker.exists()

#----------------------------------------------------------------------------
# Detector files and the statistics cache.

def test_detector_pickle_with_payload_is_refused(tmp_path):
    from metrics import metric_utils
    marker = tmp_path / 'MARKER'
    for name, payload in payloads(marker).items():
        path = tmp_path / f'det-{name}.pkl'
        path.write_bytes(pickle.dumps(payload))
        with pytest.raises(metric_utils.DetectorError) as info:
            metric_utils.get_feature_detector(str(path))
        assert '\n' not in str(info.value) and '--trust-pickle' in str(info.value)
    assert not marker.exists()

def test_feature_stats_cache_with_payload_is_refused(tmp_path):
    from metrics import metric_utils
    marker = tmp_path / 'MARKER'
    path = tmp_path / 'stats.pkl'
    path.write_bytes(pickle.dumps(dict(capture_all=False, max_items=1, x=payloads(marker)['os.system'])))
    with pytest.raises(dnnlib.util.UntrustedFileError):
        metric_utils.FeatureStats.load(str(path))
    assert not marker.exists()
    stats = metric_utils.FeatureStats(capture_mean_cov=True)
    stats.append(np.random.RandomState(0).randn(4, 3).astype(np.float32))
    stats.save(str(path))
    loaded = metric_utils.FeatureStats.load(str(path))
    assert np.array_equal(loaded.get_mean_cov()[0], stats.get_mean_cov()[0])

#----------------------------------------------------------------------------
# What must keep loading: official-format pickles and the weights-only formats, bit-identically.

def _official_module(tmp_path):
    """Our networks.py under another module name and with other source text: stands in for the
    stylegan2-ada-pytorch networks.py that official pickles embed."""
    src = open(os.path.join(REPO_ROOT, 'training', 'networks.py')).read()
    src = '# stand-in for the official networks.py\n' + src
    folder = tmp_path / 'official'
    folder.mkdir()
    (folder / 'official_networks.py').write_text(src)
    sys.path.insert(0, str(folder))
    try:
        import importlib
        return importlib.import_module('official_networks')
    finally:
        sys.path.remove(str(folder))

def _outputs(G):
    z = torch.from_numpy(np.random.RandomState(0).randn(2, G.z_dim)).float()
    with torch.no_grad():
        return G(z, torch.zeros([2, G.c_dim]), noise_mode='const')

@pytest.mark.parametrize('protocol', [2, 4])
def test_official_format_pickle_loads_bit_identically_without_trust(tmp_path, protocol):
    from training import augment
    from torch_utils import misc
    official = _official_module(tmp_path)
    ours = tiny_nets()
    G = official.Generator(*ours['G'].init_args, **ours['G'].init_kwargs)
    D = official.Discriminator(*ours['D'].init_args, **ours['D'].init_kwargs)
    misc.copy_params_and_buffers(ours['G'], G, require_all=True)
    misc.copy_params_and_buffers(ours['D'], D, require_all=True)
    pipe = augment.AugmentPipe(**augment.augpipe_specs['bgc'])
    pipe.p.copy_(torch.as_tensor(0.25))
    # As the official training loop writes snapshots: deep copies on CPU in eval mode, a plain dict.
    import copy
    snapshot = dict(training_set_kwargs=dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path='ffhq.zip',
                                                        use_labels=False, max_size=70000, xflip=True, resolution=np.int64(8)))
    for name, module in [('G', G), ('D', D), ('G_ema', G), ('augment_pipe', pipe)]:
        snapshot[name] = copy.deepcopy(module).eval().requires_grad_(False).cpu()
    path = tmp_path / 'network-snapshot-000000.pkl'
    with open(path, 'wb') as f:
        pickle.dump(snapshot, f, protocol=protocol)
    assert b'stand-in for the official' in path.read_bytes()
    marker_free = legacy.load_network(str(path))
    assert type(marker_free['G_ema']) is networks.Generator
    assert torch.equal(_outputs(marker_free['G_ema']), _outputs(ours['G']))
    for name, tensor in misc.named_params_and_buffers(ours['D']):
        assert torch.equal(dict(misc.named_params_and_buffers(marker_free['D']))[name], tensor)
    assert float(marker_free['augment_pipe'].p) == 0.25
    assert marker_free['training_set_kwargs'].resolution == 8

def test_safetensors_round_trip_is_bit_identical(tmp_path):
    from torch_utils import misc
    data = dict(tiny_nets(), augment_pipe=None, training_set_kwargs=dnnlib.EasyDict(path='data.zip', xflip=False))
    src = tmp_path / 'net.pkl'
    legacy.save_network_pkl(data, str(src))
    dest = tmp_path / 'net.safetensors'
    result = CliRunner().invoke(legacy.convert_network_pickle, ['--source', str(src), '--dest', str(dest)])
    assert result.exit_code == 0, result.output
    import safetensors.torch
    header_meta = json.loads(safetensors.safe_open(str(dest), 'pt').metadata()['qcgan'])
    assert header_meta['modules']['G_ema']['class_name'] == 'training.networks.Generator'
    assert set(safetensors.torch.load_file(str(dest))) >= {'G_ema.mapping.w_avg', 'D.b8.conv0.weight'}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        loaded = legacy.load_network(str(dest))
    assert not caught, [str(w.message) for w in caught]
    for key in ['G', 'D', 'G_ema']:
        ref = dict(misc.named_params_and_buffers(data[key]))
        got = dict(misc.named_params_and_buffers(loaded[key]))
        assert set(ref) == set(got)
        for name in ref:
            assert got[name].dtype == ref[name].dtype and torch.equal(got[name], ref[name]), name
    assert torch.equal(_outputs(loaded['G_ema']), _outputs(data['G_ema']))
    assert loaded['training_set_kwargs'].path == 'data.zip'
    # Truncated or foreign .safetensors files: one line.
    blob = dest.read_bytes()
    (tmp_path / 'cut.safetensors').write_bytes(blob[:len(blob) // 2])
    with pytest.raises(legacy.NetworkLoadError) as info:
        legacy.load_network(str(tmp_path / 'cut.safetensors'))
    assert '\n' not in str(info.value)
    safetensors.torch.save_file({'x': torch.zeros(2)}, str(tmp_path / 'foreign.safetensors'))
    with pytest.raises(legacy.NetworkLoadError, match='no qcgan network metadata'):
        legacy.load_network(str(tmp_path / 'foreign.safetensors'))

def test_weights_pt_loads_without_torch_warnings(tmp_path):
    data = tiny_nets()
    legacy.save_weights(data, str(tmp_path / 'net.pt'))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        loaded = legacy.load_network(str(tmp_path / 'net.pt'))
    assert not caught, [str(w.message) for w in caught]
    assert torch.equal(_outputs(loaded['G_ema']), _outputs(data['G_ema']))

#----------------------------------------------------------------------------
