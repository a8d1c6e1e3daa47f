"""Tests for training/dataset.py (ImageFolderDataset) and dataset_tool.py (on tiny data in tmp_path)."""

import contextlib
import json
import os
import pickle
import warnings
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import dnnlib
import dataset_tool
from training.dataset import DatasetError, DatasetWarning, ImageFolderDataset

#----------------------------------------------------------------------------
# helpers

def _random_image(rng, size, channels):
    w, h = (size, size) if isinstance(size, int) else size
    shape = (h, w) if channels == 1 else (h, w, channels)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)

def make_folder(root, num=6, size=8, channels=3, ext='.png', labels=None, subdirs=False, seed=0):
    """Write `num` random images; returns {relative name: HWC uint8 array}."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    arrays = {}
    for idx in range(num):
        name = f'{"ab"[idx % 2]}/img{idx:02d}{ext}' if subdirs else f'img{idx:02d}{ext}'
        array = _random_image(rng, size, channels)
        os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
        mode = {1: 'L', 3: 'RGB', 4: 'RGBA'}[channels]
        PIL.Image.fromarray(array, mode).save(os.path.join(root, name))
        arrays[name] = array if array.ndim == 3 else array[:, :, None]
    if labels is not None:
        names = sorted(arrays)
        with open(os.path.join(root, 'dataset.json'), 'w') as f:
            json.dump({'labels': None if labels == 'null' else [[n, labels(i)] for i, n in enumerate(names)]}, f)
    return arrays

def zip_folder(folder, zip_path):
    with zipfile.ZipFile(zip_path, 'w') as zf:
        for root, _, files in os.walk(folder):
            for name in files:
                path = os.path.join(root, name)
                zf.write(path, os.path.relpath(path, folder).replace(os.sep, '/'))
    return str(zip_path)

@contextlib.contextmanager
def no_warnings():
    """Turn any DatasetWarning into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter('error', DatasetWarning)
        yield

#----------------------------------------------------------------------------
# basic contract

def test_folder_png_shapes_and_pixels(tmp_path):
    arrays = make_folder(tmp_path / 'mydata', num=5, size=8, subdirs=True)
    ds = ImageFolderDataset(str(tmp_path / 'mydata'))
    assert len(ds) == 5 and ds.name == 'mydata'
    assert ds.image_shape == [3, 8, 8] and ds.num_channels == 3 and ds.resolution == 8
    assert ds.label_shape == [0] and ds.label_dim == 0 and not ds.has_labels
    names = sorted(arrays)  # sorted by relative path
    for idx in range(len(ds)):
        image, label = ds[idx]
        assert image.dtype == np.uint8 and image.shape == (3, 8, 8)
        assert label.dtype == np.float32 and label.shape == (0,)
        np.testing.assert_array_equal(image, arrays[names[idx]].transpose(2, 0, 1))
    image, _ = ds[0]
    image[:] = 0  # a copy: the next read is unaffected
    assert ds[0][0].any()

def test_zip_gray_jpeg(tmp_path):
    make_folder(tmp_path / 'src', num=4, size=16, channels=1, ext='.jpg')
    path = zip_folder(tmp_path / 'src', tmp_path / 'gray.zip')
    ds = ImageFolderDataset(path)
    assert ds.name == 'gray' and len(ds) == 4
    image, _ = ds[3]
    assert image.shape == (1, 16, 16) and image.dtype == np.uint8
    ds.close()

def test_mixed_extensions_and_non_images_ignored(tmp_path):
    make_folder(tmp_path / 'd', num=2, size=8, ext='.png')
    make_folder(tmp_path / 'd', num=2, size=8, ext='.bmp', seed=1)
    (tmp_path / 'd' / 'notes.txt').write_text('hello')
    (tmp_path / 'd' / '._img00.png').write_bytes(b'\x00\x05\x16\x07 mac resource fork')
    with no_warnings():
        ds = ImageFolderDataset(str(tmp_path / 'd'))
    assert len(ds) == 4

def test_xflip(tmp_path):
    make_folder(tmp_path / 'd', num=3)
    ds = ImageFolderDataset(str(tmp_path / 'd'), xflip=True)
    assert len(ds) == 6
    for idx in range(3):
        np.testing.assert_array_equal(ds[idx + 3][0], ds[idx][0][:, :, ::-1])
        assert ds.get_details(idx + 3).xflip and not ds.get_details(idx).xflip
        assert ds.get_details(idx + 3).raw_idx == idx

