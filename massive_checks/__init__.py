"""massive_checks: turn claims about massive activations into a pytest regression suite."""

__version__ = "0.8.0"
