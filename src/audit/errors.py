"""Exceptions that map to the CLI's exit codes (the README's exit statuses: 2 unusable
input, 3 internal)."""

from __future__ import annotations


class AuditError(Exception):
    """Base class of the errors faceage-audit raises on purpose."""

    exit_code = 3


class InputError(AuditError):
    """The command or its input cannot be used; the message names file, row and column."""

    exit_code = 2


class StoreBusyError(InputError):
    """Another process holds the DuckDB file longer than we were willing to wait."""


class StageError(AuditError):
    """A stage failed on data it had accepted (an internal error, exit 3)."""
