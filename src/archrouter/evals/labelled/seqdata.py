"""sequential_data: time series, logs, numeric sequences: continue, detect, aggregate."""

from __future__ import annotations

import math
import random

from archrouter.evals.labelled.bank import bank
from archrouter.evals.labelled.base import Item, pick, template
from archrouter.evals.labelled.text import log_uniform
from archrouter.evals.labelled.vocab import Vocab

T = "sequential_data"


def _series(rng: random.Random, n: int) -> list[float]:
    base, trend, amp, period = rng.uniform(5, 500), rng.uniform(-1, 2), rng.uniform(0, 30), rng.randint(4, 30)
    noise = rng.uniform(0.1, 10)
    return [
        round(base + trend * i + amp * math.sin(2 * math.pi * i / period) + rng.gauss(0, noise), 1)
        for i in range(n)
    ]


def _n(rng: random.Random) -> int:
    return log_uniform(rng, 8, 600)


@template(T, "forecast")
def forecast(rng: random.Random, v: Vocab) -> Item:
    what = rng.choice(bank("seqdata", "forecast", "series"))
    xs = _series(rng, _n(rng))
    return Item(
        pick(
            rng,
            bank("seqdata", "forecast", "asks"),
            w=what,
            n=len(xs),
            k=rng.randint(1, 10),
        ),
        ", ".join(map(str, xs)),
        "data",
    )


@template(T, "sensor_anomaly")
def sensor_anomaly(rng: random.Random, v: Vocab) -> Item:
    xs = _series(rng, _n(rng))
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(xs))
        xs[i] = round(xs[i] * rng.choice([3, -2, 0.1, 5]), 1)
    unit = rng.choice(bank("seqdata", "sensor_anomaly", "units"))
    lines = (
        [
            f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{i % 24:02d}:00 "
            f"sensor-{rng.randint(1, 9)} {x}{unit}"
            for i, x in enumerate(xs)
        ]
        if rng.random() < 0.6
        else [f"{i},{x}" for i, x in enumerate(xs)]
    )
    return Item(
        pick(rng, bank("seqdata", "sensor_anomaly", "asks")),
        "\n".join(lines),
        "readings",
    )


def _logs(rng: random.Random, v: Vocab, n: int) -> list[str]:
    services = v.many("service", rng.randint(2, 6))
    t = rng.randint(0, 80000)
    out = []
    for _ in range(n):
        t += rng.randint(0, 30)
        lvl = rng.choices(["INFO", "WARN", "ERROR"], [8, 2, 1])[0]
        msg = rng.choice(bank("seqdata", "_logs", "messages"))
        out.append(
            f"{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d} {lvl:<5} {rng.choice(services)}: {msg} "
            f"latency={rng.randint(1, 2500)}ms"
        )
    return out


@template(T, "log_aggregate")
def log_aggregate(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(rng, bank("seqdata", "log_aggregate", "asks")),
        "\n".join(_logs(rng, v, _n(rng))),
        "log",
    )


@template(T, "number_sequence")
def number_sequence(rng: random.Random, v: Vocab) -> Item:
    kind = rng.randrange(5)
    a, d, n = rng.randint(-20, 50), rng.randint(2, 9), rng.randint(5, 14)
    if kind == 0:
        xs = [a + d * i for i in range(n)]
    elif kind == 1:
        xs = [a * d**i if a else d**i for i in range(min(n, 8))]
    elif kind == 2:
        xs = [1, 1]
        while len(xs) < n:
            xs.append(xs[-1] + xs[-2])
    elif kind == 3:
        xs = [i * i + a for i in range(n)]
    else:
        xs = [a + (i % 3) * d for i in range(n)]
    return Item(
        pick(
            rng,
            bank("seqdata", "number_sequence", "asks"),
            s=", ".join(map(str, xs)),
        ),
        None,
    )


