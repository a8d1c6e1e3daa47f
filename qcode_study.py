"""Quality-code degradation study (QC-StyleGAN paper, section 4.6).

Encodes images degraded with known, random degradations and fits a scikit-learn linear
classifier on the predicted quality codes q to recover the degradation label; reports the test
accuracy next to the majority-class (chance) accuracy and two controls with the same classifier
and split: a random-weights encoder of the same architecture, and a linear probe on raw pixels
(32x32). Training and test images are different sharp images (disjoint sets). The paper trains on 1000 face images and
tests on 200: blurry or not 97.9%, 5 blur levels 85%, 10 blur levels 77%.

Degradations come from a `DegradationSampler` preset (default `qc_psp_encoder`, the released
pSp training pipeline); the label is read from the sampler's record of what fired:

\b
  --task fired   binary: did --group fire (the group fires with probability --p, default 0.5)
  --task level   the strength of the --group degradation in --levels equal-width bins of its
                 parameter range (blur: kernel size, noise: variance, downscale: scale, JPEG:
                 quality); the group always fires
  --task member  which member of --group fired (e.g. Gaussian / motion / median / box blur)
With --isolate (default) the other groups of the preset are switched off, so q only has to
describe the studied degradation; --no-isolate keeps them at their preset probabilities.

Images: a dataset (--data, folder or zip) or --generate N sharp images from the generator
(--network, default: the network the encoder was trained with). The N distinct images are split
into a training part and a disjoint test part (in the --train : --test ratio); study image k is
drawn from its part cyclically and degraded with the sampler stream keyed by (--seed, k), so runs
are reproducible.

\b
Examples:
  python qcode_study.py --encoder enc/checkpoint.pt --data celebahq256.zip --task fired --group blur
  python qcode_study.py --encoder enc/checkpoint.pt --data celebahq256.zip --task level --levels 5 --out blur5.json
  python qcode_study.py --encoder enc/checkpoint.pt --generate 200 --task member --group blur
"""

import json
import os

import click
import numpy as np
import torch

import dnnlib
import legacy
from dnnlib import cli
from torch_utils import devices
from torch_utils import image_utils
from training import degradation_sampler
from training import encoders
from training.dataset import ImageFolderDataset

TASKS = ['fired', 'level', 'member']
FEATURES = ['q', 'w', 'wq']
CLASSIFIERS = ['logistic', 'svm']

# The parameter that measures each member type's strength, and where its range is in the preset.
LEVEL_PARAMS = {
    'GaussianBlur':     ('ksize', lambda m: m['blur_limit']),
    'MotionBlur':       ('ksize', lambda m: m['blur_limit']),
    'MedianBlur':       ('ksize', lambda m: m['blur_limit']),
    'Blur':             ('ksize', lambda m: m['blur_limit']),
    'GaussNoise':       ('var', lambda m: m['var_limit']),
    'Downscale':        ('scale', lambda m: [m['scale_min'], m['scale_max']]),
    'ImageCompression': ('quality', lambda m: [m['quality_lower'], m['quality_upper']]),
}

class StudyError(ValueError):
    """Bad options for the study (one-line message)."""

#----------------------------------------------------------------------------

def study_preset(preset, task, group, p=0.5, isolate=True):
    """The preset (a dict) with --group firing as the task needs and, with isolate, the others off."""
    data = degradation_sampler.load_preset(preset)
    if group not in data['groups']:
        raise StudyError(f'--group "{group}" is not a group of preset "{data["name"]}" (groups: {", ".join(data["groups"])})')
    if not 0 < p < 1 and task == 'fired':
        raise StudyError(f'--p must be in (0, 1) for --task fired, got {p}')
    found = False
    for base in data['bases']:
        for link in base['chain']:
            if link['group'] == group:
                link['p'] = p if task == 'fired' else 1.0
                found = True
            elif isolate:
                link['p'] = 0.0
    if not found:
        raise StudyError(f'--group "{group}" is not used by any base chain of preset "{data["name"]}"')
    data.pop('source', None)
    return data

def level_spec(preset, group, levels):
    """(parameter name, lo, hi) for --task level on `group`; all members must share the parameter."""
    if levels < 2:
        raise StudyError(f'--levels must be at least 2, got {levels}')
    members = preset['groups'][group]
    kinds = {LEVEL_PARAMS[m['type']][0] for m in members}
    if len(kinds) != 1:
        raise StudyError(f'--task level needs a group whose members share one strength parameter; "{group}" mixes '
                         f'{", ".join(sorted(kinds))}: use --task member, or a preset with one kind per group')
    ranges = [LEVEL_PARAMS[m['type']][1](m) for m in members]
    lo = min(float(r[0]) for r in ranges)
    hi = max(float(r[1]) for r in ranges)
    if not hi > lo:
        raise StudyError(f'the "{group}" parameter range [{lo:g}, {hi:g}] is empty: nothing to split into levels')
    return kinds.pop(), lo, hi

