"""The error a bad job spec raises, in a module of its own so that the light CLI verbs (list, status,
logs, wait) can catch it without importing torch and diffusers."""

from __future__ import annotations


class SpecError(ValueError):
    """A job spec field is wrong; `field` names it (dotted for nested fields)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message

    def __reduce__(self):
        # rebuilt from (field, message) when Ray sends it from the controller to the client
        return (SpecError, (self.field, self.message))


class TenantLimit(SpecError):
    """A submission beyond its tenant's limits (a priority above its ceiling, too many jobs waiting);
    `status` is the HTTP status that says so (403, 429)."""

    def __init__(self, field_name: str, message: str, status: int = 403) -> None:
        super().__init__(field_name, message)
        self.status = status

    def __reduce__(self):
        return (TenantLimit, (self.field, self.message, self.status))
