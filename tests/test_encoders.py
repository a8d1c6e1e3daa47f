"""pSp-style encoders: architecture, Ranger, training (loss drops, q separates sharp from degraded),
exact resume, the train_encoder.py CLI and its bad-input errors, the inference API, the
quality-code study tool and a two-process gloo run."""

import json
import os

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import dnnlib
import legacy
from training import qc as qc_surgery
import qcode_study
import train_encoder
from torch_utils import training_stats
from training import encoder_data
from training import encoder_loop
from training import encoder_loss
from training import encoders
from training import networks
from training.ranger import RAdam, Ranger

#----------------------------------------------------------------------------
# Fixtures: a tiny QC generator whose DegradBlocks make moderate degradations, images it made.

def _stock(res, seed=0):
    torch.manual_seed(seed)
    cb = 8 * res
    G = networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=res, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=cb, channel_max=16))
    D = networks.Discriminator(c_dim=0, img_resolution=res, img_channels=3, channel_base=cb, channel_max=16)
    return dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=None)

@pytest.fixture(scope='module')
def nets(tmp_path_factory):
    """Paths of: a plain 16px StyleGAN2 pickle, its QC version (q_dim 4), a plain 32px one and a
    QC one with another q_dim."""
    root = tmp_path_factory.mktemp('nets')
    paths = dict(plain=str(root / 'plain16.pkl'), qc=str(root / 'qc16.pkl'), plain32=str(root / 'plain32.pkl'),
                 qc8=str(root / 'qc16_q8.pkl'))
    legacy.save_network_pkl(_stock(16), paths['plain'])
    legacy.save_network_pkl(_stock(32), paths['plain32'])
    for key, q_dim in [('qc', 4), ('qc8', 8)]:
        qc = qc_surgery.load_qc_network(paths['plain'], q_dim=q_dim, seed=0)
        with torch.no_grad():  # random DegradBlocks degrade wildly; tone them down to a trained-like range
            for net in [qc['G'], qc['G_ema']]:
                for name, p in net.named_parameters():
                    if name.endswith('convq.2.weight'):
                        p.mul_(0.3)
        legacy.save_network_pkl({k: v for k, v in qc.items() if k != 'G_teacher'}, paths[key])
    return paths

def _write_generated(G, folder, count, seed=0):
    os.makedirs(folder, exist_ok=True)
    with torch.no_grad():
        z = torch.from_numpy(np.random.RandomState(seed).randn(count, G.z_dim)).float()
        img = G.synthesis(G.mapping(z, None), noise_mode='const', force_fp32=True)
    for i, array in enumerate(((img.clamp(-1, 1) + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()):
        PIL.Image.fromarray(array).save(os.path.join(folder, f'{i:04d}.png'))
    return str(folder)

@pytest.fixture(scope='module')
def gen16(nets, tmp_path_factory):
    """24 sharp 16x16 images made by the QC generator (q = 0)."""
    G = legacy.load_network(nets['qc'], verbose=False)['G_ema']
    return _write_generated(G, tmp_path_factory.mktemp('data') / 'gen16', 24)

@pytest.fixture(scope='module')
def gen32(nets, tmp_path_factory):
    """12 images at 32x32: another resolution than the 16px generators."""
    G = legacy.load_network(nets['plain32'], verbose=False)['G_ema']
    return _write_generated(G, tmp_path_factory.mktemp('data') / 'gen32', 12)

class TinyEmbed(torch.nn.Module):
    """A face-embedding stand-in with the documented interface: [N, 3, 112, 112] -> [N, 16]."""
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 5, stride=4)
        self.fc = torch.nn.Linear(8 * 16, 16)

    def forward(self, x):
        x = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 4)
        return self.fc(x.flatten(1))

@pytest.fixture(scope='module')
def id_net(tmp_path_factory):
    import warnings
    torch.manual_seed(1)
    path = str(tmp_path_factory.mktemp('id') / 'embed.pt')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)  # torch.jit's deprecation notice
        torch.jit.script(TinyEmbed()).save(path)
    return path

@pytest.fixture(autouse=True, scope='module')
def _one_thread(single_thread):
    """Tiny tensors: one intra-op thread is several times faster on the 2-core machine."""
    yield

