"""The encoder trainer's data: the train / validation split of a dataset, fixed validation pairs
and `SyntheticPairs`, training pairs made by the generator itself (`--data generator`).

Images are uint8 `[N, C, H, W]` as stored; `to_float` turns them into float `[N, 3, H, W]` in
[-1, 1]. Degraded versions come from the dataset's degradation sampler
(`training.degradation_sampler`), keyed by the image index for validation so they are the same
in every run.
"""

import numpy as np
import torch

from torch_utils import misc
from training.dataset import ImageFolderDataset

#----------------------------------------------------------------------------

VAL_SEED_OFFSET = 1000003   # validation degradations use their own stream
GENERATOR_DATA = 'generator'  # --data generator: pairs made by the network itself

class EncoderDataError(ValueError):
    """The data options leave nothing to train on (one line)."""

#----------------------------------------------------------------------------

class HeldOut(torch.utils.data.Dataset):
    """A subset of a dataset by index that passes `(index, position)` pairs through."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self):
        return int(self.indices.size)

    def __getitem__(self, idx):
        if isinstance(idx, (tuple, list)):
            idx, position = idx
            return self.dataset[(int(self.indices[idx]), position)]
        return self.dataset[int(self.indices[idx])]

def open_dataset(path, degradation, mirror=False, seed=0):
    """Sharp training images (folder or zip) that also yield degraded versions when `degradation`
    (a preset name or file) is given; see `training.dataset.ImageFolderDataset`."""
    return ImageFolderDataset(path=path, degradation=degradation, xflip=mirror, random_seed=seed)

def split_dataset(dataset, val_images, has_val_data):
    """(train indices, validation raw indices): the last `val_images` stored images are held out
    (with their mirrored copies) unless a separate validation set is given."""
    num_raw = dataset._raw_shape[0]  # pylint: disable=protected-access
    held = set()
    if not has_val_data and val_images > 0:
        if val_images >= num_raw:
            raise EncoderDataError(f'--val-images {val_images} leaves no training images (the dataset has {num_raw}); '
                            f'lower it or pass --val-data')
        held = set(range(num_raw - val_images, num_raw))
    train_idx = [i for i in range(len(dataset)) if dataset.get_details(i).raw_idx not in held]
    return train_idx, sorted(held)

def validation_items(dataset, raw_indices=None, num=None, seed=0):
    """Fixed validation pairs as float [-1, 1] CPU tensors: (sharp, degraded or None); the
    degradations are reproducible (keyed by the image index)."""
    if raw_indices is None:
        raw_indices = list(range(dataset._raw_shape[0] if num is None else min(num, dataset._raw_shape[0])))  # pylint: disable=protected-access
    items = []
    sampler = getattr(dataset, '_degradation', None)
    for i in raw_indices:
        image = dataset._load_raw_image(i)  # pylint: disable=protected-access
        if sampler is not None:
            degraded, _ = sampler(image.transpose(1, 2, 0), rng=np.random.default_rng([seed + VAL_SEED_OFFSET, int(i)]))
            items.append((image, degraded.transpose(2, 0, 1)))
        else:
            items.append((image,))
    if not items:
        return None, None
    sharp = to_float(torch.from_numpy(np.stack([item[0] for item in items])), 'cpu')
    degraded = to_float(torch.from_numpy(np.stack([item[1] for item in items])), 'cpu') if sampler is not None else None
    return sharp, degraded

def to_float(images, device, channels=3):
    """uint8 [N, C, H, W] -> float [-1, 1] on device with `channels` channels."""
    x = images.to(device).to(torch.float32) / 127.5 - 1
    if x.shape[1] == 1 and channels == 3:
        x = x.repeat([1, 3, 1, 1])
    return x

class SyntheticPairs:
    """`--data generator`: training pairs made by the generator itself.

    Sample number p of the stream (a global position, as the dataset's) draws z (and a class
    label for conditional networks) and q ~ N(0, I) * q_scale from a torch generator seeded with
    (seed, p); x = G(w, 0) and y = G(w, q) with w = mapping(z) (truncation `truncation`), as the
    generator's float output (not clamped or quantised). Plain StyleGAN2 networks give x only.
    """

    def __init__(self, G, seed=0, q_scale=1.0, truncation=1.0):
        self.G = G
        self.seed = int(seed)
        self.q_scale = float(q_scale)
        self.truncation = float(truncation)
        self.q_dim = int(G.q_dim) if misc.is_qc(G) else 0

    def latents(self, positions):
        zs, cs, qs = [], [], []
        for p in positions:
            gen = torch.Generator().manual_seed((self.seed * 1000003 + int(p)) % (2**63))
            zs.append(torch.randn([self.G.z_dim], generator=gen))
            c = torch.zeros([self.G.c_dim])
            if self.G.c_dim > 0:
                c[int(torch.randint(self.G.c_dim, [], generator=gen))] = 1
            cs.append(c)
            qs.append(torch.randn([max(self.q_dim, 1)], generator=gen)[:self.q_dim] * self.q_scale)
        return torch.stack(zs), torch.stack(cs), torch.stack(qs)

    @torch.no_grad()
    def make(self, positions, device):
        """-> (x, y or None, w, q or None) for the given stream positions, on `device`."""
        z, c, q = (t.to(device) for t in self.latents(positions))
        w = self.G.mapping(z, c, truncation_psi=self.truncation)
        x = self.G.synthesis(w, noise_mode='const', force_fp32=True)
        if self.q_dim == 0:
            return x, None, w, None
        y = self.G.synthesis(w, q=q, noise_mode='const', force_fp32=True)
        return x, y, w, q

#----------------------------------------------------------------------------
