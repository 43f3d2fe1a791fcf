"""A TCP forwarder the lab starts between clients and a server, to plant network faults
without privileges (no tc/netem, no root): delay, freeze, drop.

    with FaultProxy("127.0.0.1", server.rest_port) as proxy:   # clients use proxy.port
        proxy.set_delay(50)        # every chunk, each way, leaves 50 ms after it arrived
        proxy.set_frozen(True)     # nothing moves (bytes are held, connections stay open) ...
        proxy.set_frozen(False)    # ... until thawed
        proxy.drop(refuse_new=True)  # reset every connection, and new ones, until clear()

It runs its own asyncio loop on a thread. Each direction of a connection has a reader that
stamps chunks as they arrive and a writer that sends them in order once due, so a delay adds
``delay`` per chunk without compounding. Latency through the proxy includes its own forwarding
cost (a loopback hop and a Python copy), so compare faulted trials with unfaulted ones through
the same proxy, not with direct ones.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Coroutine

_CHUNK = 64 * 1024


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.writers = (client, upstream)

    def abort(self) -> None:
        for writer in self.writers:
            writer.transport.abort()  # RST, like a dropped connection


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1",
                 listen_port: int = 0) -> None:
        self.target = (target_host, target_port)
        self._listen = (listen_host, listen_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._links: set[_Link] = set()
        self._delay_s = 0.0
        self._thawed: asyncio.Event | None = None
        self._refusing = False
        self.port = 0
        # Counters for the record and for tests (read them from any thread).
        self.connections = 0
        self.dropped = 0
        self.refused = 0
        self.held_bytes = 0  # bytes waiting on a freeze right now

    # life cycle
    def start(self) -> "FaultProxy":
        self._thread.start()
        self._call(self._start())
        return self

    async def _start(self) -> None:
        self._thawed = asyncio.Event()
        self._thawed.set()
        self._server = await asyncio.start_server(self._serve, *self._listen)
        self.port = self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        if self._thread.is_alive():
            self._call(self._close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _close(self) -> None:
        assert self._server is not None and self._thawed is not None
        self._server.close()
        for link in list(self._links):
            link.abort()
        self._thawed.set()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def address(self) -> str:
        return f"{self._listen[0]}:{self.port}"

    # faults (from any thread; each is in force when the call returns)
    def set_delay(self, delay_ms: float) -> None:
        if delay_ms < 0:
            raise ValueError(f"delay_ms must not be negative, got {delay_ms}")
        self._call(self._set(delay=delay_ms / 1000.0))

    def set_frozen(self, frozen: bool) -> None:
        self._call(self._set(frozen=frozen))

    def drop(self, refuse_new: bool = True) -> int:
        """Reset every open connection (and, with ``refuse_new``, each new one until :meth:`clear`);
        returns how many were dropped."""
        return self._call(self._drop(refuse_new))

    def clear(self) -> None:
        """No delay, no freeze, connections accepted."""
        self._call(self._set(delay=0.0, frozen=False, refusing=False))

    def _call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    async def _set(self, delay: float | None = None, frozen: bool | None = None,
                   refusing: bool | None = None) -> None:
        assert self._thawed is not None
        if delay is not None:
            self._delay_s = delay
        if frozen is not None:
            (self._thawed.clear if frozen else self._thawed.set)()
        if refusing is not None:
            self._refusing = refusing

    async def _drop(self, refuse_new: bool) -> int:
        self._refusing = refuse_new
        links = list(self._links)
        for link in links:
            link.abort()
        self.dropped += len(links)
        return len(links)

    # forwarding
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()  # the server is down: the client sees a reset, as it would
            return
        self.connections += 1
        link = _Link(writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._links.discard(link)
            link.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            try:
                while data := await reader.read(_CHUNK):
                    await queue.put((loop.time() + self._delay_s, data))
            except (ConnectionError, OSError):
                pass
            await queue.put((0.0, b""))

        async def write() -> None:
            assert self._thawed is not None
            while True:
                due, data = await queue.get()
                if not data:
                    break
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                if not self._thawed.is_set():
                    self.held_bytes += len(data)
                    try:
                        await self._thawed.wait()
                    finally:
                        self.held_bytes -= len(data)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()  # a half close passes through

        reading = asyncio.ensure_future(read())
        try:
            await write()
        except (ConnectionError, OSError):
            pass
        finally:
            reading.cancel()
