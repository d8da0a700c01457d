"""``hpcue sweep render`` runs on a login node: it imports neither torch nor Lightning (nor
matplotlib), which take seconds to load there and are not needed to write job scripts."""

from __future__ import annotations

import json
import subprocess
import sys

from hpcue.sweep.shipped import sweeps_dir
from tests.conftest import ACCOUNT

HEAVY = ("torch", "lightning", "matplotlib")
#: every module of the command's code path (cli.py's _sweep_command imports these)
SWEEP_MODULES = ("hpcue.sweep.render", "hpcue.sweep.submit", "hpcue.sweep.points",
                 "hpcue.sweep.spec", "hpcue.sweep.machines", "hpcue.sweep.shipped")

PROBE = """
import json, sys
heavy = {heavy!r}
loaded = lambda: sorted(m for m in heavy if m in sys.modules)
import hpcue.cli
after_cli = loaded()
codes = {{spec: hpcue.cli.main(["sweep", "render", spec, "--out", "out-" + spec,
                                "--account", {account!r}])
         for spec in {specs!r}}}
for module in {modules!r}:
    __import__(module)
print(json.dumps({{"after_cli": after_cli, "after_render": loaded(), "codes": codes}}))
"""


def test_sweep_render_imports_no_torch_lightning_or_matplotlib(tmp_path):
    """Every shipped spec (digits, the MedMNIST and Flowers102 configs: the data-set registry
    and each importer's declaration) rendered by the command itself, in a fresh interpreter."""
    specs = sorted(p.stem for p in sweeps_dir().glob("*.yaml"))
    probe = PROBE.format(heavy=HEAVY, specs=specs, modules=SWEEP_MODULES, account=ACCOUNT)
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["codes"] == dict.fromkeys(specs, 0), proc.stdout + proc.stderr
    for spec in specs:
        assert list((tmp_path / f"out-{spec}").glob("*.*")), spec
    assert seen["after_cli"] == [], "import hpcue.cli loads " + ", ".join(seen["after_cli"])
    assert seen["after_render"] == [], ("hpcue sweep render loads "
                                        + ", ".join(seen["after_render"]))
