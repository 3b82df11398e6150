"""Communication over a torch.distributed group with bytes counted per kind and per peer.

- ``exchange``: ``Comm``, point-to-point and collective exchanges over one process group;
- ``pending``: ``Pending``, an exchange in flight (waited on at once, or a step later in displaced mode);
- ``counters``: ``BytesSent`` and the traffic ``KINDS``.
"""

from parallel.comm.counters import KINDS, BytesSent
from parallel.comm.exchange import Comm
from parallel.comm.pending import Pending, done

__all__ = ["KINDS", "BytesSent", "Comm", "Pending", "done"]