def label_of(info, task, group, spec=None, levels=None):
    """The study label of one sampler record."""
    entry = next(e for e in info['groups'] if e['group'] == group)
    if task == 'fired':
        return int(entry['fired'])
    if task == 'member':
        return entry['member'] or 'none'
    name, lo, hi = spec
    value = float(entry['params'][name])
    return int(min(levels - 1, max(0, np.floor((value - lo) / (hi - lo) * levels))))

#----------------------------------------------------------------------------

def load_images(data=None, generate=None, G=None, seed=0, device='cpu', batch=16):
    """Sharp uint8 images [N, H, W, 3] from a dataset, or generated by G (q = 0) from seeds."""
    if data is not None:
        dataset = ImageFolderDataset(path=data)
        images = [dataset[i][0] for i in range(len(dataset))]
        images = np.stack(images).transpose(0, 2, 3, 1)
        if images.shape[3] == 1:
            images = np.repeat(images, 3, axis=3)
        return images
    out = []
    with torch.no_grad():
        for start in range(0, generate, batch):
            seeds = range(seed + start, seed + min(start + batch, generate))
            z = torch.stack([torch.from_numpy(np.random.RandomState(s).randn(G.z_dim)) for s in seeds]).float().to(device)
            c = torch.zeros([len(z), G.c_dim], device=device)
            ws = G.mapping(z, c)
            img = G.synthesis(ws, noise_mode='const', force_fp32=True)
            out.append(image_utils.to_uint8(img))
    return np.concatenate(out)

def split_images(num_images, num_train, num_test):
    """Disjoint (train, test) index lists over the distinct sharp images, in proportion to --train/--test
    (at least one image each), so no test image was seen, under any degradation, in training."""
    if num_images < 2:
        raise StudyError(f'the study needs at least 2 distinct images to keep train and test disjoint, got {num_images}')
    n_test = min(num_images - 1, max(1, int(round(num_images * num_test / (num_train + num_test)))))
    return list(range(num_images - n_test)), list(range(num_images - n_test, num_images))

def degrade_all(images, sampler, count, seed, task, group, spec=None, levels=None, offset=0):
    """-> (degraded uint8 [count, H, W, 3], labels list): study image k = offset + i is image i mod N,
    degraded with the stream (seed, k)."""
    degraded, labels = [], []
    for i in range(count):
        k = offset + i
        out, info = sampler(images[i % len(images)], rng=np.random.default_rng([seed, k]))
        degraded.append(out)
        labels.append(label_of(info, task, group, spec, levels))
    return np.stack(degraded), labels

def encode_features(wrapper, images, features, batch=32):
    """uint8 [N, H, W, 3] -> feature matrix [N, D] (q, w averaged over layers, or both)."""
    feats = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch].transpose(0, 3, 1, 2)))
        w, q = wrapper.encode(x, batch_size=batch)
        w = w if w.ndim == 2 else w.mean(dim=1)
        parts = {'q': [q], 'w': [w], 'wq': [w, q]}[features]
        feats.append(torch.cat(parts, dim=1).float().cpu().numpy())
    return np.concatenate(feats)

