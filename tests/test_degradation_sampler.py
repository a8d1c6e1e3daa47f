"""Tests for training/degradation_sampler.py (the "real degraded" image sampler) and its use in the dataset."""

import io
import json
import math
import os
import pickle
import random

import cv2
import numpy as np
import PIL.Image
import pytest
import torch

from training import degradation_sampler
from training.dataset import ImageFolderDataset
from training.degradation_sampler import (DegradationPresetError, DegradationSampler, MEMBER_TYPES, available_presets,
                                   build_sampler, jpeg_compress, load_preset, seed_worker)

#----------------------------------------------------------------------------
# helpers

def _noise_image(size=16, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(size, size, channels), dtype=np.uint8)

def _colour_image(size=64):
    y, x = np.mgrid[0:size, 0:size]
    img = np.stack([x * 4, y * 4, 255 - (x + y) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    img[16:32, 16:32] = [255, 0, 0]
    img[40:56, 8:24] = [0, 0, 255]
    img[8:20, 40:60] = [0, 255, 0]
    return img

def _single(member, p=1.0, order='rgb'):
    """A preset with one group holding one member, applied with probability p."""
    return {'name': 'single', 'jpeg_channel_order': order, 'groups': {'g': [member]},
            'bases': [{'name': 'only', 'chain': [{'group': 'g', 'p': p}]}]}

def _within(count, n, p, sigmas=5.0):
    """Binomial tolerance: |count/n - p| <= sigmas * sqrt(p(1-p)/n) (exact when p is 0 or 1)."""
    tol = sigmas * math.sqrt(p * (1 - p) / n)
    return abs(count / n - p) <= tol + 1e-12

def _write_preset(tmp_path, data, name='bad.json'):
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(path)

_RELEASED = load_preset('qc_stylegan_train')

@pytest.fixture(scope='module')
def released_draws():
    """3000 draws of the released training sampler on a 16x16 noise image."""
    sampler = DegradationSampler('qc_stylegan_train', seed=1234)
    image = _noise_image(16)
    draws = []
    for _ in range(3000):
        degraded, info = sampler(image)
        draws.append((degraded, info))
    return image, draws

#----------------------------------------------------------------------------
# presets

def test_shipped_presets_match_the_release():
    assert {'qc_stylegan_train', 'qc_psp_encoder'} <= set(available_presets())
    p = _RELEASED
    assert p['source'].endswith(os.path.join('degradation_presets', 'qc_stylegan_train.json'))
    assert [b['name'] for b in p['bases']] == ['blur', 'noise', 'compression']
    assert all(b['weight'] == 1 for b in p['bases'])
    expected_p = {'blur': [1.0, 0.5, 0.5], 'noise': [0.5, 1.0, 0.5], 'compression': [0.5, 0.5, 1.0]}
    for base in p['bases']:
        assert [link['group'] for link in base['chain']] == ['blur', 'noise', 'downscale_jpeg']
        assert [link['p'] for link in base['chain']] == expected_p[base['name']]
    members = {g: [(m['type'], {k: v for k, v in m.items() if k not in ('type', 'weight')}) for m in ms]
               for g, ms in p['groups'].items()}
    assert members['blur'] == [('GaussianBlur', {'blur_limit': [3, 31], 'sigma_limit': [0.0, 0.0]}),
                               ('MotionBlur', {'blur_limit': [3, 31]}),
                               ('MedianBlur', {'blur_limit': [3, 31]}),
                               ('Blur', {'blur_limit': [3, 25]})]
    assert members['noise'] == [('GaussNoise', {'var_limit': [10.0, 650.0], 'mean': 0.0, 'per_channel': True})]
    assert members['downscale_jpeg'] == [('Downscale', {'scale_min': 0.1, 'scale_max': 0.9, 'interpolation': 'nearest'}),
                                         ('ImageCompression', {'quality_lower': 30, 'quality_upper': 50})]

    psp = load_preset('qc_psp_encoder')
    assert len(psp['bases']) == 1 and [link['p'] for link in psp['bases'][0]['chain']] == [0.8, 0.8, 0.8]
    p_none = np.prod([1 - link['p'] for link in psp['bases'][0]['chain']])
    assert abs(p_none - 0.008) < 1e-12
    assert [m['blur_limit'] for m in psp['groups']['blur']] == [[5, 31], [5, 31], [5, 31], [5, 25]]
    assert psp['groups']['noise'][0]['var_limit'] == [200.0, 650.0]
    assert psp['groups']['downscale_jpeg'][0]['scale_min'] == 0.2

def test_preset_by_path_and_dict(tmp_path):
    data = json.load(open(degradation_sampler.resolve_preset('qc_stylegan_train')))
    path = _write_preset(tmp_path, data, 'copy.json')
    a = DegradationSampler(path, seed=3)
    b = DegradationSampler(data, seed=3)
    assert a.source == path and b.source == '<dict>'
    image = _noise_image(16)
    for _ in range(5):
        da, ia = a(image)
        db, ib = b(image)
        np.testing.assert_array_equal(da, db)
        assert ia == ib
    # A preset seed is the default seed.
    seeded = dict(data, seed=11)
    np.testing.assert_array_equal(DegradationSampler(seeded)(image)[0], DegradationSampler(data, seed=11)(image)[0])

#----------------------------------------------------------------------------
# frequencies of the released sampler

def test_base_group_member_frequencies(released_draws):
    image, draws = released_draws
    n = len(draws)
    bases = [info['base'] for _, info in draws]
    for name in ('blur', 'noise', 'compression'):
        assert _within(bases.count(name), n, 1 / 3), (name, bases.count(name))

    chain_p = {b['name']: {link['group']: link['p'] for link in b['chain']} for b in _RELEASED['bases']}
    member_counts = {g: {} for g in _RELEASED['groups']}
    for base in chain_p:
        infos = [info for _, info in draws if info['base'] == base]
        for group, p in chain_p[base].items():
            fired = sum(1 for info in infos for e in info['groups'] if e['group'] == group and e['fired'])
            assert _within(fired, len(infos), p), (base, group, fired, len(infos), p)
        for info in infos:
            assert [e['group'] for e in info['groups']] == ['blur', 'noise', 'downscale_jpeg']  # order
            for e in info['groups']:
                if e['fired']:
                    member_counts[e['group']][e['member']] = member_counts[e['group']].get(e['member'], 0) + 1
                else:
                    assert e['member'] is None and e['params'] is None

    for group, counts in member_counts.items():
        types = [m['type'] for m in _RELEASED['groups'][group]]
        assert sorted(counts) == sorted(types)
        total = sum(counts.values())
        for t in types:
            assert _within(counts[t], total, 1 / len(types)), (group, counts)

def test_every_sample_is_degraded_within_released_ranges(released_draws):
    image, draws = released_draws
    for degraded, info in draws:
        assert degraded.shape == image.shape and degraded.dtype == np.uint8
        assert not np.array_equal(degraded, image), info
        assert any(e['fired'] for e in info['groups'])
        for e in info['groups']:
            if not e['fired']:
                continue
            prm = e['params']
            if e['member'] in ('GaussianBlur', 'MotionBlur', 'MedianBlur'):
                assert prm['ksize'] % 2 == 1 and 3 <= prm['ksize'] <= 31
            elif e['member'] == 'Blur':
                assert prm['ksize'] % 2 == 1 and 3 <= prm['ksize'] <= 25
            elif e['member'] == 'GaussNoise':
                assert 10 <= prm['var'] <= 650 and abs(prm['sigma'] - math.sqrt(prm['var'])) < 1e-12
            elif e['member'] == 'Downscale':
                assert 0.1 <= prm['scale'] <= 0.9
            else:
                assert e['member'] == 'ImageCompression' and 30 <= prm['quality'] <= 50
                assert prm['channel_order'] == 'rgb'  # the presets fix the released RGB-as-BGR call

def test_psp_preset_frequencies():
    sampler = DegradationSampler('qc_psp_encoder', seed=7)
    image = _noise_image(8)
    n = 1500
    fired = np.zeros(3, dtype=int)
    for _ in range(n):
        _, info = sampler(image)
        fired += [e['fired'] for e in info['groups']]
    for count in fired:
        assert _within(count, n, 0.8)

def test_kernel_size_distributions():
    """GaussianBlur's 1.0.3 odd rule gives the lower limit half the weight; the others are uniform odd."""
    rng = np.random.default_rng(0)
    n = 29000
    gauss = MEMBER_TYPES['GaussianBlur'](load_preset(_single({'type': 'GaussianBlur', 'blur_limit': [3, 31]}))['groups']['g'][0])
    sizes = np.array([gauss.sample(rng, None)['ksize'] for _ in range(n)])
    values, counts = np.unique(sizes, return_counts=True)
    assert list(values) == list(range(3, 32, 2))
    expected = {k: (1 if k == 3 else 2) / 29 for k in values}
    for k, c in zip(values, counts):
        assert _within(c, n, expected[k]), (k, c)
    info = gauss.sample(rng, None)
    k = info['ksize']
    assert info['sigma'] == 0 and abs(info['sigma_effective'] - (0.3 * ((k - 1) * 0.5 - 1) + 0.8)) < 1e-12

    box = MEMBER_TYPES['Blur'](load_preset(_single({'type': 'Blur', 'blur_limit': [3, 25]}))['groups']['g'][0])
    sizes = np.array([box.sample(rng, None)['ksize'] for _ in range(12000)])
    values, counts = np.unique(sizes, return_counts=True)
    assert list(values) == list(range(3, 26, 2))
    for c in counts:
        assert _within(c, 12000, 1 / 12)

#----------------------------------------------------------------------------
# each member against the released operation

@pytest.mark.parametrize('channels', [3, 1])
def test_members_match_released_operations(channels):
    image = _noise_image(24, channels=channels, seed=5)
    plain = image[:, :, 0] if channels == 1 else image
    members = [
        {'type': 'GaussianBlur', 'blur_limit': [3, 31]},
        {'type': 'MotionBlur', 'blur_limit': [3, 31]},
        {'type': 'MedianBlur', 'blur_limit': [3, 31]},
        {'type': 'Blur', 'blur_limit': [3, 25]},
        {'type': 'Downscale', 'scale_min': 0.1, 'scale_max': 0.9},
        {'type': 'ImageCompression', 'quality_lower': 30, 'quality_upper': 50},
    ]
    for member in members:
        sampler = DegradationSampler(_single(member), seed=2)
        for _ in range(4):
            out, info = sampler(image)
            assert out.shape == image.shape and out.dtype == np.uint8
            prm = info['groups'][0]['params']
            t = member['type']
            if t == 'GaussianBlur':
                ref = cv2.GaussianBlur(plain, (prm['ksize'],) * 2, 0)
            elif t == 'MotionBlur':
                k = prm['ksize']
                kernel = np.zeros((k, k), np.uint8)
                cv2.line(kernel, tuple(prm['start']), tuple(prm['end']), 1, thickness=1)
                assert kernel.sum() >= 2  # a line, never a single dot
                ref = cv2.filter2D(plain, -1, kernel.astype(np.float32) / kernel.sum())
            elif t == 'MedianBlur':
                ref = cv2.medianBlur(plain, prm['ksize'])
            elif t == 'Blur':
                ref = cv2.blur(plain, (prm['ksize'],) * 2)
            elif t == 'Downscale':
                small = cv2.resize(plain, None, fx=prm['scale'], fy=prm['scale'], interpolation=cv2.INTER_NEAREST)
                ref = cv2.resize(small, (24, 24), interpolation=cv2.INTER_NEAREST)
            else:
                bgr = plain if channels == 1 else plain[:, :, ::-1]
                ok, data = cv2.imencode('.jpg', bgr, (cv2.IMWRITE_JPEG_QUALITY, prm['quality']))
                ref = cv2.imdecode(data, cv2.IMREAD_UNCHANGED if channels == 3 else cv2.IMREAD_GRAYSCALE)
                ref = ref if channels == 1 else ref[:, :, ::-1]
            ref = ref.reshape(image.shape)
            np.testing.assert_array_equal(out, ref, err_msg=f'{t} {prm}')
        # HW input stays HW.
        assert sampler(plain if channels == 1 else image[:, :, 0])[0].ndim == 2

def test_gauss_noise_semantics():
    image = np.full((128, 128, 3), 128, dtype=np.uint8)
    sampler = DegradationSampler(_single({'type': 'GaussNoise', 'var_limit': [400, 400]}), seed=0)
    out, info = sampler(image)
    assert info['groups'][0]['params']['sigma'] == 20.0
    noise = out.astype(np.float64) - 128
    assert abs(noise.std() - 20) < 0.5
    assert abs(noise.mean() + 0.5) < 0.3  # float add, clip, truncating cast (mean shift -0.5)
    assert not np.array_equal(out[:, :, 0], out[:, :, 1])  # per channel
    shared = DegradationSampler(_single({'type': 'GaussNoise', 'var_limit': [400, 400], 'per_channel': False}), seed=0)
    out, _ = shared(image)
    assert np.array_equal(out[:, :, 0], out[:, :, 1]) and np.array_equal(out[:, :, 1], out[:, :, 2])
    clip = DegradationSampler(_single({'type': 'GaussNoise', 'var_limit': [650, 650]}), seed=0)
    assert clip(np.full((32, 32, 1), 250, np.uint8))[0].max() == 255

#----------------------------------------------------------------------------
# JPEG channel order

def test_jpeg_channel_order():
    img = _colour_image(64)
    ycc = lambda a: np.asarray(PIL.Image.fromarray(a).convert('YCbCr')).astype(np.float64)
    for quality in (30, 50):
        rgb = jpeg_compress(img, quality, 'rgb')
        swap = jpeg_compress(img, quality, 'bgr_swap')
        assert rgb.shape == swap.shape == img.shape
        assert np.abs(rgb.astype(int) - swap).mean() > 1.0
        buf = io.BytesIO()
        PIL.Image.fromarray(img).save(buf, 'JPEG', quality=quality)
        pil = np.asarray(PIL.Image.open(buf).convert('RGB'))
        chroma_rgb = np.abs(ycc(rgb) - ycc(pil))[..., 1:].mean()
        chroma_swap = np.abs(ycc(swap) - ycc(pil))[..., 1:].mean()
        assert chroma_rgb < 0.5, chroma_rgb
        assert chroma_swap > 1.5 and chroma_swap > 4 * chroma_rgb, (chroma_rgb, chroma_swap)
    # Gray images: channel order does not matter.
    gray = img[:, :, :1]
    np.testing.assert_array_equal(jpeg_compress(gray, 40, 'rgb'), jpeg_compress(gray, 40, 'bgr_swap'))
    with pytest.raises(ValueError, match='channel_order'):
        jpeg_compress(img, 40, 'bgr')

def test_sampler_uses_preset_channel_order():
    img = _colour_image(32)
    member = {'type': 'ImageCompression', 'quality_lower': 30, 'quality_upper': 50}
    for order in ('rgb', 'bgr_swap'):
        out, info = DegradationSampler(_single(member, order=order), seed=4)(img)
        prm = info['groups'][0]['params']
        assert prm['channel_order'] == order
        np.testing.assert_array_equal(out, jpeg_compress(img, prm['quality'], order))
    assert load_preset(_single(member))['jpeg_channel_order'] == 'rgb'  # default

#----------------------------------------------------------------------------
# reproducibility and seeding

def test_same_seed_same_stream_and_global_state_is_irrelevant():
    image = _noise_image(16)
    random.seed(1); np.random.seed(1); cv2.setRNGSeed(1)
    a = DegradationSampler('qc_stylegan_train', seed=42)
    out_a = [a(image) for _ in range(30)]
    random.seed(99); np.random.seed(99); cv2.setRNGSeed(99)
    b = DegradationSampler('qc_stylegan_train', seed=42)
    state = (random.getstate(), np.random.get_state()[1].copy())
    out_b = [b(image) for _ in range(30)]
    assert random.getstate() == state[0] and np.array_equal(np.random.get_state()[1], state[1])  # untouched
    for (da, ia), (db, ib) in zip(out_a, out_b):
        np.testing.assert_array_equal(da, db)
        assert ia == ib
    c = DegradationSampler('qc_stylegan_train', seed=43)
    out_c = [c(image) for _ in range(30)]
    assert sum(not np.array_equal(x[0], y[0]) for x, y in zip(out_a, out_c)) >= 25

    b.reseed(42)  # restarts the stream
    np.testing.assert_array_equal(b(image)[0], out_a[0][0])

def test_explicit_rng_and_pickling():
    image = _noise_image(16)
    s = DegradationSampler('qc_stylegan_train', seed=5)
    ref = DegradationSampler('qc_stylegan_train', seed=5)
    x1, i1 = s(image, rng=np.random.default_rng(77))
    x2, i2 = s(image, rng=77)
    np.testing.assert_array_equal(x1, x2)
    assert i1 == i2
    np.testing.assert_array_equal(s(image)[0], ref(image)[0])  # explicit rngs leave the own stream alone
    s(image, rng=np.random.RandomState(3))

    clone = pickle.loads(pickle.dumps(s))
    assert clone._ops is None
    for _ in range(5):
        np.testing.assert_array_equal(clone(image)[0], s(image)[0])

def test_bad_images():
    s = DegradationSampler('qc_stylegan_train')
    for bad in (np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 4), np.uint8), [[1, 2]]):
        with pytest.raises(ValueError, match='uint8 HWC'):
            s(bad)
    with pytest.raises(ValueError, match='seed'):
        s.reseed(-1)

