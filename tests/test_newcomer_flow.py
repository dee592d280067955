"""The newcomer's flow end to end, as a new user types it (experiments/newcomer_flow.py): own image
folder with bad files -> convert -> train the stock photos config -> predict -> export hf/timm/onnx
-> load each export in a fresh PyTorch process with its own preprocessing -> the same top-1 as
vitjax on >= 95% of held-out photos."""
import importlib.util
import os

import pytest

pytest.importorskip("timm")
pytest.importorskip("transformers")


def _flow():
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments", "newcomer_flow.py")
    spec = importlib.util.spec_from_file_location("newcomer_flow", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_newcomer_flow_exports_agree_with_vitjax(tmp_path, capsys):
    formats = "hf,timm,onnx" if importlib.util.find_spec("onnxruntime") else "hf,timm"
    rc = _flow().main(["--out", str(tmp_path), "--model", "tiny", "--per_class", "40", "--heldout_per_class",
                       "15", "--steps", "40", "--formats", formats])
    out = capsys.readouterr().out
    lines = {ln.split(":")[0].strip(): ln for ln in out.splitlines() if ": same top-1 as vitjax" in ln}
    assert set(lines) == set(formats.split(",")), out
    for fmt, line in lines.items():
        agree = float(line.split(" on ")[1].split()[0])
        assert agree >= 0.95, line
    acc = float(out.split("vitjax: top-1 accuracy ")[1].split()[0])
    assert acc >= 0.9, out                       # the run learned the classes: the comparison means something
    assert rc == 0
    log = open(tmp_path / "commands.log").read()
    assert "skipped 3 file(s)" in log            # the truncated JPEG, the empty file, the text file