def test_max_size_subset_is_deterministic(tmp_path):
    make_folder(tmp_path / 'd', num=10, size=4)
    path = str(tmp_path / 'd')
    a = ImageFolderDataset(path, max_size=4, random_seed=1)
    b = ImageFolderDataset(path, max_size=4, random_seed=1)
    raw = [a.get_details(i).raw_idx for i in range(len(a))]
    assert len(a) == 4 and raw == sorted(raw)
    assert raw == [b.get_details(i).raw_idx for i in range(len(b))]
    expected = np.arange(10)
    np.random.RandomState(1).shuffle(expected)
    assert raw == sorted(expected[:4].tolist())
    assert len(ImageFolderDataset(path, max_size=100)) == 10
    assert len(ImageFolderDataset(path, max_size=4, xflip=True)) == 8
    with pytest.raises(ValueError, match='max_size'):
        ImageFolderDataset(path, max_size=0)

def test_onehot_labels(tmp_path):
    make_folder(tmp_path / 'd', num=6, labels=lambda i: i % 3)
    ds = ImageFolderDataset(str(tmp_path / 'd'), use_labels=True)
    assert ds.has_labels and ds.has_onehot_labels and ds.label_shape == [3] and ds.label_dim == 3
    for idx in range(6):
        label = ds[idx][1]
        assert label.dtype == np.float32
        np.testing.assert_array_equal(label, np.eye(3, dtype=np.float32)[idx % 3])
    assert ds.get_details(4).raw_label == 1
    # Labels are ignored unless asked for.
    plain = ImageFolderDataset(str(tmp_path / 'd'))
    assert not plain.has_labels and plain[0][1].shape == (0,)

def test_float_labels(tmp_path):
    make_folder(tmp_path / 'd', num=4, labels=lambda i: [i * 0.5, 1.0 - i])
    ds = ImageFolderDataset(str(tmp_path / 'd'), use_labels=True)
    assert ds.has_labels and not ds.has_onehot_labels and ds.label_shape == [2]
    np.testing.assert_allclose(ds[3][1], [1.5, -2.0])
    assert ds[3][1].dtype == np.float32

def test_construct_by_name_and_pickle(tmp_path):
    make_folder(tmp_path / 'src', num=4, labels=lambda i: i % 2)
    path = zip_folder(tmp_path / 'src', tmp_path / 'data.zip')
    kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=path, use_labels=True,
                             max_size=None, xflip=False, resolution=8, random_seed=0)
    ds = dnnlib.util.construct_class_by_name(**kwargs)
    first = ds[0]  # opens the zip
    clone = pickle.loads(pickle.dumps(ds))
    assert '_zipfile' in ds.__getstate__() and ds.__getstate__()['_zipfile'] is None
    assert ds.__getstate__()['_raw_labels'] is None
    np.testing.assert_array_equal(clone[0][0], first[0])
    np.testing.assert_array_equal(clone[0][1], first[1])

def test_dataloader_workers(tmp_path):
    make_folder(tmp_path / 'src', num=8, size=4, labels=lambda i: i % 4)
    path = zip_folder(tmp_path / 'src', tmp_path / 'data.zip')
    ds = ImageFolderDataset(path, use_labels=True, xflip=True)
    ds[0]  # an open zip handle in the parent must not leak into the workers
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    images, labels = zip(*loader)
    images, labels = torch.cat(images), torch.cat(labels)
    assert images.shape == (16, 3, 4, 4) and images.dtype == torch.uint8
    assert labels.shape == (16, 4)
    expected = np.stack([ds[i][0] for i in range(len(ds))])
    np.testing.assert_array_equal(images.numpy(), expected)

def test_rgba_alpha_dropped_with_one_warning(tmp_path):
    arrays = make_folder(tmp_path / 'd', num=3, channels=4)
    with pytest.warns(DatasetWarning, match='alpha') as record:
        ds = ImageFolderDataset(str(tmp_path / 'd'))
    assert len([r for r in record if issubclass(r.category, DatasetWarning)]) == 1
    assert ds.image_shape == [3, 8, 8]
    np.testing.assert_array_equal(ds[0][0], arrays['img00.png'][:, :, :3].transpose(2, 0, 1))

#----------------------------------------------------------------------------
# bad input

