"""Every try in its order, and the loop that runs a selection of them and prints the tally.

The order is the report's order: the controls first (the first two make the shared inputs the
other tries copy), then one family after another.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from .configs import config_tries
from .controls import controls
from .core import CATEGORIES, Ctx, Try, run_try
from .disk import full_disk_tries
from .divergence import divergence_tries
from .kills import kill_tries, lock_tries
from .prepare import prepare_tries
from .reports import report_tries
from .rundirs import run_dir_tries
from .sweeps import sweep_tries
from .verify import verify_tries


def all_tries() -> list[Try]:
    return [*controls(), *config_tries(), *divergence_tries(), *run_dir_tries(),
            *kill_tries(), *lock_tries(), *full_disk_tries(), *verify_tries(),
            *prepare_tries(), *sweep_tries(), *report_tries()]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def run_campaign(tries: list[Try], quick: bool, only: list[str], keep: bool) -> int:
    """Run the selected tries (and the shared inputs they need), one line each, then the
    table of counts and the summary line; 0 whatever was found."""
    root = Path(tempfile.mkdtemp(prefix="hpcue-faults-"))
    base = root / "base"
    base.mkdir()
    shared = {"digits": tries[0], "run": tries[1]}  # the inputs other tries copy

    def selected(t: Try) -> bool:
        return not only or any(text in t.name for text in only)
    needed = {key for t in tries if selected(t) for key in t.needs}
    made: dict[str, bool] = {}
    counts: Counter[str] = Counter()
    skipped: list[str] = []
    t0 = time.monotonic()
    try:
        for i, t in enumerate(tries):
            base_of = next((key for key, s in shared.items() if s is t), None)
            if not (selected(t) or base_of in needed):
                continue
            why = None
            if quick and ("run" in t.needs or base_of == "run"):
                why = "--quick"
            elif t.root_only and os.geteuid() != 0:
                why = "needs root (mounts a tmpfs)"
            elif any(not made.get(key) for key in t.needs):
                why = f"the shared {', '.join(t.needs)} could not be made"
            if why is not None:
                skipped.append(f"skipped | {t.name} | {why}")
                continue
            ctx = Ctx(root / "tries" / f"{i:03d}-{slug(t.name)}", base)
            started = time.monotonic()
            category, line = run_try(t, ctx)
            line = line.replace(str(ctx.work), "<try>").replace(str(root), "<tmp>")
            if base_of is not None:
                made[base_of] = category == "ok"
            counts[category] += 1
            print(f"{category} | {t.name} | {line[:700]} ({time.monotonic() - started:.0f} s)",
                  flush=True)
            if not keep:
                shutil.rmtree(ctx.work, ignore_errors=True)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}")
    for line in skipped:
        print(line)
    total = sum(counts.values())
    print(f"\n{'category':<16}{'tries':>6}")
    for category in CATEGORIES:
        if counts[category] or category in CATEGORIES[:6]:
            print(f"{category:<16}{counts[category]:>6}")
    print(f"{'total':<16}{total:>6}   ({len(skipped)} skipped, "
          f"{time.monotonic() - t0:.0f} s)")
    extra = "".join(f" {c.replace(' ', '-')} {counts[c]}" for c in CATEGORIES[6:] if counts[c])
    print(f"tries {total} clear {counts['clear error']} traceback {counts['traceback']} "
          f"silent {counts['silent wrong']} lost {counts['data lost']} "
          f"security {counts['security']} ok {counts['ok']}{extra}")
    return 0
