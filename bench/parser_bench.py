"""XML stream parser candidates, side by side (not a test). Run: python bench/parser_bench.py

(a) lxml feed parser with a Python target + TreeBuilder (the DESIGN.md starting point);
(b) the byte guard in front of one persistent lxml XMLPullParser per stream;
(c) the byte guard + one lxml.etree.fromstring per stanza -- xmppd.protocol.parser.

Prints CPU microseconds per typical 179-byte message stanza (best of many short rounds, so
noise from other processes on the machine mostly drops out), fed 1 and 20 stanzas per
feed(), idle memory per parser holding an open stream (5,000 parsers, RSS delta), and which
candidate survives the hostile-input checks. Options: --quick (fewer rounds).
"""

from __future__ import annotations

import copy
import gc
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lxml import etree

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xmppd.protocol.parser import (  # noqa: E402
    ParseError,
    StanzaReceived,
    StreamClosed,
    StreamOpened,
    StreamParser,
)
from xmppd.protocol.xmlguard import Refused  # noqa: E402

HEADER = (
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    b" to='example.com' version='1.0' xml:lang='en'>"
)
STANZA = (
    b"<message to='juliet@example.com/balcony' from='romeo@example.net/orchard' type='chat'"
    b" id='a1b2c3d4'><body>Art thou not Romeo, and a Montague? Neither, fair saint.</body>"
    b"</message>"
)
STREAM_TAG = "{http://etherx.jabber.org/streams}stream"


class _Stop(Exception):
    def __init__(self, condition: str) -> None:
        self.condition = condition


class TargetParser:
    """(a): feed parser + target; doctype/comment/pi refused; limits counted per feed."""

    def __init__(self, max_stanza_bytes: int = 16384, max_depth: int = 32) -> None:
        self.max_stanza_bytes = max_stanza_bytes
        self.max_depth = max_depth
        self._parser = etree.XMLParser(
            target=self, resolve_entities=False, no_network=True, load_dtd=False
        )
        self._depth = 0
        self._tb: etree.TreeBuilder | None = None
        self._default: dict[Any, str] = {}
        self._out: list[Any] = []
        self._size = 0
        self._dead = False

    def feed(self, data: bytes) -> list[Any]:
        if self._dead:
            return []
        out = self._out = []
        if self._depth >= 2:
            self._size += len(data)
            if self._size > self.max_stanza_bytes:
                return self._die("policy-violation")
        try:
            self._parser.feed(data)
        except _Stop as stop:
            return self._die(stop.condition)
        except etree.XMLSyntaxError:
            return self._die("not-well-formed")
        return out

    def _die(self, condition: str) -> list[Any]:
        self._dead = True
        self._out.append(ParseError(condition, ""))
        return self._out

    def start(self, tag: str, attrib: Any, nsmap: dict[Any, str]) -> None:
        self._depth += 1
        depth = self._depth
        if depth > self.max_depth or len(attrib) > 64:
            raise _Stop("policy-violation")
        if nsmap:  # the target sees the default namespace under '', TreeBuilder wants None
            nsmap = {prefix or None: uri for prefix, uri in nsmap.items()}
        if depth == 1:
            self._default = {None: nsmap[None]} if None in nsmap else {}
            self._out.append(StreamOpened(dict(attrib), nsmap.get(None), tag, None))
            return
        if depth == 2:
            self._tb = etree.TreeBuilder()
            self._size = 0
            nsmap = {**self._default, **nsmap}  # else it serializes with ns0: prefixes
        assert self._tb is not None
        self._tb.start(tag, attrib, nsmap)

    def end(self, tag: str) -> None:
        depth = self._depth
        self._depth -= 1
        if depth == 1:
            self._out.append(StreamClosed())
            return
        assert self._tb is not None
        self._tb.end(tag)
        if depth == 2:
            self._out.append(StanzaReceived(self._tb.close(), self._size))
            self._tb = None

    def data(self, text: str) -> None:
        if self._depth >= 2:
            self._tb.data(text)  # type: ignore[union-attr]
        elif text.strip():
            raise _Stop("bad-format")

    def doctype(self, *args: Any) -> None:
        raise _Stop("restricted-xml")

    def comment(self, text: str) -> None:
        raise _Stop("restricted-xml")

    def pi(self, target: str, data: str | None = None) -> None:
        raise _Stop("restricted-xml")

    def close(self) -> None:
        return None


