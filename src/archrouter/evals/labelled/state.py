"""state_tracking: follow a state through a sequence of updates (moves, swaps, toggles, running parity,
passes, turns, stack operations, variable updates, automata). Answers are computed, so they are exact."""

from __future__ import annotations

import random

from archrouter.evals.labelled.bank import bank
from archrouter.evals.labelled.base import Item, pick, template
from archrouter.evals.labelled.text import log_uniform
from archrouter.evals.labelled.vocab import Vocab

T = "state_tracking"


def _steps(rng: random.Random) -> int:
    return log_uniform(rng, 3, 120)


@template(T, "boxes_moves")
def boxes_moves(rng: random.Random, v: Vocab) -> Item:
    cont = v.container
    nb = rng.randint(3, 7)
    objs = v.many("object", nb)
    boxes = {i + 1: [o] for i, o in enumerate(objs)}
    lines = [f"{cont.capitalize()} {i} contains the {boxes[i][0]}." for i in boxes]
    for _ in range(_steps(rng)):
        src = rng.choice([b for b in boxes if boxes[b]])
        dst = rng.choice([b for b in boxes if b != src])
        o = rng.choice(boxes[src])
        boxes[src].remove(o)
        boxes[dst].append(o)
        lines.append(
            pick(
                rng,
                bank("state", "boxes_moves", "moves"),
                o=o,
                c=cont,
                s=src,
                d=dst,
            )
        )
    q = rng.randrange(1, nb + 1)
    return Item(
        pick(
            rng,
            bank("state", "boxes_moves", "asks"),
            c=cont,
            q=q,
        ),
        "\n".join(lines) if rng.random() < 0.5 else " ".join(lines),
        "steps",
        state=True,
        answer=", ".join(boxes[q]) or "nothing",
    )


@template(T, "cup_swaps")
def cup_swaps(rng: random.Random, v: Vocab) -> Item:
    n = rng.randint(3, 6)
    o = v.object
    pos = rng.randint(1, n)
    lines = [f"There are {n} cups in a row. A {o} is hidden under cup {pos}."]
    for _ in range(_steps(rng)):
        a, b = rng.sample(range(1, n + 1), 2)
        pos = b if pos == a else a if pos == b else pos
        lines.append(
            pick(
                rng,
                bank("state", "cup_swaps", "swaps"),
                a=a,
                b=b,
            )
        )
    return Item(
        pick(
            rng,
            bank("state", "cup_swaps", "asks"),
            o=o,
        ),
        "\n".join(lines),
        "game",
        state=True,
        answer=str(pos),
    )


@template(T, "running_parity")
def running_parity(rng: random.Random, v: Vocab) -> Item:
    n = log_uniform(rng, 6, 400)
    bits = "".join(rng.choice("01") for _ in range(n))
    sep = rng.choice(["", " ", ",", ", "])
    seq = sep.join(bits)
    par = "odd" if bits.count("1") % 2 else "even"
    return Item(
        pick(
            rng,
            bank("state", "running_parity", "asks"),
            s=seq[:40],
        ),
        seq,
        "bits",
        state=True,
        answer=par,
    )


@template(T, "light_toggles")
def light_toggles(rng: random.Random, v: Vocab) -> Item:
    dev = rng.choice(["lamp", "light", "switch", "fan", "alarm", "door"])
    on = rng.random() < 0.5
    words = ("on", "off") if dev != "door" else ("open", "closed")
    lines = [f"The {v.place} {dev} starts {words[0] if on else words[1]}."]
    for _ in range(_steps(rng)):
        who = v.name
        if rng.random() < 0.7:
            on = not on
            lines.append(f"{who} toggles the {dev}.")
        else:
            lines.append(f"{who} walks past the {dev} without touching it.")
    return Item(
        pick(
            rng,
            bank("state", "light_toggles", "asks"),
            d=dev,
            a=words[0],
            b=words[1],
        ),
        " ".join(lines),
        "story",
        state=True,
        answer=words[0] if on else words[1],
    )


