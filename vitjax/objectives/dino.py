"""DINO self-distillation (Caron et al. 2021): a student matches a momentum teacher without labels.

Per step, with global crops g1, g2 (teacher and student) and local crops l1..lN (student only):

    P_t(x) = softmax((teacher(x) - c) / tau_t)      centring (c) and sharpening (tau_t < tau_s)
    P_s(x) = softmax(student(x) / tau_s)
    loss   = mean over pairs (teacher view i, student view j), i != j, of  -sum_k P_t(x_i) log P_s(x_j)

    teacher <- m teacher + (1 - m) student   after the optimizer step, m: cosine 0.996 -> 1
    c       <- 0.9 c + 0.1 mean(teacher outputs of the batch)

The teacher temperature warms up linearly (per epoch) from 0.04 to 0.07 over the first 30 epochs;
the student's is 0.1. The head's last layer gets no update in the first epoch (``frozen_until``).
The teacher and the centre live in ``TrainState.extra``: the teacher sharded exactly as the student
(same logical names), both checkpointed with the run. Eval steps score the teacher, as the paper
does: kNN (k=20, T=0.07), nearest class mean and a linear probe on the backbone's class token
(``eval/knn_top1``, ``eval/ncm_top1``, ``eval/linear_top1``).

Collapse shows in two train metrics: ``teacher_entropy`` (mean entropy of P_t per image; log K when
every output is uniform) and ``teacher_batch_entropy`` (entropy of the batch-mean P_t; 0 when one
dimension dominates). Training that works keeps the first well below log K and the second high.

Batches come from the ``multi_crop`` data op: ``image_global`` [B, 2, G, G, C] and ``image_local``
[B, N, L, L, C] (absent when N = 0: plain two-view DINO).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vitjax.models.dino import DINO
from vitjax.evals.probes import ProbeOptions
from vitjax.objectives.base import Objective, register_objective


def teacher_momentum(step, total_steps: int, base: float):
    """DINO's cosine schedule from ``base`` at step 0 to 1 at the end."""
    frac = jnp.minimum(step, total_steps) / max(total_steps, 1)
    return 1.0 - (1.0 - base) * (jnp.cos(jnp.pi * frac) + 1.0) / 2.0


def teacher_temperature(step, steps_per_epoch: int, warmup_temp: float, temp: float, warmup_epochs: int):
    """The official schedule: ``np.linspace(warmup_temp, temp, warmup_epochs)`` indexed by epoch,
    then ``temp``."""
    epoch = step // steps_per_epoch
    ramp = warmup_temp + (temp - warmup_temp) * epoch / max(warmup_epochs - 1, 1)
    return jnp.where(epoch < warmup_epochs, ramp, temp)


def sinkhorn_knopp(logits, temp, iterations: int = 3):
    """DINOv2's Sinkhorn-Knopp centring (Oquab et al. 2023; SwAV, Caron et al. 2020): logits
    [N, K] of the whole (global) batch -> assignments [N, K], each row summing to 1, after
    ``iterations`` rounds of giving every prototype 1/K and every sample 1/N of the mass of
    exp(logits / temp). The same arithmetic as dinov2's ``sinkhorn_knopp_teacher``, in log space
    (no overflow at small temperatures). Under ``jit`` the sums run over the global batch, which is
    what its all-reduces compute."""
    n, k = logits.shape
    log_q = logits.astype(jnp.float32) / temp
    log_q = log_q - jax.nn.logsumexp(log_q)
    for _ in range(iterations):
        log_q = log_q - jax.nn.logsumexp(log_q, axis=0, keepdims=True) - jnp.log(k)
        log_q = log_q - jax.nn.logsumexp(log_q, axis=1, keepdims=True) - jnp.log(n)
    return jnp.exp(log_q + jnp.log(n))