class PullParser(StreamParser):
    """(b): the same guard, then one persistent XMLPullParser per stream.

    Stanzas complete in one feed() are fed to lxml in one call. A detached child of the
    stream root serializes with ns0: prefixes, so each is deep-copied while still attached
    (``fix_ns=False`` skips that to show the raw cost). compact() drops the pull parser and
    re-creates it on the next stanza by feeding it the saved stream header again.
    """

    __slots__ = ("_pull", "_proot", "_header", "_batch", "fix_ns")

    def __init__(self, fix_ns: bool = True) -> None:
        super().__init__()
        self._pull: etree.XMLPullParser | None = None
        self._proot: Any = None
        self._header = b""
        self._batch: list[tuple[StanzaReceived, bytes]] = []
        self.fix_ns = fix_ns

    def _on_open(self, tag: bytes, qname: bytes, empty: bool) -> None:
        super()._on_open(tag, qname, empty)
        self._header = tag

    def _on_stanza(self, data: bytes, head: int, attrs: bytes) -> None:
        event = StanzaReceived(None, len(data))  # type: ignore[arg-type]
        self._batch.append((event, data))
        self._out.append(event)

    def feed(self, data: bytes) -> list[Any]:
        out = super().feed(data)
        if self._batch:
            try:
                self._flush()
            except (etree.LxmlError, IndexError):  # IndexError: lxml stalled, no element
                self._batch.clear()
                self._dead = True
                out = [e for e in out if not isinstance(e, StanzaReceived)]
                out.append(ParseError("not-well-formed", ""))
        return out

    def _flush(self) -> None:
        if self._pull is None:
            self._pull = etree.XMLPullParser(
                events=("start",), tag=STREAM_TAG, resolve_entities=False, encoding="utf-8"
            )
            self._pull.feed(self._header)
            self._proot = next(iter(self._pull.read_events()))[1]
        self._pull.feed(b"".join(data for _, data in self._batch))
        for _ in self._pull.read_events():
            pass
        root = self._proot
        for event, _ in self._batch:
            child = root[0]
            event.element = copy.deepcopy(child) if self.fix_ns else child
            root.remove(child)
        self._batch.clear()

    def compact(self) -> None:
        if self._idle():
            self._pull = None
            self._proot = None


