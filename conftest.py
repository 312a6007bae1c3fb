# The massive_checks pytest plugin is registered through its `pytest11` entry point when the
# package is installed (`pip install -e .`); nothing else is needed here.
