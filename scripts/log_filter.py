"""Screen filter for scripts/demo.sh: everything goes to a log file, only what a reader needs to the screen.

    some-command 2>&1 | python3 scripts/log_filter.py LOG_FILE

Every line is appended to LOG_FILE. The screen gets all but the framework chatter: Paddle and
PaddleNLP ``[INFO]``/``[DEBUG]`` log lines, glog lines, OpenMP notices, and Python warnings with
their source lines. Progress bars (``\\r``-updated lines) pass through as they come. Standard library
only: it runs before the project's environment exists.
"""

import re
import sys

# ANSI colour codes PaddleNLP's logger wraps its lines in.
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
_NOISE_RES = [
    re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,.]+\] \[\s*(INFO|DEBUG)\]"),  # paddlenlp.utils.log
    re.compile(r"^[IWE]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \S+:\d+\]"),  # glog (Paddle's C++ side)
    re.compile(r"^OMP: |^OMP_"),  # OpenMP runtime notices
    re.compile(r"^\S+\.py:\d+: \w*Warning: "),  # warnings.showwarning's first line
    re.compile(r"^(LAUNCH|INFO|WARNING) \d{4}-\d\d-\d\d "),  # paddle.distributed.launch
    re.compile(r"^WARNING: OMP_NUM_THREADS set to |^PLEASE USE OMP_NUM_THREADS WISELY"),  # paddle's import
    re.compile(r"^If your task is similar to the task the model of the checkpoint was trained on"),  # from_pretrained
]
# A logger line can start in the middle of a progress bar that has no newline yet.
_LOGGER_IN_LINE_RE = re.compile(r"(\x1b\[[0-9;]*m)*\[\d{4}-\d\d-\d\d [\d:,.]+\] \[\s*(INFO|DEBUG)\]")


class ScreenFilter:
    """Splits a byte stream into lines (``\\n`` or ``\\r`` ends one) and sorts them: ``feed`` returns
    the bytes for the screen; every byte goes to ``log``."""

    def __init__(self, log):
        self.log = log
        self.pending = b""
        self.in_noise = False  # indented lines after a warning or log line (its source, its details) belong to it

    def screen_part(self, line: str) -> str:
        """What of one line belongs on the screen ("" for none)."""
        text = _ANSI_RE.sub("", line).rstrip("\r\n")
        if self.in_noise and text.startswith((" ", "\t")):
            return ""
        self.in_noise = any(r.match(text) for r in _NOISE_RES)
        if self.in_noise:
            return ""
        inside = _LOGGER_IN_LINE_RE.search(line)
        if inside:
            self.in_noise = True
            return line[: inside.start()]
        return line

    def feed(self, data: bytes, final: bool = False) -> bytes:
        self.log.write(data)
        self.pending += data
        screen = []
        for piece in re.split(rb"(?<=[\r\n])", self.pending):
            if not piece.endswith((b"\n", b"\r")) and not final:
                self.pending = piece
                break
            if piece:
                screen.append(self.screen_part(piece.decode("utf-8", errors="replace")).encode("utf-8"))
        else:
            self.pending = b""
        return b"".join(screen)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python3 scripts/log_filter.py LOG_FILE  (reads stdin)", file=sys.stderr)
        return 2
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    with open(argv[0], "ab", buffering=0) as log:
        screen = ScreenFilter(log)
        while True:
            data = stdin.read1(65536)
            stdout.write(screen.feed(data, final=not data))
            stdout.flush()
            if not data:
                return 0


if __name__ == "__main__":
    sys.exit(main())
