"""Config loading, overrides and the errors a user sees for bad input."""
import subprocess
import sys

import pytest

from vitjax.config import ConfigError, apply_overrides, load_config_file, validate
from vitjax.training.optim import decay_mask, schedule

from conftest import REPO

DIGITS = str(REPO / "configs" / "vit_digits.py")


def test_overrides_convert_to_the_existing_type():
    c = apply_overrides(load_config_file(DIGITS), ["--config.optim.lr=1", "--config.train.seed", "7",
                                                   "--config.model.pool=token", "--config.train.tensorboard=false",
                                                   "--config.init.path=/some/where"])
    assert c.optim.lr == 1.0 and isinstance(c.optim.lr, float)
    assert c.train.seed == 7 and c.model.pool == "token" and c.train.tensorboard is False
    assert c.init.path == "/some/where"


def test_unknown_key_lists_nearest():
    c = load_config_file(DIGITS)
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.learning_rat'. Nearest valid keys: .*optim"):
        apply_overrides(c, ["--config.optim.learning_rat=0.1"])
    with pytest.raises(ConfigError, match=r"unknown config key 'model.widht'. Nearest valid keys: model.width"):
        apply_overrides(c, ["--config.model.widht=3"])


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"--config.train.seed='abc': expected an integer \(the current value is 0\)"):
        apply_overrides(load_config_file(DIGITS), ["--config.train.seed=abc"])


def test_missing_config_file_is_clear(tmp_path):
    with pytest.raises(ConfigError, match=r"config file '.*configs/vit_digit.py' does not exist; similar files "
                                          r"in .*: \['vit_digits.py'"):
        load_config_file(str(REPO / "configs" / "vit_digit.py"))


def test_image_size_not_divisible_by_patch_is_a_config_error():
    c = apply_overrides(load_config_file(DIGITS), ["--config.model.image_size=18"])
    with pytest.raises(ConfigError, match="model.image_size=18 is not divisible by the patch size 4"):
        validate(c)


def test_cli_reports_config_errors_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "vitjax.train", "--config", DIGITS, "--workdir", str(tmp_path),
                        "--config.train.num_epoch=3"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2
    assert "error: unknown config key 'train.num_epoch'. Nearest valid keys: train.num_epochs" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "vitjax.train", "--config", "nope.py", "--workdir", str(tmp_path)],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "config file 'nope.py' does not exist" in r.stderr
    r = subprocess.run([sys.executable, "-m", "vitjax.train", "--config", DIGITS, "--workdir", str(tmp_path),
                        "--config.input.data.name=my_photos", f"--config.input.data.data_dir={tmp_path}"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"python -m vitjax.data convert --image-folder DIR --out {tmp_path} --name my_photos" in r.stderr


def test_weight_decay_mask_skips_norms_biases_embeddings():
    params = {"cls": 0, "pos_embedding": 0, "patch_embed": {"kernel": 0, "bias": 0},
              "encoder": {"block0": {"norm1": {"scale": 0, "bias": 0}, "mlp": {"fc1": {"kernel": 0}}}}}
    m = decay_mask(params)
    assert m["patch_embed"]["kernel"] and m["encoder"]["block0"]["mlp"]["fc1"]["kernel"]
    assert not any([m["cls"], m["pos_embedding"], m["patch_embed"]["bias"],
                    m["encoder"]["block0"]["norm1"]["scale"], m["encoder"]["block0"]["norm1"]["bias"]])


def test_warmup_cosine_schedule_values():
    import ml_collections
    lr = schedule(ml_collections.ConfigDict(dict(lr=1.0, warmup_steps=10, end_lr_ratio=0.1)), 110)
    assert float(lr(0)) == 0.0 and abs(float(lr(5)) - 0.5) < 1e-6 and abs(float(lr(10)) - 1.0) < 1e-6
    assert abs(float(lr(60)) - 0.55) < 1e-6 and abs(float(lr(110)) - 0.1) < 1e-6
    with pytest.raises(ValueError, match="warmup_steps=200 must be smaller than the 110 training steps"):
        schedule(ml_collections.ConfigDict(dict(lr=1.0, warmup_steps=200)), 110)