def dino_loss(student, teacher, center, student_temp, teacher_temp, centering: str = "ema",
              sinkhorn_iterations: int = 3):
    """student [B, V, K], teacher [B, T, K] (the first T student views are the teacher's views, in
    the same order) -> (loss, per-image teacher probabilities [B, T, K]). Cross-entropy averaged
    over all (teacher view i, student view j != i) pairs and the batch.

    ``centering``: "ema" (DINO): softmax((teacher - center) / teacher_temp); "sinkhorn_knopp"
    (DINOv2): ``sinkhorn_knopp`` over all B*T teacher outputs (``center`` unused)."""
    if centering == "sinkhorn_knopp":
        b, n_t, k = teacher.shape
        t = sinkhorn_knopp(teacher.reshape(b * n_t, k), teacher_temp, sinkhorn_iterations).reshape(b, n_t, k)
    else:
        t = jax.nn.softmax((teacher.astype(jnp.float32) - center) / teacher_temp, axis=-1)
    t = jax.lax.stop_gradient(t)
    log_s = jax.nn.log_softmax(student.astype(jnp.float32) / student_temp, axis=-1)
    ce = -jnp.einsum("bik,bjk->bij", t, log_s).mean(axis=0)          # [T, V]
    n_t, n_v = ce.shape
    pairs = 1.0 - jnp.eye(n_t, n_v)
    return jnp.sum(ce * pairs) / jnp.sum(pairs), t


def entropy(p, axis=-1):
    return -jnp.sum(p * jnp.log(jnp.clip(p, 1e-30)), axis=axis)


