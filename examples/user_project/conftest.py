"""Registers the project's measure, intervention and judge in every pytest process (xdist workers
included: each one imports conftest.py)."""

import user_extensions  # noqa: F401  (registration)
