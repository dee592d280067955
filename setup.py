"""vitjax: pretraining vision and multimodal transformers in JAX/Flax across TPU/GPU meshes.

Version ranges are the ones the test suite ran against (see README "Tested versions").
"""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "grain>=0.2.18,<0.3",
    "ml-collections>=1.1.0,<2",
    "tensorflow-datasets>=4.9.10,<5",   # data sources/metadata only; TensorFlow itself is not needed
    "array-record>=0.8.6,<0.9",
    "einops>=0.8.2,<0.9",
    "safetensors>=0.8.0,<0.9",
    "scikit-learn>=1.9.1,<2",           # ships the embedded digits dataset
    "scipy>=1.17,<2",                   # scaling-law fits (L-BFGS-B)
    "threadpoolctl>=3.5,<4",            # one BLAS thread per bootstrap worker in the fits
    "numpy>=2.4,<3",
    "pillow>=12,<14",
    "tqdm>=4.70,<5",                    # progress bars
    "tensorboardX>=2.6.5,<3",           # TensorBoard event files without TensorFlow
    "absl-py>=2.5,<3",
]

EXTRAS = {
    # NVIDIA GPUs: the CUDA plugin matching the jax version (CUDA 12 wheels bundled).
    "gpu": ["jax[cuda12]>=0.10.2,<0.11"],
    "tpu": ["jax[tpu]>=0.10.2,<0.11"],
    # PyTorch side of export/import and the parity tests. torch and torchvision are pinned as a
    # matching pair: timm, open_clip and transformers' vision models import torchvision, and a
    # torchvision built for another torch fails with "operator torchvision::nms does not exist".
    # `-c constraints.txt` pins the exact pair the tests ran with (README "Set up").
    "torch": [
        "torch>=2.14.1,<2.15",
        "torchvision>=0.29.1,<0.30",   # the build matching torch; timm/open_clip/transformers import it
        "transformers>=5.23.0,<5.24",   # v5 renames keys between minors: pinned to the tested minor
        "timm>=1.0.31,<1.1",
        "open-clip-torch>=3.3.0,<3.4",
    ],
    # python -m vitjax.export --format onnx (with the torch extra): torch.onnx.export's default
    # exporter since torch 2.9 (dynamo=True, torch.export) translates with onnxscript / onnx-ir;
    # onnxruntime checks the file against vitjax at export time.
    "onnx": ["onnx>=1.23.2,<1.24", "onnxscript>=0.7.2,<0.8", "onnx-ir>=1.1.0,<1.2", "onnxruntime>=1.32.0,<1.33"],
    # The `detection` evaluator's COCO mAP (vitjax.evals.detection): pycocotools is the reference.
    "detection": ["pycocotools>=2.0.11,<2.1"],
    # train.wandb=True: Weights & Biases logging (offline mode works without an account).
    "wandb": ["wandb>=0.31.0,<0.32"],
    # pytest-xdist: the README's test command runs the suite on 2 workers (CI budget: 20 minutes).
    "test": ["pytest>=8,<10", "pytest-xdist>=3.6,<4", "matplotlib>=3.8,<4", "wandb>=0.31.0,<0.32",
             "pycocotools>=2.0.11,<2.1"],
}

setup(
    name="vitjax",
    version="0.1.0",
    description="Pretrain ViT/DeiT, MAE, CLIP/SigLIP, Perceiver, Swin/PVT and more in JAX/Flax on TPU/GPU meshes",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["vitjax", "vitjax.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    license="Apache-2.0",
)
