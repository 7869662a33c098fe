"""Errors of the privacy layer. Their names carry intent, and their messages name the field, the expectation
and the value found, so a failed run or audit points at the one thing to fix.

All of them derive from `PrivacyError`, so a caller that only wants "anything went wrong with privacy" catches
one class; the `ValueError` bases keep `except ValueError` working for malformed inputs.
"""

from __future__ import annotations


class PrivacyError(Exception):
    """Base class of every error raised by `fedrec.shared.privacy`."""


class UnsupportedMechanism(PrivacyError, ValueError):
    """An accountant was handed a `DpEvent` it cannot account for (the message names the sub-event)."""


class LedgerError(PrivacyError, ValueError):
    """A privacy ledger is malformed, or an entry does not fit the ledger (wrong kind, round going back)."""


class PrivacyBudgetExceeded(PrivacyError):
    """The next release would take epsilon past the budget; it must not happen.

    Raised *before* the release, so the ledger and the published outputs still satisfy the budget.
    """

    def __init__(self, message: str, *, epsilon: float, epsilon_max: float, delta: float) -> None:
        super().__init__(message)
        self.epsilon = epsilon
        self.epsilon_max = epsilon_max
        self.delta = delta


class ReportError(PrivacyError, ValueError):
    """An epsilon report cannot be built as asked (for example its figures would be inconsistent)."""


class ReportSchemaError(ReportError):
    """An epsilon report does not match its schema. `field` is the dotted path of the first offending field."""

    def __init__(self, message: str, *, field: str = "", problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.field = field
        self.problems = problems or (message,)


class ReportInputError(ReportSchemaError):
    """A report file cannot be read as JSON at all (missing, unreadable, truncated, not UTF-8): an input error,
    which `fedrec audit verify` tells apart (exit 2) from a report that parses but fails a check (exit 1)."""


class SignatureError(PrivacyError):
    """A report's signature is missing, malformed, invalid, or made with a key other than the expected one."""


class KeyFileError(PrivacyError, ValueError):
    """A key file cannot be read as the expected Ed25519 key."""


class UnknownAccountant(PrivacyError, ValueError):
    """An accountant name (in a call or in a report) is not in the registry."""
