"""Signing reports with Ed25519 and checking the signature.

`sign_report` signs the canonical JSON of the report without its ``signature`` member (sorted keys, no
whitespace, UTF-8, Python's shortest float repr) with Ed25519; `verify_signature` checks it, against a pinned
public key when one is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedrec.shared.privacy import keys
from fedrec.shared.privacy.errors import KeyFileError, SignatureError
from fedrec.shared.privacy.report.document import canonical_json, validate_report
from fedrec.shared.privacy.report.schema import SIGNED_CONTENT


def signing_payload(report: Mapping[str, Any]) -> bytes:
    return canonical_json({k: v for k, v in report.items() if k != "signature"})


def sign_report(report: Mapping[str, Any], private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """A copy of `report` with an Ed25519 ``signature`` over everything else (any old signature replaced)."""
    unsigned = {k: v for k, v in report.items() if k != "signature"}
    validate_report({**unsigned, "signature": None})
    signature = private_key.sign(signing_payload(unsigned))
    return {**unsigned, "signature": {
        "algorithm": "Ed25519", "signed_content": SIGNED_CONTENT,
        "public_key": keys.b64(keys.public_key_raw(private_key)),
        "key_fingerprint": keys.fingerprint(private_key), "value": keys.b64(signature)}}


def verify_signature(report: Mapping[str, Any], public_key: Ed25519PublicKey | None = None) -> str:
    """Check the signature; return the signer's fingerprint. Raise `SignatureError` saying what is wrong.

    Without `public_key` the key embedded in the report is used: that proves the report was not changed since
    it was signed, but not *who* signed it. Pass the server's or device's published key to prove that.
    """
    sig = report.get("signature")
    if sig is None:
        raise SignatureError("report.signature: the report is not signed")
    if not isinstance(sig, Mapping) or sig.get("algorithm") != "Ed25519":
        raise SignatureError(f"report.signature: expected an Ed25519 signature block, found {sig!r}")
    try:
        embedded = keys.public_key_from_raw(keys.unb64(str(sig.get("public_key", "")),
                                                       what="report.signature.public_key"))
        value = keys.unb64(str(sig.get("value", "")), what="report.signature.value")
    except KeyFileError as e:
        raise SignatureError(str(e)) from None
    if sig.get("key_fingerprint") != keys.fingerprint(embedded):
        raise SignatureError(f"report.signature.key_fingerprint: {sig.get('key_fingerprint')!r} is not the "
                             f"fingerprint of the embedded key ({keys.fingerprint(embedded)})")
    if public_key is not None and keys.fingerprint(public_key) != keys.fingerprint(embedded):
        raise SignatureError(f"report signed with key {keys.fingerprint(embedded)}, expected "
                             f"{keys.fingerprint(public_key)} (the given public key)")
    try:
        (public_key or embedded).verify(value, signing_payload(report))
    except InvalidSignature:
        raise SignatureError(f"report.signature.value: invalid signature for key {keys.fingerprint(embedded)}: the "
                             f"report was changed after signing, or signed over different bytes") from None
    return keys.fingerprint(embedded)
