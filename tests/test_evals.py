"""Config-driven evaluators (vitjax.evals): built from specs, run on a small context without a trainer."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import make_tiny_config
from vitjax.evals import EVALUATORS, EvalContext, EvalRun, Evaluator, build_evaluators, run_evaluators
from vitjax.evals.base import plain
from vitjax.models import build_model
from vitjax.objectives import create_objective
from vitjax.objectives.base import Objective

pytestmark = pytest.mark.usefixtures("fast_compiles")


class FakeMapper:
    """``Trainer.map_batches`` without a trainer: jitted ``fn`` over batches of a list source (the ops
    are ignored, except that a ``tokenize`` op turns ``text`` into the class index in ``vocab``)."""

    def __init__(self, vocab=(), batch_size=32):
        self.vocab, self.batch_size, self.calls, self._jit = list(vocab), batch_size, [], {}

    def __call__(self, name, fn, params, source, ops=None, batch_size=None, max_examples=None):
        self.calls.append(name)
        n = len(source) if max_examples is None else min(max_examples, len(source))
        records = [dict(source[i]) for i in range(n)]
        if any(o.get("op") == "tokenize" for o in plain(list(ops or ()))):
            for r in records:
                r["tokens"] = np.array([self.vocab.index(r.pop("text"))], np.int32)
        fn = self._jit.setdefault(name, jax.jit(fn))
        out = {}
        for s in range(0, n, self.batch_size):
            chunk = records[s:s + self.batch_size]
            batch = {k: np.stack([r[k] for r in chunk]) for k in chunk[0] if k != "text"}
            res = dict(jax.device_get(fn(params, batch)))
            if "label" in batch:
                res["label"] = batch["label"]
            for k, v in res.items():
                out.setdefault(k, []).append(np.asarray(v))
        return {k: np.concatenate(v) for k, v in out.items()}


class FeaturesAreImages(Objective):
    """An objective whose frozen feature is the 'image' itself (a feature vector)."""

    def example_batch(self, model, batch_size):
        raise NotImplementedError

    def loss(self, *a, **k):
        raise NotImplementedError

    def eval_metrics(self, *a, **k):
        return {}

    def feature_fn(self, model):
        return lambda p, images: images


class UnitImageText:
    """A stand-in image-text model: images are unit vectors, a text's embedding is its class one-hot."""

    def __init__(self, dim):
        self.dim = dim

    def apply(self, variables, x, method=None):
        if method == "encode_text":
            return jax.nn.one_hot(x[:, 0], self.dim)
        return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def clusters(n_per_class, num_classes=4, dim=8, seed=0, text=False):
    """Well-separated labelled features: class c sits around 10 * e_c."""
    rng = np.random.default_rng(seed)
    out = []
    for c in range(num_classes):
        for _ in range(n_per_class):
            r = {"image": (10 * np.eye(dim)[c] + rng.normal(size=dim)).astype(np.float32), "label": np.int32(c)}
            if text:
                r["text"] = f"class {c}"
            out.append(r)
    return [out[i] for i in rng.permutation(len(out))]


def context(objective, config, train, test, model=None, mapper=None):
    return EvalContext(model=model, objective=objective, config=config, train_source=train, eval_source=test,
                       map_batches=mapper or FakeMapper())


def test_knn_config_line_on_a_supervised_vit():
    """``config.evals.knn = dict(type="knn", k=20)`` on a (tiny, untrained) ViT classifier: the
    classifier's pooled features are scored, one number in [0, 1]; the classification evaluator
    gives its loss and top-1."""
    config = make_tiny_config()
    config.evals = ml_collections.ConfigDict({"knn": dict(type="knn", k=20),
                                              "val": dict(type="classification")})
    model, objective = build_model(config), create_objective(config.objective)
    evaluators = build_evaluators(objective, config)
    assert sorted(evaluators) == ["knn", "val"]
    size = (model.image_size, model.image_size, model.in_channels)
    rng = np.random.default_rng(0)
    data = [{"image": rng.normal(size=size).astype(np.float32), "label": np.int32(i % 10)} for i in range(60)]
    params = jax.jit(model.init)(jax.random.key(0), np.zeros((1,) + size, np.float32))["params"]
    ctx = context(objective, config, data[:40], data[40:], model, FakeMapper(batch_size=20))   # one shape
    out = run_evaluators(evaluators, ctx, params)
    assert sorted(out) == ["eval/knn_top1", "eval/val_loss", "eval/val_top1"]
    assert 0.0 <= out["eval/knn_top1"] <= 1.0 and 0.0 <= out["eval/val_top1"] <= 1.0
    assert np.isfinite(out["eval/val_loss"]) and out["eval/val_loss"] > 0


