"""``python -m vitjax.plot``: learning curves from metrics.jsonl, runs overlaid, one panel per metric."""
import json
import sys

import pytest

from vitjax import plot


def _workdir(path, records):
    path.mkdir(parents=True)
    with open(path / "metrics.jsonl", "w") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _records(scale):
    out = []
    for step in (10, 20, 30):
        out.append({"step": step, "train/loss": scale * 3.0 / step, "train/lr": 1e-3 * step / 30,
                    "train/img_per_sec": 500.0 + step, "train/top1": 0.1})
    out.append({"step": 30, "eval/loss": scale * 0.5, "eval/top1": 0.9})
    return out


def test_series_last_record_of_a_step_wins_and_skips_non_numbers():
    recs = [{"step": 10, "train/loss": 2.0}, {"step": 20, "train/loss": "nan"},
            {"step": 10, "train/loss": 1.5}, {"step": 30, "eval/top1": 0.9, "source": "evaluate"},
            {"step": 5, "train/finite": True}]
    assert plot.series(recs) == {"train/loss": [(10, 1.5)], "eval/top1": [(30, 0.9)]}


def test_run_labels_are_folder_names_unless_two_share_one():
    assert plot.run_labels(["w/a", "w/b/"]) == ["a", "b"]
    assert plot.run_labels(["x/run", "y/run", "z"]) == ["x/run", "y/run", "z"]


def test_plot_two_runs_writes_a_png_with_the_default_panels(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    a = _workdir(tmp_path / "base", _records(1.0))
    b = _workdir(tmp_path / "wide", _records(0.8))
    out = tmp_path / "figs" / "curves.png"
    assert plot.main(["--workdir", a, b, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert capsys.readouterr().out.strip() == (
        f"wrote {out}: 5 panels (train/loss, eval/loss, eval/top1, train/lr, train/img_per_sec) for 2 run(s)")
    assert plot.plot_runs([a], str(tmp_path / "one.png"), metrics=["train/top1"]) == ["train/top1"]


def test_plot_errors_are_one_line(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    a = _workdir(tmp_path / "base", _records(1.0))
    assert plot.main(["--workdir", str(tmp_path / "nope"), "--out", str(tmp_path / "c.png")]) == 2
    assert "has no metrics.jsonl" in capsys.readouterr().err
    assert plot.main(["--workdir", a, "--out", str(tmp_path / "c.png"), "--metrics", "eval/knn_top1"]) == 2
    err = capsys.readouterr().err
    assert "nothing to plot for ['eval/knn_top1']" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)     # as if matplotlib were missing
    assert plot.main(["--workdir", a, "--out", str(tmp_path / "c.png")]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: plotting needs matplotlib, which is not installed: pip install matplotlib")
