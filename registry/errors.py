"""The registry's one domain exception, mapped to responses in one place (views, API, CLI)."""

from __future__ import annotations


class RegistryError(Exception):
    """A rule of the registry refused an action.

    `errors` maps a field name (or "__all__") to its messages, so forms can show each message at
    its field and commands can print them all.
    """

    def __init__(self, message: str | None = None, *, field: str = "__all__",
                 errors: dict[str, list[str]] | None = None) -> None:
        self.errors: dict[str, list[str]] = {k: list(v) for k, v in (errors or {}).items()}
        if message:
            self.errors.setdefault(field, []).append(message)
        super().__init__(self.summary())

    def summary(self) -> str:
        parts = []
        for field, messages in self.errors.items():
            prefix = "" if field == "__all__" else f"{field}: "
            parts.extend(prefix + m for m in messages)
        return "; ".join(parts)


class ValidationFailed(RegistryError):
    """Input broke a rule; nothing was written."""


class NotPermitted(RegistryError):
    """The acting user may not do this (their role or site does not allow it)."""


class StaleEdit(RegistryError):
    """Someone else saved the record after this edit began; nothing was written."""


class BudgetExhausted(RegistryError):
    """A partner query would spend more privacy budget than the window allows; `retry_after`
    is the seconds until enough of the window's charges expire."""

    def __init__(self, message: str | None = None, *, retry_after: int, **kwargs) -> None:
        self.retry_after = max(1, int(retry_after))
        super().__init__(message, **kwargs)


class ErrorCollector:
    """Gathers every problem of one input before refusing it, so the user sees them all."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def add(self, field: str, message: str) -> None:
        self.errors.setdefault(field, []).append(message)

    def raise_if_any(self) -> None:
        if self.errors:
            raise ValidationFailed(errors=self.errors)