def _make_folder(root, num=8, size=16, channels=3, identical=False):
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    images = []
    base = rng.integers(0, 256, size=(size, size, channels), dtype=np.uint8)
    for i in range(num):
        img = base if identical else rng.integers(0, 256, size=(size, size, channels), dtype=np.uint8)
        PIL.Image.fromarray(img[:, :, 0] if channels == 1 else img).save(os.path.join(root, f'img{i:02d}.png'))
        images.append(img)
    return images

def _loader_run(dataset, torch_seed, **kwargs):
    torch.manual_seed(torch_seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2, shuffle=False, **kwargs)
    return [d[0].numpy() for _, d, _ in loader]

def test_dataloader_workers_get_distinct_reproducible_streams(tmp_path):
    _make_folder(str(tmp_path / 'same'), num=8, identical=True)
    ds = ImageFolderDataset(str(tmp_path / 'same'), degradation='qc_stylegan_train')
    run1 = _loader_run(ds, 123)
    # Indices alternate between the two workers; identical sources would give identical
    # degraded images in every pair if the workers shared a stream (the released bug).
    pairs_equal = [np.array_equal(run1[i], run1[i + 1]) for i in range(0, 8, 2)]
    assert not any(pairs_equal)
    run2 = _loader_run(ds, 123)
    for a, b in zip(run1, run2):
        np.testing.assert_array_equal(a, b)
    run3 = _loader_run(ds, 124)
    assert sum(not np.array_equal(a, b) for a, b in zip(run1, run3)) >= 6
    # seed_worker as worker_init_fn picks the same per-worker streams.
    run4 = _loader_run(ds, 123, worker_init_fn=seed_worker)
    for a, b in zip(run1, run4):
        np.testing.assert_array_equal(a, b)
    # The main process keeps the sampler's own stream.
    assert ds._degradation._stream_key is None

