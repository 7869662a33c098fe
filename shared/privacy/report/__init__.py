"""Epsilon reports: one signed JSON document per run (server) and one per device, versioned and validated.

A report states a guarantee the way an auditor needs it (Ponomareva et al. 2023, section 5.3; the fields of
`docs/privacy-reports.md`): the DP setting and trust model, the privacy unit and its contribution bound, the
adjacency relation, what is and is not covered, the mechanism and sampling parameters, the composition, the
accountant with its settings and library versions, delta, epsilon as an upper bound plus a second
accountant's figure, the release-by-release ledger and the code version.

Two guarantees are always reported separately, never composed into one number:

* ``user_level`` (run reports): DP-FedAvg on the server; the unit is one user's whole listening history.
* ``record_level`` (device reports): Opacus DP-SGD on one device; the unit is one training record. The run
  report only summarises the devices' self-reported figures (``record_level_across_devices``).

The modules, in the order a report passes through them:

* `inputs`: what the caller states (`Scope`, `Mechanism`, `Sampling`, `GuaranteeInputs`);
* `build`: the run and device reports, epsilon computed from the ledger;
* `statements`: the plain-words statements, pure functions of the report's fields;
* `schema` and `document`: the JSON Schema, validation, canonical JSON, strict reading and crash-safe writing;
* `signing`: Ed25519 signatures over the canonical JSON;
* `consistency`: the checks that need no recomputation, run by `build` (strict mode) and by `verify`;
* `verify`: `fedrec audit verify`, recomputing every figure with independent accountants;
* `render`: Markdown and HTML views.
"""

from fedrec.shared.privacy.report.build import build_device_report, build_run_report, current_code_version
from fedrec.shared.privacy.report.consistency import Finding, consistency_findings
from fedrec.shared.privacy.report.document import (
    canonical_json,
    loads_strict,
    parse_report,
    read_report,
    report_to_text,
    validate_report,
    write_report,
)
from fedrec.shared.privacy.report.inputs import GuaranteeInputs, Mechanism, Sampling, Scope
from fedrec.shared.privacy.report.schema import REPORT_SCHEMA
from fedrec.shared.privacy.report.signing import sign_report, signing_payload, verify_signature
from fedrec.shared.privacy.report.statements import across_devices_statement, empirical_statement, guarantee_statement
from fedrec.shared.privacy.report.verify import has_failures, verify_report, verify_report_file

__all__ = [
    "REPORT_SCHEMA",
    "Finding",
    "GuaranteeInputs",
    "Mechanism",
    "Sampling",
    "Scope",
    "across_devices_statement",
    "build_device_report",
    "build_run_report",
    "canonical_json",
    "consistency_findings",
    "current_code_version",
    "empirical_statement",
    "guarantee_statement",
    "has_failures",
    "loads_strict",
    "parse_report",
    "read_report",
    "report_to_text",
    "sign_report",
    "signing_payload",
    "validate_report",
    "verify_report",
    "verify_report_file",
    "verify_signature",
    "write_report",
]
