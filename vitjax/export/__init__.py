"""Export vitjax checkpoints to PyTorch (HF transformers, timm) and import PyTorch weights.

``python -m vitjax.export --workdir DIR --format hf|timm --out OUT`` writes ``OUT/model.safetensors``
and ``OUT/config.json``. Conversions per family live in their own modules (``vit``).
"""
