"""The torchvision datasets, from small files the tests write in each dataset's own format."""
import gzip
import pickle
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from data import DataError, load_dataset

FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


def _idx(path, array, compress):
    """An IDX file as MNIST ships it: magic (0, 0, dtype 0x08, ndim), big-endian sizes, bytes."""
    head = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    blob = head + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        blob = gzip.compress(blob)
    path.write_bytes(blob)


def _mnist_files(folder, n_train=40, n_test=20, compress=False, seed=0):
    rng = np.random.default_rng(seed)
    data = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28))
        labels = rng.integers(0, 10, n)
        _idx(folder / f"{split}-images-idx3-ubyte", images, compress)
        _idx(folder / f"{split}-labels-idx1-ubyte", labels, compress)
        data[split] = images, labels
    return data


def test_mnist_from_uncompressed_idx_files(tmp_path):
    files = _mnist_files(tmp_path / "MNIST" / "raw")
    ds = load_dataset("mnist", tmp_path)
    assert ds.x_train.shape == (40, 1, 28, 28) and ds.x_test.shape == (20, 1, 28, 28)
    assert ds.label == "MNIST" and ds.classes[:2] == ["zero", "one"]
    assert ds.y_train.tolist() == files["train"][1].tolist()
    # pixel (0, 0) of image 0 after normalising with the training set's statistics
    px = files["train"][0].astype(np.float32) / 255
    assert float(ds.x_train[0, 0, 0, 0]) == pytest.approx((px[0, 0, 0] - px.mean()) / px.std(ddof=1), abs=1e-4)


def test_fashion_mnist_from_recompressed_gz_files_offline(tmp_path, monkeypatch):
    """.gz files whose bytes differ from torchvision's MD5s (a distribution's re-compressed copy)
    are used as they are, without any download."""
    import torchvision.datasets.mnist as mnist
    monkeypatch.setattr(mnist, "download_and_extract_archive",
                        lambda *a, **k: pytest.fail("must not download when the files are there"))
    files = _mnist_files(tmp_path / "FashionMNIST" / "raw", compress=True)
    ds = load_dataset("fashion-mnist", tmp_path, val_size=10)
    assert ds.label == "Fashion-MNIST" and ds.classes[0] == "T-shirt/top"
    assert len(ds.y_train) == 30 and len(ds.y_val) == 10 and len(ds.y_test) == 20
    held = sorted(ds.y_train.tolist() + ds.y_val.tolist())
    assert held == sorted(files["train"][1].tolist())  # train + validation = the training set


def test_cifar100_from_its_pickles(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 30), ("test", 10)):
        blob = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                "fine_labels": rng.integers(0, 100, n).tolist(), "coarse_labels": [0] * n}
        (folder / name).write_bytes(pickle.dumps(blob))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}))
    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)  # fake files, fake md5s
    ds = load_dataset("cifar100", tmp_path)
    assert ds.x_train.shape == (30, 3, 32, 32) and len(ds.classes) == 100 and ds.label == "CIFAR-100"
    assert ds.y_test.max() < 100


def test_svhn_from_its_mat_files(tmp_path, monkeypatch):
    import scipy.io
    import torchvision.datasets.svhn as svhn
    import torchvision.datasets.utils as utils
    rng = np.random.default_rng(0)
    labels = {}
    for split, n in (("train", 30), ("test", 10)):
        y = rng.integers(1, 11, (n, 1))  # SVHN labels the digit 0 as 10
        scipy.io.savemat(tmp_path / f"{split}_32x32.mat",
                         {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8), "y": y})
        labels[split] = y.ravel() % 10
    for module in (svhn, utils):  # fake files, fake md5s
        monkeypatch.setattr(module, "check_integrity", lambda *a, **k: True)
    ds = load_dataset("svhn", tmp_path)
    assert ds.x_train.shape == (30, 3, 32, 32) and ds.label == "SVHN"
    assert ds.y_train.tolist() == labels["train"].tolist() and ds.classes == [str(d) for d in range(10)]


@pytest.mark.parametrize("name, where, files", [
    ("mnist", "MNIST/raw", "train-images-idx3-ubyte.gz"),
    ("fashion-mnist", "FashionMNIST/raw", "t10k-labels-idx1-ubyte.gz"),
    ("cifar100", "", "cifar-100-python.tar.gz"),
    ("svhn", "", "train_32x32.mat and test_32x32.mat"),
])
def test_missing_files_offline_name_the_files_and_the_folder(name, where, files, tmp_path, monkeypatch):
    import torchvision.datasets.utils as utils

    def no_network(*a, **k):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(utils, "urlopen", no_network, raising=False)
    monkeypatch.setattr(utils.urllib.request, "urlopen", no_network)
    with pytest.raises(DataError) as e:
        load_dataset(name, tmp_path / "d")
    msg = str(e.value)
    assert "\n" not in msg and "could not be downloaded" in msg
    assert files in msg and str(tmp_path / "d" / where).rstrip("/") in msg


def test_validation_split_is_seeded_and_normalised_by_training_part(tmp_path):
    _mnist_files(tmp_path / "MNIST" / "raw", n_train=100)
    a = load_dataset("mnist", tmp_path, val_size=25)
    b = load_dataset("mnist", tmp_path, val_size=25)
    assert torch.equal(a.x_val, b.x_val) and len(a.y_train) == 75
    assert a.x_train.mean().abs() < 1e-4 and abs(float(a.x_val.mean())) > 1e-4  # stats of train only
    with pytest.raises(DataError, match="leaves no training data"):
        load_dataset("mnist", tmp_path, val_size=100)


@pytest.mark.skipif(not FASHION.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_genuine_fashion_mnist(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in FASHION.glob("*.gz"):
        (raw / f.name).symlink_to(f)
    ds = load_dataset("fashion-mnist", tmp_path)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10
