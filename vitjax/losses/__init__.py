"""Loss functions shared by objectives (``contrastive``: CLIP's InfoNCE and SigLIP's sigmoid loss,
unsharded and sharded over the batch mesh axes)."""
from vitjax.losses.contrastive import (  # noqa: F401
    batch_axes, contrastive_loss, sharded_sigmoid_loss, sharded_softmax_loss, sigmoid_loss, softmax_loss)
