"""Metrics: FID/KID/PR/IS/PPL math and pipeline, detector loading, stats cache, calc_metrics.py,
restoration metrics (PSNR, SSIM, LPIPS, NIQE, patch FID). Everything runs on CPU with small
detector networks built here, so nothing is downloaded."""

import glob
import io
import json
import os
import pickle
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import dnnlib
import legacy
from metrics import frechet_inception_distance as fid_module
from metrics import inception_score
from metrics import kernel_inception_distance
from metrics import metric_main
from metrics import metric_utils
from metrics import perceptual_path_length
from metrics import precision_recall
from metrics import restoration
from training import networks

pytestmark = [pytest.mark.usefixtures('single_thread'),
              pytest.mark.filterwarnings('ignore:`torch.jit.*` is deprecated:FutureWarning')]

#----------------------------------------------------------------------------
# Test detectors: same call signature as the NVlabs inception / vgg16 TorchScript networks.

class TinyDetector(torch.nn.Module):
    """uint8 NCHW -> 16-d features (return_features), softmax over 10 classes (default /
    no_output_bias) or LPIPS-like unit-normalised local features (return_lpips)."""

    def __init__(self, seed=0, constant_softmax=False, feature_dim=16):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer('proj', torch.randn([3 * 4 * 4, feature_dim], generator=g) / 4)
        self.register_buffer('cls', torch.randn([feature_dim, 10], generator=g))
        self.register_buffer('bias', torch.randn([10], generator=g))
        self.register_buffer('conv', torch.randn([8, 3, 3, 3], generator=g))
        self.constant_softmax = constant_softmax

    def forward(self, x, return_features: bool = False, no_output_bias: bool = False, return_lpips: bool = False,
                resize_images: bool = True):
        x = x.to(torch.float32)
        if return_lpips:
            h = torch.nn.functional.conv2d(x / 127.5 - 1, self.conv, padding=1).relu()
            h = h / (h.square().sum(1, keepdim=True).sqrt() + 1e-8)
            return h.flatten(1) / float(h.shape[2] * h.shape[3]) ** 0.5
        f = torch.nn.functional.adaptive_avg_pool2d(x / 255, [4, 4]).flatten(1) @ self.proj
        if return_features:
            return f
        logits = f @ self.cls
        if not no_output_bias:
            logits = logits + self.bias
        if self.constant_softmax:
            logits = torch.zeros_like(logits)
        return torch.softmax(logits, dim=1)


def save_scripted(module, path):
    torch.jit.save(torch.jit.script(module), str(path))
    return str(path)


def file_url(path):
    return 'file://' + os.path.abspath(str(path))


@pytest.fixture(scope='module')
def detector_pt(tmp_path_factory):
    return save_scripted(TinyDetector(), tmp_path_factory.mktemp('det') / 'tiny-inception.pt')


def make_dataset_zip(path, num=24, size=16, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, 'w') as zf:
        for i in range(num):
            base = rng.integers(0, 256, size=3 if channels == 3 else 1)
            noise = rng.integers(-40, 40, size=(size, size, channels))
            array = np.clip(base[None, None, :] + noise, 0, 255).astype(np.uint8)
            image = PIL.Image.fromarray(array if channels == 3 else array[:, :, 0], 'RGB' if channels == 3 else 'L')
            buffer = io.BytesIO()
            image.save(buffer, format='PNG')
            zf.writestr(f'{i // 1000:05d}/img{i:08d}.png', buffer.getvalue())
    return str(path)


def tiny_G(res=16, seed=0, c_dim=0):
    torch.manual_seed(seed)
    return networks.Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=res, img_channels=3,
                              mapping_kwargs=dict(num_layers=2),
                              synthesis_kwargs=dict(channel_base=128, channel_max=16, num_fp16_res=0)).eval().requires_grad_(False)


def dataset_kwargs(path):
    return dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=path, use_labels=False, xflip=False)


CPU = torch.device('cpu')

#----------------------------------------------------------------------------
# FID math.

def test_fid_of_a_set_against_itself_is_zero():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=[3000, 8]) @ rng.normal(size=[8, 8]) + rng.normal(size=8)
    stats = metric_utils.FeatureStats(capture_mean_cov=True, max_items=10**6)
    for chunk in np.array_split(feats, 7):
        stats.append(chunk)
    mu, cov = stats.get_mean_cov()
    fid = fid_module.frechet_distance(mu, cov, mu, cov)
    assert abs(fid) <= 1e-6 * np.trace(cov)
    # Different sets are not at distance 0.
    mu2, cov2 = mu + 0.5, cov * 1.5
    assert fid_module.frechet_distance(mu, cov, mu2, cov2) > 0.1


def test_fid_matches_closed_form():
    rng = np.random.default_rng(1)
    # Diagonal covariances: Tr(S1 + S2 - 2 sqrt(S1 S2)) = sum (a + b - 2 sqrt(a b)), by hand.
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    a, b = rng.uniform(0.1, 3, size=6), rng.uniform(0.1, 3, size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    assert fid_module.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)
    # General SPD covariances: independent evaluation through S1^1/2 S2 S1^1/2 (symmetric eigenproblem).
    A, B = rng.normal(size=[6, 6]), rng.normal(size=[6, 6])
    S1, S2 = A @ A.T + 0.1 * np.eye(6), B @ B.T + 0.1 * np.eye(6)
    w, V = np.linalg.eigh(S1)
    root1 = V @ np.diag(np.sqrt(w)) @ V.T
    tr_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ S2 @ root1), 0, None)))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(S1) + np.trace(S2) - 2 * tr_sqrt
    assert fid_module.frechet_distance(mu1, S1, mu2, S2) == pytest.approx(expected, rel=1e-7)


