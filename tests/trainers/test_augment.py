"""Random-resized-crop augmentation: crop geometry against an explicit numpy crop + bilinear resize,
the box rule against a per-image loop, the loop's use of it, bit-exact resume, config validation."""

import math

import numpy as np
import pytest
import torch

import dynamics
from dynamics.errors import ConfigError
from trainers import train
from trainers.config import load_config
from trainers.data import load_dataset, standardization
from trainers.data.augment import ATTEMPTS, STREAM, RandomResizedCrop, resized_crop, sample_boxes
from trainers.optimizers import batch_loss
from trainers.setup import build_model, prepare


def numpy_resized_crop(image, box):
    """Textbook bilinear resize (half-pixel centres, edge clamped) of image[:, top:top+h, left:left+w]
    back to the image size, one output pixel at a time."""
    top, left, h, w = (int(v) for v in box)
    crop = image[:, top:top + h, left:left + w]
    channels, height, width = image.shape
    out = np.empty_like(image, dtype=np.float64)
    for i in range(height):
        y = max((i + 0.5) * h / height - 0.5, 0.0)
        y0 = int(math.floor(y))
        y1, ty = min(y0 + 1, h - 1), y - y0
        for j in range(width):
            x = max((j + 0.5) * w / width - 0.5, 0.0)
            x0 = int(math.floor(x))
            x1, tx = min(x0 + 1, w - 1), x - x0
            out[:, i, j] = ((1 - ty) * (1 - tx) * crop[:, y0, x0] + (1 - ty) * tx * crop[:, y0, x1]
                            + ty * (1 - tx) * crop[:, y1, x0] + ty * tx * crop[:, y1, x1])
    return out


def loop_boxes(rng, n, height, width, scale, ratio):
    """The box rule per image with explicit loops (same draws, in the documented order)."""
    target = height * width * rng.uniform(scale[0], scale[1], size=(n, ATTEMPTS))
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), size=(n, ATTEMPTS)))
    sizes = []
    for k in range(n):
        for a in range(ATTEMPTS):
            w, h = round(math.sqrt(target[k, a] * aspect[k, a])), round(math.sqrt(target[k, a] / aspect[k, a]))
            if 0 < w <= width and 0 < h <= height:
                sizes.append((h, w, False))
                break
        else:
            w, h = width, height
            if width / height < ratio[0]:
                h = round(width / ratio[0])
            elif width / height > ratio[1]:
                w = round(height * ratio[1])
            sizes.append((h, w, True))
    h = np.array([s[0] for s in sizes])
    w = np.array([s[1] for s in sizes])
    top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
    out = []
    for k, (hk, wk, fallback) in enumerate(sizes):
        out.append(((height - hk) // 2, (width - wk) // 2, hk, wk) if fallback else (top[k], left[k], hk, wk))
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 8, 8), (2, 5, 9)])
def test_crop_equals_explicit_crop_and_bilinear_resize(seed, shape):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(6, *shape))
    boxes = sample_boxes(np.random.default_rng([seed, 1]), 6, shape[1], shape[2], (0.08, 1.0), (3 / 4, 4 / 3))
    boxes[0] = (0, 0, shape[1], shape[2])          # the whole image: the identity
    boxes[1] = (shape[1] - 1, shape[2] - 1, 1, 1)  # one pixel: a constant image
    got = resized_crop(torch.from_numpy(images), boxes).numpy()
    for k in range(6):
        np.testing.assert_allclose(got[k], numpy_resized_crop(images[k], boxes[k]), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got[0], images[0])
    np.testing.assert_allclose(got[1], np.broadcast_to(images[1][:, -1:, -1:], shape), rtol=1e-15, atol=1e-15)
    # float32 against torch's own bilinear resize of the explicit crop (an independent implementation)
    f32 = resized_crop(torch.from_numpy(images).float(), boxes)
    assert f32.dtype == torch.float32
    for k, (top, left, h, w) in enumerate(boxes.tolist()):
        crop = torch.from_numpy(images[k:k + 1, :, top:top + h, left:left + w]).float()
        want = torch.nn.functional.interpolate(crop, size=shape[1:], mode="bilinear", align_corners=False)
        torch.testing.assert_close(f32[k:k + 1], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale, ratio, size", [((0.08, 1.0), (3 / 4, 4 / 3), (32, 32)),
                                                 ((0.5, 0.5), (1.0, 1.0), (28, 28)),
                                                 ((0.01, 0.3), (0.2, 5.0), (8, 20))])