@template(T, "ball_passes")
def ball_passes(rng: random.Random, v: Vocab) -> Item:
    people = v.many("name", rng.randint(3, 7))
    o = rng.choice(["ball", "frisbee", "baton", v.object])
    holder = rng.choice(people)
    lines = [f"{holder} has the {o}."]
    for _ in range(_steps(rng)):
        to = rng.choice([p for p in people if p != holder])
        lines.append(
            pick(
                rng,
                bank("state", "ball_passes", "passes"),
                a=holder,
                b=to,
                o=o,
            )
        )
        holder = to
    return Item(
        pick(
            rng,
            bank("state", "ball_passes", "asks"),
            o=o,
        ),
        " ".join(lines),
        "story",
        state=True,
        answer=holder,
    )


_DIRS = ["north", "east", "south", "west"]


@template(T, "robot_turns")
def robot_turns(rng: random.Random, v: Vocab) -> Item:
    d, x, y = rng.randrange(4), 0, 0
    lines = [f"A robot starts at (0, 0) facing {_DIRS[d]}."]
    for _ in range(_steps(rng)):
        r = rng.random()
        if r < 0.3:
            d = (d + 1) % 4
            lines.append("Turn right.")
        elif r < 0.6:
            d = (d - 1) % 4
            lines.append("Turn left.")
        elif r < 0.7:
            d = (d + 2) % 4
            lines.append("Turn around.")
        else:
            k = rng.randint(1, 5)
            x += k * [0, 1, 0, -1][d]
            y += k * [1, 0, -1, 0][d]
            lines.append(f"Move forward {k}.")
    ask_pos = rng.random() < 0.5
    return Item(
        "Where does the robot end up (x, y)?"
        if ask_pos
        else pick(rng, bank("state", "robot_turns", "heading_asks")),
        "\n".join(lines),
        "instructions",
        state=True,
        answer=f"({x}, {y})" if ask_pos else _DIRS[d],
    )


@template(T, "stack_ops")
def stack_ops(rng: random.Random, v: Vocab) -> Item:
    st: list[int] = []
    ops = []
    for _ in range(_steps(rng)):
        if st and rng.random() < 0.4:
            st.pop()
            ops.append("pop")
        else:
            x = rng.randint(0, 99)
            st.append(x)
            ops.append(f"push {x}")
    sep = rng.choice([", ", "; ", "\n"])
    return Item(
        pick(rng, bank("state", "stack_ops", "asks")),
        sep.join(ops),
        "operations",
        state=True,
        answer=str(st[-1]) if st else "empty",
    )


@template(T, "variable_updates")
def variable_updates(rng: random.Random, v: Vocab) -> Item:
    names = rng.sample(bank("state", "variable_updates", "variables"), 3)
    vals = {n: rng.randint(0, 20) for n in names}
    lines = (
        [f"{n} = {vals[n]}" for n in names]
        if rng.random() < 0.5
        else [f"Let {n} be {vals[n]}." for n in names]
    )
    for _ in range(_steps(rng)):
        a, b = rng.sample(names, 2)
        r = rng.random()
        if r < 0.3:
            k = rng.randint(1, 9)
            vals[a] += k
            lines.append(rng.choice([f"{a} += {k}", f"Add {k} to {a}."]))
        elif r < 0.5:
            vals[a], vals[b] = vals[b], vals[a]
            lines.append(rng.choice([f"swap {a} and {b}", f"Swap the values of {a} and {b}."]))
        elif r < 0.75:
            vals[a] = vals[b]
            lines.append(rng.choice([f"{a} = {b}", f"Set {a} to the value of {b}."]))
        else:
            k = rng.randint(1, 5)
            vals[a] -= k
            lines.append(rng.choice([f"{a} -= {k}", f"Subtract {k} from {a}."]))
    q = rng.choice(names)
    return Item(
        pick(
            rng,
            bank("state", "variable_updates", "asks"),
            q=q,
        ),
        "\n".join(lines),
        "steps",
        state=True,
        answer=str(vals[q]),
    )


@template(T, "people_rooms")
def people_rooms(rng: random.Random, v: Vocab) -> Item:
    people = v.many("name", rng.randint(2, 5))
    where = {p: v.place for p in people}
    lines = [f"{p} is in the {where[p]}." for p in people]
    for _ in range(_steps(rng)):
        p = rng.choice(people)
        where[p] = v.place
        lines.append(
            pick(
                rng,
                bank("state", "people_rooms", "moves"),
                p=p,
                r=where[p],
            )
        )
    p = rng.choice(people)
    return Item(
        pick(
            rng,
            bank("state", "people_rooms", "asks"),
            p=p,
        ),
        " ".join(lines),
        "story",
        state=True,
        answer=where[p],
    )