def test_feature_stats_biased_cov_max_items_and_save(tmp_path):
    rng = np.random.default_rng(2)
    feats = rng.normal(size=[50, 5]).astype(np.float32)
    stats = metric_utils.FeatureStats(capture_all=True, capture_mean_cov=True, max_items=40)
    for chunk in np.array_split(feats, 6):
        stats.append(chunk)
    assert stats.is_full() and stats.num_items == 40
    np.testing.assert_array_equal(stats.get_all(), feats[:40])
    mu, cov = stats.get_mean_cov()
    np.testing.assert_allclose(mu, feats[:40].astype(np.float64).mean(0), rtol=1e-10)
    np.testing.assert_allclose(cov, np.cov(feats[:40].astype(np.float64), rowvar=False, bias=True), rtol=1e-8, atol=1e-12)
    stats.save(str(tmp_path / 's.pkl'))
    loaded = metric_utils.FeatureStats.load(str(tmp_path / 's.pkl'))
    np.testing.assert_array_equal(loaded.get_all(), feats[:40])
    np.testing.assert_allclose(loaded.get_mean_cov()[1], cov)

#----------------------------------------------------------------------------
# KID, PR, IS math.

def _direct_unbiased_mmd2(x, y):
    d = x.shape[1]
    k = lambda u, v: (float(np.dot(u, v)) / d + 1) ** 3  # noqa: E731
    m = x.shape[0]
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return sxx + syy - 2 * sxy


def test_kid_matches_direct_unbiased_mmd():
    rng = np.random.default_rng(3)
    x = rng.normal(size=[30, 4])
    y = rng.normal(loc=0.3, size=[30, 4])
    # m = n: every subset is a permutation of the whole set, so KID is exactly the unbiased MMD^2.
    kid = kernel_inception_distance.kid_from_features(x, y, num_subsets=3, max_subset_size=1000)
    assert kid == pytest.approx(_direct_unbiased_mmd2(x, y), rel=1e-10)
    assert kernel_inception_distance.kid_from_features(x, x, num_subsets=2) == pytest.approx(_direct_unbiased_mmd2(x, x), abs=1e-12)
    with pytest.raises(ValueError, match='at least 2'):
        kernel_inception_distance.kid_from_features(x[:1], y)


def test_precision_recall_identical_disjoint_and_partial():
    g = torch.Generator().manual_seed(0)
    real = torch.randn([60, 8], generator=g)
    assert precision_recall.precision_recall_from_features(real, real.clone()) == (1.0, 1.0)
    far = torch.randn([60, 8], generator=g) + 100
    assert precision_recall.precision_recall_from_features(real, far) == (0.0, 0.0)
    # Half of the generated samples are real samples, half are far away: precision is exactly 1/2.
    gen = torch.cat([real[:30], far[:30]])
    precision, recall = precision_recall.precision_recall_from_features(real, gen)
    assert precision == 0.5 and 0.5 <= recall < 1.0
    # Small row/column blocks give the same answer.
    assert precision_recall.precision_recall_from_features(real, gen, row_batch_size=7, col_batch_size=11) == (precision, recall)
    with pytest.raises(ValueError, match='at least 4 real'):
        precision_recall.precision_recall_from_features(real[:3], gen)
    # k-NN radii by hand (1-D, k = 3, self excluded): points 0, 1, 2, 3 have radii 3, 2, 2, 3.
    real_1d = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    gen_1d = torch.tensor([[6.0], [6.5], [3.5], [-3.0], [-3.01]])  # inside, outside, inside, inside, outside
    assert precision_recall.precision_recall_from_features(real_1d, gen_1d)[0] == pytest.approx(0.6)


def test_inception_score_math():
    probs = np.full([100, 10], 0.1)
    assert inception_score.inception_score_from_probs(probs) == pytest.approx((1.0, 0.0))
    onehot = np.eye(10)[np.arange(100) % 10]  # each split holds every class once
    mean, std = inception_score.inception_score_from_probs(onehot, num_splits=10)
    assert mean == pytest.approx(10.0) and std == pytest.approx(0.0, abs=1e-9)


def test_ppl_percentile_trimming():
    dist = np.concatenate([np.arange(100, dtype=np.float64), [1e9]])
    assert perceptual_path_length.ppl_from_distances(dist) == pytest.approx(50.0)  # keeps 1..99
    # 50 values: P1 ('lower') is the minimum and P99 ('higher') the maximum, so nothing is dropped.
    dist = np.concatenate([np.arange(49, dtype=np.float64), [1000.0]])
    assert perceptual_path_length.ppl_from_distances(dist) == pytest.approx((np.arange(49).sum() + 1000) / 50)

#----------------------------------------------------------------------------
# Detectors.

class ScriptedDetectorPickle:
    """Pickles as `torch.jit.load(BytesIO(<TorchScript archive>))`: a pickle of a TorchScript module."""
    def __init__(self, archive):
        self.archive = archive
    def __reduce__(self):
        return (torch.jit.load, (io.BytesIO(self.archive),))


