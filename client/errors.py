"""What a failed device tells the server: an error code, nothing else; the detail goes to the device's own log.

A device's failures name its files and sometimes its data (a malformed history line, a path, a norm), and an
error reply is sent to the server in the clear, outside every guarantee. So every handler of the ClientApp runs
under `guarded`: an exception becomes an error reply whose reason is `fedrec.shared.protocol.device_error_reason`
of one code (`error_code` maps exception types to codes; `fedrec.shared.errors.DeviceError` names one directly),
and the exception with its traceback is logged on the device (`fedrec.client` logger).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flwr.app import Context, Error, Message
from flwr.common.constant import ErrorCode

from fedrec.shared.data.types import DataFormatError
from fedrec.shared.errors import ConfigError, DeviceError
from fedrec.shared.protocol import device_error_reason
from fedrec.shared.secagg.errors import SecAggError

log = logging.getLogger("fedrec.client")

Handler = Callable[[Message, Context], Message]


def error_code(e: BaseException) -> str:
    """The device error code of an exception (`DEVICE_ERRORS`)."""
    if isinstance(e, DeviceError):
        return e.code
    if isinstance(e, DataFormatError):
        return "data"
    if isinstance(e, ConfigError):
        return "config"
    if isinstance(e, SecAggError):
        return "secagg"
    return "internal"


def error_reply(msg: Message, code: str) -> Message:
    """An error reply carrying only `code` and its fixed text."""
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=device_error_reason(code)), reply_to=msg)


def guarded(handler: Handler, msg: Message, context: Context) -> Message:
    """`handler(msg, context)`, or an error reply with a code if it raises (the detail is logged here only)."""
    try:
        return handler(msg, context)
    except Exception as e:  # noqa: BLE001 - any failure: a code to the server, the detail to the device's log
        code = error_code(e)
        log.error("fedrec device error %s in a %s message: %s: %s", code, msg.metadata.message_type,
                  type(e).__name__, e, exc_info=True)
        return error_reply(msg, code)
