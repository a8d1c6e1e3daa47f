"""The inversion method registry (inversion/methods.py): steps, LPIPS choice, the QC check, encoder
loading, run() dispatch, invert() rejecting unknown keywords, and the import rules of bench/ and
inversion/ (no scripts, no private helpers of other modules)."""

import ast
import os

import pytest
import torch

from inversion import common
from inversion import methods
from inversion.operators import parse_degradation
from training import networks
from training import qc as qc_surgery

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = {'train', 'train_encoder', 'invert', 'generate', 'calc_metrics', 'dataset_tool', 'qcode_study'}

#----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def nets():
    torch.manual_seed(0)
    G = networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=16)).eval()
    D = networks.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=16).eval()
    qc = qc_surgery.convert_to_qc(dict(G=G, D=D, G_ema=G), q_dim=4, seed=0)
    return dict(G=G, D=D, G_qc=qc['G_ema'].eval())

#----------------------------------------------------------------------------

def test_step_parsing():
    assert methods.parse_steps('pti', '100,50') == dict(pivot_steps=100, tune_steps=50)
    assert methods.parse_steps('cri', '7') == dict(offset_steps=7, tune_steps=7)
    assert methods.parse_steps('ngd', '3,2,1') == dict(steps=(3, 2, 1))
    assert methods.parse_steps('dgp', '4') == dict(stage_steps=(4,) * 5)
    assert methods.parse_steps('qc', '0,9') == dict(refine_steps=0, tune_steps=9)
    assert methods.parse_steps('ngd', None) == {}
    with pytest.raises(methods.MethodError, match='has 2 phases'):
        methods.parse_steps('pti', '1,2,3')
    with pytest.raises(methods.MethodError, match='non-negative'):
        methods.parse_steps('pti', '-1')
    with pytest.raises(methods.MethodError, match='not an integer'):
        methods.parse_steps('pti', 'ten')
    with pytest.raises(methods.MethodError, match='unknown method "magic"'):
        methods.parse_steps('magic', '1')

def test_lpips_choice_and_qc_check(nets):
    assert methods.lpips_networks(['pti']) == ['alex', 'vgg']
    assert methods.lpips_networks(['ngd']) == ['vgg']
    assert methods.lpips_networks(['cri']) == ['alex', 'vgg']  # VGG features choose CRI's centroid
    assert methods.lpips_networks(['qc']) == ['alex'] and methods.lpips_networks(['dgp']) == []
    modules = methods.build_lpips_modules(['qc'], random_backbone=True)
    assert modules['alex'] is not None and modules['vgg'] is None
    assert [name for name, m in methods.METHODS.items() if m.needs_qc] == ['qc']
    with pytest.raises(methods.MethodError, match='only for QC-StyleGAN networks'):
        methods.check_network('qc', nets['G'])
    methods.check_network('qc', nets['G_qc'])
    methods.check_network('pti', nets['G'])

def test_encoder_loading_errors(nets, tmp_path):
    with pytest.raises(methods.MethodError):
        methods.load_encoder(str(tmp_path / 'missing.pt'), nets['G_qc'], 'cpu')
    torch.save({'not': 'an encoder'}, tmp_path / 'other.pt')
    with pytest.raises(methods.MethodError, match='encoder checkpoint'):
        methods.load_encoder(str(tmp_path / 'other.pt'), nets['G_qc'], 'cpu')

@pytest.mark.parametrize('name', sorted(methods.METHODS))
def test_invert_rejects_unknown_keywords(name):
    """A misspelt option is an error, not a silently ignored keyword (raised before any work)."""
    with pytest.raises(TypeError, match='tune_stpes'):
        methods.METHODS[name].invert(None, None, None, tune_stpes=3)