@template(T, "moving_average")
def moving_average(rng: random.Random, v: Vocab) -> Item:
    tick = rng.choice(bank("seqdata", "moving_average", "tickers"))
    xs = _series(rng, _n(rng))
    lines = (
        [f"day {i + 1}: {x}" for i, x in enumerate(xs)] if rng.random() < 0.5 else [", ".join(map(str, xs))]
    )
    return Item(
        pick(
            rng,
            bank("seqdata", "moving_average", "asks"),
            k=rng.choice([3, 5, 7, 20]),
            t=tick,
        ),
        "\n".join(lines),
        "prices",
    )


@template(T, "csv_metrics")
def csv_metrics(rng: random.Random, v: Vocab) -> Item:
    n = _n(rng)
    cpu, mem = _series(rng, n), _series(rng, n)
    rows = ["timestamp,cpu,mem_mb,requests"] + [
        f"2024-05-{1 + i // 24:02d} {i % 24:02d}:00,{abs(c) % 100:.1f},{abs(m) * 10:.0f},{rng.randint(0, 5000)}"
        for i, (c, m) in enumerate(zip(cpu, mem, strict=True))
    ]
    return Item(
        pick(rng, bank("seqdata", "csv_metrics", "asks")),
        "\n".join(rows),
        "csv",
    )


@template(T, "latency_stats")
def latency_stats(rng: random.Random, v: Vocab) -> Item:
    xs = [max(1, int(rng.lognormvariate(4, 0.7))) for _ in range(_n(rng))]
    return Item(
        pick(rng, bank("seqdata", "latency_stats", "asks")),
        " ".join(map(str, xs)),
        "latencies",
    )


@template(T, "heart_rate")
def heart_rate(rng: random.Random, v: Vocab) -> Item:
    xs = [int(x) for x in _series(rng, _n(rng))]
    return Item(
        pick(
            rng,
            bank("seqdata", "heart_rate", "asks"),
            p=v.name,
        ),
        " ".join(map(str, xs)),
        "signal",
    )


@template(T, "weather_seasonality", held_out=True)
def weather_seasonality(rng: random.Random, v: Vocab) -> Item:
    n = rng.randint(24, 240)
    xs = [round(12 + 10 * math.sin(2 * math.pi * i / 12) + rng.gauss(0, 2), 1) for i in range(n)]
    return Item(
        pick(
            rng,
            bank("seqdata", "weather_seasonality", "asks"),
            c=v.city,
        ),
        ", ".join(map(str, xs)),
        "temperatures",
    )


@template(T, "clickstream", held_out=True)
def clickstream(rng: random.Random, v: Vocab) -> Item:
    t, out = rng.randint(0, 50000), []
    users = [f"u{rng.randint(100, 999)}" for _ in range(rng.randint(2, 8))]
    for _ in range(_n(rng)):
        t += rng.randint(1, 900)
        out.append(
            f"{t} {rng.choice(users)} {rng.choice(bank('seqdata', 'clickstream', 'actions'))} "
            f"/{rng.choice(bank('seqdata', 'clickstream', 'pages'))}"
        )
    return Item(
        pick(rng, bank("seqdata", "clickstream", "asks")),
        "\n".join(out),
        "events",
    )


@template(T, "symbol_pattern", held_out=True)
def symbol_pattern(rng: random.Random, v: Vocab) -> Item:
    unit = "".join(rng.choice("ABCDXY") for _ in range(rng.randint(2, 6)))
    seq = (unit * 200)[: rng.randint(20, 300)]
    return Item(
        pick(
            rng,
            bank("seqdata", "symbol_pattern", "asks"),
            s=seq[:30],
        ),
        seq,
        "sequence",
    )


@template(T, "gps_trace")
def gps_trace(rng: random.Random, v: Vocab) -> Item:
    lat, lon = rng.uniform(-60, 60), rng.uniform(-170, 170)
    out = []
    for i in range(_n(rng)):
        lat += rng.gauss(0, 0.001)
        lon += rng.gauss(0, 0.001)
        out.append(f"{i * 5}s {lat:.5f},{lon:.5f} speed={abs(rng.gauss(4, 2)):.1f}")
    return Item(
        pick(rng, bank("seqdata", "gps_trace", "asks")),
        "\n".join(out),
        "trace",
    )
