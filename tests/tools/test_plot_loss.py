"""plot_loss: the step logs of trainer_state.json become a PNG loss curve."""

import json

import numpy as np
import pytest
from PIL import Image

from paddlemix.cli import run
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


BLUE = (31, 119, 180)  # matplotlib's tab:blue, the loss line
ORANGE = tuple(round(0.6 * c + 0.4 * 255) for c in (255, 127, 14))  # tab:orange at alpha 0.6 over white


def pixels_of(png, colour, tolerance=12):
    """(rows, columns) of the pixels within ``tolerance`` of ``colour`` on every channel."""
    with Image.open(png) as image:
        assert image.format == "PNG"
        rgb = np.asarray(image.convert("RGB")).astype(int)
    return np.nonzero(np.all(np.abs(rgb - colour) <= tolerance, axis=-1))


def test_plot_draws_a_falling_loss_and_the_rate(tmp_path):
    falling = write_state(tmp_path / "falling.json", [{"step": s, "loss": 10.0 - 3 * s} for s in (1, 2, 3)])
    out = tmp_path / "plots" / "loss.png"
    assert plot_loss(str(falling), str(out)) == str(out)
    rows, cols = pixels_of(out, BLUE)
    assert len(rows) > 100  # a line, not a stray pixel
    left, right = rows[cols == cols.min()].mean(), rows[cols == cols.max()].mean()
    assert left < right  # image rows grow downwards: the curve starts high and ends low
    assert len(pixels_of(out, ORANGE)[0]) == 0  # no learning rate logged, no rate line

    with_rates = tmp_path / "rates.png"
    plot_loss(str(write_state(tmp_path / "trainer_state.json", HISTORY)), str(with_rates))
    assert len(pixels_of(with_rates, ORANGE)[0]) > 100


def test_no_step_logs_is_an_error(tmp_path, capsys):
    state = write_state(tmp_path / "trainer_state.json", HISTORY[2:])
    with pytest.raises(ValueError, match="no step logs"):
        loss_history(str(state))
    assert run(main, ["--trainer_state", str(state), "--out", str(tmp_path / "x.png")]) == 2
    assert "no step logs" in capsys.readouterr().err
