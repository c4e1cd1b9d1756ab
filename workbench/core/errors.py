"""Errors that carry the field they refuse as data, so every surface names it its own way."""

from __future__ import annotations


class FieldError(ValueError):
    """A value that cannot be used, with its field as data.

    Attributes:
        field: what was refused (``"seed"``, ``"height"``, ``"source"``, ...).
        problem: what is wrong, without the field's name: ``f"{field} {problem}"`` is the message, so a
            command line or a form can say ``f"{its option} {problem}"``.
        hint: how to lift a bound, in Python's words (``"pass size_limit=None ..."``), or ``""``; kept
            apart so that another surface can word it its own way.
    """

    label = ""  # a prefix for the field in this error's own message (``"policy"``: "policy heads ...")

    def __init__(self, field: str, problem: str, *, hint: str = ""):
        self.field, self.problem, self.hint = field, problem, hint
        super().__init__(self.named(f"{self.label} {field}".strip()))

    def named(self, name: str, hint: str | None = None) -> str:
        """The message with the field called ``name`` (an option, a spec field) and ``hint`` in place of
        the Python one."""
        hint = self.hint if hint is None else hint
        return f"{name} {self.problem}" + (f" ({hint})" if hint else "")

    def __reduce__(self):  # keeps the field when the error crosses a process (Ray workers)
        return (_rebuild, (type(self), self.field, self.problem, self.hint))


def _rebuild(cls, field, problem, hint):
    return cls(field, problem, hint=hint)


class FieldTypeError(FieldError, TypeError):
    """A value of the wrong type (a ``FieldError`` that is also a ``TypeError``)."""


def first_line(err: BaseException) -> str:
    """The first non-blank line of an error's message (its type's name when it has none): what a
    one-line report of an error from a library shows."""
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
