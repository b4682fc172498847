"""XEP-0363 HTTP File Upload: slots from slixmpp, bytes over real HTTPS (aiohttp, http.client)."""

from __future__ import annotations

import http.client
import io
import ssl
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import slixmpp
from slixmpp.exceptions import IqError
from support import ServerProcess, connect, run

UPLOAD = "urn:xmpp:http:upload:0"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
CONFIG = """
[modules.upload]
max_file_size = 200000
quota = 250000
daily_quota = 400000
"""


def start(base, extra: str) -> ServerProcess:  # type: ignore[no-untyped-def]
    # http.max_body_bytes is below the file size limit: uploads are streamed, not buffered.
    proc = ServerProcess(base, extra_config=extra, http_config="max_body_bytes = 65536")
    for user in ("alice", "bob", "carol", "dave"):
        proc.add_user(user, f"{user}-secret")
    proc.start()
    return proc


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start(tmp_path_factory.mktemp("upload"), CONFIG)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Files expire 3 s after their slot; the sweeper runs twice a second."""
    extra = CONFIG + "expire_after = 3\ncleanup_interval = 0.5\n"
    proc = start(tmp_path_factory.mktemp("upload-short"), extra)
    yield proc
    proc.stop()


def fetch(
    server: ServerProcess, method: str, url: str, body: bytes | None = None, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    assert parts.scheme == "https" and parts.port == server.https_port, url
    context = ssl.create_default_context(cafile=server.ca_file)
    conn = http.client.HTTPSConnection("127.0.0.1", parts.port, context=context, timeout=10)
    conn.sock = context.wrap_socket(
        __import__("socket").create_connection(("127.0.0.1", parts.port)),
        server_hostname="localhost",
    )
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
    conn.request(method, target, body=body, headers=hdrs)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


async def slot(client: slixmpp.ClientXMPP, name: str, size: int, ctype: str) -> tuple[str, str]:
    iq = await client.plugin["xep_0363"].request_slot(
        slixmpp.JID("upload.localhost"), name, size, ctype, timeout=5
    )
    s = iq["http_upload_slot"]
    return s["put"]["url"], s["get"]["url"]


async def login(server: ServerProcess, user: str) -> slixmpp.ClientXMPP:
    client = await connect(server, user, "up", password=f"{user}-secret")
    client.register_plugin("xep_0363")
    return client


def test_disco_lists_the_service_with_its_size_limit(server: ServerProcess) -> None:
    async def scenario() -> None:
        alice = await login(server, "alice")
        items = await alice.plugin["xep_0030"].get_items(jid="localhost", timeout=5)
        assert "upload.localhost" in [i[0] for i in items["disco_items"]["items"]]
        info = await alice.plugin["xep_0363"].find_upload_service(timeout=5)
        assert info is not None and info["from"] == "upload.localhost"
        form = info["disco_info"].iterables[0]
        assert form["values"]["max-file-size"] == "200000"
        await alice.close()

    run(scenario())


def test_slixmpp_uploads_and_the_file_comes_back(server: ServerProcess) -> None:
    import aiohttp.connector

    # The client trusts the server's self-signed certificate, as a user's system would.
    aiohttp.connector._SSL_CONTEXT_VERIFIED.load_verify_locations(server.ca_file)
    payload = bytes(range(256)) * 40

    async def scenario() -> str:
        alice = await login(server, "alice")
        url = await alice.plugin["xep_0363"].upload_file(
            "photo one.png", input_file=io.BytesIO(payload), content_type="image/png", timeout=5
        )
        await alice.close()
        return url

    url = run(scenario())
    assert isinstance(url, str) and url.startswith(f"https://localhost:{server.https_port}/")
    status, headers, body = fetch(server, "GET", url)
    assert status == 200 and body == payload
    assert headers["content-type"] == "image/png"
    assert headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in headers["content-security-policy"]
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["content-disposition"].startswith("inline")
    assert headers["accept-ranges"] == "bytes"
    # Range requests (RFC 9110 §14): a slice, the tail, and one past the end.
    status, headers, body = fetch(server, "GET", url, Range="bytes=10-19")
    assert (status, body) == (206, payload[10:20])
    assert headers["content-range"] == f"bytes 10-19/{len(payload)}"
    status, headers, body = fetch(server, "GET", url, Range="bytes=-5")
    assert (status, body) == (206, payload[-5:])
    status, headers, _ = fetch(server, "GET", url, Range=f"bytes={len(payload)}-")
    assert status == 416 and headers["content-range"] == f"bytes */{len(payload)}"
    status, headers, body = fetch(server, "HEAD", url)
    assert status == 200 and body == b"" and headers["content-length"] == str(len(payload))
    # CORS for web clients
    status, headers, _ = fetch(server, "GET", url, Origin="https://web.example")
    assert status == 200 and headers["access-control-allow-origin"] == "*"
    status, headers, _ = fetch(
        server,
        "OPTIONS",
        url,
        Origin="https://web.example",
        Access_Control_Request_Method="PUT",
    )
    assert status == 204 and "PUT" in headers["access-control-allow-methods"]


@pytest.mark.parametrize(
    ("name", "ctype"),
    [("page.html", "text/html"), ("logo.svg", "image/svg+xml"), ("x.xml", "application/xml")],
)
def test_script_capable_files_are_sandboxed_attachments(
    server: ServerProcess, name: str, ctype: str
) -> None:
    evil = b"<html><script>alert(document.cookie)</script></html>"

    async def scenario() -> tuple[str, str]:
        bob = await login(server, "bob")
        urls = await slot(bob, name, len(evil), ctype)
        await bob.close()
        return urls

    put, get = run(scenario())
    status, _, _ = fetch(server, "PUT", put, evil, Content_Type=ctype)
    assert status == 201
    status, headers, body = fetch(server, "GET", get)
    assert status == 200 and body == evil
    assert headers["content-type"] == ctype
    assert headers["content-disposition"].startswith("attachment")
    assert headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in headers["content-security-policy"]


def test_bad_puts_are_refused(server: ServerProcess) -> None:
    data = b"x" * 100

    big = b"b" * 150000

    async def scenario() -> list[tuple[str, str]]:
        bob = await login(server, "bob")
        urls = [await slot(bob, f"f{i}.txt", 100, "text/plain") for i in range(2)]
        urls.append(await slot(bob, "big.txt", len(big), "text/plain"))
        await bob.close()
        return urls

    (put1, get1), (put2, _), (put3, _) = run(scenario())  # type: ignore[misc]
    # wrong size, either way
    assert fetch(server, "PUT", put1, data[:99], Content_Type="text/plain")[0] == 400
    assert fetch(server, "PUT", put1, data + b"y", Content_Type="text/plain")[0] == 413
    # wrong content type
    assert fetch(server, "PUT", put1, data, Content_Type="text/html")[0] == 415
    # the GET URL (shared with others) does not allow uploading; neither does another token
    assert fetch(server, "PUT", get1, data, Content_Type="text/plain")[0] == 403
    assert fetch(server, "PUT", put1[:-4] + "0000", data, Content_Type="text/plain")[0] == 403
    # a slot that was never given
    forged = put2.replace(urlsplit(put2).path.split("/")[3], "A" * 24)
    assert fetch(server, "PUT", forged, data, Content_Type="text/plain")[0] in (403, 404)
    # nothing was stored by those
    assert fetch(server, "GET", get1)[0] == 404
    # the right PUT works once; the slot cannot be used again
    assert fetch(server, "PUT", put1, data, Content_Type="text/plain")[0] == 201
    assert fetch(server, "PUT", put1, b"z" * 100, Content_Type="text/plain")[0] == 409
    assert fetch(server, "GET", get1)[2] == data
    # a file bigger than http.max_body_bytes is streamed: only the slot limits it
    assert fetch(server, "PUT", put3, big, Content_Type="text/plain")[0] == 201


def test_too_large_and_over_quota_are_refused(server: ServerProcess) -> None:
    async def scenario() -> None:
        carol = await login(server, "carol")
        with pytest.raises(IqError) as too_large:
            await slot(carol, "big.bin", 200001, "application/octet-stream")
        error = too_large.value.iq.xml.find("{jabber:client}error")
        assert error.get("type") == "modify"
        assert error.find(f"{{{STANZAS}}}not-acceptable") is not None
        limit = error.find(f"{{{UPLOAD}}}file-too-large/{{{UPLOAD}}}max-file-size")
        assert limit is not None and limit.text == "200000"
        await slot(carol, "a.bin", 200000, "application/octet-stream")
        with pytest.raises(IqError) as quota:
            await slot(carol, "b.bin", 60000, "application/octet-stream")
        error = quota.value.iq.xml.find("{jabber:client}error")
        assert error.get("type") == "wait"
        assert error.find(f"{{{STANZAS}}}resource-constraint") is not None
        await slot(carol, "c.bin", 50000, "application/octet-stream")  # exactly the quota
        # a content type that would split the response header it becomes
        with pytest.raises(IqError) as bad:
            await slot(carol, "d.txt", 1, "text/plain\r\nSet-Cookie: x=1")
        assert bad.value.iq["error"]["condition"] == "bad-request"
        await carol.close()

    run(scenario())


def test_expired_files_are_gone_and_the_daily_quota_holds(short: ServerProcess) -> None:
    data = b"expiring" * 10

    async def scenario() -> tuple[str, str]:
        dave = await login(short, "dave")
        urls = await slot(dave, "note.txt", len(data), "text/plain")
        await dave.close()
        return urls

    put, get = run(scenario())
    assert fetch(short, "PUT", put, data, Content_Type="text/plain")[0] == 201
    assert fetch(short, "GET", get)[2] == data
    folder = short.data_dir / "upload" / "upload.localhost"
    assert len(list(folder.iterdir())) == 1
    time.sleep(4.5)
    assert fetch(short, "GET", get)[0] == 404
    assert list(folder.iterdir()) == []  # the sweeper deleted it

    async def daily() -> None:
        dave = await login(short, "dave")
        await slot(dave, "a.bin", 200000, "application/octet-stream")  # kept 200000, day 200080
        await slot(dave, "b.bin", 50000, "application/octet-stream")
        time.sleep(3.5)  # both expire: nothing kept, but 250080 bytes today
        await slot(dave, "c.bin", 140000, "application/octet-stream")
        with pytest.raises(IqError) as refused:
            await slot(dave, "d.bin", 20000, "application/octet-stream")
        error = refused.value.iq.xml.find("{jabber:client}error")
        assert error.find(f"{{{STANZAS}}}resource-constraint") is not None
        assert error.find(f"{{{UPLOAD}}}retry").get("stamp")
        await dave.close()

    run(daily())


def test_a_deleted_account_loses_its_files_running_or_stopped(tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = start(tmp_path, CONFIG + "cleanup_interval = 0.5\n")
    folder = proc.data_dir / "upload" / "upload.localhost"
    try:
        gets = []
        for user in ("alice", "bob"):

            async def scenario(user: str = user) -> tuple[str, str]:
                client = await login(proc, user)
                urls = await slot(client, "mine.txt", 4, "text/plain")
                await client.close()
                return urls

            put, get = run(scenario())
            assert fetch(proc, "PUT", put, b"data", Content_Type="text/plain")[0] == 201
            gets.append(get)
        assert len(list(folder.iterdir())) == 2
        # while running: at once
        assert proc.cli("deluser", "alice@localhost").returncode == 0
        assert fetch(proc, "GET", gets[0])[0] == 404
        assert len(list(folder.iterdir())) == 1
        # while stopped: marked, and gone after the next start's first sweep
        proc.stop()
        assert proc.cli("deluser", "bob@localhost").returncode == 0
        proc.start()
        assert fetch(proc, "GET", gets[1])[0] == 404
        deadline = time.monotonic() + 5
        while list(folder.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(folder.iterdir()) == []
    finally:
        proc.stop()
