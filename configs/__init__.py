"""Installed as the package data ``hpcue._configs`` (pyproject.toml): run configs, ``base/``,
``machines/`` and ``sweeps/``. This file makes it a regular package, which setuptools' editable
install can map to this folder (a folder without one is not importable there)."""