@pytest.fixture(autouse=True)
def _fresh_training_stats():
    """Training runs here use the process-wide training_stats; leave it clean for other tests."""
    training_stats.reset()
    yield
    training_stats.reset()

TINY = dict(backbone='tiny', input_size=32, num_workers=0, lpips_backbone='random')

def run(network, data, run_dir, **kwargs):
    training_stats.reset()
    options = dict(TINY, network=network, data=data, run_dir=str(run_dir), batch_size=4, log_fn=lambda *a, **k: None)
    options.update(kwargs)
    return encoder_loop.training_loop(**encoder_loop.group_options(options))

#----------------------------------------------------------------------------
# Ranger.

def test_radam_matches_torch_and_ranger_lookahead_state_resumes():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = RAdam(a.parameters(), lr=1e-2), torch.optim.RAdam(b.parameters(), lr=1e-2)
    for _ in range(12):  # crosses the rectification threshold (step 6 for beta2 = 0.999)
        x = torch.randn(8, 5)
        for model, opt in [(a, opt_a), (b, opt_b)]:
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    assert all(torch.allclose(p, q, atol=1e-7) for p, q in zip(a.parameters(), b.parameters()))

    def train(model, opt, xs):
        for x in xs:
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    xs = [torch.randn(8, 5) for _ in range(9)]
    torch.manual_seed(1)
    full = torch.nn.Linear(5, 3)
    part = torch.nn.Linear(5, 3)
    part.load_state_dict(full.state_dict())
    opt_full = Ranger(full.parameters(), lr=1e-2, k=3)
    train(full, opt_full, xs)
    assert torch.equal(opt_full.state[full.weight]['slow_buffer'], full.weight.detach())  # synced at step 9
    opt_part = Ranger(part.parameters(), lr=1e-2, k=3)
    train(part, opt_part, xs[:4])
    saved = (json.loads(json.dumps({k: v.tolist() for k, v in part.state_dict().items()})), opt_part.state_dict())
    resumed = torch.nn.Linear(5, 3)
    resumed.load_state_dict({k: torch.tensor(v) for k, v in saved[0].items()})
    opt_resumed = Ranger(resumed.parameters(), lr=1e-2, k=3)
    opt_resumed.load_state_dict(saved[1])
    train(resumed, opt_resumed, xs[4:])
    assert all(torch.equal(p, q) for p, q in zip(full.parameters(), resumed.parameters()))
    # Gradient centralisation removes the per-row mean of weight gradients.
    w = torch.nn.Parameter(torch.zeros(4, 6))
    w.grad = torch.randn(4, 6) + 5
    Ranger([w], lr=1.0, k=0).step()
    assert torch.allclose(w.detach().mean(dim=1), torch.zeros(4), atol=1e-5)

#----------------------------------------------------------------------------
# Architecture.

def test_released_resnet34_architecture_and_imagenet_weights(nets, tmp_path, monkeypatch, capsys):
    import torchvision
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'hub-home'))
    encoders._notices_shown.clear()  # pylint: disable=protected-access
    G = legacy.load_network(nets['qc'], verbose=False)['G_ema']
    enc = encoders.PSPEncoder.for_generator(G, input_size=64)
    enc2 = encoders.PSPEncoder.for_generator(G, input_size=64, w_space='w+')
    notes = capsys.readouterr().out
    assert notes.count('ImageNet ResNet34 weights not found') == 1 and 'random init' in notes  # one notice
    stem = enc.w_backbone.stem
    assert isinstance(stem[0], torch.nn.Conv2d) and stem[0].kernel_size == (7, 7) and stem[0].stride == (2, 2) and stem[0].bias is None
    assert isinstance(stem[1], torch.nn.BatchNorm2d) and isinstance(stem[2], torch.nn.PReLU)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in enc.modules())
    assert [len(s) for s in enc.w_backbone.stages] == [3, 4, 6, 3]
    assert isinstance(enc.w_head.linear, encoders.EqualLinear) and enc.w_head.linear.weight.shape == (16, 512)
    assert enc.q_head.linear.weight.shape == (4, 512) and enc.q_backbone is not enc.w_backbone
    assert torch.equal(enc.latent_avg, torch.cat([G.mapping.w_avg, torch.zeros(4)]))
    enc.eval()
    enc2.eval()
    w, q = enc(torch.rand(2, 3, 40, 40) * 2 - 1)
    assert w.shape == (2, 16) and q.shape == (2, 4)
    w2, q2 = enc2(torch.rand(2, 3, 16, 16) * 2 - 1, skip_q=True)
    assert w2.shape == (2, G.num_ws, 16) and torch.equal(q2, torch.zeros(2, 4))
    assert enc2.w_head.level_of_style == [0, 0, 0, 1, 1, 1]  # pSp: styles 0-2 coarse, 3-6 middle

    # ImageNet weights are used when torch hub's cache has them (never downloaded).
    ref = torchvision.models.resnet34(weights=None)
    cache = tmp_path / 'hub-home' / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    torch.save(ref.state_dict(), cache / 'resnet34-b627a593.pth')
    enc3 = encoders.PSPEncoder.for_generator(G, input_size=64)
    assert torch.equal(enc3.w_backbone.stages[3][2].conv2.weight, ref.layer4[2].conv2.weight)
    assert torch.equal(enc3.q_backbone.stages[0][0].conv1.weight, ref.layer1[0].conv1.weight)
    assert 'not found' not in capsys.readouterr().out
    with pytest.raises(encoders.EncoderError, match='multiple of 16'):
        encoders.PSPEncoder.for_generator(G, input_size=40, backbone_weights='none')