@register_objective("dino")
class DINOObjective(Objective):
    """Attributes:
      num_local_crops: N local crops per image (paper: 10 for ViT-S/16, 8 in the official defaults;
        0 = two-view DINO). Must match the data's ``multi_crop`` op.
      local_crop_size: their side (paper: 96).
      student_temp: 0.1. teacher_temp: the final teacher temperature (0.04 to 0.07; 0.07 after the
        warmup). warmup_teacher_temp, warmup_teacher_temp_epochs: the warmup (0.04, 30 epochs).
      center_momentum: 0.9. momentum_teacher: the EMA's starting momentum (0.996; cosine to 1).
      centering: how the teacher's outputs are balanced across prototypes: "ema" (DINO: subtract
        the EMA centre, then the sharpened softmax) or "sinkhorn_knopp" (DINOv2: Sinkhorn-Knopp
        over the batch's teacher outputs at the teacher temperature; the centre is still tracked
        but not used). sinkhorn_iterations: its rounds (DINOv2: 3).
      freeze_last_layer_epochs: the head's last layer is held fixed for these epochs (1).
      eval_teacher: evaluate (and probe) the teacher, as the paper (True) or the student.
      probe, probe_train_examples, knn_k, knn_temperature, linear_*, num_classes: the probes run at
        eval steps (``vitjax.evals.probes.ProbeOptions``; defaults: 100 epochs of SGD, batch 1024).
    """
    def __init__(self, num_local_crops: int = 8, local_crop_size: int = 96, student_temp: float = 0.1,
                 teacher_temp: float = 0.07, warmup_teacher_temp: float = 0.04,
                 warmup_teacher_temp_epochs: int = 30, center_momentum: float = 0.9,
                 momentum_teacher: float = 0.996, centering: str = "ema", sinkhorn_iterations: int = 3,
                 freeze_last_layer_epochs: float = 1.0,
                 eval_teacher: bool = True, probe=("knn", "ncm", "linear"), probe_train_examples=None,
                 knn_k: int = 20, knn_temperature: float = 0.07, linear_epochs: int = 100,
                 linear_batch_size: int = 1024, linear_lr: float = 0.1, linear_optimizer: str = "sgd",
                 num_classes=None):
        if num_local_crops < 0:
            raise ValueError(f"objective.num_local_crops={num_local_crops} must be >= 0 (0: two-view DINO)")
        for name, v in (("student_temp", student_temp), ("teacher_temp", teacher_temp),
                        ("warmup_teacher_temp", warmup_teacher_temp)):
            if v <= 0:
                raise ValueError(f"objective.{name}={v} must be > 0")
        if not 0.0 <= momentum_teacher <= 1.0 or not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"objective.momentum_teacher={momentum_teacher} and center_momentum="
                             f"{center_momentum} must be in [0, 1] (paper: 0.996 and 0.9)")
        if centering not in ("ema", "sinkhorn_knopp"):
            raise ValueError(f"objective.centering={centering!r}; choose 'ema' (DINO) or 'sinkhorn_knopp' (DINOv2)")
        if sinkhorn_iterations < 1:
            raise ValueError(f"objective.sinkhorn_iterations={sinkhorn_iterations} must be >= 1 (DINOv2: 3)")
        self.centering, self.sinkhorn_iterations = centering, int(sinkhorn_iterations)
        self.num_local, self.local_size = int(num_local_crops), int(local_crop_size)
        self.student_temp, self.teacher_temp = float(student_temp), float(teacher_temp)
        self.warmup_teacher_temp = float(warmup_teacher_temp)
        self.warmup_epochs = int(warmup_teacher_temp_epochs)
        self.center_momentum, self.momentum_teacher = float(center_momentum), float(momentum_teacher)
        self.freeze_last_layer_epochs = float(freeze_last_layer_epochs)
        self.eval_teacher = bool(eval_teacher)
        self.probes = ProbeOptions(probe, probe_train_examples, knn_k, knn_temperature, linear_epochs,
                                   linear_batch_size, linear_lr, linear_optimizer, num_classes)

    # -------------------------------------------------------------------------- model + data
    def check_model(self, model) -> None:
        if not isinstance(model, DINO):
            raise ValueError(f"objective 'dino' needs a DINO model (config.model.name='dino'), got "
                             f"{type(model).__name__}")
        if self.num_local and self.local_size % model.patch_size:
            raise ValueError(f"objective.local_crop_size={self.local_size} is not a multiple of the model's "
                             f"patch_size={model.patch_size}; DINO uses 96 with 16-pixel patches")

    def example_batch(self, model, batch_size):
        c = model.in_channels
        out = {"image_global": jax.ShapeDtypeStruct((batch_size, 2, model.image_size, model.image_size, c),
                                                    jnp.float32)}
        if self.num_local:
            out["image_local"] = jax.ShapeDtypeStruct((batch_size, self.num_local, self.local_size,
                                                       self.local_size, c), jnp.float32)
        return out

    def init_inputs(self, batch):
        return (batch["image_global"][:, 0],)

    def check_batch(self, model, batch) -> None:
        self._check_batch(batch)        # the crop layout first: its message names the objective's keys
        super().check_batch(model, batch)

    def _check_batch(self, batch):
        if "image_global" not in batch:
            raise ValueError(f"objective 'dino' needs multi-crop batches (keys image_global/image_local) but "
                             f"got keys {sorted(batch)}; end input.train_ops with the multi_crop op "
                             f"(vitjax.data.augment.dino_multi_crop)")
        n_local = batch["image_local"].shape[1] if "image_local" in batch else 0
        if batch["image_global"].shape[1] != 2 or n_local != self.num_local:
            raise ValueError(f"the data give {batch['image_global'].shape[1]} global and {n_local} local crops "
                             f"but objective.num_local_crops={self.num_local} (and DINO uses 2 global "
                             f"crops); make the multi_crop op's num_local equal objective.num_local_crops")
        if n_local and batch["image_local"].shape[2] != self.local_size:
            raise ValueError(f"the data's local crops are {batch['image_local'].shape[2]} pixels but "
                             f"objective.local_crop_size={self.local_size}; make them equal")

    # ----------------------------------------------------------------------------- state
    def abstract_state(self, model, run, abstract_params, param_shardings):
        k = model.out_dim
        abstract = {"teacher": abstract_params, "center": jax.ShapeDtypeStruct((k,), jnp.float32)}
        return abstract, {"teacher": param_shardings, "center": run.replicated()}

    def init_state(self, model, run, params):
        # The teacher starts as a copy of the student (its own buffers: the step donates the state).
        return {"teacher": jax.tree.map(jnp.copy, params),
                "center": jnp.zeros((model.out_dim,), jnp.float32)}

    def frozen_until(self, params, run):
        n = int(round(self.freeze_last_layer_epochs * run.steps_per_epoch))

        def until(path, _):
            names = [getattr(k, "key", None) for k in path]
            return n if ("head" in names and str(names[-1]).startswith("last_layer")) else 0
        return jax.tree_util.tree_map_with_path(until, params) if n > 0 else None

    def eval_params(self, params, state):
        return state["teacher"] if self.eval_teacher else params

    # ------------------------------------------------------------------------------ loss
    def _forward(self, model, params, batch, rng, train):
        """Student outputs [B, 2 + N, K] (global views first) and the globals flattened [2B, ...]."""
        g = batch["image_global"]
        b = g.shape[0]
        # Batch-major flattening ([B, V] -> [B*V]) keeps each device's rows on that device.
        g_flat = g.reshape((b * 2,) + g.shape[2:])
        r_g, r_l = jax.random.split(rng)
        views = [model.apply({"params": params}, g_flat, train=train, rngs={"dropout": r_g}).reshape(b, 2, -1)]
        if self.num_local:
            loc = batch["image_local"]
            l_flat = loc.reshape((b * self.num_local,) + loc.shape[2:])
            views.append(model.apply({"params": params}, l_flat, train=train,
                                     rngs={"dropout": r_l}).reshape(b, self.num_local, -1))
        return jnp.concatenate(views, axis=1), g_flat

    def temperatures(self, step, steps_per_epoch: int):
        return teacher_temperature(step, steps_per_epoch, self.warmup_teacher_temp, self.teacher_temp,
                                   self.warmup_epochs)

    def loss(self, model, params, state, batch, rng, *, train, step, run):
        self._check_batch(batch)
        step = jnp.zeros((), jnp.int32) if step is None else step
        student, g_flat = self._forward(model, params, batch, rng, train)
        teacher = model.apply({"params": jax.lax.stop_gradient(state["teacher"])}, g_flat, train=False)
        teacher = teacher.reshape(student.shape[0], 2, -1).astype(jnp.float32)
        t_temp = self.temperatures(step, run.steps_per_epoch)
        loss, p_t = dino_loss(student, teacher, state["center"], self.student_temp, t_temp, self.centering,
                              self.sinkhorn_iterations)
        h = entropy(p_t).mean()
        metrics = {"loss": loss, "teacher_entropy": h,
                   "teacher_batch_entropy": entropy(p_t.mean(axis=(0, 1))),
                   "kl": loss - h, "teacher_temp": t_temp,
                   "momentum": teacher_momentum(step, run.total_steps, self.momentum_teacher)}
        return loss, metrics, {"teacher_mean": teacher.mean(axis=(0, 1))}

    def update_state(self, state, params, aux, step, run):
        m = teacher_momentum(step, run.total_steps, self.momentum_teacher)
        teacher = jax.tree.map(lambda t, s: (m * t + (1.0 - m) * s).astype(t.dtype), state["teacher"], params)
        cm = self.center_momentum
        center = cm * state["center"] + (1.0 - cm) * aux["teacher_mean"]
        return {"teacher": teacher, "center": center}

    def eval_metrics(self, model, params, batch):
        # DINO's own loss needs multi-crop views; evaluation is the probes (default_evals).
        return {}

    # ------------------------------------------------------------------------------ evaluation
    def feature_fn(self, model):
        """The backbone's normalised class token (``DINO.features``), what the paper's probes read."""
        return lambda p, images: model.apply({"params": p}, images, method=DINO.features)

    def default_evals(self):
        return self.probes.specs()

