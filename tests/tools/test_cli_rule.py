"""Every command line follows paddlemix/cli.py: ``sys.exit(run(main))``, and a run that finds nothing to do is bad input (exit 2)."""

import ast
import os

import pytest

from paddlemix.cli import EXIT_BAD_INPUT, run
from paddlemix.tools import baselines, paper_table, shuffle_images

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "paddlemix", "tools")


def main_guard(path):
    """The source of the ``if __name__ == "__main__":`` block's last statement, or None."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "__name__ == '__main__'":
            return ast.unparse(node.body[-1])
    return None


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(TOOLS) if f.endswith(".py") and f != "__init__.py"))
def test_every_tool_exits_through_run(name):
    assert main_guard(os.path.join(TOOLS, name)) == "sys.exit(run(main))"


@pytest.mark.parametrize("tool, argv", [
    (baselines, ["--train_json", "{train}", "--test_dir", "{empty}", "--out_dir", "{out}"]),
    (shuffle_images, ["--test_dir", "{empty}", "--out_dir", "{out}"]),
    (paper_table, ["--pred_dir", "{empty}"]),
], ids=["baselines", "shuffle_images", "paper_table"])
def test_a_folder_with_nothing_to_do_is_bad_input(tool, argv, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    train = tmp_path / "train.json"
    train.write_text("[]")
    argv = [a.format(train=train, empty=empty, out=tmp_path / "out") for a in argv]
    assert run(tool.main, argv) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    last = captured.err.splitlines()[-1]
    assert last.startswith("error: ") and str(empty) in last
    assert "wrote" not in captured.out
    assert os.listdir(empty) == []  # no empty table or file left behind to look like a result
