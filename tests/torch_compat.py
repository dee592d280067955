"""Makes timm/open_clip importable next to a CPU-only torch.

The only torchvision wheel matching torch 2.13 is a CUDA build whose import dies on CPU torch with
``operator torchvision::nms does not exist``; defining the missing op schemas first lets it (and
so timm and open_clip, which import it) load. No effect with a CUDA torch or without torch.
"""
import sys


def fix_cpu_torchvision() -> None:
    try:
        import torch
    except ImportError:
        return
    if torch.version.cuda is None and not hasattr(torch.ops.torchvision, "nms"):
        try:
            lib = torch.library.Library("torchvision", "DEF")
            lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            sys.modules[__name__]._tv_lib = lib   # keep the definitions alive
        except Exception:
            pass
