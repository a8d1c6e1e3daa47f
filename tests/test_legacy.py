"""Model files: pickle round trips, foreign (official-style) pickles, weights-only format, zoo, CLIs."""

import io
import os
import pickle
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import dnnlib
import legacy
from torch_utils import misc
from torch_utils import persistence
from training import networks

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#----------------------------------------------------------------------------

def make_nets(c_dim=0, seed=1):
    torch.manual_seed(seed)
    G = networks.Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=8, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=64, channel_max=8))
    D = networks.Discriminator(c_dim=c_dim, img_resolution=8, img_channels=3, channel_base=64, channel_max=8)
    for p in G.parameters():
        p.data.add_(torch.randn_like(p) * 0.1)  # make every tensor non-default
    G.mapping.w_avg.normal_()
    G.eval()
    D.eval()
    return dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=dnnlib.EasyDict(path="data.zip", xflip=False))

def sample(G, seed=0):
    z = torch.from_numpy(np.random.RandomState(seed).randn(2, G.z_dim)).float()
    c = torch.zeros([2, G.c_dim])
    with torch.no_grad():
        return G(z, c, truncation_psi=0.7, noise_mode='const')

def pickle_bytes(data):
    buf = io.BytesIO()
    pickle.dump(data, buf)
    return buf.getvalue()

#----------------------------------------------------------------------------

def test_pickle_round_trip_restores_outputs(tmp_path):
    data = make_nets()
    path = tmp_path / 'net.pkl'
    legacy.save_network_pkl(data, str(path))
    with open(path, 'rb') as f:
        loaded = legacy.load_network_pkl(f)
    assert set(loaded) >= {'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'}
    assert type(loaded['G_ema']) is networks.Generator  # rebuilt with this project's class
    assert torch.equal(sample(loaded['G_ema']), sample(data['G_ema']))
    img = sample(data['G'])
    assert torch.equal(loaded['D'](img, None), data['D'](img, None))
    assert loaded['training_set_kwargs'].path == 'data.zip'
    assert not any(p.requires_grad for p in loaded['G'].parameters())

def test_plain_pickle_load_executes_embedded_source():
    data = make_nets()
    obj = pickle.loads(pickle_bytes(data))
    G = obj['G_ema']
    assert type(G).__name__ == 'Generator' and persistence.is_persistent(G)
    assert torch.equal(sample(G), sample(data['G_ema']))
    assert G.init_kwargs.img_resolution == 8

def test_pickle_loads_where_training_is_not_importable(tmp_path):
    data = make_nets()
    (tmp_path / 'net.pkl').write_bytes(pickle_bytes(data))
    np.save(tmp_path / 'expected.npy', sample(data['G_ema']).numpy())
    isolated = tmp_path / 'isolated'
    isolated.mkdir()
    for package in ['dnnlib', 'torch_utils']:
        shutil.copytree(os.path.join(REPO_ROOT, package), isolated / package, ignore=shutil.ignore_patterns('__pycache__'))
    script = textwrap.dedent(f'''
        import importlib.util, pickle, sys
        import numpy as np, torch
        assert importlib.util.find_spec('training') is None, 'training/ must not be importable here'
        with open({str(tmp_path / 'net.pkl')!r}, 'rb') as f:
            G = pickle.load(f)['G_ema']
        z = torch.from_numpy(np.random.RandomState(0).randn(2, G.z_dim)).float()
        with torch.no_grad():
            img = G(z, torch.zeros([2, 0]), truncation_psi=0.7, noise_mode='const')
        expected = np.load({str(tmp_path / 'expected.npy')!r})
        print('maxdiff', float(np.abs(img.numpy() - expected).max()))
    ''')
    env = dict(os.environ, PYTHONPATH=str(isolated))
    env.pop('QCGAN_TRUST_PICKLE', None)
    proc = subprocess.run([sys.executable, '-c', script], cwd=isolated, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and 'QCGAN_TRUST_PICKLE=1' in proc.stderr  # executing embedded source needs the opt-in
    env['QCGAN_TRUST_PICKLE'] = '1'
    proc = subprocess.run([sys.executable, '-c', script], cwd=isolated, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'maxdiff 0.0' in proc.stdout

def _foreign_module(tmp_path, name='foreign_networks'):
    """A copy of the network code under another module name and with different source text,
    standing in for the official stylegan2-ada-pytorch networks.py embedded in official pickles."""
    src = open(os.path.join(REPO_ROOT, 'training', 'networks.py')).read()
    src = '# Foreign copy of the networks (stands in for an official pickle).\n' + src.replace(
        'def normalize_2nd_moment(x, dim=1, eps=1e-8):', 'def normalize_2nd_moment(x, dim=1, eps=1e-8):  # foreign')
    folder = tmp_path / 'foreign'
    folder.mkdir(exist_ok=True)
    (folder / f'{name}.py').write_text(src)
    sys.path.insert(0, str(folder))
    try:
        import importlib
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))

