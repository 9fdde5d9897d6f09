"""plot_loss: the step logs of trainer_state.json become a PNG loss curve."""

import json

import pytest
from PIL import Image

from paddlemix.tools.plot_loss import loss_history, main, plot_loss

HISTORY = [
    {"step": 2, "loss": 11.5, "learning_rate": 0.002, "global_step": 2},
    {"step": 1, "loss": 11.9, "learning_rate": 0.001, "global_step": 1},
    {"step": 2, "train_runtime": 3.2, "train_loss": 11.7},  # the end-of-run summary: not a step log
]


def write_state(path, history):
    path.write_text(json.dumps({"global_step": 2, "log_history": history}))
    return path


def test_loss_history_sorted_steps_and_rates(tmp_path):
    state = write_state(tmp_path / "trainer_state.json", HISTORY)
    assert loss_history(str(state)) == ([1, 2], [11.9, 11.5], [0.001, 0.002])
    assert loss_history(str(tmp_path)) == loss_history(str(state))  # a run directory works too
    no_rates = write_state(tmp_path / "b.json", [{"step": 1, "loss": 3.0}])
    assert loss_history(str(no_rates)) == ([1], [3.0], [])


def test_plot_writes_png(tmp_path):
    state = write_state(tmp_path / "trainer_state.json", HISTORY)
    out = tmp_path / "plots" / "loss.png"
    assert plot_loss(str(state), str(out)) == str(out)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (700, 400)


def test_no_step_logs_is_an_error(tmp_path, capsys):
    state = write_state(tmp_path / "trainer_state.json", HISTORY[2:])
    with pytest.raises(ValueError, match="no step logs"):
        loss_history(str(state))
    assert main(["--trainer_state", str(state), "--out", str(tmp_path / "x.png")]) == 2
    assert "no step logs" in capsys.readouterr().err
