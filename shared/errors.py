"""Errors shared by the server, the devices and the tools, named for what went wrong.

Each message names the source (file, option or message), the key and the value found, so a user can fix the
input without reading code. Subsystems keep their own hierarchies beside their code (`fedrec.shared.privacy.errors`,
`fedrec.shared.secagg.errors`); this module holds the ones every layer raises.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting is unknown or out of range; the message names the source, the key and the value."""


class DeviceError(ValueError):
    """A device cannot do what a message asks. `code` is one of `fedrec.shared.protocol.DEVICE_ERRORS`: the only
    part of the failure that leaves the device; the message (which may name files and values) stays in the
    device's own log."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