#----------------------------------------------------------------------------
# Training on images the generator made.

@pytest.fixture(scope='module')
def trained(nets, tmp_path_factory):
    """200 steps on pairs the QC generator makes itself (sharp G(w, 0), degraded G(w, q))."""
    run_dir = tmp_path_factory.mktemp('trained')
    G = legacy.load_network(nets['qc'], verbose=False)['G_ema']
    torch.manual_seed(0)
    initial = encoders.PSPEncoder.for_generator(G, backbone='tiny', input_size=32)
    loss = encoder_loss.ReconstructionLoss(G, torch.device('cpu'), lpips_weight=0)
    pairs = encoder_data.SyntheticPairs(G, seed=0, truncation=0.5)
    val_x, val_y, _, _ = pairs.make([-1 - i for i in range(16)], 'cpu')  # the loop's validation pairs
    before, _, _ = encoder_loop.run_validation(initial, G, loss, val_x, val_y, 'predict')
    result = run(nets['qc'], 'generator', run_dir, lpips_weight=0, lr=2e-3, total_steps=200, val_images=16,
                 truncation=0.5, tick_steps=100, val_every=1000, snap_steps=1000)
    return dnnlib_dict(result=result, before=before, G=G, pairs=pairs, run_dir=str(run_dir))

def dnnlib_dict(**kwargs):
    return dnnlib.EasyDict(kwargs)

def test_training_reduces_reconstruction_loss(trained):
    before, after = trained.before, trained.result.val
    # Stated margin: 200 steps cut the validation reconstruction error (MSE of G(w, q) to the degraded
    # image + MSE of G(w, 0) to the sharp one) by at least 30% (about 42% observed).
    assert after['val/loss'] < 0.7 * before['val/loss'], (before['val/loss'], after['val/loss'])
    assert after['val/deg_mse'] < before['val/deg_mse'] and after['val/sharp_mse'] < before['val/sharp_mse']
    lines = [json.loads(line) for line in open(os.path.join(trained.run_dir, 'stats.jsonl'))]
    assert lines[-1]['step'] == 200 and 'Loss/deg/l2' in lines[-1] and 'Loss/cross/l2' in lines[-1] and 'Loss/sharp/l2' in lines[-1]

def test_predicted_q_is_near_zero_for_sharp_images(trained):
    wrapper = encoders.load_encoder(trained.result.checkpoint, G=trained.G)
    x, y, _, _ = trained.pairs.make(range(10**6, 10**6 + 32), 'cpu')  # unseen seeds: G(w, 0) and G(w, q)
    _, q_sharp = wrapper.encode(x)
    _, q_deg = wrapper.encode(y)
    sharp, degraded = float(q_sharp.norm(dim=1).mean()), float(q_deg.norm(dim=1).mean())
    # Stated margin: |q| predicted for q = 0 images is under half of that for degraded ones (about 0.27 observed).
    assert sharp < 0.5 * degraded, (sharp, degraded)

