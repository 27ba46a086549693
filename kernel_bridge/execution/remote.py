"""Kernels on a Jupyter Server or Kernel Gateway, reached over its REST API and websocket.

``RemoteTransport`` is the other ``Transport`` (see ``transport.py``):
``Kernel(url="http://host:8888", token="…")`` uses it, and everything above it (timeouts,
interrupts, restarts, outputs) is the same code as for local kernels. Works with Enterprise
Gateway, whose kernels can run as pods on Kubernetes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from jupyter_client.jsonutil import json_default
from jupyter_client.session import Session
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from kernel_bridge.execution.result import KernelError
from kernel_bridge.execution.transport import queue_get


class RemoteTransport:
    """One kernel started on a remote server; messages travel over its channels websocket."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None,
        kernel_name: str = "python3",
        startup_timeout: float = 60.0,
    ) -> None:
        self.base = url.rstrip("/")
        self.token = token
        self.kernel_name = kernel_name
        self.startup_timeout = startup_timeout
        self.kernel_id: str | None = None
        self.session = Session(key=b"", username="kernel-bridge")
        self._ws: WebSocketClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(maxsize=10_000)
        self._died = False
        self._http = AsyncHTTPClient()

    # -- REST ---------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"} if self.token else {}

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = HTTPRequest(
            f"{self.base}{path}",
            method=method,
            headers=self._headers(),
            body=json.dumps(body) if body is not None else (b"" if method == "POST" else None),
            request_timeout=self.startup_timeout,
        )
        try:
            response = await self._http.fetch(request)
        except HTTPClientError as e:
            hint = " (check the token)" if e.code in (401, 403) else ""
            raise KernelError(f"{method} {self.base}{path} failed: HTTP {e.code}{hint}") from e
        except OSError as e:
            raise KernelError(f"cannot reach the Jupyter server at {self.base}: {e}") from e
        return json.loads(response.body) if response.body else None

    # -- Transport ----------------------------------------------------------------------------

    async def start(self) -> None:
        model = await self._request("POST", "/api/kernels", {"name": self.kernel_name})
        self.kernel_id = model["id"]
        await self._connect()
        await self._wait_ready()

    async def _connect(self) -> None:
        parts = urlsplit(self.base)
        scheme = "wss" if parts.scheme == "https" else "ws"
        path = f"{parts.path}/api/kernels/{quote(str(self.kernel_id))}/channels"
        query = f"session_id={self.session.session}"
        url = urlunsplit((scheme, parts.netloc, path, query, ""))
        request = HTTPRequest(url, headers=self._headers(), connect_timeout=self.startup_timeout)
        try:
            self._ws = await websocket_connect(request, max_message_size=1 << 30)
        except (HTTPClientError, OSError) as e:
            raise KernelError(f"cannot open the kernel's websocket at {url}: {e}") from e
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._ws is not None
        while True:
            raw = await self._ws.read_message()
            if raw is None:  # connection closed
                self._died = True
                return
            if isinstance(raw, bytes):
                continue  # binary frames carry buffers we do not use
            msg = json.loads(raw)
            if msg.get("msg_type") == "status" and msg["content"].get("execution_state") in (
                "dead",
                "restarting",
            ):
                self._died = True
            msg.setdefault("header", {}).setdefault("msg_type", msg.get("msg_type"))
            await self._queue.put((msg.get("channel", "iopub"), msg))

    async def _wait_ready(self) -> None:
        """Ask for kernel info until both channels answer: the reply on shell, and its status
        on iopub. After a restart the server's iopub subscription to the new kernel takes a
        moment; output sent before it is in place is lost, so the first block waits for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.startup_timeout
        while loop.time() < deadline:
            msg_id = await self._send("kernel_info_request", {})
            answered: set[str] = set()
            try:
                while answered != {"shell", "iopub"}:
                    channel, msg = await self.next_message(min(1.0, deadline - loop.time()))
                    if msg.get("parent_header", {}).get("msg_id") == msg_id:
                        answered.add("shell" if channel == "shell" else "iopub")
            except TimeoutError:
                continue
            self._died = False
            return
        raise KernelError(f"the remote kernel did not answer within {self.startup_timeout} s")

    async def _send(self, msg_type: str, content: dict[str, Any], channel: str = "shell") -> str:
        if self._ws is None:
            raise KernelError("the remote kernel's websocket is closed")
        msg = self.session.msg(msg_type, content)
        msg["channel"] = channel
        await self._ws.write_message(json.dumps(msg, default=json_default))
        return str(msg["header"]["msg_id"])

    async def send_execute(
        self, code: str, *, silent: bool = False, user_expressions: dict[str, str] | None = None
    ) -> str:
        return await self._send(
            "execute_request",
            {
                "code": code,
                "silent": silent,
                "store_history": not silent,
                "user_expressions": user_expressions or {},
                "allow_stdin": False,
                "stop_on_error": False,
            },
        )

    async def next_message(self, timeout: float) -> tuple[str, dict[str, Any]]:
        return await queue_get(self._queue, timeout)

    async def interrupt(self) -> None:
        await self._request("POST", f"/api/kernels/{self.kernel_id}/interrupt")

    async def restart(self) -> None:
        try:
            await self._request("POST", f"/api/kernels/{self.kernel_id}/restart")
        except KernelError:
            if not self._died:
                raise
            # The server is already restarting the kernel that died: wait for it below.
        if self._ws is None or self._reader is None or self._reader.done():
            await self._connect()
        await self._wait_ready()

    async def is_alive(self) -> bool:
        if self._died:
            return False
        try:
            model = await self._request("GET", f"/api/kernels/{self.kernel_id}")
        except KernelError:
            return False
        return bool(model) and model.get("execution_state") != "dead"

    async def shutdown(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._ws is not None:
            self._ws.close()
            self._ws = None
        if self.kernel_id is not None:
            with contextlib.suppress(KernelError):
                await self._request("DELETE", f"/api/kernels/{self.kernel_id}")
            self.kernel_id = None


__all__ = ["RemoteTransport"]