def test_foreign_pickle_is_converted_by_parameter_names(tmp_path):
    foreign = _foreign_module(tmp_path)
    ours = make_nets(c_dim=3)
    G_f = foreign.Generator(*ours['G'].init_args, **ours['G'].init_kwargs)
    D_f = foreign.Discriminator(*ours['D'].init_args, **ours['D'].init_kwargs)
    misc.copy_params_and_buffers(ours['G'], G_f, require_all=True)
    misc.copy_params_and_buffers(ours['D'], D_f, require_all=True)
    G_f.eval()
    D_f.eval()
    blob = pickle_bytes(dict(G=G_f, D=D_f, G_ema=G_f, augment_pipe=None, training_set_kwargs=None, D_degraded=D_f))
    assert b'# Foreign copy' in blob

    loaded = legacy.load_network_pkl(io.BytesIO(blob))
    for key in ['G', 'G_ema']:
        assert type(loaded[key]) is networks.Generator
    assert type(loaded['D_degraded']) is networks.Discriminator  # extra networks (QC pickles) convert too
    z = torch.randn([2, 8])
    c = torch.eye(3)[[0, 2]]
    assert torch.equal(loaded['G_ema'](z, c, noise_mode='const'), ours['G'](z, c, noise_mode='const'))
    img = ours['G'](z, c, noise_mode='const')
    assert torch.equal(loaded['D'](img, c), ours['D'](img, c))

#----------------------------------------------------------------------------

@pytest.mark.parametrize('cut', [1, 100, 0.5, 0.99])
def test_truncated_pickle_gives_clear_error(cut):
    blob = pickle_bytes(make_nets())
    size = int(len(blob) * cut) if isinstance(cut, float) else cut
    with pytest.raises(legacy.NetworkLoadError, match='truncated'):
        legacy.load_network_pkl(io.BytesIO(blob[:size]))

def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(legacy.NetworkLoadError, match='empty'):
        legacy.load_network_pkl(io.BytesIO(b''))
    with pytest.raises(legacy.NetworkLoadError, match='expected a dict'):
        legacy.load_network_pkl(io.BytesIO(pickle.dumps([1, 2, 3])))
    with pytest.raises(legacy.NetworkLoadError, match='G_ema'):
        legacy.load_network_pkl(io.BytesIO(pickle.dumps({'weights': 1})))
    with pytest.raises(legacy.NetworkLoadError, match='not a network'):
        legacy.load_network_pkl(io.BytesIO(pickle.dumps({'G_ema': 'nope'})))
    # A pickle of some other project's class.
    blob = pickle.dumps(dnnlib.EasyDict(a=1)).replace(b'dnnlib.util', b'nolib.utilx')
    with pytest.raises(legacy.UntrustedPickleError, match='nolib.utilx.EasyDict'):
        legacy.load_network_pkl(io.BytesIO(blob))
    with pytest.raises(legacy.NetworkLoadError, match='not found'):
        legacy.load_network(str(tmp_path / 'missing.pkl'))
    with pytest.raises(legacy.NetworkLoadError, match='unknown network "ffhq9000"'):
        legacy.load_network('ffhq9000')

def test_parameter_name_mismatch_is_reported(tmp_path):
    foreign = _foreign_module(tmp_path, 'foreign_networks_renamed')
    G = foreign.Generator(*make_nets()['G'].init_args, **make_nets()['G'].init_kwargs)
    G.synthesis.b4.conv1.register_buffer('extra_buffer', torch.zeros([2]))
    with pytest.raises(legacy.NetworkLoadError, match='extra_buffer'):
        legacy.load_network_pkl(io.BytesIO(pickle_bytes(dict(G=G, D=None, G_ema=G))))

#----------------------------------------------------------------------------