#----------------------------------------------------------------------------
# Exact resume and the CLI.

def _cli(args):
    result = CliRunner().invoke(train_encoder.main, [str(a) for a in args])
    return result

def _run_dir(outdir):
    dirs = sorted(d for d in os.listdir(outdir) if os.path.isdir(os.path.join(outdir, d)))
    return os.path.join(outdir, dirs[-1])

def test_cli_outputs_and_exact_resume(nets, gen16, id_net, tmp_path):
    common = ['--network', nets['qc'], '--data', gen16, '--backbone', 'tiny', '--input-size', '32', '--batch', '4',
              '--device', 'cpu', '--workers', '0', '--lpips-backbone', 'random', '--id-weight', '0.1', '--id-weights', id_net,
              '--val-images', '4', '--tick', '2', '--val-every', '3', '--snap', '100', '--lr', '1e-3']
    out = _cli(['--outdir', tmp_path / 'full', '--steps', '8'] + common)
    assert out.exit_code == 0, out.output
    full = _run_dir(tmp_path / 'full')
    files = set(os.listdir(full))
    assert {'log.txt', 'options.json', 'stats.jsonl', 'val.jsonl', 'checkpoint.pt', 'best.pt',
            'panels000003.png', 'panels000006.png', 'panels000008.png'} <= files
    assert any(f.startswith('events.out.tfevents') for f in files)
    panel = np.asarray(PIL.Image.open(os.path.join(full, 'panels000008.png')))
    # rows: degraded | G(w,q) | G(w,0) | sharp (labelled on the left); 4 held-out images; 16 px cells shown at 256 px
    assert panel.shape[0] == 4 * 256 + 3 * 4 and 4 * 256 < panel.shape[1] < 4 * 256 + 300
    val = [json.loads(line) for line in open(os.path.join(full, 'val.jsonl'))]
    assert [v['step'] for v in val] == [3, 6, 8] and all(np.isfinite(v['val/sharp_psnr']) for v in val)
    import hashlib
    sha = hashlib.sha256(open(nets['qc'], 'rb').read()).hexdigest()[:16]
    assert all(v['provenance']['network']['sha256'] == sha and v['provenance']['lpips'][0]['backbone'] == 'random'
               and 'random backbone' in v['provenance']['caveats'][0] for v in val)
    assert json.load(open(os.path.join(full, 'options.json')))['provenance']['network']['path'] == os.path.abspath(nets['qc'])
    stats = [json.loads(line) for line in open(os.path.join(full, 'stats.jsonl'))]
    assert {'Loss/deg/id', 'Loss/deg/lpips', 'Loss/cross/l2', 'Loss/sharp/l2'} <= set(stats[-1])
    assert 'step 8' in open(os.path.join(full, 'log.txt')).read()

    out = _cli(['--outdir', tmp_path / 'part', '--steps', '5'] + common)
    assert out.exit_code == 0, out.output
    part = _run_dir(tmp_path / 'part')
    out = _cli(['--outdir', tmp_path / 'part', '--resume', os.path.join(part, 'checkpoint.pt'), '--steps', '8'])
    assert out.exit_code == 0, out.output
    resumed = _run_dir(tmp_path / 'part')
    assert resumed.endswith('-continued')
    a = encoders.load_encoder_checkpoint(os.path.join(full, 'checkpoint.pt'))
    b = encoders.load_encoder_checkpoint(os.path.join(resumed, 'checkpoint.pt'))
    assert a['step'] == b['step'] == 8
    for name, tensor in a['encoder'].items():
        assert torch.equal(tensor, b['encoder'][name]), name
    for idx, state in a['optimizer']['state'].items():  # Ranger moments and Lookahead slow weights
        for key, value in state.items():
            other = b['optimizer']['state'][idx][key]
            assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other

    out = _cli(['--outdir', tmp_path / 'part', '--resume', os.path.join(part, 'checkpoint.pt'), '--lr', '0.1'])
    assert out.exit_code != 0 and '--lr' in out.output and 'cannot change' in out.output
    out = _cli(['--outdir', tmp_path / 'part', '--resume', os.path.join(part, 'checkpoint.pt'), '--network', nets['qc8']])
    assert out.exit_code != 0 and 'q_dim 4' in out.output and 'q_dim 8' in out.output and 'Traceback' not in out.output
    out = _cli(['--outdir', tmp_path / 'part', '--resume', os.path.join(part, 'best.pt')])
    assert out.exit_code != 0 and 'without training state' in out.output