def test_probes_on_separated_clusters_score_one_and_embed_each_split_once():
    config = make_tiny_config()
    config.evals = ml_collections.ConfigDict({
        "knn": dict(type="knn", k=5), "ncm": dict(type="ncm"),
        "linear": dict(type="linear_probe", epochs=20, batch_size=32, optimizer="sgd"),
        "capped": dict(type="knn", k=5, max_train_examples=16)})
    mapper = FakeMapper()
    ctx = context(FeaturesAreImages(), config, clusters(20), clusters(10, seed=1), mapper=mapper)
    out = run_evaluators(build_evaluators(ctx.objective, config), ctx, {})
    assert out == {"eval/knn_top1": 1.0, "eval/ncm_top1": 1.0, "eval/linear_top1": 1.0, "eval/capped_top1": 1.0}
    # train + eval split once for the three uncapped evaluators, the capped bank once more
    assert mapper.calls == ["features"] * 3


def test_objective_defaults_keep_their_names_and_config_can_drop_them():
    mae = create_objective(dict(name="mae", probe=["knn", "ncm", "linear"], probe_train_examples=16,
                                linear_epochs=10, linear_batch_size=32, linear_optimizer="sgd"))
    config = make_tiny_config()
    ctx = context(mae, config, clusters(20), clusters(5, seed=1))
    ctx.objective = FeaturesAreImages()          # the MAE's specs, on plain feature vectors
    out = run_evaluators(build_evaluators(mae, config), ctx, {})
    assert out == {"eval/knn_top1": 1.0, "eval/ncm_top1": 1.0, "eval/linear_top1": 1.0}
    config.evals = ml_collections.ConfigDict({"ncm": None, "linear": None})
    assert list(build_evaluators(mae, config)) == ["knn"]
    unlabelled = [{"image": r["image"]} for r in clusters(5)]
    assert run_evaluators(build_evaluators(mae, config), context(FeaturesAreImages(), config, unlabelled,
                                                                 unlabelled), {}) == {}
    with pytest.raises(ValueError, match="objective.probe has 'svm'; choose from knn, linear, ncm"):
        create_objective(dict(name="dino", probe=["knn", "svm"]))


def test_clip_defaults_zeroshot_reuses_retrieval_images():
    clip = create_objective(dict(name="clip", tokenizer="bytes", context_length=8,
                                 zeroshot=dict(class_names=["0", "1", "2", "3"], templates=["class {}"]),
                                 retrieval=dict(), probe=dict(methods=["knn"])))
    config = make_tiny_config()
    config.input.eval_ops.append(clip.tokenize_op())
    evaluators = build_evaluators(clip, config)
    assert list(evaluators) == ["probe_knn", "retrieval", "zeroshot"]
    vocab = [f"class {c}" for c in range(4)]
    mapper = FakeMapper(vocab)
    ctx = context(FeaturesAreImages(), config, clusters(10, text=True), clusters(5, seed=1, text=True),
                  UnitImageText(8), mapper)
    out = run_evaluators(evaluators, ctx, {})
    assert set(out) == {"eval/probe_knn_top1", "eval/i2t_r1", "eval/i2t_r5", "eval/i2t_r10", "eval/t2i_r1",
                        "eval/t2i_r5", "eval/t2i_r10", "eval/zeroshot_top1"}          # 4 classes: no top-5
    assert out["eval/zeroshot_top1"] == 1.0 and out["eval/probe_knn_top1"] == 1.0
    assert all(0.0 <= v <= 1.0 for v in out.values())
    assert sorted(mapper.calls) == ["clip_retrieval", "clip_text", "features", "features"]   # no clip_zeroshot


def test_unknown_type_and_bad_options_are_config_errors():
    config = make_tiny_config()
    config.evals = ml_collections.ConfigDict({"nn": dict(type="knnn", k=5)})
    with pytest.raises(ValueError, match=r"evaluator 'nn': unknown evaluator type 'knnn'; nearest types: \['knn'\]"):
        build_evaluators(FeaturesAreImages(), config)
    config.evals = ml_collections.ConfigDict({"nn": dict(type="knn", kk=5)})
    with pytest.raises(ValueError, match=r"bad options for evaluator 'nn' \(type 'knn'\).*'kk'"):
        build_evaluators(FeaturesAreImages(), config)
    config.evals = ml_collections.ConfigDict({"zs": dict(type="zeroshot", class_names=["a"])})
    with pytest.raises(ValueError, match="config.evals.zs needs a tokenizer"):
        build_evaluators(FeaturesAreImages(), config)


def test_duplicate_registration_names_both_definitions():
    class Knn(Evaluator):
        def __call__(self, run: EvalRun):
            return {}

    with pytest.raises(ValueError, match=r"evaluator 'knn' is registered twice: first by vitjax\.evals\.probes\.Knn, "
                                         r"again by test_evals\..*Knn"):
        EVALUATORS.register("knn", Knn)
    assert EVALUATORS.get("knn").__module__ == "vitjax.evals.probes"
