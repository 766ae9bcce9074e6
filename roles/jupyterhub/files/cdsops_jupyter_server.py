"""The student server's side of the open IDE profile (loaded by jupyterhub-singleuser).

* ``CodeLoggingConnection``: the kernel websocket connection of jupyter_server, which logs
  every ``execute_request`` the browser sends (whatever the kernel) as one JSON journal line
  (SYSLOG_IDENTIFIER=cdsops-code) before passing it on unchanged.
* ``LimitedContentsManager``: the default contents manager with a limit on the size of a
  whole file, chunked uploads included (JupyterLab sends large files in chunks of 1 MB, so
  nginx's body size limit alone never sees the total).

Both are set on the server's command line by the hub (Spawner.args), which outranks any
configuration file a student could write. What a student can still do is documented in
docs/open-ide.md (the server runs as the student).
"""

from __future__ import annotations

import base64
import json
import os
import pwd

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from jupyter_server.services.kernels.connection.base import deserialize_binary_message, deserialize_msg_from_ws_v1
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from tornado import web
from traitlets import Integer

from cdsops_jupyter_journal import now_iso, send

V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"
DEFAULT_MAX_CHARS = 4096


def code_record(username: str, kernel: str, code: str, max_chars: int) -> dict:
    """The cdsops-code line: code cut at ``max_chars`` characters, ``truncated`` says so."""
    return {"event": "code", "ts": now_iso(), "username": username, "kernel": kernel,
            "code": code[:max_chars], "truncated": len(code) > max_chars}


def execute_code(ws_msg, subprotocol: str | None) -> str | None:
    """The code of an execute_request on the shell channel, else None."""
    if subprotocol == V1_PROTOCOL:
        channel, parts = deserialize_msg_from_ws_v1(ws_msg)
        if channel != "shell" or len(parts) < 4:
            return None
        header, content = json.loads(parts[0]), json.loads(parts[3])
    else:
        msg = deserialize_binary_message(ws_msg) if isinstance(ws_msg, bytes) else json.loads(ws_msg)
        if msg.get("channel") != "shell":
            return None
        header, content = msg.get("header") or {}, msg.get("content") or {}
    if header.get("msg_type") != "execute_request":
        return None
    code = content.get("code")
    return code if isinstance(code, str) else None


class CodeLoggingConnection(ZMQChannelsWebsocketConnection):
    """Logs each executed cell (one journal line), then handles the message as usual."""

    def handle_incoming_message(self, incoming_msg) -> None:
        try:
            code = execute_code(incoming_msg, self.subprotocol)
            if code is not None and code.strip():
                kernel = getattr(self.kernel_manager, "kernel_name", "") or "unknown"
                max_chars = int(os.environ.get("CDSOPS_CODE_LOG_MAX_CHARS", DEFAULT_MAX_CHARS))
                send("cdsops-code", code_record(pwd.getpwuid(os.getuid()).pw_name, kernel, code, max_chars))
        except Exception as exc:  # noqa: BLE001 - logging must never stop a student's cell
            self.log.warning("cdsops: could not log executed code: %s", exc)
        super().handle_incoming_message(incoming_msg)


def incoming_size(model: dict) -> int:
    """Bytes a contents-API save writes (base64 decoded for binary files)."""
    content = model.get("content")
    if content is None:
        return 0
    if model.get("type") == "notebook":
        return len(json.dumps(content).encode("utf-8"))
    if model.get("format") == "base64":
        return len(base64.b64decode(content, validate=False))
    return len(str(content).encode("utf-8"))


class LimitedContentsManager(AsyncLargeFileManager):
    """Refuses (413) a save that makes a file larger than ``max_file_bytes``."""

    max_file_bytes = Integer(0, config=True, help="Largest file a save may produce; 0: no limit.")

    async def save(self, model, path=""):
        if self.max_file_bytes > 0 and model:
            chunk = model.get("chunk")
            size = incoming_size(model)
            if chunk is not None and chunk != 1 and await self.file_exists(path):
                size += (await self.get(path, content=False, type="file"))["size"] or 0
            if size > self.max_file_bytes:
                if chunk is not None and chunk != 1 and await self.file_exists(path):
                    await self.delete(path)  # no half-uploaded file is left behind
                limit_mb = self.max_file_bytes // (1024 * 1024)
                raise web.HTTPError(413, f"{path}: larger than the upload limit of {limit_mb} MB")
        return await super().save(model, path)
