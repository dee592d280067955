"""Detection interop: YOLOS <-> HF YolosForObjectDetection and DETR's transformer + heads <-> HF
DetrForObjectDetection, tiny random configs, fp32, both directions (logits and boxes <= 1e-4)."""
import jax
import numpy as np
import pytest

import vitjax
from vitjax.interop import detr as detr_io
from vitjax.interop import registry
from vitjax.interop import yolos as yolos_io

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _close(ours, theirs, tol=1e-4):
    np.testing.assert_allclose(np.asarray(ours["logits"]), theirs.logits.detach().numpy(), atol=tol, rtol=0)
    np.testing.assert_allclose(np.asarray(ours["boxes"]), theirs.pred_boxes.detach().numpy(), atol=tol, rtol=0)


def _jitter(params, seed=1):
    """Every leaf moved by N(0, 0.02): no zero-initialised parameter hides a layout error."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: np.asarray(a) + 0.02 * rng.normal(size=a.shape).astype(np.float32), params)


def test_yolos_matches_hf_both_directions():
    model = vitjax.create_model("yolos", variant=None, image_size=32, patch_size=8, width=32, depth=2, num_heads=2,
                                mlp_dim=64, num_classes=3, num_detection_tokens=5, layernorm_eps=1e-12)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    torch.manual_seed(0)
    hf = transformers.YolosForObjectDetection(transformers.YolosConfig(**{
        k: v for k, v in yolos_io.hf_config(model).items() if k not in ("architectures", "model_type")})).eval()
    pixels = torch.tensor(x.transpose(0, 3, 1, 2))
    apply = jax.jit(model.apply)
    # HF -> vitjax: HF's own random weights.
    back = registry.import_state_dict(hf.state_dict(), model)
    with torch.no_grad():
        theirs = hf(pixel_values=pixels)
    _close(apply({"params": back}, x), theirs)
    # vitjax -> HF: other weights (the imported ones, jittered), exported and loaded strictly.
    params = _jitter(back)
    export = registry.exporter(model, "hf")
    hf.load_state_dict({k: torch.tensor(v) for k, v in export.state_dict(params).items()}, strict=True)
    with torch.no_grad():
        theirs = hf(pixel_values=pixels)
    _close(apply({"params": params}, x), theirs)


def test_yolos_import_refuses_mid_position_embeddings():
    model = vitjax.create_model("yolos", variant=None, image_size=32, patch_size=8, width=32, depth=1, num_heads=2,
                                mlp_dim=64, num_classes=3, num_detection_tokens=5)
    sd = {"vit.encoder.mid_position_embeddings": np.zeros((1, 1, 22, 32), np.float32)}
    with pytest.raises(ValueError, match="uses mid position embeddings"):
        yolos_io.from_hf(sd, model)


def test_detr_transformer_and_heads_match_hf_both_directions():
    model = vitjax.create_model("detr", backbone="vit", backbone_variant=None, backbone_image_size=32,
                                backbone_patch_size=8, backbone_width=16, backbone_depth=1, backbone_num_heads=2,
                                backbone_mlp_dim=32, num_classes=3, num_queries=6, hidden_dim=32, num_heads=2,
                                enc_layers=2, dec_layers=2, ffn_dim=64, dropout=0.0)
    det = model.detector()
    fmap = np.random.default_rng(0).normal(size=(2, 4, 4, 16)).astype(np.float32)
    torch.manual_seed(1)
    hf = transformers.DetrForObjectDetection(transformers.DetrConfig(
        **detr_io.hf_detr_config(model, backbone_channels=16))).eval()

    def hf_run(m):
        with torch.no_grad():
            f = torch.tensor(fmap.transpose(0, 3, 1, 2))
            flat = m.model.input_projection(f).flatten(2).transpose(1, 2)
            return m(pixel_values=None, inputs_embeds=flat)

    apply = jax.jit(det.apply)
    back = detr_io.detector_from_hf(hf.state_dict(), model)
    _close(apply({"params": back}, fmap), hf_run(hf))
    params = _jitter(back)           # HF initialises biases to zero: jittered, every entry is tested
    missing, unexpected = hf.load_state_dict({k: torch.tensor(v) for k, v in detr_io.detector_to_hf(params, model).items()},
                                             strict=False)
    assert not unexpected and missing and all(k.startswith("model.backbone.") for k in missing)
    _close(apply({"params": params}, fmap), hf_run(hf))
    (reason,) = registry.export_blockers(model, "hf")
    assert "DETR's backbone (ViT) has no counterpart in HF DetrForObjectDetection" in reason


def test_yolos_refuses_the_vit_formats_it_inherits():
    from vitjax.interop.registry import export_blockers, formats
    model = vitjax.create_model("yolos")
    assert formats(model) == ["hf"]
    for fmt in ("timm", "npz"):
        assert export_blockers(model, fmt) == [f"a YOLOS cannot be exported as --format {fmt}; see python -m "
                                               f"vitjax.export --help for what each model supports (a YOLOS "
                                               f"exports as: hf)"]
