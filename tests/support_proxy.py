"""`Proxy`: a TCP forwarder a test cuts, to make a server lose PostgreSQL or Redis while the
real one keeps running for the other tests."""

from __future__ import annotations

import threading
import time

import trio
from support import free_port


class Proxy:
    """TCP forwarder host:port -> target, in a trio loop of its own thread."""

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = free_port()
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._listening: trio.CancelScope | None = None
        self._conns: set[trio.CancelScope] = set()
        ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main, ready), daemon=True)
        self._thread.start()
        ready.wait(10)

    async def _main(self, ready: threading.Event) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(trio.sleep_forever)  # outlives a cut listener
            await nursery.start(self._listen)
            ready.set()

    async def _listen(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED):
        with trio.CancelScope() as scope:
            self._listening = scope
            listeners = await trio.open_tcp_listeners(self.port, host=self.host)
            task_status.started()
            await trio.serve_listeners(self._forward, listeners)

    async def _forward(self, client: trio.SocketStream) -> None:
        with trio.CancelScope() as scope:
            self._conns.add(scope)
            try:
                upstream = await trio.open_tcp_stream(*self.target)
                async with client, upstream, trio.open_nursery() as pumps:
                    pumps.start_soon(self._pump, client, upstream, pumps.cancel_scope)
                    pumps.start_soon(self._pump, upstream, client, pumps.cancel_scope)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                self._conns.discard(scope)

    @staticmethod
    async def _pump(src: trio.SocketStream, dst: trio.SocketStream, done: trio.CancelScope):
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()

    def cut(self) -> None:
        """Refuse new connections and drop the open ones."""

        def cut_now() -> None:
            assert self._listening is not None
            self._listening.cancel()
            for scope in list(self._conns):
                scope.cancel()

        trio.from_thread.run_sync(cut_now, trio_token=self._token)
        time.sleep(0.2)  # the sockets are closed once the cancelled tasks ran

    def restore(self) -> None:
        async def listen_again() -> None:
            assert self._nursery is not None
            await self._nursery.start(self._listen)

        trio.from_thread.run(listen_again, trio_token=self._token)

    def close(self) -> None:
        def stop() -> None:
            assert self._nursery is not None
            self._nursery.cancel_scope.cancel()

        trio.from_thread.run_sync(stop, trio_token=self._token)
        self._thread.join(10)
