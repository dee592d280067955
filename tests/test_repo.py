"""The README's promises that a test can hold: its two set-up commands and CI running the second."""
import re

from conftest import REPO


def _readme_commands():
    text = (REPO / "README.md").read_text()
    setup = text.split("## Set up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", setup, flags=re.S)


def test_readme_opens_with_exactly_two_setup_commands():
    cmds = _readme_commands()
    assert len(cmds) == 2
    assert "python -m vitjax.train --config configs/vit_digits.py --workdir" in cmds[0]
    assert "pytest" in cmds[1]
    assert all("\n" not in c for c in cmds)   # each is one line a new user pastes


def test_ci_runs_the_readme_test_command_verbatim():
    assert _readme_commands()[1] in (REPO / ".ci" / "run").read_text()


def test_configs_named_in_readme_exist():
    text = (REPO / "README.md").read_text()
    for path in set(re.findall(r"configs/[\w]+\.py", text)):
        assert (REPO / path).is_file(), path


def test_every_config_loads_validates_and_builds():
    from vitjax.config import load_config_file, validate
    from vitjax.models import build_model
    configs = sorted((REPO / "configs").glob("*.py"))
    assert configs
    for path in configs:
        c = load_config_file(str(path))
        if "model" not in c:       # e.g. a sweep description rather than a training config
            continue
        validate(c)
        assert build_model(c) is not None, path