def test_boxes_follow_the_rule(scale, ratio, size):
    height, width = size
    got = sample_boxes(np.random.default_rng([5, 2]), 500, height, width, scale, ratio)
    want = loop_boxes(np.random.default_rng([5, 2]), 500, height, width, scale, ratio)
    np.testing.assert_array_equal(got, want)
    top, left, h, w = got.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
    assert (h >= 1).all() and (w >= 1).all()
    assert len(np.unique(got, axis=0)) > 50   # random boxes, not one box


def test_fallback_box_is_centred_and_clipped_to_the_ratio():
    # area 1 with ratio >= 2 never fits a 32x32 image: the centred box w = 32, h = round(32 / 2)
    boxes = sample_boxes(np.random.default_rng(0), 4, 32, 32, (1.0, 1.0), (2.0, 3.0))
    np.testing.assert_array_equal(boxes, [[8, 0, 16, 32]] * 4)
    boxes = sample_boxes(np.random.default_rng(0), 2, 32, 32, (1.0, 1.0), (0.25, 0.5))
    np.testing.assert_array_equal(boxes, [[0, 8, 32, 16]] * 2)


def test_bad_boxes_and_ranges_raise():
    with pytest.raises(ValueError, match="outside"):
        resized_crop(torch.zeros(1, 1, 4, 4), np.array([[2, 0, 3, 1]]))
    with pytest.raises(ValueError, match="scale"):
        sample_boxes(np.random.default_rng(0), 1, 4, 4, (0.5, 0.2), (1.0, 1.0))
    with pytest.raises(ValueError, match="ratio"):
        sample_boxes(np.random.default_rng(0), 1, 4, 4, (0.5, 1.0), (0.0, 1.0))


