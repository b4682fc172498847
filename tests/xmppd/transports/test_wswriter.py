"""FrameWriter over trio's lockstep streams: a send blocks until the peer reads, as on a full
socket. A wsproto client reads what was written, so a spliced frame would not parse."""

from __future__ import annotations

import trio
import trio.testing
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Message, Pong, TextMessage

from xmppd.transports.wswriter import FrameWriter, WriteFailed

BIG = 100_000  # over CHUNK: every frame is a write of its own


def pair() -> tuple[FrameWriter, trio.abc.ReceiveStream]:
    send, receive = trio.testing.lockstep_stream_one_way_pair()
    return FrameWriter(send, Connection(ConnectionType.SERVER)), receive


async def read_all(receive: trio.abc.ReceiveStream) -> list[tuple[str, object]]:
    """Everything written until the writer side closes, as the client sees it."""
    client = Connection(ConnectionType.CLIENT)
    out: list[tuple[str, object]] = []
    text: list[str] = []
    while data := await receive.receive_some(10_000):
        client.receive_data(data)
        for event in client.events():
            if isinstance(event, TextMessage):
                text.append(event.data)
                if event.message_finished:
                    out.append(("text", "".join(text)))
                    text.clear()
            elif isinstance(event, Pong):
                out.append(("pong", bytes(event.payload)))
            elif isinstance(event, CloseConnection):
                out.append(("close", event.code))
            else:
                raise AssertionError(f"unexpected {event}")
    return out


async def test_a_pong_jumps_the_queue_between_whole_frames() -> None:
    writer, receive = pair()
    messages = [Message(data=c * BIG) for c in "abc"]
    async with trio.open_nursery() as nursery:

        async def write() -> None:
            await writer.send(messages)
            await writer.close(1000)
            await writer.stream.aclose()

        nursery.start_soon(write)
        await trio.testing.wait_all_tasks_blocked()
        first = await receive.receive_some(1000)  # the writer is inside the first frame now
        await writer.pong(b"one")  # the writer holds the lock: queued, not sent by us
        await writer.pong(b"two")  # only the latest ping is answered
        rest = await read_all(_Prefixed(first, receive))
    kinds = [(kind, value if kind != "text" else value[0]) for kind, value in rest]  # type: ignore[index]
    assert kinds == [("text", "a"), ("pong", b"two"), ("text", "b"), ("text", "c"), ("close", 1000)]
    assert all(len(v) == BIG for k, v in rest if k == "text")  # type: ignore[arg-type]


async def test_an_idle_writer_lets_the_reader_pong_at_once() -> None:
    writer, receive = pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.pong, b"now")
        data = await receive.receive_some(100)
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(data)
    assert [bytes(e.payload) for e in client.events()] == [b"now"]  # type: ignore[attr-defined]


async def test_a_close_frame_stops_the_queued_data() -> None:
    writer, receive = pair()
    async with trio.open_nursery() as nursery:

        async def write() -> None:
            await writer.send(Message(data=c * BIG) for c in "abc")
            await writer.stream.aclose()

        nursery.start_soon(write)
        await trio.testing.wait_all_tasks_blocked()
        first = await receive.receive_some(1000)
        nursery.start_soon(writer.close, 1007, "bad frame")
        rest = await read_all(_Prefixed(first, receive))
    assert [k for k, _ in rest] == ["text", "close"] and rest[1][1] == 1007


async def test_a_reset_while_answering_a_ping_is_a_write_failure() -> None:
    writer, receive = pair()
    await receive.aclose()  # the peer reset the connection
    try:
        await writer.pong(b"late")
    except WriteFailed:
        pass
    else:
        raise AssertionError("the pong should fail")
    assert writer.broken
    await writer.close_quietly(1000)  # does not raise


async def test_a_cut_off_frame_is_never_followed_by_a_close_frame() -> None:
    writer, receive = pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.send, [Message(data="a" * BIG)])
        await trio.testing.wait_all_tasks_blocked()
        await receive.receive_some(1000)  # half a frame is out
        nursery.cancel_scope.cancel()
    assert writer.broken
    await writer.close_quietly(1000)
    assert writer.ws.state is ConnectionState.OPEN  # no close frame was even made


class _Prefixed(trio.abc.ReceiveStream):
    """`receive` with bytes already taken from it put back in front."""

    def __init__(self, first: bytes, receive: trio.abc.ReceiveStream) -> None:
        self.first, self.receive = first, receive

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.first:
            data, self.first = self.first, b""
            return data
        return await self.receive.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.receive.aclose()