def test_detector_loading_forms_and_cache(tmp_path, detector_pt, monkeypatch):
    monkeypatch.delenv('QCGAN_TRUST_PICKLE', raising=False)
    x = torch.randint(0, 256, [2, 3, 16, 16], dtype=torch.uint8)
    reference = TinyDetector()(x, return_features=True)
    by_path = metric_utils.get_feature_detector(detector_pt, device=CPU)
    by_url = metric_utils.get_feature_detector(file_url(detector_pt), device=CPU)
    torch.testing.assert_close(by_path(x, return_features=True), reference)
    torch.testing.assert_close(by_url(x, return_features=True), reference)
    assert metric_utils.get_feature_detector(detector_pt, device=CPU) is by_path  # cached per (url, device)
    # Pickle of a TorchScript module (as the stylegan3 .pkl detectors).
    pkl = tmp_path / 'det.pkl'
    with open(detector_pt, 'rb') as f:
        pkl.write_bytes(pickle.dumps(ScriptedDetectorPickle(f.read())))
    torch.testing.assert_close(metric_utils.get_feature_detector(str(pkl), device=CPU)(x, return_features=True), reference)
    # A pickle of an arbitrary Python class needs the opt-in.
    custom = tmp_path / 'custom.pkl'
    custom.write_bytes(pickle.dumps(TinyDetector()))
    with pytest.raises(metric_utils.DetectorError, match='--trust-pickle'):
        metric_utils.get_feature_detector(str(custom), device=CPU)
    with monkeypatch.context() as m:
        m.setenv('QCGAN_TRUST_PICKLE', '1')
        torch.testing.assert_close(metric_utils.get_feature_detector(str(custom), device=CPU)(x, return_features=True), reference)
    # Bad files.
    (tmp_path / 'junk.pt').write_bytes(b'not a network')
    with pytest.raises(metric_utils.DetectorError, match='neither a TorchScript'):
        metric_utils.get_feature_detector(str(tmp_path / 'junk.pt'))
    with pytest.raises(metric_utils.DetectorError, match='not found'):
        metric_utils.get_feature_detector(str(tmp_path / 'missing.pt'))


def test_detector_overrides_and_env_vars(monkeypatch, detector_pt):
    opts = metric_utils.MetricOptions(detector_overrides={'vgg': '/x/vgg16.pt'})
    assert opts.resolve_detector(metric_utils.VGG16_URL) == '/x/vgg16.pt'
    assert opts.resolve_detector(metric_utils.INCEPTION_URL) == metric_utils.INCEPTION_URL
    monkeypatch.setenv('QCGAN_DETECTOR_INCEPTION', detector_pt)
    assert metric_utils.MetricOptions().resolve_detector(metric_utils.INCEPTION_URL) == detector_pt
    explicit = metric_utils.MetricOptions(detector_overrides={'inception': '/y.pt'})
    assert explicit.resolve_detector(metric_utils.INCEPTION_URL) == '/y.pt'  # explicit beats the environment
    with pytest.raises(ValueError, match='unknown detector'):
        metric_utils.MetricOptions(detector_overrides={'resnet': '/z.pt'})


def test_offline_detector_error_names_url_and_cache_path(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_OFFLINE', '1')
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path))
    with pytest.raises(dnnlib.DownloadError) as info:
        metric_utils.get_feature_detector(metric_utils.INCEPTION_URL)
    message = str(info.value)
    assert '\n' not in message
    assert metric_utils.INCEPTION_URL in message
    assert str(tmp_path / 'downloads') in message and info.value.cache_path.startswith(str(tmp_path))
    assert '--detector-inception' in message
    with pytest.raises(dnnlib.DownloadError, match='--detector-vgg'):
        metric_utils.get_feature_detector(metric_utils.VGG16_URL)

#----------------------------------------------------------------------------
# Pipeline: calc_metric on a tiny dataset and generator.

def test_quantisation_and_gray_inputs():
    img = torch.tensor([-1.0, -0.999, 0.0, 1.0, 2.0]).reshape(1, 1, 1, 5)
    assert metric_utils.to_uint8_images(img).flatten().tolist() == [0, 0, 128, 255, 255]
    gray = torch.zeros([2, 1, 4, 4], dtype=torch.uint8)
    assert metric_utils.to_detector_input(gray).shape == (2, 3, 4, 4)


