"""LSF ``jsrun``: JSM_NAMESPACE_SIZE/RANK/LOCAL_RANK, LSB_JOBID and the LSB_DJOB_RANKFILE.

Lightning's LSFEnvironment checks nothing against the job's shape, and a mismatch under jsrun
mis-shards or hangs silently; so the rankfile and Open MPI's copy of the counts are checked here.
"""

from __future__ import annotations

import os
import socket

from hpcue.distributed.launchers.base import Launcher, TopologyError, int_env


def rankfile_hosts() -> list[str]:
    """Compute hosts of the jsrun rankfile: every line after the first (the launch node)."""
    path = os.environ.get("LSB_DJOB_RANKFILE", "")
    try:
        with open(path) as fh:
            lines = [line.strip() for line in fh if line.strip()]
    except OSError as exc:
        raise TopologyError(f"LSB_DJOB_RANKFILE={path!r} cannot be read: {exc}") from None
    hosts = list(dict.fromkeys(lines[1:]))
    if not hosts:
        raise TopologyError(f"{path}: rankfile lists no compute hosts after its first line")
    return hosts


class Lsf(Launcher):
    name = "lsf"
    started_by = "jsrun"

    @staticmethod
    def detect() -> bool:
        from lightning.fabric.plugins.environments import LSFEnvironment

        return LSFEnvironment.detect()

    def __init__(self) -> None:
        world = int_env("JSM_NAMESPACE_SIZE")
        hosts = rankfile_hosts()
        if "OMPI_COMM_WORLD_SIZE" in os.environ and int_env("OMPI_COMM_WORLD_SIZE") != world:
            raise TopologyError(f"JSM_NAMESPACE_SIZE={world} but OMPI_COMM_WORLD_SIZE="
                                f"{os.environ['OMPI_COMM_WORLD_SIZE']}")
        if world % len(hosts):
            raise TopologyError(
                f"JSM_NAMESPACE_SIZE={world} ranks do not divide over the {len(hosts)} hosts of "
                f"{os.environ['LSB_DJOB_RANKFILE']} ({', '.join(hosts)}): check jsrun -n/-r")
        per_node = world // len(hosts)
        self.world_size, self.num_nodes, self.ranks_per_node = world, len(hosts), per_node
        host = socket.gethostname()
        self.node_rank = (hosts.index(host) if host in hosts
                          else int_env("JSM_NAMESPACE_RANK") // per_node)
        self.rank = int_env("JSM_NAMESPACE_RANK")
        self.local_rank = int_env("JSM_NAMESPACE_LOCAL_RANK")

    def cluster_environment(self):
        from lightning.fabric.plugins.environments import LSFEnvironment

        return LSFEnvironment()