def test_run_passes_each_method_what_it_takes(nets, monkeypatch):
    """run() hands the shared inputs only to the methods that take them, LPIPS under each one's keyword."""
    seen = {}
    def recorder(name):
        def invert(G, target, degradation, **kwargs):
            seen[name] = kwargs
            return 'result'
        return invert
    lpips = dict(alex='ALEX', vgg='VGG')
    for name, entry in list(methods.METHODS.items()):
        monkeypatch.setitem(methods.METHODS, name, methods.Method(recorder(name), entry.phases, entry.lpips, entry.takes))
        # (an encoder for a method with an `init` keyword is encoded first: tests/test_encoder_init.py)
        out = methods.run(method=name, G=nets['G'], target=None, lpips=lpips, steps=methods.parse_steps(name, '2'), D='D',
                          encoder='ENC' if 'encoder' in entry.takes else None, seed=5, progress=True)
        assert out == 'result'
    assert seen['pti'] == dict(lpips_module='ALEX', lpips_pivot='VGG', seed=5, progress=True, pivot_steps=2, tune_steps=2)
    assert seen['cri'] == dict(lpips_module='ALEX', vgg='VGG', seed=5, progress=True, offset_steps=2, tune_steps=2)
    assert seen['ngd'] == dict(lpips_module='VGG', progress=True, steps=(2, 2, 2))
    assert seen['dgp'] == dict(D='D', seed=5, progress=True, stage_steps=(2,) * 5)
    assert seen['qc'] == dict(lpips_module='ALEX', encoder='ENC', seed=5, progress=True, refine_steps=2, tune_steps=2)

def test_run_a_real_method_and_a_new_entry(nets, monkeypatch):
    G = nets['G']
    deg = parse_degradation('sr:2', 16)
    torch.manual_seed(0)
    y = torch.rand([1, 3, 8, 8]) * 2 - 1
    lpips = methods.build_lpips_modules(['ngd'], random_backbone=True)
    out = methods.run(method='ngd', G=G, target=y, degradation=deg, lpips=lpips, steps=methods.parse_steps('ngd', '2'), lrs=(0.05,) * 3)
    assert out.restored.shape == (1, 3, 16, 16)
    assert [len(h['loss']) for h in out.history.values()] == [2, 2, 2]  # the steps reached the method
    with pytest.raises(TypeError, match='lpips_stpo'):
        methods.run(method='ngd', G=G, target=y, degradation=deg, lpips_stpo=None)
    with pytest.raises(methods.MethodError, match='only for QC-StyleGAN'):
        methods.run(method='qc', G=G, target=y, degradation=deg)
    # A new method is one entry: its name, its invert(), its phases.
    def invert(G, target, degradation, lpips_module=None, steps=1, seed=0, progress=False):
        return common.InversionResult(restored=target, ws=None, q=None, G=G, loss=torch.zeros(1), history={}, degraded=None)
    monkeypatch.setitem(methods.METHODS, 'copy', methods.Method(invert, phases=('steps',), lpips=dict(lpips_module='alex')))
    assert methods.parse_steps('copy', '4') == dict(steps=4)
    assert methods.run(method='copy', G=G, target=y).restored is y

#----------------------------------------------------------------------------

def _project_imports(path):
    """(module, names) of every import statement in a file."""
    tree = ast.parse(open(path, encoding='utf-8').read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [alias.name for alias in node.names]

def test_bench_and_inversion_import_no_script_and_no_private_helper():
    bad = []
    for folder in ['bench', 'inversion']:
        for name in sorted(os.listdir(os.path.join(REPO_ROOT, folder))):
            if not name.endswith('.py'):
                continue
            path = os.path.join(REPO_ROOT, folder, name)
            for module, names in _project_imports(path):
                if module.split('.')[0] in SCRIPTS:
                    bad.append(f'{folder}/{name}: imports the script {module}')
                bad += [f'{folder}/{name}: imports {module}.{n}' for n in names if n.startswith('_') and not n.startswith('__')]
            source = open(path, encoding='utf-8').read()
            bad += [f'{folder}/{name}: uses legacy.{n}' for n in ['_arch'] if f'legacy.{n}(' in source]
    assert not bad, bad

#----------------------------------------------------------------------------