#----------------------------------------------------------------------------
# bad presets

def _expect_error(tmp_path, data, *fragments):
    path = _write_preset(tmp_path, data)
    with pytest.raises(DegradationPresetError) as err:
        DegradationSampler(path)
    message = str(err.value)
    assert isinstance(err.value, ValueError)
    assert '\n' not in message
    assert path in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message

def test_unknown_keys_and_names(tmp_path):
    good = json.load(open(degradation_sampler.resolve_preset('qc_stylegan_train')))
    _expect_error(tmp_path, dict(good, colour_order='rgb'), '"colour_order"', 'allowed keys: name, description, jpeg_channel_order, seed, groups, bases')
    bad = json.loads(json.dumps(good)); bad['bases'][0]['prob'] = 1
    _expect_error(tmp_path, bad, 'bases[0].prob', 'allowed keys: name, description, weight, chain')
    bad = json.loads(json.dumps(good)); bad['bases'][1]['chain'][0]['prob'] = 0.5
    _expect_error(tmp_path, bad, 'bases[1].chain[0].prob', 'allowed keys: group, p')
    bad = json.loads(json.dumps(good)); bad['groups']['blur'][0]['sigma'] = 1
    _expect_error(tmp_path, bad, 'groups.blur[0].sigma', 'unknown key "sigma"', 'allowed keys: type, weight, blur_limit, sigma_limit')
    bad = json.loads(json.dumps(good)); bad['groups']['noise'][0] = {'type': 'GaussNoise', 'std_range': [0.1, 0.2]}
    _expect_error(tmp_path, bad, 'groups.noise[0].std_range', 'var_limit')
    bad = json.loads(json.dumps(good)); bad['groups']['blur'][1]['type'] = 'ZoomBlur'
    _expect_error(tmp_path, bad, 'groups.blur[1].type', '"ZoomBlur"', 'allowed types: GaussianBlur, MotionBlur, MedianBlur, Blur, GaussNoise, Downscale, ImageCompression')
    bad = json.loads(json.dumps(good)); bad['bases'][2]['chain'][2]['group'] = 'jpeg'
    _expect_error(tmp_path, bad, 'bases[2].chain[2].group', '"jpeg"', 'defined groups: blur, noise, downscale_jpeg')
    bad = json.loads(json.dumps(good)); del bad['groups']['downscale_jpeg'][1]['quality_upper']
    _expect_error(tmp_path, bad, 'groups.downscale_jpeg[1]', 'quality_upper')
    _expect_error(tmp_path, dict(good, jpeg_channel_order='bgr'), 'jpeg_channel_order', 'rgb, bgr_swap')
    _expect_error(tmp_path, {'groups': good['groups']}, 'missing key "bases"')
    _expect_error(tmp_path, '{"groups": ', 'cannot be read', 'JSONDecodeError')

