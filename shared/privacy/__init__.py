"""Privacy accounting, budgets, epsilon reports and their audit.

Two guarantees, always kept apart:

* **user-level** (server, DP-FedAvg): a `PrivacyLedger(guarantee="user-level")` gets one entry per released
  aggregate (`record_user_level_release`);
* **record-level** (each device, Opacus DP-SGD): a `PrivacyLedger(guarantee="record-level")` per device gets one
  entry per round it trained in (`record_local_dpsgd`), and persists across rounds.

Each entry is a `dp_accounting` DpEvent (`events`). Epsilon is always computed from a ledger by an accountant
(`make_accountant("pld").epsilon(ledger.events(), delta=...)`), budgets are checked before a release
(`PrivacyBudget.check`), and reports are built, signed, written, rendered and verified with the `report`
package (keys: `keys`). See docs/privacy-reports.md.
"""

from fedrec.shared.privacy.accountants import Accountant, make_accountant, opacus_epsilon
from fedrec.shared.privacy.budget import PrivacyBudget, check_budget, epsilon_after, would_exceed
from fedrec.shared.privacy.errors import (
    KeyFileError,
    LedgerError,
    PrivacyBudgetExceeded,
    PrivacyError,
    ReportError,
    ReportSchemaError,
    SignatureError,
    UnknownAccountant,
    UnsupportedMechanism,
)
from fedrec.shared.privacy.events import dpfedavg_event, dpsgd_event, event_from_json, event_to_json
from fedrec.shared.privacy.ledger import LedgerEntry, PrivacyLedger
from fedrec.shared.privacy.report import (
    GuaranteeInputs,
    Mechanism,
    Sampling,
    Scope,
    build_device_report,
    build_run_report,
    read_report,
    sign_report,
    verify_signature,
    write_report,
)

__all__ = [
    "Accountant",
    "GuaranteeInputs",
    "KeyFileError",
    "LedgerEntry",
    "LedgerError",
    "Mechanism",
    "PrivacyBudget",
    "PrivacyBudgetExceeded",
    "PrivacyError",
    "PrivacyLedger",
    "ReportError",
    "ReportSchemaError",
    "Sampling",
    "Scope",
    "SignatureError",
    "UnknownAccountant",
    "UnsupportedMechanism",
    "build_device_report",
    "build_run_report",
    "check_budget",
    "dpfedavg_event",
    "dpsgd_event",
    "epsilon_after",
    "event_from_json",
    "event_to_json",
    "make_accountant",
    "opacus_epsilon",
    "read_report",
    "sign_report",
    "verify_signature",
    "would_exceed",
    "write_report",
]