def test_cli_bad_input(nets, gen16, gen32, id_net, tmp_path):
    base = ['--outdir', tmp_path, '--network', nets['qc'], '--backbone', 'tiny', '--input-size', '32', '--device', 'cpu',
            '--workers', '0', '--val-images', '2', '--batch', '2', '--steps', '1', '--lpips', '0']
    out = _cli(base + ['--data', gen16, '--id-weight', '0.1'])
    assert out.exit_code != 0 and '--id-weights PATH' in out.output and 'Traceback' not in out.output
    out = _cli(base + ['--data', gen16, '--id-weight', '0.1', '--id-weights', tmp_path / 'arcface.pth'])
    assert out.exit_code != 0 and 'file not found' in out.output and 'arcface.pth' in out.output
    torch.save(TinyEmbed().state_dict(), tmp_path / 'bare.pt')
    out = _cli(base + ['--data', gen16, '--id-weight', '0.1', '--id-weights', tmp_path / 'bare.pt'])
    assert out.exit_code != 0 and 'bare state dict' in out.output
    out = _cli(base + ['--data', tmp_path / 'nothing'])
    assert out.exit_code != 0 and '--data' in out.output and 'does not exist' in out.output
    out = _cli(base + ['--data', gen16, '--input-size', '30'])
    assert out.exit_code != 0 and 'multiple of 4' in out.output
    out = _cli(base + ['--data', gen16, '--degradation', tmp_path / 'nope.json'])
    assert out.exit_code != 0 and '--degradation' in out.output and 'Traceback' not in out.output
    out = _cli(base + ['--data', gen16, '--val-images', '24'])
    assert out.exit_code != 0 and 'leaves no training images' in out.output
    # Another resolution: resized, and said so.
    out = _cli(base + ['--data', gen32])
    assert out.exit_code == 0, out.output
    assert 'are 32x32 but the generator makes 16x16' in out.output and 'resized' in out.output
    # A scripted embedding network with the documented interface is accepted.
    net = encoder_loss.load_id_network(id_net)
    assert net(torch.zeros(3, 3, 112, 112)).shape == (3, 16)

#----------------------------------------------------------------------------
# Inference API.

def test_inference_api_and_mismatch_errors(trained, nets):
    ckpt = trained.result.checkpoint
    G = trained.G
    wrapper = encoders.load_encoder(ckpt, G=G)
    assert (wrapper.w_dim, wrapper.q_dim, wrapper.num_ws, wrapper.w_space, wrapper.input_size) == (16, 4, G.num_ws, 'w', 32)
    assert wrapper.network == nets['qc'] and wrapper.step == 200
    images = torch.rand(3, 3, 40, 24) * 2 - 1  # any size: resized to the input size
    w, q = wrapper.encode(images)
    assert w.shape == (3, 16) and q.shape == (3, 4)
    assert wrapper.encode(images, broadcast=True)[0].shape == (3, G.num_ws, 16)
    w1, q1 = wrapper.encode(images[0])
    assert torch.allclose(w1, w[:1], atol=1e-5) and torch.allclose(q1, q[:1], atol=1e-5)
    u8 = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    assert torch.allclose(wrapper.encode(u8)[0], w, atol=0.05)
    inv = wrapper.invert(images)
    assert inv.degraded.shape == inv.sharp.shape == (3, 3, 16, 16)
    assert torch.allclose(inv.sharp, encoders.synthesize(G, w, None))
    with pytest.raises(encoders.EncoderError, match='without a generator'):
        encoders.load_encoder(ckpt).synthesize(w, q)
    for other in ['qc8', 'plain', 'plain32']:
        G_other = legacy.load_network(nets[other], verbose=False)['G_ema']
        with pytest.raises(encoders.EncoderMismatchError) as err:
            encoders.load_encoder(ckpt, G=G_other)
        message = str(err.value)
        assert '\n' not in message and 'q_dim 4' in message and 'train_encoder.py' in message
    with pytest.raises(encoders.EncoderError, match='not a qcgan encoder checkpoint'):
        encoders.load_encoder(nets['qc'])

