"""A user's config steps from the command line to the trainer: documented keys are accepted on every
config, short runs shorten their warmup, and silent mistakes become one-line errors or notices."""
import json
import logging
import re

import jax
import pytest

from vitjax.config import ConfigError, apply_overrides, flat_keys, load_config_file, set_key, validate
from vitjax.config_defaults import OPTIONAL
from vitjax.models import build_model
from vitjax.models.registry import model_options
from vitjax.training.trainer import Trainer

from conftest import REPO, make_tiny_config

pytestmark = pytest.mark.usefixtures("fast_compiles")

DIGITS = str(REPO / "configs" / "vit_digits.py")
ONE = jax.devices()[:1]
TRAINING_CONFIGS = sorted(p for p in (REPO / "configs").glob("*.py") if "model" in load_config_file(str(p)))
# --config.KEY=VALUE on the command line (the value ends at a space or a closing backtick)
OVERRIDE = re.compile(r"--config\.([A-Za-z0-9_.]+)=([^\s`]+)")


def _commands(text: str) -> list[str]:
    """Logical command lines: lines ending in a backslash joined with the next."""
    return text.replace("\\\n", " ").splitlines()


def _load(path: str, args=()):
    return apply_overrides(load_config_file(path), list(args))


def _accepts(config, key: str, value: str) -> None:
    """``set_key`` knows ``key`` (a placeholder value such as ``...`` may still fail its type check)."""
    try:
        set_key(config, key, value)
    except ConfigError as e:
        assert "unknown config key" not in str(e), e


def test_every_override_in_the_readme_is_accepted():
    seen = 0
    for line in _commands((REPO / "README.md").read_text()):
        named = re.search(r"--config[ =](\S+\.py)", line)
        config = load_config_file(str(REPO / named.group(1)) if named else DIGITS)
        for key, value in OVERRIDE.findall(line):
            set_key(config, key, value.rstrip(".,;)"), model_options)    # as the command line does
            seen += 1
    assert seen >= 20                                # the walk found the README's overrides


def test_every_override_in_a_config_docstring_is_accepted_by_that_config():
    for path in sorted((REPO / "configs").glob("*.py")):
        for key, value in OVERRIDE.findall(path.read_text()):
            if key.isupper():                        # --config.KEY=VALUE placeholders
                continue
            _accepts(load_config_file(str(path)), key, value.rstrip(".,;)"))


def test_readme_section_keys_exist_on_the_digits_config():
    """`optim.mu_dtype`, `train.micro_batch_size`, `config.init.target`... as the README names them."""
    keys = set(flat_keys(load_config_file(DIGITS)))
    # model.* keys are per family (and the README names files such as model.npz): not this check's.
    sections = "|".join(s for s in OPTIONAL if s != "model")
    named = set(re.findall(rf"(?:`|config\.)((?:{sections})\.[a-z_0-9]+)", (REPO / "README.md").read_text()))
    assert "train.micro_batch_size" in named and "optim.clip_mode" in named
    assert sorted(named - keys) == []


@pytest.mark.parametrize("path", TRAINING_CONFIGS, ids=lambda p: p.name)
def test_the_reported_keys_are_settable_on_every_config(path):
    c = _load(str(path), ["--config.train.micro_batch_size=32", "--config.optim.layer_decay=0.75",
                          "--config.optim.clip_mode=per_param", "--config.input.max_bad_fraction=0.05",
                          "--config.optim.warmup_fraction=0.1", "--config.optim.warmup_steps=0"])
    assert (c.train.micro_batch_size, c.optim.layer_decay, c.optim.clip_mode, c.input.max_bad_fraction) == \
        (32, 0.75, "per_param", 0.05)
    for section, table in OPTIONAL.items():                      # the whole table is merged in
        assert set(table) <= set(c[section]), section


def test_reported_overrides_reach_the_trainer():
    """The user's command: --config.train.micro_batch_size=32 (and the other reported keys) on the demo."""
    c = _load(DIGITS, ["--config.train.micro_batch_size=32", "--config.optim.layer_decay=0.75",
                       "--config.optim.clip_mode=per_param", "--config.input.max_bad_fraction=0.05"])
    t = Trainer(c, "/tmp/unused", load_data=False)
    assert t.num_micro == 4


def test_a_stock_config_on_160_images_shortens_its_warmup(caplog):
    """optim.warmup_steps=50 on a 33-step run was 'must be smaller than the 33 training steps'."""
    c = _load(DIGITS, ["--config.input.data.name=synthetic_digits", "--config.input.data.split=train[:160]",
                       "--config.train.num_epochs=33"])
    with caplog.at_level(logging.WARNING, logger="vitjax"):
        t = Trainer(c, "/tmp/unused", devices=ONE)
    assert t.total_steps == 33
    assert "optim.warmup_steps=50 is not shorter than the 33 training steps; warming up for 3 steps" in caplog.text
    assert float(t.lr_fn(3)) == pytest.approx(c.optim.lr)          # warmed up after 3 steps
    assert float(t.lr_fn(1)) < c.optim.lr


def test_warmup_in_epochs_or_as_a_fraction():
    c = _load(DIGITS, ["--config.optim.warmup_steps=0", "--config.optim.warmup_epochs=2"])
    t = Trainer(c, "/tmp/unused", devices=ONE)
    warm = 2 * t.steps_per_epoch                                     # 1,437 // 128 = 11 steps per epoch
    assert float(t.lr_fn(warm - 1)) < c.optim.lr and float(t.lr_fn(warm)) == pytest.approx(c.optim.lr)
    c = _load(DIGITS, ["--config.optim.warmup_steps=0", "--config.optim.warmup_fraction=0.2",
                       "--config.train.total_steps=100"])
    t = Trainer(c, "/tmp/unused", devices=ONE)
    assert float(t.lr_fn(19)) < c.optim.lr and float(t.lr_fn(20)) == pytest.approx(c.optim.lr)


