"""Flow filters: parsing names bad fields; every field selects exactly the events it should."""

from __future__ import annotations

import random

import pytest
from novanet_ebpf_policy.flowfilter import FilterError, FlowFilter, raw_ip
from novanet_ebpf_policy.flows import EVENT_POLICY, FlowCollector, to_dict

NAMES = {raw_ip("10.42.0.2"): "x/a", raw_ip("10.42.0.3"): "x/b", raw_ip("10.42.1.2"): "y/c"}
WALL = 1000.0


def ev(src: str, dst: str, *, sport: int = 40000, dport: int = 80, proto: int = 6, verdict: int = 1, reason: int = 0,
       flags: int = 0x02, sid: int = 300, did: int = 301, ts_ns: int = 5_000_000_000) -> tuple:
    raw = EVENT_POLICY.pack(2, verdict, reason, flags, sid, did, proto, 0, sport, dport, 0, raw_ip(src), raw_ip(dst),
                            0, 60, 1, ts_ns)
    return EVENT_POLICY.unpack(raw)


EVENTS = [
    ev("10.42.0.2", "10.42.0.3"),  # 0 x/a -> x/b TCP 80 SYN allowed
    ev("10.42.0.3", "10.42.1.2", dport=53, proto=17, flags=0, sid=301, did=302),  # 1 x/b -> y/c UDP 53
    ev("10.42.1.2", "10.42.0.2", verdict=2, reason=1, dport=443, flags=0x04, sid=302, did=300),  # 2 drop
    ev("10.42.0.2", "203.0.113.7", verdict=2, reason=7, dport=443, did=2, ts_ns=9_000_000_000),  # 3 egress deny
]


def sel(**params) -> list[int]:
    flt = FlowFilter.from_params(params)
    pred = flt.compile(NAMES, WALL)
    one_by_one = [i for i, t in enumerate(EVENTS) if pred(t)]
    batch = flt.compile_batch(NAMES, WALL)(EVENTS)
    assert batch == [EVENTS[i] for i in one_by_one]  # the batch form selects the same events, in order
    return one_by_one


@pytest.mark.parametrize(("params", "want"), [
    ({}, [0, 1, 2, 3]),
    ({"pod": "x/a"}, [0, 2, 3]),
    ({"from_pod": "x/a"}, [0, 3]),
    ({"to_pod": "x/a"}, [2]),
    ({"namespace": "y"}, [1, 2]),
    ({"from_namespace": "x", "to_namespace": "y"}, [1]),
    ({"identities": [302]}, [1, 2]),
    ({"to_identities": [300, 2]}, [2, 3]),
    ({"ip": "203.0.113.0/24"}, [3]),
    ({"from_ip": "10.42.0.0/24"}, [0, 1, 3]),
    ({"port": 53}, [1]),
    ({"port": 40000}, [0, 1, 2, 3]),
    ({"protocol": "UDP"}, [1]),
    ({"verdict": "DROPPED"}, [2, 3]),
    ({"verdict": "ALLOW", "protocol": "TCP"}, [0]),
    ({"reasons": ["POLICY_DENIED"]}, [2]),
    ({"tcp_flags": ["RST"]}, [2]),
    ({"tcp_flags": ["SYN", "RST"]}, [0, 2, 3]),
    ({"since": WALL + 6}, [3]),
    ({"drops_only": True, "pod": "x/a"}, [2, 3]),
    ({"identity": 301}, [0, 1]),
])
def test_each_field_selects(params, want):
    assert sel(**params) == want


def test_batch_filter_equals_the_predicate_on_random_events_and_filters():
    rng = random.Random(11)
    ips = ["10.42.0.2", "10.42.0.3", "10.42.1.2", "203.0.113.7", "10.42.0.9"]
    events = [ev(rng.choice(ips), rng.choice(ips), sport=rng.choice([53, 80, 40000]), dport=rng.choice([53, 80, 443]),
                 proto=rng.choice([6, 17, 1]), verdict=rng.choice([1, 2]), reason=rng.choice([0, 1, 7, 12]),
                 flags=rng.randrange(256), sid=rng.choice([2, 300, 301, 302]), did=rng.choice([2, 300, 301]),
                 ts_ns=rng.randrange(10**10)) for _ in range(3000)]
    choices = {"pod": ["x/a", "y/c"], "from_pod": ["x/a", "x/b"], "to_pod": ["y/c"], "namespace": ["x"],
               "from_namespace": ["x", "y"], "to_namespace": ["y"], "identities": [[301, 302]],
               "from_identities": [[300, 302]], "to_identities": [[2, 301]], "ip": ["10.42.0.0/24"],
               "from_ip": ["10.42.1.2"], "to_ip": ["203.0.113.0/24"], "port": [53, 80], "protocol": ["TCP", "UDP"],
               "verdict": ["ALLOW", "DENY"], "reasons": [["POLICY_DENIED", "NO_ROUTE"]], "tcp_flags": [["SYN"]],
               "since": [WALL + 4], "drops_only": [True], "identity": [301]}
    for _ in range(300):
        params = {k: rng.choice(v) for k, v in rng.sample(sorted(choices.items()), rng.randint(1, 5))}
        flt = FlowFilter.from_params(params)
        pred = flt.compile(NAMES, WALL)
        assert flt.compile_batch(NAMES, WALL)(events) == [t for t in events if pred(t)], params