@template(T, "list_permutations")
def list_permutations(rng: random.Random, v: Vocab) -> Item:
    items = v.many("object", rng.randint(4, 7))
    lines = [f"Start with the list [{', '.join(items)}]."]
    for _ in range(_steps(rng)):
        r = rng.random()
        if r < 0.5:
            i, j = rng.sample(range(len(items)), 2)
            items[i], items[j] = items[j], items[i]
            lines.append(f"Swap positions {i + 1} and {j + 1}.")
        elif r < 0.75:
            items = items[1:] + items[:1]
            lines.append("Rotate left by one.")
        else:
            items = items[::-1]
            lines.append("Reverse the list.")
    return Item(
        pick(rng, bank("state", "list_permutations", "asks")),
        "\n".join(lines),
        "operations",
        state=True,
        answer=", ".join(items),
    )


@template(T, "dance_partners", held_out=True)
def dance_partners(rng: random.Random, v: Vocab) -> Item:
    people = v.many("name", rng.randint(3, 5))
    partners = v.many("name", len(people))
    cur = dict(zip(people, partners, strict=True))
    lines = [f"At the start of a square dance, {', '.join(f'{p} is dancing with {cur[p]}' for p in people)}."]
    for _ in range(_steps(rng)):
        a, b = rng.sample(people, 2)
        cur[a], cur[b] = cur[b], cur[a]
        lines.append(f"{a} and {b} trade partners.")
    p = rng.choice(people)
    return Item(
        f"At the end of the dance, who is {p} dancing with?",
        " ".join(lines),
        "story",
        state=True,
        answer=cur[p],
    )


@template(T, "automaton", held_out=True)
def automaton(rng: random.Random, v: Vocab) -> Item:
    states = rng.sample(bank("state", "automaton", "states"), rng.randint(2, 4))
    trans = {(s, c): rng.choice(states) for s in states for c in "01"}
    inp = "".join(rng.choice("01") for _ in range(_steps(rng)))
    s = states[0]
    for c in inp:
        s = trans[(s, c)]
    table = "\n".join(f"in {a}, on {c} -> {b}" for (a, c), b in trans.items())
    return Item(
        f"A machine starts in state {states[0]} and reads the input {inp}. Which state does it end in?",
        table,
        "transitions",
        state=True,
        answer=s,
    )


@template(T, "inventory", held_out=True)
def inventory(rng: random.Random, v: Vocab) -> Item:
    who = v.name
    stock = {o: rng.randint(0, 10) for o in v.many("object", rng.randint(2, 4))}
    lines = [f"{who} has " + ", ".join(f"{n} {o}s" for o, n in stock.items()) + "."]
    for _ in range(_steps(rng)):
        o = rng.choice(list(stock))
        if stock[o] and rng.random() < 0.5:
            k = rng.randint(1, stock[o])
            stock[o] -= k
            lines.append(f"{who} gives {k} {o}s to {v.name}.")
        else:
            k = rng.randint(1, 6)
            stock[o] += k
            lines.append(f"{who} finds {k} more {o}s.")
    o = rng.choice(list(stock))
    return Item(
        f"How many {o}s does {who} have now?", " ".join(lines), "story", state=True, answer=str(stock[o])
    )


@template(T, "door_events")
def door_events(rng: random.Random, v: Vocab) -> Item:
    """Near-miss with sequential data: timestamped events, but the question is the final state."""
    doors = {d: rng.choice(["locked", "unlocked"]) for d in v.many("place", rng.randint(2, 4))}
    lines = [f"00:00 {d} door {st} (initial)" for d, st in doors.items()]
    t = rng.randint(0, 1000)
    for _ in range(_steps(rng)):
        t += rng.randint(1, 90)
        d = rng.choice(list(doors))
        doors[d] = rng.choice(["locked", "unlocked"])
        lines.append(f"{t // 60:02d}:{t % 60:02d} {d} door {doors[d]} by {v.name}")
    d = rng.choice(list(doors))
    init = ", ".join(f"{k}" for k in doors)
    return Item(
        pick(
            rng,
            bank("state", "door_events", "asks"),
            i=init,
            d=d,
        ),
        "\n".join(lines),
        "events",
        state=True,
        answer=doors[d],
    )