def test_two_warmup_settings_are_an_error_naming_both():
    c = _load(DIGITS, ["--config.optim.warmup_epochs=2"])             # warmup_steps=50 is still set
    with pytest.raises(ConfigError, match=r"optim.warmup_steps=50 and optim.warmup_epochs=2 both set the "
                                          r"warmup; set only one \(e.g. --config.optim.warmup_steps=0"):
        validate(c)


@pytest.mark.parametrize("override, message", [
    ("optim.lr=-0.001", r"optim.lr=-0.001 must be a positive number .*--config.optim.lr=1e-3"),
    ("optim.weight_decay=-0.05", r"optim.weight_decay=-0.05 must be a number >= 0"),
    ("optim.b1=1.0", r"optim.b1=1.0 must be in \[0, 1\); set e.g. --config.optim.b1=0.9"),
    ("optim.b2=-0.5", r"optim.b2=-0.5 must be in \[0, 1\)"),
    ("optim.warmup_fraction=1.5", r"optim.warmup_fraction=1.5 must be in \[0, 1\)"),
])
def test_invalid_optimizer_numbers_are_config_errors(override, message):
    c = _load(DIGITS, [f"--config.{override}"])
    with pytest.raises(ConfigError, match=message):
        Trainer(c, "/tmp/unused", load_data=False)


def test_a_variant_next_to_its_shape_keys_is_an_error():
    with pytest.raises(ConfigError, match=r"model.variant='S/16' defines width, depth, num_heads, mlp_dim, "
                                          r"patch_size, but the config also sets model.width=128, .* unset them "
                                          r"\(--config.model.width=None .*--config.model.variant=None"):
        _load(DIGITS, ["--config.model.variant=S/16"])
    # The fix the message gives works: the variant's shape is used.
    c = _load(DIGITS, ["--config.model.variant=S/16"] + [f"--config.model.{k}=None" for k in
                                                         ("width", "depth", "num_heads", "mlp_dim", "patch_size")])
    m = build_model(c)
    assert (m.width, m.depth, m.num_heads, m.patch_size) == (384, 12, 6, 16)
    # A variant without a patch size leaves model.patch_size to the config.
    assert _load(DIGITS, ["--config.model.variant=S", "--config.model.width=None", "--config.model.depth=None",
                          "--config.model.num_heads=None", "--config.model.mlp_dim=None"]).model.patch_size == 4


def test_fewer_model_classes_than_labels_is_an_error():
    c = make_tiny_config(**{"model.num_classes": 5})
    with pytest.raises(ConfigError, match=r"model.num_classes=5 is smaller than the 10 classes of the training "
                                          r"data \(DigitsSource.*--config.model.num_classes=10"):
        Trainer(c, "/tmp/unused", devices=ONE)


def test_resume_with_a_changed_config_names_the_changes_and_keeps_the_old_file(tmp_path, caplog):
    wd = tmp_path / "run"
    base = {"train.total_steps": 2, "train.eval_every_steps": 2, "train.checkpoint_every_steps": 2,
            "train.tensorboard": False, "optim.warmup_steps": 1}
    Trainer(make_tiny_config(**base), str(wd), devices=ONE).train()
    first = (wd / "config.json").read_text()
    with caplog.at_level(logging.WARNING, logger="vitjax"):
        Trainer(make_tiny_config(**base), str(wd), devices=ONE).train()      # the same config: no notice
    assert "changed config" not in caplog.text and not (wd / "config.2.json").exists()
    with caplog.at_level(logging.WARNING, logger="vitjax"):
        Trainer(make_tiny_config(**{**base, "train.total_steps": 3, "optim.lr": 1e-3}), str(wd), devices=ONE).train()
    notice = [r.getMessage() for r in caplog.records if "changed config" in r.getMessage()]
    assert len(notice) == 1 and "\n" not in notice[0]
    assert "resuming at step 2 with a changed config (optim.lr: 0.002 -> 0.001; train.total_steps: 2 -> 3)" \
        in notice[0]
    assert (wd / "config.2.json").read_text() == first
    assert json.loads((wd / "config.json").read_text())["train"]["total_steps"] == 3


def test_model_options_the_config_file_leaves_out_can_be_set_from_the_command_line():
    """--config.model.KEY adds any option of the config's model (the model class documents them);
    a typo still names the nearest options; --config.model.variant=None unsets a string variant."""
    from vitjax.models.registry import model_options

    cfg = load_config_file("configs/vit_ti16_photos.py")
    assert "depth" not in cfg.model and "depth" in model_options("vit")
    apply_overrides(cfg, ["--config.model.variant=None", "--config.model.width=64", "--config.model.depth=2",
                          "--config.model.num_heads=2", "--config.model.mlp_dim=128"], model_options)
    assert cfg.model.variant is None
    model = build_model(cfg)
    assert (model.width, model.depth, model.num_heads, model.mlp_dim, model.patch_size) == (64, 2, 2, 128, 16)
    with pytest.raises(ConfigError, match=r"unknown config key 'model.dpeth'. Nearest valid keys: model.depth"):
        apply_overrides(cfg, ["--config.model.dpeth=3"], model_options)
