"""Per-example ops (decoding, crops, augmentation, multi-crop) and batch ops (mixup/cutmix)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import data_files as files  # noqa: E402
from vitjax.data import image_io  # noqa: E402
from vitjax.data.bad_input import BadExampleError  # noqa: E402
from vitjax.data.batch_ops import build_batch_ops  # noqa: E402
from vitjax.data.ops import apply_ops, build_ops  # noqa: E402


def run(specs, image, seed=0, **extra):
    return apply_ops({"image": image, **extra}, build_ops(specs), np.random.default_rng(seed))


# ------------------------------------------------------------------------------------- decoding

def test_every_image_mode_decodes_to_rgb():
    odd = files.odd_images()
    rgb = files.smooth_rgb(40, 50, 0)
    out = {k: run([dict(op="decode")], v)["image"] for k, v in odd.items()
           if k not in ("truncated.jpg", "garbage.jpg", "empty.png")}
    for name, img in out.items():
        assert img.shape == (40, 50, 3) and img.dtype == np.uint8, name
    g = out["grey.jpg"]
    assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 0], g[..., 2])
    # Transparent pixels become white; opaque ones keep their colour (lossless PNG).
    assert (out["rgba.png"][:, :25] == 255).all()
    assert np.array_equal(out["rgba.png"][:, 25:], rgb[:, 25:])
    # 16-bit grey is rescaled (65535 -> 255), not clipped at 255.
    expect = np.rint(np.linspace(0, 65535, 2000).reshape(40, 50).astype(np.uint16) / 257.0).astype(np.uint8)
    assert np.array_equal(out["grey16.png"][..., 0], expect)
    assert out["grey16.png"].max() == 255 and out["grey16.png"].min() == 0
    assert np.array_equal(out["rgb16.png"], rgb)
    for lossy in ("cmyk.jpg", "photo.webp"):
        assert np.abs(out[lossy].astype(int) - rgb).mean() < 8.0, lossy


def test_undecodable_bytes_raise_bad_example_with_reason():
    odd = files.odd_images()
    with pytest.raises(BadExampleError) as e:
        run([dict(op="decode")], odd["garbage.jpg"])
    assert e.value.reason == "not an image (no known image format)"
    with pytest.raises(BadExampleError) as e:
        run([dict(op="decode_center_crop", size=32)], odd["truncated.jpg"])
    assert e.value.reason.startswith("cannot decode image (OSError: image file is truncated")
    with pytest.raises(BadExampleError):
        run([dict(op="decode_random_resized_crop", size=32)], odd["empty.png"])


def test_fused_eval_crop_matches_resize_then_center_crop():
    data = files.jpeg(300, 400, seed=3)
    fused = run([dict(op="decode_center_crop", size=224, crop_fraction=0.875)], data)["image"]
    plain = run([dict(op="decode"), dict(op="resize_small", size=256), dict(op="center_crop", size=224)],
                data)["image"]
    assert fused.shape == plain.shape == (224, 224, 3)
    assert np.abs(fused.astype(int) - plain).mean() < 2.0


def test_reduced_size_jpeg_decoding_is_used_and_close_to_full_decoding():
    data = files.jpeg(1200, 1600, seed=4)
    img = image_io.open_image(data)
    box = image_io.center_box(1200, 1600, 1.0)
    (small,) = image_io.crop_resize(img, [box], [(112, 112)])
    assert img.size == (200, 150)                # decoded at 1/8 scale, not 1600x1200
    full = image_io.array_crop_resize(image_io.decode(data), box, (112, 112))
    assert small.shape == full.shape == (112, 112, 3)
    assert np.abs(small.astype(int) - full).mean() < 3.0


def test_random_resized_crop_draws_the_same_box_for_bytes_and_arrays():
    data = files.jpeg(60, 80, seed=5)   # 48 px out of <= 80: no reduced decoding, so identical pixels
    spec = [dict(op="random_resized_crop", size=48)]
    for seed in range(5):
        a = run(spec, data, seed)["image"]
        b = run(spec, image_io.decode(data), seed)["image"]
        assert a.shape == (48, 48, 3) and np.array_equal(a, b)


def test_inception_box_respects_scale_and_ratio():
    rng = np.random.default_rng(0)
    areas, ratios = [], []
    for _ in range(2000):
        top, left, ch, cw = image_io.inception_box(rng, 100, 120, (0.08, 1.0), (3 / 4, 4 / 3))
        assert 0 <= top and top + ch <= 100 and 0 <= left and left + cw <= 120
        areas.append(ch * cw / 12000)
        ratios.append(cw / ch)
    assert min(areas) >= 0.07 and max(areas) <= 1.0
    assert 0.70 < np.median(ratios) < 1.3 and min(ratios) > 0.7 and max(ratios) < 1.42
    assert 0.45 < np.mean(areas) < 0.60          # uniform on [0.08, 1], less the misses


# --------------------------------------------------------------------------------- augmentation

def test_randaugment_is_deterministic_and_keeps_shape():
    img = files.smooth_rgb(64, 64, 1)
    spec = [dict(op="randaugment", num_ops=2, magnitude=9)]
    outs = [run(spec, img, seed)["image"] for seed in (0, 0, 1, 2, 3)]
    assert all(o.shape == (64, 64, 3) and o.dtype == np.uint8 for o in outs)
    assert np.array_equal(outs[0], outs[1])
    assert sum(not np.array_equal(o, img) for o in outs) >= 3
    assert np.array_equal(run([dict(op="randaugment", num_ops=0)], img)["image"], img)
    still = run([dict(op="randaugment", ops=["rotate"], magnitude=0, magnitude_std=0, prob=1.0)], img)
    assert np.array_equal(still["image"], img)
    with pytest.raises(ValueError, match=r"unknown RandAugment ops \['blur'\]"):
        build_ops([dict(op="randaugment", ops=["blur"])])


def test_color_ops():
    img = files.smooth_rgb(48, 48, 2)
    assert np.array_equal(run([dict(op="color_jitter", prob=0.0)], img)["image"], img)
    assert not np.array_equal(run([dict(op="color_jitter", prob=1.0)], img)["image"], img)
    yiq = run([dict(op="color_jitter", brightness=0, contrast=0, saturation=0, hue=0.05, prob=1.0)], img, 7)
    hsv = run([dict(op="color_jitter", brightness=0, contrast=0, saturation=0, hue=0.05, prob=1.0,
                    hue_method="hsv")], img, 7)
    assert np.abs(yiq["image"].astype(int) - hsv["image"]).mean() < 6.0
    g = run([dict(op="random_grayscale", prob=1.0)], img)["image"]
    assert g.shape == img.shape and (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()
    s = run([dict(op="solarize", prob=1.0, threshold=128)], img)["image"]
    assert np.array_equal(s, np.where(img >= 128, 255 - img, img))
    blurred = run([dict(op="gaussian_blur", prob=1.0, sigma=(2.0, 2.0))], img)["image"].astype(float)
    lap = lambda a: np.abs(np.diff(a, 2, axis=0)).mean()  # noqa: E731
    assert lap(blurred) < 0.5 * lap(img.astype(float))


def test_normalize_per_channel_and_scalar():
    img = files.smooth_rgb(20, 30, 3)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = run([dict(op="normalize", mean=mean, std=std)], img)["image"]
    ref = (img.astype(np.float32) / 255.0 - np.float32(mean)) / np.float32(std)
    assert out.dtype == np.float32 and out.shape == img.shape
    np.testing.assert_allclose(out, ref, atol=1e-5)
    out = run([dict(op="normalize")], img)["image"]
    assert np.array_equal(out, (img.astype(np.float32) / 255.0 - np.float32(0.5)) / np.float32(0.5))
    with pytest.raises(ValueError, match=r"normalize has 3 channel means/stds but the image has shape \(4, 4, 1\)"):
        run([dict(op="normalize", mean=mean, std=std)], np.zeros((4, 4, 1), np.uint8))


def test_multi_crop_layout_and_per_view_ops():
    data = files.jpeg(120, 160, seed=6)
    spec = [dict(op="multi_crop", global_size=32, local_size=16, num_global=2, num_local=4,
                 global_ops=[[dict(op="normalize")], [dict(op="solarize", prob=1.0), dict(op="normalize")]],
                 local_ops=[dict(op="flip_lr")])]
    a = run(spec, data, 3, label=np.int32(1))
    b = run(spec, data, 3, label=np.int32(1))
    assert sorted(a) == ["image_global", "image_local", "label"]
    assert a["image_global"].shape == (2, 32, 32, 3) and a["image_global"].dtype == np.float32
    assert a["image_local"].shape == (4, 16, 16, 3) and a["image_local"].dtype == np.uint8
    for k in a:
        assert np.array_equal(a[k], b[k])
    with pytest.raises(ValueError, match="multi_crop: global_ops has 1 op lists for 2 views"):
        build_ops([dict(op="multi_crop", global_ops=[[dict(op="flip_lr")]])])
    from vitjax.data.augment import dino_multi_crop
    d = run([dict(dino_multi_crop(num_local=2), global_size=40, local_size=24)], data)
    assert d["image_global"].shape == (2, 40, 40, 3) and d["image_local"].shape == (2, 24, 24, 3)
    assert d["image_global"].dtype == np.float32


def test_op_config_errors():
    with pytest.raises(ValueError, match=r"unknown preprocessing op 'randaugmnt'; nearest: \['randaugment'"):
        build_ops([dict(op="randaugmnt")])
    with pytest.raises(ValueError, match="bad arguments for preprocessing op 'flip_lr'"):
        build_ops([dict(op="flip_lr", p=0.5)])
    with pytest.raises(ValueError, match=r"unknown batch op 'mixup_cutmx'; nearest: \['mixup_cutmix'\]"):
        build_batch_ops([dict(op="mixup_cutmx")])
    out = run([dict(op="keep", keys=["label"])], b"x", label=np.int32(3), file_name="a.jpg")
    assert out == {"label": 3}


# ------------------------------------------------------------------------------------ batch ops

def _batch(b=16, k=10):
    rng = np.random.default_rng(0)
    return {"image": rng.normal(size=(b, 8, 8, 3)).astype(np.float32), "label": (np.arange(b) % k).astype(np.int32)}


def test_mixup_mixes_images_and_targets_with_the_same_lambda():
    (op,) = build_batch_ops([dict(op="mixup_cutmix", num_classes=10, mixup_alpha=0.8, cutmix_alpha=0.0)])
    batch = _batch()
    out = op(batch, np.random.default_rng(1))
    dist = out["label_dist"]
    assert dist.shape == (16, 10) and dist.dtype == np.float32
    np.testing.assert_allclose(dist.sum(1), 1.0, atol=1e-6)
    lam = dist[0, batch["label"][0]]
    np.testing.assert_allclose(out["image"], lam * batch["image"] + (1 - lam) * batch["image"][::-1], atol=1e-5)
    assert np.array_equal(out["label"], batch["label"])


def test_cutmix_lambda_is_the_pasted_area():
    (op,) = build_batch_ops([dict(op="mixup_cutmix", num_classes=10, mixup_alpha=0.0, cutmix_alpha=1.0)])
    batch = _batch()
    for seed in range(5):
        out = op(batch, np.random.default_rng(seed))
        pasted = (out["image"][0] != batch["image"][0]).any(-1).mean()
        lam = out["label_dist"][0, batch["label"][0]]
        np.testing.assert_allclose(1 - lam, pasted, atol=1e-6)


def test_mixup_prob_zero_gives_one_hot_and_labels_are_checked():
    (op,) = build_batch_ops([dict(op="mixup_cutmix", num_classes=10, prob=0.0, label_smoothing=0.1)])
    out = op(_batch(), np.random.default_rng(0))
    assert np.allclose(out["label_dist"].max(1), 0.91) and np.allclose(out["label_dist"].sum(1), 1.0)
    (op,) = build_batch_ops([dict(op="mixup_cutmix", num_classes=5)])
    with pytest.raises(ValueError, match=r"mixup_cutmix: labels must be in \[0, 5\), got \[0, 9\]; check num_classes"):
        op(_batch(), np.random.default_rng(0))


def test_uint8_batches_stay_uint8():
    (op,) = build_batch_ops([dict(op="mixup_cutmix", num_classes=4, cutmix_alpha=0.0)])
    batch = {"image": np.random.default_rng(0).integers(0, 256, (4, 6, 6, 3), dtype=np.uint8),
             "label": np.arange(4, dtype=np.int32)}
    assert op(batch, np.random.default_rng(0))["image"].dtype == np.uint8


def test_pil_image_for_mode_list_is_reasonable():
    # Every mode Pillow may hand us converts without error.
    for mode in ("1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "I", "F", "I;16"):
        img = Image.new(mode, (5, 4))
        assert image_io.to_rgb(img).mode == "RGB", mode
