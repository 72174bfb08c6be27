"""The real loading code on data the tests make themselves: a fake CIFAR-10 and tiny image folders."""
import pickle
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

import data
from data import CIFAR10_CLASSES, DataError, TensorLoader, load_dataset


def _fake_cifar(root, n_per_batch=20):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        blob = {"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                "labels": rng.integers(0, 10, n_per_batch).tolist()}
        (folder / name).write_bytes(pickle.dumps(blob))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CIFAR10_CLASSES}))
    return folder


def test_cifar10_through_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar
    _fake_cifar(tmp_path)
    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)  # fake files, fake md5s
    monkeypatch.setattr(cifar, "download_and_extract_archive",
                        lambda *a, **k: pytest.fail("must not download when the files are there"))
    ds = load_dataset("cifar10", tmp_path)
    assert ds.x_train.shape == (100, 3, 32, 32) and ds.x_test.shape == (20, 3, 32, 32)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.classes == CIFAR10_CLASSES and ds.label == "CIFAR-10"
    # normalised once with the training set's per-channel statistics
    assert ds.x_train.mean((0, 2, 3)).abs().max() < 1e-4
    assert (ds.x_train.std((0, 2, 3)) - 1).abs().max() < 1e-3
    # pixel layout: the pickled rows are CHW planes; check the red value of pixel (0, 0)
    rows = np.concatenate([pickle.loads((tmp_path / "cifar-10-batches-py" / f"data_batch_{i}")
                                        .read_bytes())["data"] for i in range(1, 6)])
    red = torch.tensor(rows[:, :1024], dtype=torch.float32) / 255
    expected = (red[0, 0] - red.mean()) / red.std()
    assert float(ds.x_train[0, 0, 0, 0]) == pytest.approx(float(expected), abs=1e-4)


def test_cifar10_missing_without_network_is_one_clear_line(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    def no_network(*a, **k):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(cifar, "download_and_extract_archive", no_network)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", tmp_path / "nowhere")
    msg = str(e.value)
    assert "\n" not in msg and "could not be downloaded" in msg and "cifar-10-python.tar.gz" in msg


def _image(path, size=(8, 8), color=(10, 20, 30), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def _folder(root, fmt="png"):
    for split, n in (("train", 3), ("test", 2)):
        for c, cls in enumerate(("cat", "dog")):
            for i in range(n):
                _image(root / split / cls / f"{i}.{fmt}", color=(40 * c + i, 100, 200 - 50 * c))
    return root


def test_image_folder_loads_and_caches(tmp_path, monkeypatch):
    root = _folder(tmp_path / "imgs")
    cache = tmp_path / "cache"
    ds = load_dataset("folder", root, cache_dir=cache)
    assert ds.x_train.shape == (6, 3, 8, 8) and ds.x_test.shape == (4, 3, 8, 8)
    assert ds.classes == ["cat", "dog"] and ds.y_train.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.label == "image folder imgs"
    assert len(list(cache.glob("*.pt"))) == 1
    # the second load reads the cache: decoding would fail now
    monkeypatch.setattr(data, "_decode", lambda *a: pytest.fail("decoded again instead of caching"))
    again = load_dataset("folder", root, cache_dir=cache)
    assert torch.equal(again.x_train, ds.x_train)


def test_cifar_classes_in_jpeg_are_labelled_as_the_jpeg_copy(tmp_path):
    for split in ("train", "test"):
        for cls in CIFAR10_CLASSES:
            _image(tmp_path / split / cls / "0.jpg", size=(4, 4))
    ds = load_dataset("folder", tmp_path, cache_dir=tmp_path / "cache")
    assert ds.label == "CIFAR-10 (JPEG copy)" and ds.classes == CIFAR10_CLASSES


def test_image_folder_subset_is_seeded_and_mixed(tmp_path):
    root = _folder(tmp_path / "imgs")
    a = load_dataset("folder", root, train_size=4, cache_dir=tmp_path / "c")
    b = load_dataset("folder", root, train_size=4, cache_dir=tmp_path / "c")
    assert torch.equal(a.y_train, b.y_train) and len(a.y_train) == 4


@pytest.mark.parametrize("problem, expected", [
    ("missing", "does not exist"),
    ("no_train", "has no train/ subfolder"),
    ("empty", "holds no images"),
    ("sizes", "all images must have one size"),
    ("text_file", "is not an image"),
    ("corrupt", "could not be decoded"),
])
def test_image_folder_problems_are_one_clear_line(tmp_path, problem, expected):
    root = tmp_path / "imgs"
    if problem != "missing":
        _folder(root)
    if problem == "no_train":
        import shutil
        shutil.rmtree(root / "train")
    elif problem == "empty":
        for f in (root / "train").rglob("*.png"):
            f.unlink()
    elif problem == "sizes":
        _image(root / "train" / "cat" / "big.png", size=(16, 16))
    elif problem == "text_file":
        (root / "train" / "dog" / "notes.txt").write_text("hello")
    elif problem == "corrupt":
        (root / "train" / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError) as e:
        load_dataset("folder", root, cache_dir=tmp_path / "cache")
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_synthetic_is_generated_from_the_seed_and_learnable():
    a = data.make_synthetic(200, 50, seed=1)
    b = data.make_synthetic(200, 50, seed=1)
    c = data.make_synthetic(200, 50, seed=2)
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    assert a.x_train.shape == (200, 3, 32, 32) and set(a.y_train.tolist()) <= set(range(10))
    # learnable: nearest class mean beats chance by far
    big = data.make_synthetic(2000, 500, seed=0)
    means = torch.stack([big.x_train[big.y_train == k].mean(0) for k in range(10)]).flatten(1)
    pred = torch.cdist(big.x_test.flatten(1), means).argmin(1)
    assert (pred == big.y_test).float().mean() > 0.3


def test_synthetic_data_is_made_on_one_thread_whatever_the_process_uses(monkeypatch):
    """2-thread tanh gave other last bits in some processes (data.synthetic_tensors): generation
    runs on one thread, and the caller's thread count comes back afterwards."""
    seen, tanh = [], torch.tanh
    monkeypatch.setattr(torch, "tanh", lambda x: (seen.append(torch.get_num_threads()), tanh(x))[1])
    with data.torch_threads(2):
        data.synthetic_tensors(64, 16)
        assert seen == [1, 1] and torch.get_num_threads() == 2


def test_tensor_loader_drops_a_lone_last_sample_when_training():
    x, y = torch.randn(129, 4), torch.arange(129)
    assert [len(b) for _, b in TensorLoader(x, y, 128, shuffle=True)] == [128]
    assert len(TensorLoader(x, y, 128, shuffle=True)) == 1
    assert [len(b) for _, b in TensorLoader(x, y, 128)] == [128, 1]  # evaluation keeps everything
    assert len(TensorLoader(x, y, 128)) == 2
