"""Installed as the package data ``hpcue._jobs`` (pyproject.toml): the job-script templates.
This file makes it a regular package, which setuptools' editable install can map to this folder
(a folder without one is not importable there)."""