def test_batch_filter_follows_pod_names_that_change():
    names = dict(NAMES)
    select = FlowFilter.from_params({"from_pod": "x/new"}).compile_batch(names, WALL)
    assert select(EVENTS) == []
    names[raw_ip("10.42.0.2")] = "x/new"  # the address now belongs to another pod
    assert select(EVENTS) == [EVENTS[0], EVENTS[3]]


@pytest.mark.parametrize(("params", "field"), [
    ({"pod": "nopod"}, "filter.pod"),
    ({"port": 70000}, "filter.port"),
    ({"protocol": "XTP"}, "filter.protocol"),
    ({"verdict": "MAYBE"}, "filter.verdict"),
    ({"reasons": ["NOPE"]}, "filter.reasons[0]"),
    ({"identities": [1, "x"]}, "filter.identities[1]"),
    ({"ip": "10.0.0.300"}, "filter.ip"),
    ({"colour": "red"}, "filter.colour"),
    ({"tcp_flags": ["SYN", "XMAS"]}, "filter.tcp_flags[1]"),
])
def test_bad_fields_are_named(params, field):
    with pytest.raises(FilterError) as ei:
        FlowFilter.from_params(params)
    assert str(ei.value).startswith(field + ":")


def test_params_round_trip():
    f = FlowFilter.from_params({"from_pod": "x/a", "protocol": "TCP", "verdict": "DENY", "reasons": ["NO_ROUTE"],
                                "tcp_flags": ["SYN"], "identities": [5, 3], "port": 80})
    assert FlowFilter.from_params(f.to_params()) == f


def test_collector_names_pods_and_keeps_order():
    c = FlowCollector(history=3)
    c.names.update(NAMES)
    c.node = "node-1"
    c._deliver(list(EVENTS))
    assert c.consumed == 4 and len(c.history) == 3  # bounded
    got = c.recent(limit=10, flt=FlowFilter(pod="x/a"))
    assert [(e["src_pod"], e["dst_pod"]) for e in got] == [("y/c", "x/a"), ("x/a", "")]
    assert got[0]["tcp_flags_names"] == ["RST"] and got[0]["node"] == "node-1"
    assert c.recent(limit=1) == [to_dict(EVENTS[3], c.wall_offset, None, c.names, "node-1")]


def test_follower_sees_each_event_once_and_slow_followers_are_counted():
    c = FlowCollector(follower_queue=1)
    import threading

    stop = threading.Event()
    it = c.follow(limit=10, stop=stop)
    c._deliver([EVENTS[0]])
    first = next(it)  # subscribing snapshot happened at the first next(): history then queue
    c._deliver([EVENTS[1]])
    c._deliver([EVENTS[2]])  # the queue holds one batch: this one is dropped and counted
    second = next(it)
    stop.set()
    assert (first["dst_port"], second["dst_port"]) == (80, 53)
    assert c.follower_dropped == 1


def test_export_lines_are_the_json_of_to_dict():
    import json
    import random

    from novanet_ebpf_policy.flows import LineEncoder

    c = FlowCollector()
    c.names.update(NAMES)
    c.node = "node-1"
    c.explain = lambda d, s, t: ("ingress of x/b isolated by x/p: no policy allowed it", ["x/p"])
    enc = LineEncoder(c)
    rnd = random.Random(7)
    evs = list(EVENTS) + [ev("10.42.0.2", "10.42.0.3", proto=p, flags=f, verdict=v, reason=r, sport=rnd.randrange(65536),
                             ts_ns=rnd.randrange(1 << 62))
                          for p, f, v, r in [(6, 0x12, 1, 0), (6, 0, 1, 0), (17, 0, 2, 3), (1, 0, 2, 1), (6, 0x11, 2, 7),
                                             (132, 0, 1, 0), (47, 0, 2, 9)]]
    for t in evs:
        line = enc.line(t)
        assert line.endswith("\n") and "\n" not in line[:-1]
        assert json.loads(line) == json.loads(json.dumps(c._dict(t))), t
    assert enc.lines(evs * 3) == "".join(enc.line(t) for t in evs * 3)  # the batch form, in order
    c.names[raw_ip("10.42.0.2")] = "x/renamed"  # cached lines name pods: a new name shows at once
    assert json.loads(enc.line(EVENTS[0]))["src_pod"] == "x/renamed"
    c.names.pop(raw_ip("10.42.0.2"))
    assert json.loads(enc.line(EVENTS[0]))["src_pod"] == ""