def test_missing_and_wrong_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope'):
        ImageFolderDataset(str(tmp_path / 'nope'))
    (tmp_path / 'file.txt').write_text('x')
    with pytest.raises(ValueError, match='file.txt'):
        ImageFolderDataset(str(tmp_path / 'file.txt'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(DatasetError, match='No image files'):
        ImageFolderDataset(str(tmp_path / 'empty'))
    (tmp_path / 'bad.zip').write_bytes(b'not a zip')
    with pytest.raises(DatasetError, match='bad.zip'):
        ImageFolderDataset(str(tmp_path / 'bad.zip'))

def test_corrupt_files_skipped_with_one_warning(tmp_path):
    make_folder(tmp_path / 'd', num=4)
    (tmp_path / 'd' / 'broken.png').write_bytes(b'this is not a png')
    good = (tmp_path / 'd' / 'img00.png').read_bytes()
    (tmp_path / 'd' / 'truncated.png').write_bytes(good[:len(good) // 2])
    (tmp_path / 'd' / 'empty.jpg').write_bytes(b'')
    with pytest.warns(DatasetWarning) as record:
        ds = ImageFolderDataset(str(tmp_path / 'd'))
    messages = [str(r.message) for r in record if issubclass(r.category, DatasetWarning)]
    assert len(messages) == 1
    assert 'skipped 3 unreadable' in messages[0] and 'broken.png' in messages[0]
    assert len(ds) == 4
    for idx in range(len(ds)):
        ds[idx]

def test_corrupt_file_without_validation_fails_at_load(tmp_path):
    make_folder(tmp_path / 'd', num=2)
    (tmp_path / 'd' / 'img01.png').write_bytes(b'garbage')
    with no_warnings():
        ds = ImageFolderDataset(str(tmp_path / 'd'), validate=False)
    assert len(ds) == 2
    ds[0]
    with pytest.raises(DatasetError, match='img01.png'):
        ds[1]

def test_all_files_corrupt(tmp_path):
    (tmp_path / 'd').mkdir()
    (tmp_path / 'd' / 'a.png').write_bytes(b'garbage')
    with pytest.warns(DatasetWarning), pytest.raises(DatasetError, match='could be read'):
        ImageFolderDataset(str(tmp_path / 'd'))

def test_mixed_resolution_error(tmp_path):
    make_folder(tmp_path / 'd', num=3, size=8)
    make_folder(tmp_path / 'd' / 'z', num=1, size=16)
    with pytest.raises(DatasetError, match=r'z/img00\.png.*16x16.*dataset_tool\.py.*--resolution'):
        ImageFolderDataset(str(tmp_path / 'd'))

def test_mixed_resolution_without_validation_fails_at_load(tmp_path):
    make_folder(tmp_path / 'd', num=2, size=8)
    make_folder(tmp_path / 'd' / 'z', num=1, size=16)
    ds = ImageFolderDataset(str(tmp_path / 'd'), validate=False)
    with pytest.raises(DatasetError, match=r'z/img00\.png.*--resolution'):
        ds[2]

def test_mixed_channels_error(tmp_path):
    make_folder(tmp_path / 'd', num=2, channels=3)
    make_folder(tmp_path / 'd' / 'z', num=1, channels=1)
    with pytest.raises(DatasetError, match=r'z/img00\.png.*--channels'):
        ImageFolderDataset(str(tmp_path / 'd'))

def test_non_square_error(tmp_path):
    make_folder(tmp_path / 'd', num=2, size=(16, 8))
    with pytest.raises(DatasetError, match=r'img00\.png.*16x8.*not square.*--resolution'):
        ImageFolderDataset(str(tmp_path / 'd'))

def test_resolution_mismatch_error(tmp_path):
    make_folder(tmp_path / 'd', num=2, size=8)
    assert ImageFolderDataset(str(tmp_path / 'd'), resolution=8).resolution == 8
    with pytest.raises(DatasetError, match=r'8x8.*resolution 16.*--resolution 16'):
        ImageFolderDataset(str(tmp_path / 'd'), resolution=16)

@pytest.mark.parametrize('case', ['no-json', 'null', 'missing-one'])
def test_missing_labels_error(tmp_path, case):
    labels = {'no-json': None, 'null': 'null', 'missing-one': lambda i: i}[case]
    make_folder(tmp_path / 'd', num=3, labels=labels)
    if case == 'missing-one':
        with open(tmp_path / 'd' / 'dataset.json', 'w') as f:
            json.dump({'labels': [['img00.png', 0], ['img02.png', 1]]}, f)
    ImageFolderDataset(str(tmp_path / 'd'))  # fine without labels
    with pytest.raises(DatasetError, match='--cond') as info:
        ImageFolderDataset(str(tmp_path / 'd'), use_labels=True)
    message = str(info.value)
    assert 'dataset.json' in message and '\n' not in message
    if case == 'missing-one':
        assert 'img01.png' in message

#----------------------------------------------------------------------------
# dataset_tool.py

def run_tool(*args):
    result = CliRunner().invoke(dataset_tool.dataset_tool_main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result

def test_tool_builtin_lfw_faces(tmp_path):
    dest = tmp_path / 'lfw32.zip'
    result = run_tool('--source', 'builtin:lfw-faces', '--dest', dest, '--resolution', 32)
    assert result.exit_code == 0, result.output
    assert 'Wrote 100 images' in result.output and '32x32' in result.output
    with zipfile.ZipFile(dest) as zf:
        assert all(info.compress_type == zipfile.ZIP_STORED for info in zf.infolist())
        assert '00000/img00000099.png' in zf.namelist()
        assert json.loads(zf.read('dataset.json')) == {'labels': None}
    ds = ImageFolderDataset(str(dest))
    assert len(ds) == 100 and ds.image_shape == [3, 32, 32]
    images = np.stack([ds[i][0] for i in range(len(ds))]).astype(np.float64)
    assert np.array_equal(images[:, 0], images[:, 1]) and np.array_equal(images[:, 0], images[:, 2])  # gray as RGB
    means = images.mean(axis=(1, 2, 3))
    assert means.std() > 5  # real faces, not one constant image
    assert images.std(axis=(1, 2, 3)).min() > 10  # each image has structure

def test_tool_builtin_gray_and_max_images(tmp_path):
    result = run_tool('--source', 'builtin:lfw-faces', '--dest', tmp_path / 'out', '--channels', 1, '--max-images', 5)
    assert result.exit_code == 0, result.output
    ds = ImageFolderDataset(str(tmp_path / 'out'))
    assert len(ds) == 5 and ds.image_shape == [1, 32, 32]

def test_tool_unknown_builtin(tmp_path):
    result = run_tool('--source', 'builtin:cats', '--dest', tmp_path / 'x.zip')
    assert result.exit_code != 0 and 'builtin:lfw-faces' in result.output
    assert 'Traceback' not in result.output and not (tmp_path / 'x.zip').exists()

def test_tool_center_crop_folder_with_labels(tmp_path):
    make_folder(tmp_path / 'src', num=3, size=(24, 12), labels=lambda i: i)
    result = run_tool('--source', tmp_path / 'src', '--dest', tmp_path / 'out', '--transform', 'center-crop', '--resolution', 8)
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path / 'out')) == ['00000', 'dataset.json']
    assert sorted(os.listdir(tmp_path / 'out' / '00000')) == [f'img{i:08d}.png' for i in range(3)]
    meta = json.loads((tmp_path / 'out' / 'dataset.json').read_text())
    assert meta == {'labels': [[f'00000/img{i:08d}.png', i] for i in range(3)]}
    ds = ImageFolderDataset(str(tmp_path / 'out'), use_labels=True)
    assert ds.image_shape == [3, 8, 8] and ds.label_shape == [3]

def test_tool_center_crop_keeps_the_centre(tmp_path):
    (tmp_path / 'src').mkdir()
    array = np.zeros((8, 24, 3), dtype=np.uint8)
    array[:, 8:16] = 200  # the centred 8x8 square
    PIL.Image.fromarray(array).save(tmp_path / 'src' / 'wide.png')
    assert run_tool('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip', '--transform', 'center-crop').exit_code == 0
    ds = ImageFolderDataset(str(tmp_path / 'out.zip'))
    assert ds.resolution == 8 and (ds[0][0] == 200).all()

def test_tool_center_crop_wide_letterbox(tmp_path):
    make_folder(tmp_path / 'src', num=2, size=(16, 8))
    make_folder(tmp_path / 'src' / 'small', num=1, size=(4, 4))  # too narrow: dropped
    result = run_tool('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip', '--transform', 'center-crop-wide', '--resolution', 16)
    assert result.exit_code == 0, result.output
    assert 'Wrote 2 images' in result.output and 'dropped 1' in result.output
    image = ImageFolderDataset(str(tmp_path / 'out.zip'))[0][0]
    assert image.shape == (3, 16, 16)
    assert (image[:, :4] == 0).all() and (image[:, 12:] == 0).all() and image[:, 4:12].any()

def test_tool_non_square_needs_transform(tmp_path):
    make_folder(tmp_path / 'src', num=2, size=(16, 8))
    result = run_tool('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip', '--resolution', 8)
    assert result.exit_code != 0 and '--transform center-crop' in result.output and 'img00.png' in result.output
    assert not (tmp_path / 'out.zip').exists()
    assert not [n for n in os.listdir(tmp_path) if n.endswith('.tmp')]  # temp file cleaned up

def test_tool_dest_folder_not_empty(tmp_path):
    make_folder(tmp_path / 'src', num=2)
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'keep.txt').write_text('x')
    result = run_tool('--source', tmp_path / 'src', '--dest', tmp_path / 'out')
    assert result.exit_code != 0 and 'not empty' in result.output
    assert os.listdir(tmp_path / 'out') == ['keep.txt']
    (tmp_path / 'empty').mkdir()
    assert run_tool('--source', tmp_path / 'src', '--dest', tmp_path / 'empty').exit_code == 0

def test_tool_resize_filters(tmp_path):
    make_folder(tmp_path / 'src', num=2, size=16, channels=1)
    source_zip = zip_folder(tmp_path / 'src', tmp_path / 'src.zip')
    outputs = {}
    for name in ['box', 'lanczos']:
        dest = tmp_path / f'{name}.zip'
        result = run_tool('--source', source_zip, '--dest', dest,
                          '--resolution', 8, '--resize-filter', name)
        assert result.exit_code == 0, result.output
        ds = ImageFolderDataset(str(dest))
        assert ds.image_shape == [1, 8, 8]
        outputs[name] = ds[0][0]
    assert not np.array_equal(outputs['box'], outputs['lanczos'])
    # box = exact 2x2 average
    source = np.asarray(PIL.Image.open(tmp_path / 'src' / 'img00.png'), dtype=np.float64)
    expected = source.reshape(8, 2, 8, 2).mean(axis=(1, 3))
    assert np.abs(outputs['box'][0] - expected).max() <= 1

def test_tool_errors(tmp_path):
    result = run_tool('--source', tmp_path / 'missing', '--dest', tmp_path / 'x.zip')
    assert result.exit_code != 0 and 'missing' in result.output and 'does not exist' in result.output
    make_folder(tmp_path / 'src', num=2, size=12)
    result = run_tool('--source', tmp_path / 'src', '--dest', tmp_path / 'x.zip')
    assert result.exit_code != 0 and 'power of two' in result.output and '--resolution' in result.output
    result = run_tool('--source', tmp_path / 'src', '--dest', tmp_path / 'x.zip', '--resolution', 30)
    assert result.exit_code != 0 and 'power of two' in result.output
    make_folder(tmp_path / 'mixed', num=1, size=8)
    make_folder(tmp_path / 'mixed' / 'z', num=1, size=16)
    result = run_tool('--source', tmp_path / 'mixed', '--dest', tmp_path / 'x.zip')
    assert result.exit_code != 0 and 'z/img00.png' in result.output and '--resolution' in result.output
    assert 'Traceback' not in result.output and not (tmp_path / 'x.zip').exists()

def test_tool_skips_unreadable_and_mixed_channels(tmp_path):
    make_folder(tmp_path / 'src', num=2, channels=3)
    make_folder(tmp_path / 'src' / 'z', num=1, channels=1)
    (tmp_path / 'src' / 'bad.png').write_bytes(b'nope')
    result = run_tool('--source', tmp_path / 'src', '--dest', tmp_path / 'x.zip')
    assert result.exit_code != 0 and '--channels' in result.output
    result = run_tool('--source', tmp_path / 'src', '--dest', tmp_path / 'x.zip', '--channels', 3)
    assert result.exit_code == 0, result.output
    assert 'Wrote 3 images' in result.output and 'skipped 1' in result.output and 'bad.png' in result.output
    with no_warnings():
        assert ImageFolderDataset(str(tmp_path / 'x.zip')).image_shape == [3, 8, 8]

#----------------------------------------------------------------------------
