from xmppd.ratelimit import TokenBucket


def test_a_new_bucket_is_full_and_refuses_past_its_burst():
    bucket = TokenBucket(rate=2, burst=3, now=0.0)
    assert [bucket.allow(0.0) for _ in range(4)] == [True, True, True, False]


def test_refills_at_its_rate_up_to_the_burst():
    bucket = TokenBucket(rate=2, burst=3, now=0.0)
    for _ in range(3):
        bucket.allow(0.0)
    assert bucket.allow(0.5)  # one token back after half a second
    assert not bucket.allow(0.5)
    assert [bucket.allow(100.0) for _ in range(4)] == [True, True, True, False]


def test_spend_goes_into_debt_and_says_how_long_to_pause():
    bucket = TokenBucket(rate=100, burst=100, now=0.0)
    assert bucket.spend(50, 0.0) == 0.0
    assert bucket.spend(150, 0.0) == 1.0  # 100 tokens short at 100 a second
    assert bucket.spend(0, 1.0) == 0.0  # the debt is paid after the pause


def test_a_refused_request_takes_nothing():
    bucket = TokenBucket(rate=1, burst=1, now=0.0)
    assert not bucket.allow(0.0, cost=2)
    assert bucket.allow(0.0)
