"""Outputs say how they were made: network file (path + SHA-256 prefix), LPIPS backbone, detectors,
method settings and seed, with numbers from a random LPIPS backbone or a stand-in detector marked."""

import hashlib
import json
import os

import numpy as np
import PIL.Image
import torch
from click.testing import CliRunner

import legacy
from metrics import provenance
from training import networks


def _sha(path):
    return hashlib.sha256(open(path, 'rb').read()).hexdigest()[:provenance.HASH_PREFIX]

def _tiny_net(path):
    torch.manual_seed(0)
    G = networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=16))
    D = networks.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=16)
    legacy.save_network_pkl(dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=None), str(path))
    return str(path)

def test_invert_results_json_provenance_and_marks(tmp_path):
    import invert
    net = _tiny_net(tmp_path / 'net.pkl')
    PIL.Image.fromarray((np.random.RandomState(0).rand(16, 16, 3) * 255).astype(np.uint8)).save(tmp_path / 't.png')
    base = ['--network', net, '--target', str(tmp_path / 't.png'), '--method', 'ngd', '--steps', '1', '--device', 'cpu',
            '--seed', '7', '--degradation', 'sr:2', '--synthesize-degradation']
    r = CliRunner().invoke(invert.main, base + ['--outdir', str(tmp_path / 'o'), '--lpips-backbone', 'random'])
    assert r.exit_code == 0, r.output + repr(r.exception)
    prov = json.loads((tmp_path / 'o' / 'results.json').read_text())['provenance']
    assert prov['network'] == dict(spec=net, path=os.path.abspath(net), sha256=_sha(net))
    assert [(lp['net'], lp['backbone']) for lp in prov['lpips']] == [('alex', 'random'), ('vgg', 'random')]
    assert prov['seed'] == 7 and prov['method'] == 'ngd' and prov['settings']['degradation'] == 'sr:2'
    assert prov['settings']['steps'] == [1, 1, 1]
    assert any('random backbone' in c for c in prov['caveats'])
    assert 'Note: LPIPS-alex from a random backbone' in r.output  # marked where the run is reported
    # The before/after panel: observation | restored | re-degraded | ground truth, 16 px upscaled to 256, labelled.
    panel = np.asarray(PIL.Image.open(tmp_path / 'o' / 't_panel.png'))
    top = panel.shape[0] - 256
    assert panel.shape[1] == 4 * 256 + 3 * 4 and top > 20
    assert all((panel[:top, c * 260:c * 260 + 256].min(axis=2) < 128).sum() > 20 for c in range(4))
    r = CliRunner().invoke(invert.main, base + ['--outdir', str(tmp_path / 'o2'), '--lpips-backbone', str(tmp_path / 'nope.pth')])
    assert r.exit_code != 0 and '--lpips-backbone' in r.output and 'nope.pth' in r.output and 'Traceback' not in r.output

def test_record_helpers(tmp_path):
    net = _tiny_net(tmp_path / 'n.pkl')
    rec = provenance.build(network=net, lpips=['pretrained', ('random', 'vgg')], detectors=[net], seed=3, method='x')
    assert rec['network']['sha256'] == _sha(net) and rec['seed'] == 3
    assert rec['lpips'][0]['backbone'] == 'pretrained' and rec['lpips'][0]['path'].endswith('alexnet-owt-7be5be79.pth')
    assert rec['detectors'][0]['official'] is False and rec['detectors'][0]['sha256'] == _sha(net)
    assert len(rec['caveats']) == 2  # random LPIPS-vgg and the stand-in detector
    assert provenance.mark('FID 3.1', rec).startswith('FID 3.1 [LPIPS-vgg from a random backbone')
    assert provenance.mark('FID 3.1', provenance.build(network=net)) == 'FID 3.1'
    init = provenance.build(network='init:tiny32')
    assert init['network']['sha256'] is None and 'random weights' in init['caveats'][0]

def test_train_options_file_provenance(faces16, tmp_path, monkeypatch):
    import train
    net = _tiny_net(tmp_path / 'start.pkl')
    monkeypatch.setenv('QCGAN_DETECTOR_INCEPTION', net)  # any file: a stand-in detector
    _desc, args = train.setup_training_loop_kwargs(data=faces16, cfg='tiny', workers=0, device='cpu', resume=net, seed=5,
                                                   metrics=['fid50k_full'])
    prov = train.options_with_provenance(args)['provenance']
    assert prov['network']['sha256'] == _sha(net) and prov['seed'] == 5
    inception = [d for d in prov['detectors'] if d['name'] == 'inception'][0]
    assert inception['path'] == os.path.abspath(net) and not inception['official']
    vgg = [d for d in prov['detectors'] if d['name'] == 'vgg16'][0]
    assert vgg['official'] and vgg['source'].startswith('https://')
    json.dumps(prov)