def fit_and_score(train_x, train_y, test_x, test_y, classifier='logistic', seed=0):
    """Fit a linear classifier (standardised features) and score it. Returns a dict."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, confusion_matrix
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC
    classes = sorted(set(train_y), key=str)
    if len(classes) < 2:
        raise StudyError(f'every training label is "{classes[0]}": increase --train, or change --p / --group')
    if classifier == 'logistic':
        clf = LogisticRegression(max_iter=5000, random_state=seed)
    else:
        clf = LinearSVC(max_iter=20000, random_state=seed)
    model = make_pipeline(StandardScaler(), clf)
    model.fit(train_x, np.asarray(train_y, dtype=object).astype(str))
    pred = model.predict(test_x)
    truth = np.asarray(test_y, dtype=object).astype(str)
    labels = sorted(set(truth) | set(np.asarray(train_y, dtype=object).astype(str)), key=_natural)
    values, counts = np.unique(truth, return_counts=True)
    return dict(accuracy=float(accuracy_score(truth, pred)),
                train_accuracy=float(accuracy_score(np.asarray(train_y, dtype=object).astype(str), model.predict(train_x))),
                chance=float(counts.max() / counts.sum()), majority_class=str(values[int(np.argmax(counts))]),
                labels=labels, confusion=confusion_matrix(truth, pred, labels=labels).tolist(),
                test_counts={str(v): int(c) for v, c in zip(values, counts)})

def random_encoder_like(wrapper, seed=0):
    """Control: an encoder of the same architecture and latent_avg with random weights."""
    kwargs = dict(wrapper.encoder.init_kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        encoder = type(wrapper.encoder)(backbone_weights='none', latent_avg=wrapper.latent_avg.detach().cpu(), **kwargs)
    return encoders.EncoderWrapper(encoder).to(wrapper.device)

def pixel_features(images, size=32):
    """Control: raw pixels, area-downsampled to size x size RGB in [-1, 1], flattened -> [N, 3 * size^2]."""
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float() / 127.5 - 1
    x = torch.nn.functional.interpolate(x, size=(size, size), mode='area')
    return x.flatten(1).numpy()

def _natural(label):
    return (0, int(label), '') if label.lstrip('-').isdigit() else (1, 0, label)

#----------------------------------------------------------------------------

def run_study(encoder, data=None, generate=None, network=None, task='fired', group='blur', levels=5, p=0.5,
              preset='qc_psp_encoder', isolate=True, num_train=1000, num_test=200, features='q', classifier='logistic',
              seed=0, device='cpu', batch=32, verbose=True, controls=True):
    """The whole study; returns the report dict (see the module docstring). Raises StudyError,
    encoders.EncoderError, legacy.NetworkLoadError or OSError on bad input."""
    log = print if verbose else (lambda *a, **k: None)
    if task not in TASKS:
        raise StudyError(f'--task must be one of {", ".join(TASKS)}')
    if features not in FEATURES:
        raise StudyError(f'--features must be one of {", ".join(FEATURES)}')
    if (data is None) == (generate is None):
        raise StudyError('give exactly one of --data (a dataset) and --generate N (images from the generator)')
    if num_train < 2 or num_test < 1:
        raise StudyError('--train must be at least 2 and --test at least 1')
    device = devices.parse_device(device)

    G = None
    if generate is not None:
        if generate < 1:
            raise StudyError('--generate must be at least 1')
        if network is None:
            network = encoders.load_encoder_checkpoint(encoder).get('network')
            if network is None:
                raise StudyError(f'"{encoder}" does not name its network: pass --network')
        G = legacy.load_network(network, device=device, verbose=False)['G_ema'].eval()
    wrapper = encoders.load_encoder(encoder, G=G, device=device)
    if features in ('q', 'wq') and wrapper.q_dim == 0:
        raise StudyError(f'encoder "{encoder}" predicts no quality code (plain StyleGAN2 network): use --features w')

    preset_dict = study_preset(preset, task, group, p=p, isolate=isolate)
    sampler = degradation_sampler.DegradationSampler(preset_dict, seed=seed)
    spec = level_spec(preset_dict, group, levels) if task == 'level' else None

    images = load_images(data=data, generate=generate, G=G, seed=seed, device=device)
    total = num_train + num_test
    train_idx, test_idx = split_images(len(images), num_train, num_test)
    log(f'Degrading {total} images ({len(train_idx)} distinct for training, {len(test_idx)} other ones for testing, '
        f'{images.shape[1]}x{images.shape[2]}) with preset '
        f'"{sampler.name}" ({task} of {group}{f", {levels} levels of {spec[0]} in [{spec[1]:g}, {spec[2]:g}]" if spec else ""})...')
    train_deg, train_labels = degrade_all(images[train_idx], sampler, num_train, seed, task, group, spec, levels)
    test_deg, test_labels = degrade_all(images[test_idx], sampler, num_test, seed, task, group, spec, levels, offset=num_train)
    degraded, labels = np.concatenate([train_deg, test_deg]), train_labels + test_labels
    log(f'Encoding with "{encoder}" ({wrapper.w_space.upper()}, q_dim {wrapper.q_dim}) and fitting a {classifier} classifier on {features}...')
    feats = encode_features(wrapper, degraded, features, batch=batch)
    scores = fit_and_score(feats[:num_train], labels[:num_train], feats[num_train:], labels[num_train:],
                           classifier=classifier, seed=seed)
    control = {}
    if controls:  # what the same probe gets without a trained encoder
        rand = encode_features(random_encoder_like(wrapper, seed), degraded, features, batch=batch)
        pix = pixel_features(degraded)
        for name, x in [('random_encoder', rand), ('pixels', pix)]:
            result = fit_and_score(x[:num_train], labels[:num_train], x[num_train:], labels[num_train:], classifier=classifier, seed=seed)
            control[name] = dict(accuracy=result['accuracy'], train_accuracy=result['train_accuracy'])
    report = dict(task=task, group=group, levels=levels if task == 'level' else None, level_param=spec[0] if spec else None,
                  level_range=[spec[1], spec[2]] if spec else None, p=p if task == 'fired' else 1.0, isolate=isolate,
                  preset=sampler.name, features=features, classifier=classifier, num_train=num_train, num_test=num_test,
                  num_images=int(len(images)), source=data if data is not None else f'generated:{generate}',
                  encoder=os.fspath(encoder), network=wrapper.network, seed=seed, train_images=len(train_idx),
                  test_images=len(test_idx), disjoint=True, controls=control, **scores)
    log(f'accuracy {report["accuracy"]:.3f} (chance {report["chance"]:.3f}, train {report["train_accuracy"]:.3f}) '
        f'on {num_test} test images: {task} of {group}{f" ({levels} levels)" if task == "level" else ""} from {features}')
    if control:
        log(f'controls: random-weights encoder {control["random_encoder"]["accuracy"]:.3f}, raw-pixel linear probe '
            f'{control["pixels"]["accuracy"]:.3f} (same classifier, same train/test split)')
    return report

#----------------------------------------------------------------------------

@click.command(help=__doc__)
@click.option('--encoder', help='Encoder checkpoint (train_encoder.py)', required=True, metavar='CKPT')
@click.option('--data', help='Sharp images (folder or zip)', metavar='PATH')
@click.option('--generate', help='Use N images generated by the network (q = 0) instead of --data', type=int, metavar='N')
@click.option('--network', help='Generator for --generate: pickle or weights file, URL, zoo name or init:PRESET [default: the encoder\'s network]', metavar='NETWORK')
@click.option('--task', help='What to classify', type=click.Choice(TASKS), default='fired', show_default=True)
@click.option('--group', help='Degradation group studied', default='blur', show_default=True)
@click.option('--levels', help='Number of strength bins for --task level', type=int, default=5, show_default=True)
@click.option('--p', 'p', help='Probability that --group fires for --task fired', type=float, default=0.5, show_default=True)
@click.option('--preset', help='Degradation preset (name or .json)', default='qc_psp_encoder', show_default=True)
@click.option('--isolate/--no-isolate', help='Switch the preset\'s other groups off', default=True, show_default=True)
@click.option('--train', 'num_train', help='Training images for the classifier', type=int, default=1000, show_default=True)
@click.option('--test', 'num_test', help='Test images', type=int, default=200, show_default=True)
@click.option('--features', help='Classify from q, w (layer mean) or both', type=click.Choice(FEATURES), default='q', show_default=True)
@click.option('--classifier', help='Linear classifier', type=click.Choice(CLASSIFIERS), default='logistic', show_default=True)
@click.option('--seed', help='Random seed (degradations, generated images)', type=int, default=0, show_default=True)
@click.option('--device', help=devices.DEVICE_HELP, default='auto', show_default=True)
@click.option('--batch', help='Encoder batch size', type=int, default=32, show_default=True)
@click.option('--controls/--no-controls', help='Also score a random-weights encoder and a raw-pixel linear probe', default=True, show_default=True)
@click.option('--out', help='Write the report as JSON here', metavar='FILE')
@cli.trust_pickle_option
@cli.os_errors_as_one_line
def main(encoder, out, **kwargs):
    try:
        if out is not None:
            dnnlib.util.check_output_path(out, '--out')
    except OSError as err:
        raise click.ClickException(err.strerror)
    try:
        report = run_study(encoder, **kwargs)
    except (StudyError, encoders.EncoderError, legacy.NetworkLoadError, degradation_sampler.DegradationPresetError,
            FileNotFoundError, ValueError, dnnlib.DownloadError) as err:
        raise click.ClickException(str(err).splitlines()[0] if str(err) else type(err).__name__)
    if out is not None:
        with dnnlib.util.atomic_write(out, 'w') as f:
            json.dump(report, f, indent=2)
        print(f'Report: {out}')

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
