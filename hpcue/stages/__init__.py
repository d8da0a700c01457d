"""The pipeline's stages, one module each with ``run(ctx) -> record``, and what they share:
the run directory (``rundir``), the files they hand each other (``artifacts``), the context
built once per command (``context``) and the checked input data (``inputs``).

Importing this package imports nothing: the CLI reads ``rundir`` before torch may start.
"""
