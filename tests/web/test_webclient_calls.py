"""Calls in the web client (webclient/js/calls.js) in headless Debian Chromium with fake media
devices (tests/web/calls.mjs): a video call between two browsers reaches `connected` with
`iceTransportPolicy: "relay"` through a real coturn on loopback, so the media path is the TURN
relay; Bob's second tab stops ringing when he answers in the first; hanging up returns both
to idle; busy, declined and unanswered calls say so. Screenshots go to
tests/web/artifacts/ (call.png is docs/screenshots/webclient-call.png)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from coturn import coturn
from support import ServerProcess

from xmppd.config import DEFAULT_MODULES

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SECRET = "turn-" + secrets.token_hex(8)
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}
pytestmark = pytest.mark.skipif(not shutil.which("turnserver"), reason="coturn not installed")


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    assert shutil.which("node"), "node is needed for the web client tests"
    assert Path(CHROMIUM).exists(), "apt-get install chromium (scripts/test does)"
    assert (HERE / "node_modules" / "playwright-core").is_dir(), "run `npm ci` in tests/web"
    with coturn(tmp_path_factory.mktemp("coturn"), SECRET) as turn_port:
        enabled = ", ".join(f'"{m}"' for m in [*DEFAULT_MODULES, "turn"])
        extra = (
            f'[modules]\nenabled = [{enabled}]\n[modules.turn]\nhost = "127.0.0.1"\n'
            f'port = {turn_port}\nsecret = "{SECRET}"\nttl = 600\nrelay_only = true\n'
        )
        server = ServerProcess(tmp_path_factory.mktemp("webcalls"), extra_config=extra)
        for user, password in PASSWORDS.items():
            server.add_user(user, password)
        server.start()
        ARTIFACTS.mkdir(exist_ok=True)
        yield server
        server.stop()


def browse(web: ServerProcess, scenario: str, timeout: float = 150) -> dict:
    args = {
        "artifacts": str(ARTIFACTS),
        "base": f"https://127.0.0.1:{web.https_port}",
        "passwords": PASSWORDS,
    }
    done = subprocess.run(
        ["node", str(HERE / "calls.mjs"), scenario, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=HERE,
        env={**os.environ, "CHROMIUM": CHROMIUM},
    )
    assert done.returncode == 0, done.stderr[-4000:] + done.stdout[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_a_video_call_connects_through_the_turn_relay_and_hangs_up(web: ServerProcess) -> None:
    out = browse(web, "video")
    assert out["ring_text"] == "alice is calling you."
    assert out["ring_live"] == "assertive"
    assert out["ring_focus"] == "Accept video call from alice"
    assert out["other_tab"] == "Answered on another device."  # Bob's second tab stopped ringing
    assert out["other_tab_state"] == {"phase": "idle"}
    assert out["alice_status"].startswith(("Calling bob", "Ringing"))
    for side in ("alice", "bob"):
        assert out[side] == {
            "phase": "active",
            "media": "video",
            "role": "caller" if side == "alice" else "callee",
            "connection": "connected",
            "policy": "relay",
        }
        assert out[f"{side}_path"] == {"local": "relay", "remote": "relay"}, out
    assert out["duration"].startswith("00:0") and out["duration"] != "00:00"
    assert out["muted"] == "true" and out["camera_off"] == "true"
    assert out["tracks"] == ["audio:false", "video:false"]
    assert out["alice_end"] == out["bob_end"] == "Call ended"
    assert out["views_left"] == 0
    assert out["ring_serious"] == [], out["ring_serious"]
    assert out["call_serious"] == [], out["call_serious"]
    assert not out["phone_overflow"]
    assert out["errors"] == [], out["errors"]
    for name in ("call", "call-phone", "call-incoming"):
        assert (ARTIFACTS / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_busy_declined_and_unanswered_calls_say_so_and_end_idle(web: ServerProcess) -> None:
    out = browse(web, "decline")
    assert out["carol_busy"] == "Busy"  # Bob was ringing for Alice
    assert out["alice_status"] == "Declined"
    assert out["alice"] == out["bob"] == {"phase": "idle"}
    assert out["dialogs"] == 0
    assert out["carol_no_answer"] == "No answer"
    assert out["bob_missed"] == "Missed call from carol."
    assert out["bob_after"] == {"phase": "idle"}
    assert out["errors"] == [], out["errors"]
