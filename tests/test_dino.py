"""DINO: the loss and the head equal the official PyTorch code (facebookresearch/dino), the schedules
are the paper's, and in the train step the teacher is the EMA of the student (sharded like it,
checkpointed, resumed), the centre follows the teacher outputs, the last layer stays fixed for the
first epoch; two-view DINO (no local crops) runs; bad settings fail at start-up."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitjax.config import ConfigError
from vitjax.models.dino import DINO, DINOHead
from vitjax.objectives.dino import dino_loss, sinkhorn_knopp, teacher_momentum, teacher_temperature

pytestmark = pytest.mark.usefixtures("fast_compiles")


# ------------------------------------------------------------------- the official code, verbatim logic
def _official_loss(torch, student_output, teacher_output, center, ncrops, temp, student_temp=0.1):
    """facebookresearch/dino main_dino.py DINOLoss.forward (views concatenated view-major)."""
    F = torch.nn.functional
    student_out = (student_output / student_temp).chunk(ncrops)
    teacher_out = F.softmax((teacher_output - center) / temp, dim=-1).detach().chunk(2)
    total, n = 0, 0
    for iq, q in enumerate(teacher_out):
        for v in range(len(student_out)):
            if v == iq:
                continue
            total += torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1).mean()
            n += 1
    return total / n


@pytest.mark.parametrize("n_local", [0, 3])
def test_loss_equals_official_dino_loss(n_local):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    b, k, v = 5, 32, 2 + n_local
    student = rng.normal(size=(b, v, k)).astype(np.float32)
    teacher = rng.normal(size=(b, 2, k)).astype(np.float32)
    center = rng.normal(size=(k,)).astype(np.float32) * 0.1
    ours, _ = dino_loss(jnp.asarray(student), jnp.asarray(teacher), jnp.asarray(center), 0.1, 0.04)
    # The official code concatenates views view-major: [view0 batch, view1 batch, ...].
    ref = _official_loss(torch, torch.tensor(student.transpose(1, 0, 2).reshape(v * b, k)),
                         torch.tensor(teacher.transpose(1, 0, 2).reshape(2 * b, k)),
                         torch.tensor(center[None]), v, 0.04)
    np.testing.assert_allclose(float(ours), float(ref), rtol=1e-5)
    # Only the student gets gradients; the teacher side is a fixed target.
    g_t = jax.grad(lambda t: dino_loss(jnp.asarray(student), t, jnp.asarray(center), 0.1, 0.04)[0])(
        jnp.asarray(teacher))
    assert float(jnp.abs(g_t).max()) == 0.0


def _official_sinkhorn_knopp(torch, teacher_output, teacher_temp, n_iterations=3):
    """facebookresearch/dinov2 dinov2/loss/dino_clstoken_loss.py sinkhorn_knopp_teacher (one process)."""
    Q = torch.exp(teacher_output.float() / teacher_temp).t()
    B, K = Q.shape[1], Q.shape[0]
    Q /= torch.sum(Q)
    for _ in range(n_iterations):
        Q /= torch.sum(Q, dim=1, keepdim=True)
        Q /= K
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= B
    Q *= B
    return Q.t()


@pytest.mark.parametrize("iterations", [1, 3])
def test_sinkhorn_knopp_centering_equals_dinov2(iterations):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    b, k = 6, 40
    student = rng.normal(size=(b, 4, k)).astype(np.float32)
    teacher = rng.normal(size=(b, 2, k)).astype(np.float32)
    ref = _official_sinkhorn_knopp(torch, torch.tensor(teacher.reshape(2 * b, k)), 0.5, iterations).numpy()
    ours = np.asarray(sinkhorn_knopp(jnp.asarray(teacher.reshape(2 * b, k)), 0.5, iterations))
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)
    # Rows are assignments: each sums to 1 (the last round normalises the samples).
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, rtol=1e-5)
    # The loss takes the Sinkhorn targets in place of the centred softmax, the centre is ignored.
    loss, p_t = dino_loss(jnp.asarray(student), jnp.asarray(teacher), jnp.full((k,), 7.0), 0.1, 0.5,
                          "sinkhorn_knopp", iterations)
    np.testing.assert_allclose(np.asarray(p_t).reshape(2 * b, k), ref, rtol=1e-5, atol=1e-7)
    log_s = np.asarray(jax.nn.log_softmax(jnp.asarray(student) / 0.1, axis=-1))
    ce = -np.einsum("bik,bjk->ij", ref.reshape(b, 2, k), log_s) / b
    pairs = 1 - np.eye(2, 4)
    np.testing.assert_allclose(float(loss), (ce * pairs).sum() / pairs.sum(), rtol=1e-5)
    # Log space: a temperature at which exp(logits / temp) overflows float32 still gives assignments.
    sharp = np.asarray(sinkhorn_knopp(jnp.asarray(teacher.reshape(2 * b, k)) * 10, 0.01, iterations))
    assert np.isfinite(sharp).all() and np.allclose(sharp.sum(axis=1), 1.0, rtol=1e-5)


def test_head_equals_official_dino_head():
    torch = pytest.importorskip("torch")
    nn_t = torch.nn
    head = DINOHead(out_dim=48, hidden_dim=24, bottleneck_dim=8, num_layers=3)
    x = np.random.default_rng(1).normal(size=(4, 16)).astype(np.float32)
    params = jax.tree.map(np.asarray, head.init(jax.random.key(0), jnp.asarray(x))["params"])
    params = jax.tree.map(lambda a: getattr(a, "value", a), params,
                          is_leaf=lambda a: hasattr(a, "value"))
    ours = np.asarray(head.apply({"params": params}, jnp.asarray(x)))
    # Official DINOHead (use_bn=False, norm_last_layer=True): mlp.{0,2,4}, weight-normed last layer
    # with weight_g = 1 and weight_v; weight = g * v / ||v|| per output (dim 0 of [out, in]).
    mlp = nn_t.Sequential(nn_t.Linear(16, 24), nn_t.GELU(), nn_t.Linear(24, 24), nn_t.GELU(), nn_t.Linear(24, 8))
    with torch.no_grad():
        for i, j in ((0, 0), (2, 1), (4, 2)):
            mlp[i].weight.copy_(torch.tensor(params[f"mlp{j}"]["kernel"].T))
            mlp[i].bias.copy_(torch.tensor(params[f"mlp{j}"]["bias"]))
        v = torch.tensor(params["last_layer_v"].T)                  # [out, in]
        w = torch.ones(48, 1) * v / v.norm(dim=1, keepdim=True)
        z = nn_t.functional.normalize(mlp(torch.tensor(x)), dim=-1, p=2)
        ref = (z @ w.T).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    # The last layer is scale-free in v (weight decay on v cannot change the function).
    p2 = dict(params, last_layer_v=params["last_layer_v"] * 3.0)
    np.testing.assert_allclose(np.asarray(head.apply({"params": p2}, jnp.asarray(x))), ours, atol=1e-5)


def test_schedules_are_the_papers():
    # Momentum: cosine from 0.996 to 1 (official cosine_scheduler(0.996, 1, epochs, niter)).
    total = 1000
    steps = np.arange(total)
    official = 1 + 0.5 * (0.996 - 1) * (1 + np.cos(np.pi * steps / total))
    np.testing.assert_allclose(np.asarray(teacher_momentum(jnp.asarray(steps), total, 0.996)), official, atol=1e-7)
    assert float(teacher_momentum(total, total, 0.996)) == pytest.approx(1.0)
    # Teacher temperature: np.linspace(0.04, 0.07, 30) per epoch, then 0.07.
    spe, epochs = 7, 40
    sched = np.concatenate([np.linspace(0.04, 0.07, 30), np.full(epochs - 30, 0.07)])
    got = np.asarray(teacher_temperature(jnp.arange(spe * epochs), spe, 0.04, 0.07, 30))
    np.testing.assert_allclose(got, np.repeat(sched, spe), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(teacher_temperature(jnp.arange(5), 1, 0.04, 0.07, 0)), 0.07)


# --------------------------------------------------------------------------------- the train step
def _config(tmp_path, n_local=2, **over):
    from tests.conftest import make_tiny_dino_config
    return make_tiny_dino_config(n_local, **over)


def _leaf(tree, *path):
    for p in path:
        tree = tree[p]
    return np.asarray(jax.device_get(tree))


def test_teacher_is_ema_of_student_sharded_checkpointed_and_last_layer_frozen(tmp_path):
    from vitjax.training.trainer import Trainer
    c = _config(tmp_path, **{"mesh.data": "2", "mesh.fsdp": "4",
                             "objective.freeze_last_layer_epochs": str(3 / 89)})   # 3 steps of 89 per epoch
    tr = Trainer(c, str(tmp_path / "run"))
    assert tr.steps_per_epoch == 89
    tr.setup_state()
    state = tr.init_state()
    # The teacher starts as the student and is sharded exactly like it (FSDP splits embed dims).
    assert jax.tree.structure(state.extra["teacher"]) == jax.tree.structure(state.params)
    t_sh = state.extra["teacher"]["backbone"]["encoder"]["block0"]["mlp"]["fc1"]["kernel"].sharding
    assert t_sh == state.params["backbone"]["encoder"]["block0"]["mlp"]["fc1"]["kernel"].sharding
    assert t_sh.spec[0] == "fsdp"
    np.testing.assert_array_equal(_leaf(state.extra["teacher"], "head", "last_layer_v"),
                                  _leaf(state.params, "head", "last_layer_v"))

    from vitjax.data.pipeline import train_iterator
    from vitjax import sharding as sh
    it = train_iterator(tr.train_source, c.input.train_ops, tr.batch_size, seed=0, process_index=0,
                        process_count=1, num_threads=0)
    before = jax.device_get(state)
    batch = sh.host_local_to_global(next(it), tr.mesh, tr.rules)
    step = tr.compiled_train_step(batch)
    state, metrics = step(state, batch)
    after = jax.device_get(state)
    m = float(teacher_momentum(0, tr.total_steps, c.objective.momentum_teacher))
    for path in (("backbone", "encoder", "block0", "attn", "query", "kernel"), ("head", "mlp0", "kernel")):
        expect = m * _leaf(before.extra["teacher"], *path) + (1 - m) * _leaf(after.params, *path)
        np.testing.assert_allclose(_leaf(after.extra["teacher"], *path), expect, rtol=1e-5, atol=1e-7)
        assert not np.allclose(_leaf(after.params, *path), _leaf(before.params, *path))
    # Centre: 0.9 * 0 + 0.1 * mean teacher output, a non-zero [K] vector.
    assert after.extra["center"].shape == (64,) and np.abs(after.extra["center"]).sum() > 0
    # The last layer is frozen for the first 3 steps (no gradient, no weight decay), then learns.
    for _ in range(2):
        state, _ = step(state, sh.host_local_to_global(next(it), tr.mesh, tr.rules))
    np.testing.assert_array_equal(_leaf(state.params, "head", "last_layer_v"), _leaf(before.params, "head", "last_layer_v"))
    state, _ = step(state, sh.host_local_to_global(next(it), tr.mesh, tr.rules))
    assert not np.allclose(_leaf(state.params, "head", "last_layer_v"), _leaf(before.params, "head", "last_layer_v"))
    metrics = jax.device_get(metrics)
    assert 0 < float(metrics["train/teacher_entropy"]) <= np.log(64) + 1e-4
    assert float(metrics["train/teacher_temp"]) == pytest.approx(c.objective.warmup_teacher_temp)


def test_run_logs_probes_and_entropy_and_resumes_teacher(tmp_path):
    from vitjax.training.trainer import Trainer
    c = _config(tmp_path)
    tr = Trainer(c, str(tmp_path / "run"))
    final = tr.train()
    assert {"eval/knn_top1", "eval/ncm_top1"} <= set(final) and 0.0 <= final["eval/knn_top1"] <= 1.0
    rec = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    ent = [r["train/teacher_entropy"] for r in rec if "train/teacher_entropy" in r]
    assert len(ent) == 4 and all(0 < e <= np.log(64) + 1e-4 for e in ent)
    teacher, center = jax.device_get(tr.state.extra["teacher"]), jax.device_get(tr.state.extra["center"])
    # A resumed run restores teacher and centre from the step-4 checkpoint (what train() resumes from).
    from vitjax.training.checkpoint import Checkpointer
    ck = Checkpointer(str(tmp_path / "run"), async_save=False)
    restored = ck.restore(4, tr.abstract_state)
    ck.close()
    np.testing.assert_array_equal(jax.device_get(restored.extra["center"]), center)
    np.testing.assert_array_equal(_leaf(restored.extra["teacher"], "head", "last_layer_v"),
                                  _leaf(teacher, "head", "last_layer_v"))
    assert not np.allclose(_leaf(restored.extra["teacher"], "head", "mlp0", "kernel"),
                           _leaf(jax.device_get(tr.state.params), "head", "mlp0", "kernel"))


def test_two_view_dino_without_local_crops(tmp_path):
    from vitjax import sharding as sh
    from vitjax.data.pipeline import train_iterator
    from vitjax.training.trainer import Trainer
    c = _config(tmp_path, n_local=0)
    tr = Trainer(c, str(tmp_path / "run"))
    assert "image_local" not in tr.objective.example_batch(tr.model, 4)
    tr.setup_state()
    state = tr.init_state()
    local = next(train_iterator(tr.train_source, c.input.train_ops, tr.batch_size, seed=0, process_index=0,
                                process_count=1, num_threads=0))
    assert sorted(local) == ["image_global", "label"]
    batch = sh.host_local_to_global(local, tr.mesh, tr.rules)
    with tr.mesh_context():
        loss, metrics, _, grads = jax.jit(lambda s, b: tr.loss_and_grads(s.params, b, jax.random.key(0), s.extra,
                                                                          s.step))(state, batch)
    # Two views: the pairs (g1 -> g2) and (g2 -> g1) only; at init teacher == student.
    assert np.isfinite(float(loss)) and 0 < float(loss) < 2 * np.log(64)
    assert float(jnp.abs(grads["backbone"]["patch_embed"]["kernel"]).max()) > 0


@pytest.mark.parametrize("over, msg", [
    ({"objective.local_crop_size": "6"}, "local_crop_size=6 is not a multiple of the model's patch_size=4"),
    ({"objective.num_local_crops": "-1"}, "num_local_crops=-1 must be >= 0"),
    ({"objective.centering": "softmax"}, "objective.centering='softmax'; choose 'ema'"),
    ({"objective.probe": '["knn", "svm"]'}, "objective.probe has 'svm'"),
    ({"optim.clip_mode": "rms"}, "optim.clip_mode='rms'"),
])
def test_bad_settings_fail_at_start_up(tmp_path, over, msg):
    from vitjax.training.trainer import Trainer
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace("[", r"\[")):
        Trainer(_config(tmp_path, **over), str(tmp_path / "run"))


def test_data_with_other_crop_count_is_refused(tmp_path):
    from vitjax.training.trainer import Trainer
    c = _config(tmp_path, **{"input.train_ops.0.num_local": "3", "train.total_steps": "1"})
    with pytest.raises(ValueError, match="the data give 2 global and 3 local crops but objective.num_local_crops=2"):
        Trainer(c, str(tmp_path / "run")).train()


def test_model_that_is_not_dino_is_refused(tmp_path, tiny_config):
    from vitjax.training.trainer import Trainer
    c = tiny_config()
    c.objective = dict(name="dino")
    with pytest.raises(ConfigError, match="objective 'dino' needs a DINO model"):
        Trainer(c, str(tmp_path / "run"))


def test_backbone_takes_local_crops_and_matches_vit():
    """The backbone runs any multiple of the patch size; at the global size it is a plain ViT."""
    from vitjax.models.vit import ViT
    model = DINO(image_size=16, patch_size=4, in_channels=1, width=32, depth=1, num_heads=2, mlp_dim=64,
                 out_dim=16, head_hidden_dim=16, head_bottleneck_dim=8)
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 1))
    params = model.init(jax.random.key(1), x)["params"]
    assert model.apply({"params": params}, x[:, :8, :8]).shape == (2, 16)
    cfg = {k: v for k, v in model.backbone_config().items() if k != "dynamic_img_size"}
    vit = ViT(**cfg)
    np.testing.assert_allclose(np.asarray(vit.apply({"params": params["backbone"]}, x)),
                               np.asarray(model.apply({"params": params}, x, method=DINO.features)), atol=1e-6)
    with pytest.raises(ValueError, match="do not fit this model"):
        vit.apply({"params": params["backbone"]}, x[:, :8, :8])
