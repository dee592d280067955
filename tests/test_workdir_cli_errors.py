"""Every command that reads a run's --workdir answers a folder that is not one with the same one-line
error and exit status 2, not a traceback (in-process: nothing compiles)."""
import contextlib
import importlib
import importlib.util
import io

import pytest

from conftest import REPO

NOT_A_WORKDIR = "has no config.json; is it a vitjax workdir (the --workdir of a python -m vitjax.train run)?"


def _main(name):
    if name.startswith("vitjax."):
        return importlib.import_module(name).main
    spec = importlib.util.spec_from_file_location(name.replace("/", "_"), REPO / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


@pytest.mark.parametrize("name, extra", [
    ("vitjax.export", ["--format", "timm", "--out", "OUT"]),
    ("vitjax.generate", []),
    ("vitjax.evaluate", []),
    ("vitjax.probe", []),
    ("dino_attention", []),
    ("detr_boxes", []),
    ("mae_reconstruct", []),
    ("igpt_completion", []),
])
def test_a_folder_that_is_not_a_workdir_is_one_line(name, extra, tmp_path):
    extra = [str(tmp_path / "out") if a == "OUT" else a for a in extra]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = _main(name)(["--workdir", str(tmp_path / "nowhere"), *extra])
    assert rc == 2
    assert err.getvalue().strip().splitlines() == [f"error: {tmp_path / 'nowhere'} {NOT_A_WORKDIR}"]
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "out").exists()