def test_plain_stylegan2_w_plus(nets, gen16, tmp_path):
    result = run(nets['plain'], gen16, tmp_path / 'plain', w_space='w+', total_steps=3, val_images=4, coach='alternative',
                 lpips_weight=0.8, w_norm_weight=0.01)
    wrapper = encoders.load_encoder(result.checkpoint, G=legacy.load_network(nets['plain'], verbose=False)['G_ema'])
    w, q = wrapper.encode(torch.zeros(2, 3, 16, 16))
    assert q is None and wrapper.q_dim == 0 and w.shape == (2, wrapper.num_ws, 16)
    assert torch.equal(wrapper.latent_avg, legacy.load_network(nets['plain'], verbose=False)['G_ema'].mapping.w_avg)
    assert 'val/q_norm_deg' not in result.val and np.isfinite(result.val['val/sharp_lpips'])

#----------------------------------------------------------------------------
# The quality-code study.

def test_qcode_study_end_to_end(trained, tmp_path):
    ckpt = trained.result.checkpoint
    report_path = tmp_path / 'report.json'
    out = CliRunner().invoke(qcode_study.main, ['--encoder', ckpt, '--generate', '24', '--train', '120', '--test', '60',
                                                '--device', 'cpu', '--out', str(report_path)])
    assert out.exit_code == 0, out.output
    report = json.loads(report_path.read_text())
    assert report['task'] == 'fired' and report['group'] == 'blur' and report['num_test'] == 60
    assert 0 <= report['accuracy'] <= 1 and 0.3 < report['chance'] < 0.8
    assert sum(report['test_counts'].values()) == 60 and np.sum(report['confusion']) == 60
    assert 'accuracy' in out.output and 'chance' in out.output
    # Honest study: disjoint sharp images, and the controls next to the encoder's accuracy.
    assert report['disjoint'] and report['train_images'] + report['test_images'] == 24 and report['test_images'] == 8
    assert set(report['controls']) == {'random_encoder', 'pixels'}
    assert all(0 <= c['accuracy'] <= 1 for c in report['controls'].values()) and 'raw-pixel linear probe' in out.output
    assert qcode_study.split_images(10, 1000, 200) == (list(range(8)), [8, 9])
    levels = qcode_study.run_study(ckpt, generate=12, task='level', levels=5, num_train=60, num_test=30, verbose=False)
    assert levels['level_param'] == 'ksize' and levels['level_range'] == [5.0, 31.0] and set(levels['labels']) <= set('01234')
    member = qcode_study.run_study(ckpt, generate=12, task='member', num_train=60, num_test=30, features='wq',
                                   classifier='svm', verbose=False)
    assert set(member['labels']) <= {'GaussianBlur', 'MotionBlur', 'MedianBlur', 'Blur'}
    out = CliRunner().invoke(qcode_study.main, ['--encoder', ckpt, '--generate', '4', '--task', 'level', '--group', 'downscale_jpeg'])
    assert out.exit_code != 0 and 'use --task member' in out.output
    out = CliRunner().invoke(qcode_study.main, ['--encoder', ckpt, '--generate', '4', '--group', 'sharpen'])
    assert out.exit_code != 0 and 'not a group' in out.output

#----------------------------------------------------------------------------

@pytest.mark.slow
def test_two_process_gloo_run(nets, tmp_path):
    """--gpus 2 --device cpu: two processes, gradients averaged with gloo; rank 0 writes the files."""
    out = _cli(['--outdir', tmp_path, '--network', nets['qc'], '--data', 'generator', '--backbone', 'tiny', '--input-size', '32',
                '--batch', '4', '--gpus', '2', '--device', 'cpu', '--steps', '2', '--val-images', '2', '--lpips', '0'])
    assert out.exit_code == 0, out.output
    run_dir = _run_dir(tmp_path)
    ckpt = encoders.load_encoder_checkpoint(os.path.join(run_dir, 'checkpoint.pt'))
    assert ckpt['step'] == 2 and len(ckpt['rng']) == 2
    assert 'step 2' in open(os.path.join(run_dir, 'log.txt')).read()

#----------------------------------------------------------------------------
