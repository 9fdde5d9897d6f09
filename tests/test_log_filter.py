"""scripts/log_filter.py: the demo's screen keeps stages, bars and results; the log keeps everything."""

import importlib.util
import io
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "log_filter.py")

NOISE = (
    "/x/paddle/utils/cpp_extension/extension_utils.py:712: UserWarning: No ccache found. Please be aware\n"
    "  warnings.warn(warning_message)\n"
    "/x/_distutils_hack/__init__.py:33: UserWarning: Setuptools is replacing distutils.\n"
    "  warnings.warn(\"Setuptools is replacing distutils.\")\n"
    "\x1b[32m[2026-12-01 11:39:28,401] [    INFO]\x1b[0m - Med-GRIT: read 95, kept 95, skipped 0\n"
    "  files: /tmp/train.json\n"
    "[2026-12-01 11:36:58,569] [   DEBUG] - world_size                    : 1\n"
    "W1201 11:36:58.123456  1234 init.cc:12] a glog warning\n"
    "WARNING: OMP_NUM_THREADS set to 2, not 1. The computation speed will not be optimized\n"
    "PLEASE USE OMP_NUM_THREADS WISELY.\n"
    "If your task is similar to the task the model of the checkpoint was trained on, you can use it\n"
)
SCREEN = (
    "\n=== [5/9] training the demo preset on CPU → output/demo (25s)\n"
    "wrote 13 predictions to reports/demo/trained/pred/pred_VG.jsonl\n"
    "error: data/x.json:3 record 2: bad_box: coordinates outside [0,1000)\n"
    "  indented result line after a normal one\n"
)
BAR = "\rTrainProcess:  50%|#####     | 1/2"
LOG_IN_BAR = "\x1b[32m[2026-12-01 11:37:01,448] [    INFO]\x1b[0m - loss: 11.9, learning_rate: 0.003\n"
BAR_END = "\rTrainProcess: 100%|##########| 2/2\n"


def load_module():
    spec = importlib.util.spec_from_file_location("log_filter", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("chunk", [1, 7, 10**6])
def test_screen_gets_stages_bars_results_and_the_log_gets_everything(chunk):
    stream = (NOISE + SCREEN + BAR + LOG_IN_BAR + BAR_END).encode()
    log = io.BytesIO()
    screen = load_module().ScreenFilter(log)
    out = b"".join(screen.feed(stream[i : i + chunk]) for i in range(0, len(stream), chunk)) + screen.feed(b"", final=True)
    assert out.decode() == SCREEN + BAR + BAR_END
    assert log.getvalue() == stream


def test_command_line_writes_the_named_log(tmp_path):
    log = tmp_path / "demo.log"
    proc = subprocess.run([sys.executable, SCRIPT, str(log)], input=(NOISE + SCREEN).encode(), capture_output=True)
    assert proc.returncode == 0 and proc.stdout.decode() == SCREEN
    assert log.read_text() == NOISE + SCREEN