def test_weights_only_round_trip(tmp_path):
    data = make_nets(c_dim=2)
    path = tmp_path / 'net.pt'
    legacy.save_weights(data, str(path))
    payload = torch.load(str(path), weights_only=True)  # plain data only: loads without running code
    assert payload['format'] == 'qcgan-weights'
    assert payload['modules']['G_ema']['class_name'] == 'training.networks.Generator'
    with open(path, 'rb') as f:
        loaded = legacy.load_network_pkl(f)
    z = torch.randn([2, 8])
    c = torch.eye(2)
    assert torch.equal(loaded['G_ema'](z, c, noise_mode='const'), data['G_ema'](z, c, noise_mode='const'))
    img = data['G'](z, c, noise_mode='const')
    assert torch.equal(loaded['D'](img, c), data['D'](img, c))
    assert loaded['training_set_kwargs'].path == 'data.zip'
    # Truncation of a weights file is detected as well.
    blob = path.read_bytes()
    with pytest.raises(legacy.NetworkLoadError):
        legacy.load_network_pkl(io.BytesIO(blob[:len(blob) // 2]))

def test_force_fp16_rebuilds_with_fp16_blocks():
    data = make_nets()
    loaded = legacy.load_network_pkl(io.BytesIO(pickle_bytes(data)), force_fp16=True)
    assert loaded['G_ema'].init_kwargs.synthesis_kwargs['num_fp16_res'] == 4
    assert loaded['D'].init_kwargs.num_fp16_res == 4
    assert torch.allclose(sample(loaded['G_ema']), sample(data['G_ema']), atol=1e-6)  # fp32 on CPU

#----------------------------------------------------------------------------

def test_zoo_names_resolve_and_use_the_download_cache(tmp_path, monkeypatch):
    assert legacy.resolve_network_spec('ffhq256').endswith('ffhq-res256-mirror-paper256-noaug.pkl')
    assert legacy.resolve_network_spec('afhqcat').endswith('/afhqcat.pkl')
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.setenv('DNNLIB_OFFLINE', '1')
    with pytest.raises(dnnlib.DownloadError) as excinfo:
        legacy.load_network('cifar10', verbose=False)
    message = str(excinfo.value)
    assert legacy.MODEL_ZOO['cifar10'] in message and str(tmp_path / 'cache') in message and '\n' not in message
    # A file placed where the error says is used from then on, offline.
    cached = dnnlib.util.url_cache_path(legacy.MODEL_ZOO['cifar10'])
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    with open(cached, 'wb') as f:
        f.write(pickle_bytes(make_nets()))
    loaded = legacy.load_network('cifar10', verbose=False)
    assert type(loaded['G_ema']) is networks.Generator

def test_init_presets():
    data = legacy.load_network('init:tiny32')
    assert data['G_ema'].img_resolution == 32 and data['D'].img_resolution == 32
    assert torch.equal(sample(data['G_ema']), sample(legacy.load_network('init:tiny32')['G_ema']))  # seeded
    with pytest.raises(legacy.NetworkLoadError, match='init preset'):
        legacy.load_network('init:huge')

def test_legacy_cli_converts_to_weights_and_pickle(tmp_path):
    src = tmp_path / 'src.pkl'
    src.write_bytes(pickle_bytes(make_nets()))
    runner = CliRunner()
    result = runner.invoke(legacy.convert_network_pickle, ['--source', str(src), '--dest', str(tmp_path / 'out.pt')])
    assert result.exit_code == 0, result.output
    result = runner.invoke(legacy.convert_network_pickle, ['--source', str(tmp_path / 'out.pt'), '--dest', str(tmp_path / 'back.pkl')])
    assert result.exit_code == 0, result.output
    with open(tmp_path / 'back.pkl', 'rb') as f:
        back = legacy.load_network_pkl(f)
    assert torch.equal(sample(back['G_ema']), sample(make_nets()['G_ema']))
    result = runner.invoke(legacy.convert_network_pickle, ['--source', str(tmp_path / 'nope.pkl'), '--dest', str(tmp_path / 'x.pt')])
    assert result.exit_code != 0 and 'not found' in result.output and 'Traceback' not in result.output

#----------------------------------------------------------------------------

def test_generate_cli(tmp_path):
    import generate
    runner = CliRunner()
    outdir = tmp_path / 'out'
    result = runner.invoke(generate.generate_main, ['--network', 'init:tiny32', '--seeds', '0-2,7', '--grid',
                                                    '--outdir', str(outdir), '--device', 'cpu'])
    assert result.exit_code == 0, result.output
    names = sorted(os.listdir(outdir))
    assert names == ['grid.png', 'seed0000.png', 'seed0001.png', 'seed0002.png', 'seed0007.png']
    assert PIL.Image.open(outdir / 'seed0000.png').size == (32, 32)
    width, height = PIL.Image.open(outdir / 'grid.png').size  # 2x2, cells upscaled to 256 px, a title line
    assert width == 2 * 256 + 4 and 2 * 256 + 4 < height < 2 * 256 + 60
    # Same seed, same image; different seed, different image.
    again = tmp_path / 'again'
    runner.invoke(generate.generate_main, ['--network', 'init:tiny32', '--seeds', '7,1', '--outdir', str(again), '--device', 'cpu'])
    img7 = np.asarray(PIL.Image.open(outdir / 'seed0007.png'))
    assert np.array_equal(img7, np.asarray(PIL.Image.open(again / 'seed0007.png')))
    assert not np.array_equal(img7, np.asarray(PIL.Image.open(outdir / 'seed0001.png')))

@pytest.mark.parametrize('args, message', [
    (['--network', 'init:tiny32', '--seeds', '5-2'], 'empty'),
    (['--network', 'init:tiny32', '--seeds', '-3'], 'not a number'),
    (['--network', 'init:tiny32', '--seeds', '4294967296'], 'out of range'),
    (['--network', 'nosuchzoo', '--seeds', '0'], 'unknown network'),
    (['--network', 'init:tiny32', '--seeds', '0', '--device', 'tpu'], 'invalid device'),
])
def test_generate_cli_errors(tmp_path, args, message):
    import generate
    result = CliRunner().invoke(generate.generate_main, args + ['--outdir', str(tmp_path)])
    assert result.exit_code != 0
    assert message in result.output and 'Traceback' not in result.output

@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the error shown when CUDA is absent')
def test_generate_cli_cuda_absent(tmp_path):
    import generate
    result = CliRunner().invoke(generate.generate_main, ['--network', 'init:tiny32', '--seeds', '0', '--device', 'cuda', '--outdir', str(tmp_path)])
    assert result.exit_code == 1 and 'no CUDA device' in result.output

#----------------------------------------------------------------------------