@pytest.mark.parametrize('group, index, key, value, fragment', [
    ('blur', 0, 'blur_limit', [31, 3], 'low <= high'),
    ('blur', 2, 'blur_limit', [4, 31], 'odd'),
    ('blur', 3, 'blur_limit', [1, 25], '>= 3'),
    ('blur', 1, 'blur_limit', 31, '[low, high]'),
    ('noise', 0, 'var_limit', [-1, 650], '>= 0'),
    ('noise', 0, 'var_limit', ['a', 650], 'number'),
    ('noise', 0, 'per_channel', 1, 'true or false'),
    ('downscale_jpeg', 0, 'scale_max', 1.0, '< 1'),
    ('downscale_jpeg', 0, 'scale_min', 0.95, '<= scale_max'),
    ('downscale_jpeg', 0, 'interpolation', 'bilinear', 'nearest'),
    ('downscale_jpeg', 1, 'quality_lower', 0, '>= 1'),
    ('downscale_jpeg', 1, 'quality_upper', 50.5, 'integer'),
    ('downscale_jpeg', 1, 'weight', 0, '> 0'),
])
def test_bad_member_values(tmp_path, group, index, key, value, fragment):
    data = json.load(open(degradation_sampler.resolve_preset('qc_stylegan_train')))
    data['groups'][group][index][key] = value
    _expect_error(tmp_path, data, f'groups.{group}[{index}].{key}' if key != 'scale_min' else f'groups.{group}[{index}].scale_min', fragment)

