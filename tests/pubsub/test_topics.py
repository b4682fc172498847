import pytest

from pubsub import topics


def test_topic_builders():
    assert topics.user_topic("alice@example.org") == "user:alice@example.org"
    assert topics.session_topic("alice@example.org/phone") == "session:alice@example.org/phone"
    assert topics.room_topic("lounge@muc.example.org") == "room:lounge@muc.example.org"
    assert topics.presence_topic("example.org") == "presence:example.org"
    assert topics.tracker_topic("presence") == "tracker:presence"


def test_parse_topic_splits_at_first_colon():
    assert topics.parse_topic("user:alice@example.org") == ("user", "alice@example.org")
    # Resources may contain colons.
    assert topics.parse_topic(topics.session_topic("a@b/c:d:e")) == ("session", "a@b/c:d:e")
    assert topics.parse_topic("room:") == ("room", "")


@pytest.mark.parametrize("bad", ["", "nocolon", ":id"])
def test_parse_topic_rejects_non_topics(bad):
    with pytest.raises(ValueError):
        topics.parse_topic(bad)
