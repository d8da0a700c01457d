"""Lightning's banners, tips and hints, and the libraries' warnings, go to the run's log file.

A default run printed 378 lines, 5 of them hpcue's: "GPU available", a litlogger tip and an
srun hint for every Trainer, deprecation warnings from inside Lightning. They are kept (in
``<run>/logs/lightning.log``) but no longer printed; ``-v`` prints them as well. Warnings raised
by hpcue's own code are still printed: they are meant for the user.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

#: the loggers Lightning prints through (each has its own StreamHandler and does not propagate)
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning_utilities")
#: warnings raised from these packages are library noise for an hpcue user
NOISY_PACKAGES = ("/lightning/", "/lightning_utilities/", "/torch/", "/torchmetrics/",
                  "/torchvision/")

_show_warning = warnings.showwarning


class RunLogHandler(logging.FileHandler):
    """Appends to a file inside a run directory that exists; never creates the directory (a
    failed first stage removes the run directory it created, and nothing may bring it back)."""

    def __init__(self, path: Path) -> None:
        self.run_root = Path(path).parent.parent
        super().__init__(path, delay=True, encoding="utf-8")

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None:
            if not self.run_root.is_dir():
                return
            Path(self.baseFilename).parent.mkdir(exist_ok=True)
        super().emit(record)


def route_lightning(log_file: Path | None, verbose: bool = False) -> None:
    """Send Lightning's log lines and the libraries' warnings to ``log_file`` (None: nowhere),
    and to the terminal too when ``verbose``. Called once per command, before any Trainer."""
    import lightning.pytorch  # noqa: F401  (on import it adds its own terminal handler)

    handlers: list[logging.Handler] = []
    if log_file is not None:
        handler = RunLogHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        handlers.append(handler)
    if verbose:
        handlers.append(logging.StreamHandler())
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        for handler in handlers:
            logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.INFO)
    library = logging.getLogger("hpcue.library_warnings")
    library.handlers = handlers
    library.propagate = False
    library.setLevel(logging.INFO)

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if any(part in str(filename) for part in NOISY_PACKAGES):
            library.warning("%s:%s: %s: %s", filename, lineno, category.__name__, message)
        else:
            _show_warning(message, category, filename, lineno, file, line)

    warnings.showwarning = show