def test_bad_probabilities_and_names(tmp_path):
    data = json.load(open(degradation_sampler.resolve_preset('qc_stylegan_train')))
    data['bases'][0]['chain'][1]['p'] = 1.5
    _expect_error(tmp_path, data, 'bases[0].chain[1].p', '<= 1')
    data = json.load(open(degradation_sampler.resolve_preset('qc_stylegan_train')))
    data['bases'][1]['weight'] = -1
    _expect_error(tmp_path, data, 'bases[1].weight', '> 0')
    with pytest.raises(DegradationPresetError, match='qc_stylegan_train'):
        DegradationSampler('no_such_preset')  # the message lists the shipped presets
    with pytest.raises(DegradationPresetError, match='<dict>'):
        DegradationSampler(_single({'type': 'Blur', 'blur_limit': [3, 26]}))
    with pytest.raises(DegradationPresetError, match='DegradationSampler'):
        build_sampler(3)

#----------------------------------------------------------------------------
# dataset integration

@pytest.mark.parametrize('channels', [3, 1])
def test_dataset_yields_sharp_degraded_label(tmp_path, channels):
    root = str(tmp_path / 'data')
    images = _make_folder(root, num=4, size=16, channels=channels)
    plain = ImageFolderDataset(root)
    ds = ImageFolderDataset(root, degradation='qc_stylegan_train')
    assert isinstance(ds._degradation, DegradationSampler) and ds._degradation.seed == 0  # random_seed
    for i in range(len(ds)):
        item = ds[i]
        assert len(item) == 3
        sharp, degraded, label = item
        assert sharp.shape == degraded.shape == (channels, 16, 16)
        assert sharp.dtype == degraded.dtype == np.uint8
        assert label.dtype == np.float32 and label.shape == (0,)
        np.testing.assert_array_equal(sharp, plain[i][0])
        np.testing.assert_array_equal(sharp, images[i].transpose(2, 0, 1))
        assert not np.array_equal(sharp, degraded)
    # The sampler pickles with the dataset and continues the same stream.
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[0][1], ds[0][1])

