"""Plot a training run's loss curve from the ``trainer_state.json`` PaddleNLP's Trainer writes.

    python -m paddlemix.tools.plot_loss --trainer_state OUTPUT_DIR/trainer_state.json --out loss.png

The step logs (entries of ``log_history`` with a ``loss``) give the training loss per logged step,
drawn against the step, with the learning rate on a second axis when it was logged.
"""

import argparse
import json
import os
import sys
from typing import List, Tuple


def loss_history(trainer_state: str) -> Tuple[List[int], List[float], List[float]]:
    """``(steps, losses, learning_rates)`` of the step logs in ``trainer_state`` (a file or a run's
    output directory); ``learning_rates`` is empty when none was logged."""
    if os.path.isdir(trainer_state):
        trainer_state = os.path.join(trainer_state, "trainer_state.json")
    with open(trainer_state, encoding="utf-8") as handle:
        history = json.load(handle).get("log_history", [])
    logs = sorted((h for h in history if "loss" in h and "step" in h), key=lambda h: h["step"])
    if not logs:
        raise ValueError(f"{trainer_state}: no step logs with a 'loss' in log_history")
    steps = [int(h["step"]) for h in logs]
    losses = [float(h["loss"]) for h in logs]
    rates = [float(h["learning_rate"]) for h in logs] if all("learning_rate" in h for h in logs) else []
    return steps, losses, rates


def plot_loss(trainer_state: str, out_png: str, title: str = "training loss") -> str:
    """Write the loss curve of ``trainer_state`` to ``out_png``; returns the path."""
    return draw_loss(*loss_history(trainer_state), out_png, title)


def draw_loss(steps: List[int], losses: List[float], rates: List[float], out_png: str, title: str) -> str:
    """Draw ``loss_history``'s output to ``out_png``; returns the path."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a training machine
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, losses, color="tab:blue", marker="." if len(steps) < 50 else None, label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (cross-entropy on answer tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if rates:
        lr_ax = ax.twinx()
        lr_ax.plot(steps, rates, color="tab:orange", alpha=0.6, label="learning rate")
        lr_ax.set_ylabel("learning rate")
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        lines = ax.get_lines() + lr_ax.get_lines()
        ax.legend(lines, [line.get_label() for line in lines], loc="upper right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainer_state", required=True, help="trainer_state.json, or the run's output directory")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--title", default="training loss")
    args = parser.parse_args(argv)
    steps, losses, rates = loss_history(args.trainer_state)
    path = draw_loss(steps, losses, rates, args.out, args.title)
    print(f"wrote {path} (loss {losses[0]:.3f} at step {steps[0]} → {losses[-1]:.3f} at step {steps[-1]})")
    return 0


if __name__ == "__main__":
    from paddlemix.cli import run

    sys.exit(run(main))