def _runner(make: Callable[[], Any], batch: int, compact: bool) -> Callable[[int], None]:
    parser = make()
    parser.feed(HEADER)
    data = STANZA * batch

    def run(n: int) -> None:
        feed = parser.feed
        for _ in range(n // batch):
            feed(data)
            if compact:
                parser.compact()

    return run


def _bare_lxml(n: int) -> None:
    """Machine-speed reference: lxml alone parsing the stanza (namespace already inline)."""
    parser = etree.XMLParser(resolve_entities=False, collect_ids=False)
    data = STANZA.replace(b"<message ", b"<message xmlns='jabber:client' ")
    for _ in range(n):
        etree.fromstring(data, parser)


def timings(cases: dict[str, Callable[[int], None]], rounds: int) -> dict[str, float]:
    """Best CPU us per stanza; rounds interleave the cases so machine drift hits all alike."""
    best = dict.fromkeys(cases, float("inf"))
    n = 2000
    for _ in range(rounds):
        for name, run in cases.items():
            start = time.process_time()
            run(n)
            best[name] = min(best[name], (time.process_time() - start) / n * 1e6)
    return best


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def idle_bytes(make: Callable[[], Any], compact: bool = False, count: int = 5000) -> float:
    """RSS per parser holding an open stream after one stanza (run in a fresh process)."""
    gc.collect()
    before = _rss()
    keep = []
    for _ in range(count):
        parser = make()
        parser.feed(HEADER + STANZA)
        if compact:
            parser.compact()
        keep.append(parser)
    gc.collect()
    return (_rss() - before) / count


def idle_in_subprocess(key: str, compact: bool) -> float:
    args = [sys.executable, __file__, "--idle", key] + (["--compact"] if compact else [])
    return float(subprocess.run(args, capture_output=True, text=True, check=True).stdout)


HOSTILE = {
    "DOCTYPE + entities": b"<!DOCTYPE s [<!ENTITY a 'b'>]>" + HEADER + b"<m>&a;</m>",
    "comment": HEADER + b"<m><!-- c --></m>",
    "PI": HEADER + b"<m><?p x?></m>",
    "undefined entity": HEADER + b"<m>&foo;</m><m/>",
    "unbound prefix": HEADER + b"<foo:m/>",
    "xml prefix rebound": HEADER + b"<m xmlns:xml='urn:x'/>",
    "expanded duplicate attrs": HEADER + b"<m xmlns:a='u' xmlns:b='u' a:x='1' b:x='2'/>",
    "} in namespace": HEADER + b"<m xmlns='urn:a}b'/>",
    "latin-1 declared": b"<?xml version='1.0' encoding='ISO-8859-1'?>" + HEADER + b"<m>\xe9</m>",
    "XML 1.1": b"<?xml version='1.1'?>" + HEADER + b"<m/>",
    "invalid UTF-8": HEADER + b"<m>\xff</m>",
    "2,000 attributes": HEADER + b"<m " + b" ".join(b"a%d='1'" % i for i in range(2000)) + b"/>",
    "text in root": HEADER + b"hello<m/>",
    "deep nesting": HEADER + b"<m>" + b"<a>" * 100 + b"</a>" * 100 + b"</m>",
}
EXPECTED_BYTES = b'<message xmlns="jabber:client"><body>x</body></message>'


def refused(make: Callable[[], Any], data: bytes) -> bool:
    try:
        events = make().feed(data)
    except (Refused, etree.LxmlError, ValueError):  # (a) crashes on some: not accepted
        return True
    return any(isinstance(e, ParseError) for e in events)


def serializes_cleanly(make: Callable[[], Any]) -> bool:
    parser = make()
    parser.feed(HEADER)
    events = parser.feed(b"<message><body>x</body></message>")
    return etree.tostring(events[0].element) == EXPECTED_BYTES


CANDIDATES: dict[str, tuple[str, Callable[[], Any]]] = {
    "a": ("(a) target + TreeBuilder", TargetParser),
    "b": ("(b) guard + XMLPullParser", PullParser),
    "b-raw": ("(b) same, without ns fix", lambda: PullParser(fix_ns=False)),
    "c": ("(c) guard + fromstring", StreamParser),
}


def main() -> None:
    if "--idle" in sys.argv:
        make = CANDIDATES[sys.argv[sys.argv.index("--idle") + 1]][1]
        print(idle_bytes(make, "--compact" in sys.argv))
        return
    rounds = 5 if "--quick" in sys.argv else 40
    cases: dict[str, Callable[[int], None]] = {}
    for key, (_, make) in CANDIDATES.items():
        cases[f"{key} 1"] = _runner(make, 1, False)
        cases[f"{key} 20"] = _runner(make, 20, False)
    cases["b compact"] = _runner(PullParser, 1, True)
    cases["lxml"] = _bare_lxml
    best = timings(cases, rounds)
    print(f"reference: lxml.etree.fromstring of the bare stanza {best['lxml']:.2f}us\n")
    print(f"{'CPU us per stanza, idle RSS':32s} {'1/feed':>8s} {'20/feed':>8s} {'idle':>9s}")
    for key, (name, _) in CANDIDATES.items():
        idle = idle_in_subprocess(key, False) / 1024
        print(f"{name:32s} {best[key + ' 1']:6.2f}us {best[key + ' 20']:6.2f}us {idle:6.1f}KiB")
    for key in ("b",):  # (c) shares one lxml parser between streams: nothing to compact
        name = CANDIDATES[key][0][:3] + " compact() after each feed"
        idle = idle_in_subprocess(key, True) / 1024
        print(f"{name:32s} {best[key + ' compact']:6.2f}us {'':8s} {idle:6.1f}KiB")
    print("\nhostile input refused / clean serialization:")
    for name, make in CANDIDATES.values():
        failed = [case for case, data in HOSTILE.items() if not refused(make, data)]
        clean = serializes_cleanly(make)
        verdict = "all refused" if not failed else "ACCEPTS: " + ", ".join(failed)
        print(f"  {name:30s} {verdict}; serialization {'ok' if clean else 'BROKEN'}")


if __name__ == "__main__":
    main()