def test_dataset_xflip_flips_both(tmp_path):
    root = str(tmp_path / 'data')
    _make_folder(root, num=3, size=16)
    n = 3
    for i in range(n):
        a = ImageFolderDataset(root, xflip=True, degradation='qc_stylegan_train')
        b = ImageFolderDataset(root, xflip=True, degradation='qc_stylegan_train')
        sharp, degraded, _ = a[i]             # first draw of a fresh stream, unflipped
        sharp_f, degraded_f, _ = b[n + i]     # first draw of an identical stream, mirrored copy
        np.testing.assert_array_equal(sharp_f, sharp[:, :, ::-1])
        np.testing.assert_array_equal(degraded_f, degraded[:, :, ::-1])

def test_dataset_degradation_forms(tmp_path):
    root = str(tmp_path / 'data')
    _make_folder(root, num=2, size=16)
    data = json.load(open(degradation_sampler.resolve_preset('qc_psp_encoder')))
    sampler = DegradationSampler('qc_psp_encoder', seed=9)
    by_dict = ImageFolderDataset(root, degradation=dict(data, seed=9))
    by_path = ImageFolderDataset(root, degradation=degradation_sampler.resolve_preset('qc_psp_encoder'), random_seed=9)
    by_obj = ImageFolderDataset(root, degradation=sampler)
    assert by_obj._degradation is sampler
    x, y, z = by_dict[1][1], by_path[1][1], by_obj[1][1]
    np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(x, z)
    with pytest.raises(DegradationPresetError):
        ImageFolderDataset(root, degradation='nope')

#----------------------------------------------------------------------------
