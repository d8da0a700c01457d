"""A reproducible fault and bad-input campaign against the hpcue command line.

Every try is one real CLI command (``python -m hpcue.cli ...`` in a subprocess, one thread, a
timeout) on inputs fabricated in its own temporary directory: damaged, crafted or malformed
configs, shard directories, raw data sets, run directories, sweep specs, machine profiles and
results, plus kills, a held lock and a full disk. Each outcome is classified as

    clear error    non-zero exit, exactly one ``hpcue: error:`` line (a config error may go on
                   in indented lines), no traceback, the message names what the try expects
                   (the file, key or option at fault), nothing written outside the command's
                   own output and no temporary left behind
    traceback      a Python traceback, or a crash (a negative return code, 139)
    silent wrong   exit 0 where an error was expected, a result holding NaN or Infinity, a
                   failed point counted as a success
    data lost      a result that existed before the command (results.json, perturbations.pt,
                   unlearnable/, a shard ...) removed or changed by a failed command
    security       a file written outside the command's output directory, or the command of a
                   crafted input executed (marker files)
    ok             a control: a command whose success is the right outcome, and it succeeded

and, only when they occur, ``unclear`` (an error that is not one line, or does not name what is
at fault, or leaves a temporary behind, or a hang), ``failed control`` (a control that failed)
and ``broken try`` (the campaign could not fabricate the try's input: a bug of this script).

One finished tiny run is made first and copied for every try that needs one. The output is one
line per try, a table of counts and, as the last line,
``tries N clear X traceback T silent S lost L security Y ok K``. The exit status is 0 whatever
was found: this reports, it does not judge.

    .venv/bin/python benchmarks/fault_campaign.py [--quick] [--only TEXT] [--keep] [--list]

``--quick`` skips the tries that need the finished run (and the run itself); the full-disk tries
need root (a tmpfs is mounted) and are skipped otherwise.

The tries live in ``benchmarks/faults/``, one module a fault family (``core`` says what a try
is and judges it, ``inputs`` fabricates, ``campaign`` orders and runs them); this file is the
command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the repository root: ``benchmarks.faults``, and the damage helpers the tests use (one copy, in
# tests/fabricate.py)
sys.path.insert(0, str(REPO))
from benchmarks.faults.campaign import all_tries, run_campaign  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="skip the tries that need the finished run (and the run itself)")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="only the tries whose name holds TEXT (repeatable; the shared "
                             "inputs they need are still made)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--list", action="store_true", help="list the tries and exit")
    args = parser.parse_args()

    tries = all_tries()
    if args.list:
        for t in tries:
            print(t.name)
        return 0
    return run_campaign(tries, args.quick, args.only, args.keep)


if __name__ == "__main__":
    sys.exit(main())
