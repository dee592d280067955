"""DeiT distillation (Touvron et al. 2021): a student with a distillation token learns from a teacher.

    loss = 1/2 CE(class head, label) + 1/2 D(distillation head, teacher)
    hard: D = CE(dist head, argmax teacher)                     (the paper's best, Table 3)
    soft: D = tau^2 KL(softmax(teacher / tau) || softmax(dist head / tau))

At inference the two heads' logits are averaged (``ViT(distilled=True)`` does this). The teacher is
restored once at start-up, from a vitjax workdir or a PyTorch ViT file (timm/HF, through
``vitjax.interop.vit``), and lives in ``TrainState.extra``: sharded like any parameters by its
logical axis names, checkpointed with the run, run inside the jitted step under ``stop_gradient``.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import optax

from vitjax import sharding as sh
from vitjax.models import create_model
from vitjax.models.registry import example_inputs
from vitjax.objectives.base import Objective, register_objective
from vitjax.objectives.classification import Classification
from vitjax.param_tree import abstract_variables
from vitjax.training.init_weights import import_weights
from vitjax.training.workdir import is_workdir, load_workdir


def _load_teacher(path: str, teacher_model: dict | None):
    """(model, params) of the teacher: a vitjax workdir (its own config), or PyTorch ViT weights
    with ``teacher_model`` giving the architecture (``create_model`` kwargs, e.g. name/variant)."""
    if is_workdir(path):
        _, model, params = load_workdir(path)
        return model, jax.device_get(params)
    if not os.path.exists(path):
        raise ValueError(f"objective.teacher={path!r} does not exist; give a vitjax workdir (the --workdir "
                         f"of a finished run) or a timm/HF ViT weights file")
    if not teacher_model:
        raise ValueError(f"objective.teacher={path!r} is a weights file: also set objective.teacher_model "
                         f"(e.g. dict(name='vit', variant='B/16', num_classes=1000, image_size=224))")
    kw = dict(teacher_model)
    model = create_model(kw.pop("name", "vit"), **kw)
    return model, import_weights(path, model)


@register_objective("distillation")
class Distillation(Objective):
    """Attributes:
      teacher: a vitjax workdir or a timm/HF ViT weights file (then ``teacher_model`` too).
      kind: "hard" (teacher argmax, the paper's choice) or "soft" (KL at temperature ``tau``).
      tau: soft-distillation temperature (paper: 3.0). alpha: weight of the distillation term (0.5).
      label_smoothing: on the class head's cross-entropy (paper: 0.1).
    """
    def __init__(self, teacher: str | None = None, kind: str = "hard", tau: float = 3.0, alpha: float = 0.5,
                 label_smoothing: float = 0.1, teacher_model=None):
        if not teacher:
            raise ValueError("objective.teacher is required: a vitjax workdir or a timm/HF ViT weights file")
        if kind not in ("hard", "soft"):
            raise ValueError(f"objective.kind={kind!r}; choose 'hard' or 'soft'")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"objective.alpha={alpha} must be in [0, 1]")
        self.teacher_path, self.kind, self.tau, self.alpha = teacher, kind, float(tau), float(alpha)
        self.teacher_model_kwargs = dict(teacher_model) if teacher_model else None
        self.classification = Classification(label_smoothing)
        self._teacher = None

    # -------------------------------------------------------------------------------- teacher
    def teacher(self):
        if self._teacher is None:
            self._teacher = _load_teacher(self.teacher_path, self.teacher_model_kwargs)
        return self._teacher

    def check_model(self, model) -> None:
        if not getattr(model, "distilled", False):
            raise ValueError("objective 'distillation' needs a student with a distillation token: "
                             "config.model.name='deit' (or model.distilled=True)")
        teacher, _ = self.teacher()
        if getattr(teacher, "num_classes", None) != model.num_classes:
            raise ValueError(f"the teacher ({self.teacher_path}) predicts {getattr(teacher, 'num_classes', None)} "
                             f"classes but the student has num_classes={model.num_classes}")
        t_size = (getattr(teacher, "image_size", None), getattr(teacher, "in_channels", None))
        s_size = (model.image_size, model.in_channels)
        if t_size != s_size:
            raise ValueError(f"the teacher ({self.teacher_path}) takes {t_size[0]}x{t_size[0]} images with "
                             f"{t_size[1]} channels but the student's data are {s_size[0]}x{s_size[0]} with "
                             f"{s_size[1]}; distil at the teacher's resolution or fine-tune the teacher first")

    def abstract_state(self, model, run, abstract_params, param_shardings):
        teacher, params = self.teacher()
        boxed = abstract_variables(teacher, *example_inputs(teacher))["params"]
        shardings = {"teacher": sh.logical_shardings(boxed, run.mesh, run.rules)}
        abstract = {"teacher": jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)}
        return abstract, shardings

    def init_state(self, model, run, params):
        return {"teacher": self.teacher()[1]}

    # ---------------------------------------------------------------------------------- losses
    def example_batch(self, model, batch_size):
        return self.classification.example_batch(model, batch_size)

    def _distill_term(self, dist_logits, teacher_logits):
        if self.kind == "hard":
            return optax.softmax_cross_entropy_with_integer_labels(dist_logits, jnp.argmax(teacher_logits, -1)).mean()
        t = jax.nn.softmax(teacher_logits / self.tau)
        log_s = jax.nn.log_softmax(dist_logits / self.tau)
        kl = jnp.sum(t * (jnp.log(jnp.clip(t, 1e-12)) - log_s), axis=-1)
        return (self.tau ** 2) * kl.mean()

    def loss(self, model, params, state, batch, rng, *, train, step=None, run=None):
        teacher, _ = self.teacher()
        t_logits = teacher.apply({"params": jax.lax.stop_gradient(state["teacher"])}, batch["image"],
                                 train=False).astype(jnp.float32)
        cls_logits, dist_logits = model.apply({"params": params}, batch["image"], train=train,
                                              return_heads=True, rngs={"dropout": rng})
        cls_logits, dist_logits = cls_logits.astype(jnp.float32), dist_logits.astype(jnp.float32)
        targets = self.classification._targets(batch, cls_logits.shape[-1])
        ce = optax.softmax_cross_entropy(cls_logits, targets).mean()
        distill = self._distill_term(dist_logits, t_logits)
        loss = (1 - self.alpha) * ce + self.alpha * distill
        hard = batch["label"]
        metrics = {"loss": loss, "cls_loss": ce, "distill_loss": distill,
                   "top1": (jnp.argmax(cls_logits + dist_logits, -1) == hard).mean(),
                   "teacher_agreement": (jnp.argmax(dist_logits, -1) == jnp.argmax(t_logits, -1)).mean()}
        return loss, metrics, {}

    def eval_metrics(self, model, params, batch):
        return self.classification.eval_metrics(model, params, batch)