def test_calc_metric_fid_pipeline_and_stats_cache(tmp_path, monkeypatch, detector_pt):
    data = make_dataset_zip(tmp_path / 'tiny16.zip', num=24, size=16)
    G = tiny_G(16)
    kwargs = dict(G=G, dataset_kwargs=dataset_kwargs(data), device=CPU, detector_overrides={'inception': file_url(detector_pt)})
    result = metric_main.calc_metric('fid100_full', **kwargs)
    assert set(result) == {'results', 'metric', 'total_time', 'total_time_str', 'num_gpus', 'provenance'}
    [det] = result.provenance['detectors']  # the detector file actually used, hashed and marked as a stand-in
    assert det['name'] == 'inception' and det['path'] == os.path.abspath(detector_pt) and len(det['sha256']) == 16
    assert not det['official'] and 'not the official download' in result.provenance['caveats'][0]
    assert result.metric == 'fid100_full' and result.num_gpus == 1
    fid = result.results.fid100_full
    assert np.isfinite(fid) and fid > 0

    cache_files = glob.glob(os.path.join(os.environ['DNNLIB_CACHE_DIR'], 'gan-metrics', 'tiny16-tiny-inception-*.pkl'))
    assert len(cache_files) == 1
    cached = metric_utils.FeatureStats.load(cache_files[0])
    # The cached statistics are those of the detector on the dataset images (uint8 NCHW, all 24 of them).
    with zipfile.ZipFile(data) as zf:
        images = np.stack([np.asarray(PIL.Image.open(zf.open(n))) for n in sorted(zf.namelist())]).transpose(0, 3, 1, 2)
    feats = TinyDetector()(torch.from_numpy(images), return_features=True).double().numpy()
    assert cached.num_items == 24
    np.testing.assert_allclose(cached.get_mean_cov()[0], feats.mean(0), rtol=1e-5)
    np.testing.assert_allclose(cached.get_mean_cov()[1], np.cov(feats, rowvar=False, bias=True), rtol=1e-4, atol=1e-7)
    # The real set against itself.
    mu, cov = cached.get_mean_cov()
    assert abs(fid_module.frechet_distance(mu, cov, mu, cov)) <= 1e-6 * np.trace(cov)

    # Second call: a cache hit, the dataset is not read again; same seed, same FID.
    def fail(*args, **kwargs):
        raise AssertionError('dataset features recomputed despite the cache')
    monkeypatch.setattr(metric_utils, '_dataset_feature_batches', fail)
    torch.manual_seed(0)
    again = metric_main.calc_metric('fid100_full', **kwargs)
    torch.manual_seed(0)
    again2 = metric_main.calc_metric('fid100_full', **kwargs)
    assert again.results.fid100_full == again2.results.fid100_full
    # Without the cache the extraction runs (and fails here).
    with pytest.raises(AssertionError, match='recomputed'):
        metric_main.calc_metric('fid100_full', cache=False, **kwargs)

    # The cache key covers the dataset options and the detector.
    stats_kwargs = dict(capture_mean_cov=True, max_items=None)
    flipped = metric_utils.MetricOptions(**dict(kwargs, dataset_kwargs=dict(dataset_kwargs(data), xflip=True)))
    monkeypatch.undo()
    assert metric_utils.compute_feature_stats_for_dataset(flipped, metric_utils.INCEPTION_URL, dict(return_features=True),
                                                          **stats_kwargs).num_items == 48
    other = save_scripted(TinyDetector(seed=1), tmp_path / 'other-inception.pt')
    opts2 = metric_utils.MetricOptions(**dict(kwargs, detector_overrides={'inception': other}))
    metric_utils.compute_feature_stats_for_dataset(opts2, metric_utils.INCEPTION_URL, dict(return_features=True), **stats_kwargs)
    assert len(glob.glob(os.path.join(os.environ['DNNLIB_CACHE_DIR'], 'gan-metrics', 'tiny16-*.pkl'))) == 3

    # JSONL report.
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    line = metric_main.report_metric(result, run_dir=str(run_dir), snapshot_pkl=str(run_dir / 'network-snapshot-000000.pkl'))
    record = json.loads((run_dir / 'metric-fid100_full.jsonl').read_text().strip())
    assert json.loads(line) == record
    assert record['snapshot_pkl'] == 'network-snapshot-000000.pkl'
    assert set(record) == {'results', 'metric', 'total_time', 'total_time_str', 'num_gpus', 'snapshot_pkl', 'timestamp', 'provenance'}
    assert record['provenance']['network']['spec'].endswith('network-snapshot-000000.pkl')
    assert record['provenance']['detectors'][0]['sha256'] == result.provenance['detectors'][0]['sha256']
    assert record['provenance']['caveats']  # the stand-in detector is marked in the printed line too


def test_kid_pr_is_through_the_pipeline(tmp_path, detector_pt):
    data = make_dataset_zip(tmp_path / 'kp16.zip', num=20, size=16, seed=1)
    G = tiny_G(16, seed=1)
    opts = metric_utils.MetricOptions(G=G, dataset_kwargs=dataset_kwargs(data), device=CPU,
                                      detector_overrides={'inception': detector_pt, 'vgg16': detector_pt})
    kid = kernel_inception_distance.compute_kid(opts, max_real=1000, num_gen=40, num_subsets=10, max_subset_size=1000)
    assert np.isfinite(kid)
    precision, recall = precision_recall.compute_pr(opts, max_real=1000, num_gen=40, nhood_size=3, row_batch_size=16,
                                                    col_batch_size=16)
    assert 0 <= precision <= 1 and 0 <= recall <= 1
    # The constant-softmax detector gives IS = 1 (through the generator pipeline).
    const = save_scripted(TinyDetector(constant_softmax=True), tmp_path / 'const.pt')
    opts = metric_utils.MetricOptions(G=G, device=CPU, detector_overrides={'inception': const})
    mean, std = inception_score.compute_is(opts, num_gen=20, num_splits=10)
    assert mean == pytest.approx(1.0, abs=1e-6) and std == pytest.approx(0.0, abs=1e-6)
    opts = metric_utils.MetricOptions(G=G, device=CPU, detector_overrides={'inception': detector_pt})
    assert inception_score.compute_is(opts, num_gen=20, num_splits=2)[0] > 1.0


def test_ppl_end_to_end_on_tiny_generator(tmp_path):
    G = tiny_G(16, seed=2)
    noise_before = {n: b.clone() for n, b in G.named_buffers() if n.endswith('noise_const')}
    vgg = save_scripted(TinyDetector(), tmp_path / 'tiny-vgg16.pt')
    opts = metric_utils.MetricOptions(G=G, device=CPU, detector_overrides={'vgg16': vgg})
    torch.manual_seed(5)
    ppl_w = perceptual_path_length.compute_ppl(opts, num_samples=8, epsilon=1e-4, space='w', sampling='end', crop=False, batch_size=4)
    torch.manual_seed(5)
    ppl_w_again = perceptual_path_length.compute_ppl(opts, num_samples=8, epsilon=1e-4, space='w', sampling='end', crop=False, batch_size=4)
    ppl_z = perceptual_path_length.compute_ppl(opts, num_samples=6, epsilon=1e-4, space='z', sampling='full', crop=True, batch_size=4)
    assert np.isfinite(ppl_w) and ppl_w > 0 and ppl_w == ppl_w_again
    assert np.isfinite(ppl_z) and ppl_z > 0
    for name, value in G.named_buffers():  # the metric works on its own copy
        if name in noise_before:
            assert torch.equal(value, noise_before[name])


