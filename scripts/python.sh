# The Python every shell script of the project runs (sourced, after ROOT is set to the repository):
# $PYTHON when set, else the repository's .venv/bin/python (what scripts/setup_env.sh makes), else
# python3 from PATH. README, "Command lines".
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
