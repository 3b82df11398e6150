"""One job's devices: Ray worker actors, device pools, process groups, model cache; training (``runtime.training``)."""