def test_random_labels_come_from_the_dataset(tmp_path):
    data = make_dataset_zip(tmp_path / 'lab.zip', num=6, size=16)
    with zipfile.ZipFile(data, 'a') as zf:
        names = sorted(zf.namelist())
        zf.writestr('dataset.json', json.dumps({'labels': [[n, i % 3] for i, n in enumerate(names)]}))
    G = tiny_G(16, c_dim=3)
    opts = metric_utils.MetricOptions(G=G, dataset_kwargs=dict(dataset_kwargs(data), use_labels=True), device=CPU)
    c = metric_utils.random_labels(opts, G, 12)
    assert c.shape == (12, 3) and torch.all(c.sum(1) == 1) and set(c.argmax(1).tolist()) <= {0, 1, 2}
    opts = metric_utils.MetricOptions(G=G, dataset_kwargs=dataset_kwargs(data), device=CPU)  # no labels requested
    with pytest.raises(metric_utils.MetricDataError, match='conditional with 3 classes'):
        metric_utils.random_labels(opts, G, 2)


class _QCStub(torch.nn.Module):
    """Minimal quality-conditioned generator; every copy logs the q it receives in `_QCStub.log`."""
    log = []

    def __init__(self):
        super().__init__()
        self.z_dim, self.c_dim, self.q_dim, self.img_resolution, self.img_channels = 4, 0, 3, 8, 3

    def forward(self, z, c, q, noise_mode='random', **kwargs):
        assert noise_mode == 'random' and not kwargs
        _QCStub.log.append(q.clone())
        return torch.tanh(z[:, :1, None, None] + q.sum(1)[:, None, None, None]).repeat(1, 3, 8, 8)


def test_q_mode_plumbing(detector_pt):
    G = _QCStub()
    sharp = metric_utils.make_G_kwargs(metric_utils.MetricOptions(device=CPU), G, 5, CPU)
    assert torch.equal(sharp['q'], torch.zeros([5, 3]))  # default for QC networks: sharp
    degraded = metric_utils.make_G_kwargs(metric_utils.MetricOptions(q_mode='degraded', device=CPU), G, 5, CPU)
    assert degraded['q'].shape == (5, 3) and degraded['q'].abs().sum() > 0
    fixed = metric_utils.make_G_kwargs(metric_utils.MetricOptions(G_kwargs=dict(q=[1.0, 2.0, 3.0]), device=CPU), G, 2, CPU)
    assert fixed['q'].tolist() == [[1.0, 2.0, 3.0]] * 2
    assert 'q' not in metric_utils.make_G_kwargs(metric_utils.MetricOptions(q_mode='sharp', device=CPU), tiny_G(8), 2, CPU)
    with pytest.raises(ValueError, match='q_dim'):
        metric_utils.make_G_kwargs(metric_utils.MetricOptions(q_mode='degraded', device=CPU), tiny_G(8), 2, CPU)
    with pytest.raises(ValueError, match='q_mode'):
        metric_utils.MetricOptions(q_mode='blurry')
    # The generator loop passes q for every chunk of batch_gen images.
    for mode in ['sharp', 'degraded']:
        _QCStub.log.clear()
        opts = metric_utils.MetricOptions(G=G, q_mode=mode, device=CPU, detector_overrides={'inception': detector_pt})
        stats = metric_utils.compute_feature_stats_for_generator(opts, metric_utils.INCEPTION_URL, dict(return_features=True),
                                                                 batch_size=8, capture_all=True, max_items=8)
        assert stats.num_items == 8 and len(_QCStub.log) == 2
        assert all(q.shape == (4, 3) for q in _QCStub.log)
        assert all((q.abs().sum() == 0) == (mode == 'sharp') for q in _QCStub.log)

#----------------------------------------------------------------------------
# Bad input.

def test_dataset_size_and_resolution_errors(tmp_path, detector_pt):
    overrides = {'inception': detector_pt, 'vgg16': detector_pt}
    data16 = make_dataset_zip(tmp_path / 'd16.zip', num=8, size=16)
    with pytest.raises(metric_utils.MetricDataError) as info:
        metric_main.calc_metric('fid100_full', G=tiny_G(32), dataset_kwargs=dataset_kwargs(data16), device=CPU,
                                detector_overrides=overrides)
    message = str(info.value)
    assert '16x16' in message and '32x32' in message and 'dataset_tool.py' in message and '--resolution 32' in message
    assert '\n' not in message
    # Too few reals for precision/recall (k = 3 needs 4) and for FID (2).
    data3 = make_dataset_zip(tmp_path / 'd3.zip', num=3, size=16)
    with pytest.raises(metric_utils.MetricDataError, match=r'needs at least 4 real images .* provides 3'):
        metric_main.calc_metric('pr1k3_full', G=tiny_G(16), dataset_kwargs=dataset_kwargs(data3), device=CPU,
                                detector_overrides=overrides)
    data1 = make_dataset_zip(tmp_path / 'd1.zip', num=1, size=16)
    with pytest.raises(metric_utils.MetricDataError, match='needs at least 2'):
        metric_main.calc_metric('fid100_full', G=tiny_G(16), dataset_kwargs=dataset_kwargs(data1), device=CPU,
                                detector_overrides=overrides)
    with pytest.raises(metric_main.UnknownMetricError, match='fid50k_full'):
        metric_main.calc_metric('fid7', G=tiny_G(16))


