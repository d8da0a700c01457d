"""Generator sharding: each rank owns some of the K generators instead of replicating all K.

The generators take no input (each maps its fixed noise to its delta), so they can live apart
from the data. Every optimizer step, the owners compute their deltas, the K deltas are
all-gathered (kilobytes to megabytes), every rank runs the surrogate on its own images, the
gradients on the deltas are summed over ranks, and each owner backpropagates through its own
generators. No rank runs another rank's generators and no generator gradient is communicated.
docs/generator-sharding.md gives the cost model.
"""

from __future__ import annotations

import torch

from hpcue.distributed import collectives
from hpcue.training.optimizers import state_layout


def owners(num_generators: int, world: int) -> list[int]:
    """The rank that owns each generator: ``floor(k * W / K)``.

    With W <= K that is contiguous blocks whose sizes differ by at most one; with W > K it
    spreads the owners evenly over the ranks (so over the nodes, whose ranks are contiguous),
    and the ranks between them do data work only.
    """
    return [k * world // num_generators for k in range(num_generators)]


def gather_deltas(own: torch.Tensor, ids: list[int], total: int) -> torch.Tensor:
    """The K deltas on every rank from each owner's rows, in fp32, as a leaf whose ``.grad``
    collects this rank's gradient on every delta. The sum has one contributor per row, so the
    gathered deltas are exact and identical on every rank."""
    owned = torch.tensor(ids, dtype=torch.long)
    return collectives.assemble(own.detach().float(), owned, total).requires_grad_()


def sync_owned_state(generators: torch.nn.ModuleList, owner_of: list[int],
                     optimizer: torch.optim.Optimizer) -> int:
    """Broadcast every generator's parameters and optimizer state from its owner to all ranks.

    Afterwards every rank holds what replicate would hold, so the epoch checkpoint rank 0
    writes and the final deltas are replicate's format and values; it runs once an epoch (the
    checkpoint's moment), not once a step. The state is whatever the optimizer keeps (AdamW's
    moments, LAMB's, LARS's momentum): each owner tells the others its layout first, so a rank
    that never stepped a generator creates the same tensors to receive into. Returns the bytes
    it broadcast from this rank's view.
    """
    if not collectives.active():
        return 0
    me = collectives.rank()
    # torch keeps a scalar state (Adam's step count) on the host, but on the parameter's device
    # for a fused or capturable optimizer, whose kernels read it there
    on_device = bool(optimizer.defaults.get("fused") or optimizer.defaults.get("capturable"))
    layouts = collectives.gather_objects(
        {k: state_layout(optimizer, g.parameters()) for k, g in enumerate(generators)
         if owner_of[k] == me}, long_wait=False)
    sent = 0
    for k, generator in enumerate(generators):
        params = list(generator.parameters())
        tensors = [p.data for p in params]
        for p, entries in zip(params, layouts[owner_of[k]][k], strict=True):
            if not entries:  # the owner keeps no state for it: nor does any other rank
                continue
            state = optimizer.state[p]  # (a defaultdict: created where this rank never stepped)
            for key, shape, dtype in entries:
                if key not in state:
                    state[key] = torch.zeros(shape, dtype=getattr(torch, dtype),
                                             device=p.device if shape or on_device else "cpu")
                tensors.append(state[key])
        flat = torch.cat([t.detach().reshape(-1).float().to(params[0].device) for t in tensors])
        flat = collectives.broadcast_tensor(flat, owner_of[k])
        sent += flat.numel() * flat.element_size()
        offset = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t).to(t.dtype))
            offset += n
    return sent