def test_augmentation_crops_pixels_then_standardises():
    """aug(standardise(x)) = standardise(explicit crop + resize of the raw pixels), boxes from (seed, step)."""
    rng = np.random.default_rng(3)
    shape = (3, 8, 8)
    raw = rng.integers(0, 256, size=(40, 3 * 8 * 8)).astype(np.float64)
    raw[:, :64] *= 0.5                      # channels with different statistics
    mean = raw.mean(axis=0)
    scale = np.maximum(raw.std(axis=0), 0.1 * raw.std(axis=0).mean())   # textbook μ, σ'
    np.testing.assert_allclose(np.stack(standardization(raw)), np.stack([mean, scale]), rtol=1e-12)
    augment = RandomResizedCrop(shape, torch.from_numpy(mean), torch.from_numpy(scale))
    x = torch.from_numpy((raw - mean) / scale)
    got = augment(x, 11, 4).numpy()
    boxes = sample_boxes(np.random.default_rng([11, 4, STREAM]), 40, 8, 8, (0.08, 1.0), (3 / 4, 4 / 3))
    for k in range(40):
        want = (numpy_resized_crop(raw[k].reshape(shape), boxes[k]).reshape(-1) - mean) / scale
        np.testing.assert_allclose(got[k], want, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(augment(x, 11, 4).numpy(), got)     # a pure function of (seed, step)
    assert not np.array_equal(augment(x, 11, 5).numpy(), got)
    assert not np.array_equal(augment(x, 12, 4).numpy(), got)


def write_cifar(folder, n_train=48, n_test=40, seed=0):
    """Tiny synthetic CIFAR-10 binary batches: 5 training files of n_train records and a test file."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        n = n_test if name == "test_batch.bin" else n_train
        records = np.empty((n, 3073), dtype=np.uint8)
        records[:, 0] = rng.integers(0, 10, size=n)
        records[:, 1:] = rng.integers(0, 256, size=(n, 3072))
        (folder / name).write_bytes(records.tobytes())
    return folder


def cifar_config(folder, **overrides):
    return load_config("paper-cifar", overrides={
        "data.data_dir": str(folder), "data.probe_size": 16, "model.hidden": 16, "model.depth": 1,
        "model.dtype": "float64", "train.batch_size": 32, "train.epochs": 2, "train.checkpoints": 4,
        "train.eval_size": 64, "train.seeds": [], "train.optimizers": ["adam"], **overrides})


def test_dataset_knows_its_images(tmp_path):
    data = load_dataset("cifar10", str(write_cifar(tmp_path / "c")))
    assert data.image_shape == (3, 32, 32) and data.mean.shape == data.scale.shape == (3072,)
    raw = np.concatenate([np.frombuffer((tmp_path / "c" / f"data_batch_{i}.bin").read_bytes(), np.uint8)
                          .reshape(-1, 3073)[:, 1:] for i in range(1, 6)]).astype(np.float64)
    np.testing.assert_allclose(data.x_train * data.scale + data.mean, raw, atol=1e-9)


def test_loop_trains_on_the_augmented_batch(tmp_path):
    folder = write_cifar(tmp_path / "cifar")
    config = cifar_config(folder, **{"train.steps": 3})
    path = train(config, "adam", tmp_path / "adam.zarr", seed=42, progress=False)
    tree = dynamics.open_run(path)
    metrics = tree["metrics"].to_dataset().load()
    params = tree["params"].to_dataset().load()
    experiment = prepare(config)
    model = build_model(config.model, 3072, 10, 42)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(params[name.replace(".", "__")].values[0]))
    order = torch.randperm(len(experiment.pool), generator=torch.Generator().manual_seed(42))
    first, second = (experiment.pool[order[k * 32:(k + 1) * 32]] for k in (0, 1))
    x, y = experiment.x, experiment.y
    with torch.no_grad():
        augmented = float(batch_loss(model(experiment.augment(x[first], 42, 1)), y[first], "ce"))
        plain = float(batch_loss(model(x[first]), y[first], "ce"))
        upcoming = float(batch_loss(model(experiment.augment(x[second], 42, 2)), y[second], "ce"))
    assert float(metrics["loss"].values[0]) == pytest.approx(augmented, rel=1e-12)
    assert float(metrics["next_loss"].values[0]) == pytest.approx(upcoming, rel=1e-12)
    assert abs(augmented - plain) > 1e-9 * plain


@pytest.mark.parametrize("optimizer, stop", [("adam", 4), ("gn", 5)])
def test_resume_with_augmentation_is_bit_exact(tmp_path, optimizer, stop):
    folder = write_cifar(tmp_path / "cifar")
    config = cifar_config(folder, **{"train.optimizers": [optimizer]})   # 6 steps per epoch, 12 in all

    def interrupt(step):
        if step == stop:
            raise KeyboardInterrupt

    full = train(config, optimizer, tmp_path / "full.zarr", seed=43, progress=False)
    cut = tmp_path / "cut.zarr"
    with pytest.raises(KeyboardInterrupt):
        train(config, optimizer, cut, seed=43, progress=False, callback=interrupt)
    train(config, optimizer, cut, seed=43, resume=True, progress=False)
    a, b = dynamics.open_run(full), dynamics.open_run(cut)
    assert b.attrs["status"] == "complete"
    for group in ("metrics", "params", "checkpoints"):
        left, right = a[group].to_dataset().load(), b[group].to_dataset().load()
        for name in left.data_vars:
            if name != "time":
                np.testing.assert_array_equal(left[name].values, right[name].values, err_msg=f"{group}/{name}")
    assert a["metrics"].to_dataset()["step"].size == 12


@pytest.mark.parametrize("overrides, key", [
    ({"data.crop_scale": [0.5, 0.1]}, "data.crop_scale"),
    ({"data.crop_scale": [0.0, 1.0]}, "data.crop_scale"),
    ({"data.crop_scale": [0.5, 1.5]}, "data.crop_scale"),
    ({"data.crop_scale": [0.5]}, "data.crop_scale"),
    ({"data.crop_ratio": [2.0, 1.0]}, "data.crop_ratio"),
    ({"data.crop_ratio": [-1.0, 1.0]}, "data.crop_ratio"),
    ({"data.crop_ratio": ["wide", 1.0]}, "data.crop_ratio"),
    ({"data.augment": "flip"}, "data.augment"),
    ({"data.augment": "random_resized_crop", "data.name": "mnist1d"}, "data.augment"),
])
def test_bad_augmentation_keys_are_named(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("paper-cifar", overrides=overrides)


def test_paper_cifar_preset_uses_the_published_crop():
    data = load_config("paper-cifar").data
    assert (data.augment, data.crop_scale) == ("random_resized_crop", [0.08, 1.0])
    assert data.crop_ratio == pytest.approx([3 / 4, 4 / 3], rel=1e-15)
    assert load_config("mnist1d").data.augment == "none"