def test_registry():
    for name in ['fid50k_full', 'kid50k_full', 'pr50k3_full', 'ppl2_wend', 'is50k', 'fid50k', 'kid50k', 'pr50k3',
                 'ppl_zfull', 'ppl_wfull', 'ppl_zend', 'ppl_wend', 'fid10k_full', 'kid10k_full', 'fid100_full']:
        assert metric_main.is_valid_metric(name) and name in metric_main.list_valid_metrics()
    assert not metric_main.is_valid_metric('fid3k')

    @metric_main.register_metric
    def constant_metric(opts):
        return dict(constant_metric=np.float32(1.5))
    try:
        result = metric_main.calc_metric('constant_metric', device=CPU)
        assert result.results.constant_metric == 1.5 and isinstance(result.results.constant_metric, float)
    finally:
        metric_main.unregister_metric('constant_metric')
    assert not metric_main.is_valid_metric('constant_metric')

#----------------------------------------------------------------------------
# calc_metrics.py

@pytest.fixture(scope='module')
def snapshot32(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp('run')
    pkl = str(run_dir / 'network-snapshot-000000.pkl')
    legacy.save_network_pkl(legacy.init_network('tiny32'), pkl)
    (run_dir / 'training_options.json').write_text('{}')
    data = make_dataset_zip(run_dir.parent / 'data32.zip', num=12, size=32)
    return pkl, data


def test_calc_metrics_cli_writes_jsonl(snapshot32, detector_pt):
    import calc_metrics
    pkl, data = snapshot32
    res = CliRunner().invoke(calc_metrics.calc_metrics, ['--network', pkl, '--data', data, '--metrics', 'fid100_full',
                                                         '--detector-inception', file_url(detector_pt), '--device', 'cpu',
                                                         '--verbose', 'false'])
    assert res.exit_code == 0, res.output
    jsonl = os.path.join(os.path.dirname(pkl), 'metric-fid100_full.jsonl')
    record = json.loads(open(jsonl).read().strip().splitlines()[-1])
    assert record['metric'] == 'fid100_full' and np.isfinite(record['results']['fid100_full'])
    assert record['snapshot_pkl'] == 'network-snapshot-000000.pkl'
    assert json.loads(res.output.strip().splitlines()[-1])['results'] == record['results']


@pytest.mark.parametrize('extra, message', [
    (['--metrics', 'fid7'], 'unknown metric'),
    (['--metrics', 'fid100_full', '--detector-inception', '/nonexistent/inception.pt'], '--detector-inception: file not found'),
    (['--metrics', 'fid100_full', '--data', 'RES16'], '16x16 images but the network generates 32x32'),
    (['--metrics', 'fid100_full', '--data', 'NODATA'], 'does not exist'),
])
def test_calc_metrics_cli_errors(snapshot32, detector_pt, tmp_path, extra, message):
    import calc_metrics
    pkl, data = snapshot32
    if 'RES16' in extra:
        extra[extra.index('RES16')] = make_dataset_zip(tmp_path / 'r16.zip', num=4, size=16)
    if 'NODATA' in extra:
        extra[extra.index('NODATA')] = str(tmp_path / 'missing.zip')
    args = ['--network', pkl, '--device', 'cpu', '--verbose', 'false', '--data', data]
    if '--detector-inception' not in extra:
        args += ['--detector-inception', detector_pt]
    res = CliRunner().invoke(calc_metrics.calc_metrics, args + extra)
    assert res.exit_code != 0
    assert message in res.output, res.output
    assert 'Traceback' not in res.output and not isinstance(res.exception, (AssertionError, TypeError, AttributeError))


def test_calc_metrics_cli_offline_detector(snapshot32, tmp_path, monkeypatch):
    import calc_metrics
    pkl, data = snapshot32
    monkeypatch.setenv('DNNLIB_OFFLINE', '1')
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path))
    res = CliRunner().invoke(calc_metrics.calc_metrics, ['--network', pkl, '--data', data, '--metrics', 'fid100_full',
                                                         '--device', 'cpu', '--verbose', 'false'])
    assert res.exit_code == 1
    error = [line for line in res.output.splitlines() if line.startswith('Error:')]
    assert len(error) == 1 and metric_utils.INCEPTION_URL in error[0] and str(tmp_path) in error[0]
    assert '--detector-inception' in error[0]


@pytest.mark.slow
def test_calc_metrics_two_processes_match_one(snapshot32, detector_pt, tmp_path, monkeypatch):
    """--gpus 2 on CPU (gloo): sharded dataset features gathered back equal the one-process ones."""
    import calc_metrics
    pkl, data = snapshot32
    cache = tmp_path / 'cache'
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(cache))
    res = CliRunner().invoke(calc_metrics.calc_metrics, ['--network', pkl, '--data', data, '--metrics', 'kid100_full',
                                                         '--detector-inception', detector_pt, '--device', 'cpu',
                                                         '--gpus', '2', '--verbose', 'false'])
    assert res.exit_code == 0, res.output
    (cache_file,) = glob.glob(str(cache / 'gan-metrics' / '*.pkl'))
    two = metric_utils.FeatureStats.load(cache_file).get_all()
    G = legacy.load_network(pkl)['G_ema']
    opts = metric_utils.MetricOptions(G=G, dataset_kwargs=dict(dataset_kwargs(data), resolution=32, use_labels=False,
                                                               max_size=None), device=CPU, cache=False,
                                      detector_overrides={'inception': detector_pt})
    one = metric_utils.compute_feature_stats_for_dataset(opts, metric_utils.INCEPTION_URL, dict(return_features=True),
                                                         capture_all=True, max_items=1000000).get_all()
    np.testing.assert_allclose(two, one, rtol=1e-6)
    records = open(os.path.join(os.path.dirname(pkl), 'metric-kid100_full.jsonl')).read().strip().splitlines()
    assert json.loads(records[-1])['num_gpus'] == 2

