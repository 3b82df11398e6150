"""The service: job specs, controller, job store, scheduler, coordinator, Python client, CLI."""