#----------------------------------------------------------------------------
# Restoration metrics.

def test_psnr_hand_computed():
    rng = np.random.default_rng(4)
    a = rng.uniform(0.2, 0.8, size=[16, 16, 3])
    assert restoration.psnr(a, a + 0.1, data_range=1.0) == pytest.approx(20.0)  # MSE 0.01
    assert restoration.psnr(a * 255, a * 255 + 5.1, data_range=255) == pytest.approx(20 * np.log10(255 / 5.1))
    batch = torch.from_numpy(np.stack([a, a]).transpose(0, 3, 1, 2))
    values = restoration.psnr(batch, batch + torch.tensor([0.1, 0.01]).reshape(2, 1, 1, 1), data_range=1.0)
    np.testing.assert_allclose(values, [20.0, 40.0])
    assert restoration.psnr(a, a, data_range=1.0) == float('inf')


def test_ssim_matches_skimage():
    import skimage.data
    from skimage.metrics import structural_similarity
    img = skimage.data.astronaut()[100:164, 200:280].astype(np.float64) / 255
    rng = np.random.default_rng(5)
    noisy = np.clip(img + rng.normal(scale=0.1, size=img.shape), 0, 1)
    kwargs = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
    expected = structural_similarity(img, noisy, channel_axis=-1, **kwargs)
    assert restoration.ssim(img, noisy, data_range=1.0) == pytest.approx(expected, rel=1e-9)
    gray, gray_noisy = img.mean(2), noisy.mean(2)
    assert restoration.ssim(gray, gray_noisy, data_range=1.0) == pytest.approx(structural_similarity(gray, gray_noisy, **kwargs), rel=1e-9)
    # Batch of torch NCHW tensors in [-1, 1] (data_range 2); identical images give 1.
    batch = torch.from_numpy(np.stack([img, noisy]).transpose(0, 3, 1, 2)) * 2 - 1
    values = restoration.ssim(batch, torch.stack([batch[0], batch[0]]), data_range=2.0)
    expected_pm1 = structural_similarity(noisy * 2 - 1, img * 2 - 1, channel_axis=-1, **dict(kwargs, data_range=2.0))
    assert values[0] == pytest.approx(1.0) and values[1] == pytest.approx(expected_pm1, rel=1e-9)
    # Differentiable.
    x = batch[1:].clone().float().requires_grad_(True)
    restoration.ssim_torch(x, batch[:1].float(), data_range=2.0).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize('net', ['alex', 'vgg'])
def test_lpips_random_backbone(net):
    torch.manual_seed(0)
    lpips = restoration.LPIPS(net=net, pnet_rand=True)
    a = torch.rand([2, 3, 32, 32]) * 2 - 1
    b = (a + 0.3 * torch.randn_like(a)).clamp(-1, 1)
    assert torch.all(lpips(a, a) == 0)
    d = lpips(a, b)
    assert d.shape == (2,) and torch.all(d > 0)
    x = b.clone().requires_grad_(True)
    lpips(a, x).sum().backward()
    assert x.grad.abs().sum() > 0


def test_lpips_backbone_weights_offline_and_local(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.setenv('DNNLIB_OFFLINE', '1')
    expected = str(tmp_path / 'torch' / 'hub' / 'checkpoints' / 'alexnet-owt-7be5be79.pth')
    assert restoration.lpips_backbone_path('alex') == expected
    with pytest.raises(restoration.LPIPSWeightsError) as info:
        restoration.LPIPS(net='alex')
    message = str(info.value)
    assert expected in message and restoration.LPIPS_BACKBONE_URLS['alex'] in message and '\n' not in message
    # A torchvision-style state dict in the hub cache is used (weights equal to the source network).
    torch.manual_seed(1)
    source = restoration.LPIPS(net='alex', pnet_rand=True)
    state = {f'features.{name.split(".")[1]}.{name.split(".")[2]}': p for name, p in source.model.net.named_parameters()}
    os.makedirs(os.path.dirname(expected))
    torch.save(state, expected)
    torch.manual_seed(2)
    loaded = restoration.LPIPS(net='alex')
    a, b = torch.rand([1, 3, 32, 32]) * 2 - 1, torch.rand([1, 3, 32, 32]) * 2 - 1
    torch.testing.assert_close(loaded(a, b), source(a, b))
    torch.testing.assert_close(restoration.LPIPS(net='alex', backbone_path=expected)(a, b), source(a, b))
    with pytest.raises(FileNotFoundError, match='not found'):
        restoration.LPIPS(net='alex', backbone_path=str(tmp_path / 'nope.pth'))


def test_matlab_imresize_half():
    ramp = np.tile(np.arange(40, dtype=np.float64), (40, 1))
    out = restoration.imresize_matlab(ramp, 0.5)
    assert out.shape == (20, 20)
    # Bicubic weights reproduce linear functions: output j (1-based) samples input position 2j - 0.5.
    j = np.arange(1, 21)
    np.testing.assert_allclose(out[5, 3:17], (2 * j - 0.5 - 1)[3:17], atol=1e-9)
    np.testing.assert_allclose(restoration.imresize_matlab(np.full([30, 30], 7.0), 0.5), 7.0)


def test_aggd_fit_on_known_distributions():
    rng = np.random.default_rng(8)
    gauss = rng.normal(scale=1.0, size=[1, 200000])        # GGD with alpha 2, beta = sigma * sqrt(2)
    laplace = rng.laplace(scale=0.5, size=[1, 200000])     # GGD with alpha 1, beta = the Laplace scale
    # Asymmetric Gaussian (alpha 2) with beta_l = 0.5, beta_r = 2: each side is a half-normal with scale
    # beta / sqrt(2), and the left side holds beta_l / (beta_l + beta_r) of the mass.
    half = np.abs(rng.normal(size=[1, 200000])) / np.sqrt(2)
    skewed = np.where(rng.random(size=half.shape) < 0.5 / 2.5, -0.5 * half, 2.0 * half)
    alpha, bl, br = restoration._aggd_fit(np.concatenate([gauss, laplace, skewed]))
    np.testing.assert_allclose(alpha, [2.0, 1.0, 2.0], atol=0.03)
    np.testing.assert_allclose(bl, [np.sqrt(2), 0.5, 0.5], rtol=0.02)
    np.testing.assert_allclose(br, [np.sqrt(2), 0.5, 2.0], rtol=0.02)


@pytest.fixture(scope='module')
def niqe_model():
    import skimage.data
    # Natural images shipped with scikit-image (the standard model uses 125 pristine photos).
    pristine = [getattr(skimage.data, name)() for name in ['coffee', 'chelsea', 'rocket', 'camera', 'immunohistochemistry',
                                                           'hubble_deep_field', 'retina']]
    return restoration.fit_niqe_model(pristine)


def test_niqe_prefers_pristine_images(niqe_model, tmp_path, monkeypatch):
    import scipy.ndimage
    import skimage.data
    assert niqe_model['mu'].shape == (36,) and niqe_model['cov'].shape == (36, 36)
    test = skimage.data.astronaut().astype(np.float64)  # not among the pristine images
    blurred = scipy.ndimage.gaussian_filter(test, sigma=(3, 3, 0))
    noisy = np.clip(test + np.random.default_rng(6).normal(scale=30, size=test.shape), 0, 255)
    q_test, q_blur, q_noise = (restoration.niqe(x, model=niqe_model) for x in (test, blurred, noisy))
    assert q_test < 0.9 * q_blur and q_test < 0.6 * q_noise
    assert restoration.niqe(test + 0.3, model=niqe_model) == q_test  # evaluated on 8-bit gray levels
    # Batches of torch tensors in [-1, 1].
    batch = torch.from_numpy(np.stack([test, blurred]).transpose(0, 3, 1, 2)) / 127.5 - 1
    np.testing.assert_allclose(restoration.niqe(batch, model=niqe_model, drange=(-1, 1)), [q_test, q_blur], rtol=1e-6)
    # Model files: .npz, MATLAB .mat, env var, default cache location.
    npz = tmp_path / 'model.npz'
    restoration.save_niqe_model(niqe_model, npz)
    assert restoration.niqe(test, model=str(npz)) == pytest.approx(q_test)
    mat = tmp_path / 'modelparameters.mat'
    scipy.io.savemat(str(mat), dict(mu_prisparam=niqe_model['mu'][None], cov_prisparam=niqe_model['cov']))
    assert restoration.niqe(test, model=file_url(mat)) == pytest.approx(q_test)
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    with pytest.raises(restoration.NIQEModelError) as info:
        restoration.niqe(test)
    message = str(info.value)
    assert restoration.niqe_model_cache_path() in message and 'modelparameters.mat' in message and 'niqe_release.zip' in message
    assert restoration.NIQE_MODEL_ENV in message and '\n' not in message
    monkeypatch.setenv(restoration.NIQE_MODEL_ENV, str(mat))
    assert restoration.niqe(test) == pytest.approx(q_test)
    with pytest.raises(ValueError, match='at least 96x96'):
        restoration.niqe(test[:64, :64], model=niqe_model)


def test_patch_fid(tmp_path, detector_pt):
    rng = np.random.default_rng(7)
    images = torch.from_numpy(rng.integers(0, 256, size=[4, 3, 40, 40], dtype=np.uint8))
    noisy = (images.float() + torch.randn(images.shape) * 60).clamp(0, 255).to(torch.uint8)
    kwargs = dict(patch_size=16, patches_per_image=50, detector=detector_pt, batch_size=32)
    mu, sigma = restoration.patch_feature_stats(images, seed=3, **kwargs)
    assert restoration.patch_fid(images, (mu, sigma), seed=3, **kwargs) == pytest.approx(0, abs=1e-6 * np.trace(sigma))
    restoration.save_patch_stats(tmp_path / 'ref.npz', mu, sigma)
    assert restoration.patch_fid(images, str(tmp_path / 'ref.npz'), seed=3, **kwargs) == pytest.approx(0, abs=1e-6 * np.trace(sigma))
    same = restoration.patch_fid(images, images, **kwargs)  # different random crops of the same images
    different = restoration.patch_fid(noisy, images, **kwargs)
    assert 0 < same < different
    # drange and list inputs: [-1, 1] float images give the same statistics.
    as_float = [img.double() / 127.5 - 1 for img in images]
    mu2, _ = restoration.patch_feature_stats(as_float, seed=3, drange=(-1, 1), **kwargs)
    np.testing.assert_allclose(mu2, mu, rtol=1e-6)
    with pytest.raises(ValueError, match='only 40x40'):
        restoration.patch_fid(images, images, patch_size=64, patches_per_image=2, detector=detector_pt)
