"""Building blocks shared by the task templates: prose, noise (typos, casing), and how an instruction
is put together with its context."""

from __future__ import annotations

import random

from archrouter.evals.labelled.vocab import Vocab

_SENTENCES = [
    "{company} reported that demand for {topic} in {city} rose by {pct}% over the {period}.",
    "According to {name}, the main obstacle was not money but the lack of trained staff.",
    "The committee met {n} times in {month} and agreed to revisit the budget in the autumn.",
    "Critics argue that the programme favoured large firms such as {company} over local cooperatives.",
    "In {city}, officials estimated the cost at roughly {money} million, well above the first forecast.",
    "{name} noted that earlier attempts had failed because nobody measured the results consistently.",
    "Surveys of {n2} residents showed mixed feelings, with younger people generally more supportive.",
    "The pilot started in {month} {year} and was extended twice before a full review was ordered.",
    "Several experts warned that the gains in {topic} could disappear if maintenance were neglected.",
    "A smaller team at {company} focused on training, documentation and long-term support.",
    "Meanwhile, neighbouring regions took a slower approach and reported fewer complaints.",
    "The report devotes a full chapter to the history of {topic}, starting in the {decade}s.",
    "{name} described the first year as chaotic but said the second went far more smoothly.",
    "Funding came partly from public grants and partly from a levy on commercial users.",
    "By the end of {year}, about {pct}% of the planned work had been completed.",
    "Some of the most useful lessons came from mistakes made during the early rollout.",
    "The authors stress that the data from {city} should be read with caution, since the sample was small.",
    "Local newspapers covered the story extensively, often focusing on the personalities involved.",
    "An independent audit later found that most of the money had been spent as intended.",
    "{name} and {name2} disagreed sharply about whether the rules should apply to small businesses.",
    "The second phase introduced stricter reporting, which added paperwork but improved trust.",
    "Prices for related services fell by around {pct}% once competition increased.",
    "Observers in {city2} watched closely, hoping to copy whatever worked.",
    "There was also a cultural dimension: many people simply distrusted new schemes.",
    "Engineers at {company} proposed a cheaper design that used recycled materials.",
    "The weather in {month} delayed construction by several weeks.",
    "It took almost {n} years before the benefits were visible in official statistics.",
    "Interviews with {job}s revealed that day-to-day work changed less than expected.",
    "The final section lists open questions, including how to pay for upkeep after {year2}.",
    "Not everyone was convinced; a petition against the plan gathered {n2} signatures.",
    "{name} later admitted that the timeline had been far too optimistic.",
    "The board approved a revised plan with a smaller scope and a clearer set of goals.",
    "Most of the savings came from better scheduling rather than new technology.",
    "Researchers compared the results with similar projects in {city2} and found comparable trends.",
    "Public meetings were held every {weekday}, and attendance grew steadily over the year.",
    "In hindsight, the decision to involve {job}s early on proved to be essential.",
    "One unexpected side effect was a rise in volunteer participation.",
    "The document ends with recommendations for other towns considering similar steps.",
    "Despite the setbacks, support for {topic} remained high among local businesses.",
    "A follow-up study is planned for {year2}, with a larger sample and a longer time frame.",
]
_WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_PERIODS = ["last quarter", "past two years", "summer", "first half of the year", "past decade"]


def sentence(rng: random.Random, v: Vocab) -> str:
    t = rng.choice(_SENTENCES)
    return t.format(
        company=v.company,
        topic=v.topic,
        city=v.city,
        city2=v.city,
        name=v.name,
        name2=v.name,
        pct=rng.randint(2, 60),
        period=rng.choice(_PERIODS),
        n=rng.randint(2, 12),
        n2=rng.randint(50, 5000),
        month=v.month,
        money=rng.randint(2, 900),
        year=rng.randint(1995, 2024),
        year2=rng.randint(2025, 2040),
        decade=rng.randrange(1900, 2000, 10),
        job=v.job,
        weekday=rng.choice(_WEEKDAYS),
    )


def paragraph(rng: random.Random, v: Vocab, n_sent: int | None = None) -> str:
    return " ".join(sentence(rng, v) for _ in range(n_sent or rng.randint(3, 8)))


def prose(rng: random.Random, v: Vocab, words: int, *, headings: bool = False) -> str:
    """Roughly `words` words of paragraphs, optionally under numbered section headings."""
    out, count, sec = [], 0, 1
    while count < words:
        if headings and (not out or rng.random() < 0.25):
            out.append(f"{sec}. {v.topic.title()} in {v.city}")
            sec += 1
        p = paragraph(rng, v)
        out.append(p)
        count += len(p.split())
    return "\n\n".join(out)


def log_uniform(rng: random.Random, lo: int, hi: int) -> int:
    return int(round(lo * (hi / lo) ** rng.random()))


# -- noise ---------------------------------------------------------------------------------------------

_KEYS = "abcdefghijklmnopqrstuvwxyz"


def typos(rng: random.Random, text: str, rate: float) -> str:
    words = text.split(" ")
    for i, w in enumerate(words):
        if len(w) > 3 and rng.random() < rate:
            j = rng.randrange(len(w) - 1)
            kind = rng.randrange(4)
            if kind == 0:
                w = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
            elif kind == 1:
                w = w[:j] + w[j + 1 :]
            elif kind == 2:
                w = w[:j] + w[j] + w[j:]
            else:
                w = w[:j] + rng.choice(_KEYS) + w[j + 1 :]
            words[i] = w
    return " ".join(words)


def noisy(rng: random.Random, instr: str) -> str:
    """Random casing, typos, punctuation and politeness on an instruction (never on its context)."""
    r = rng.random()
    if r < 0.12:
        instr = instr.lower()
    elif r < 0.15 and len(instr) < 200:
        instr = instr.upper()
    if rng.random() < 0.18:
        instr = typos(rng, instr, rng.choice([0.05, 0.1, 0.2]))
    if rng.random() < 0.1:
        instr = instr.rstrip(".?!")
    if rng.random() < 0.15:
        instr = (
            rng.choice(
                [
                    "Hi! ",
                    "hey, ",
                    "Hello, ",
                    "Quick one: ",
                    "Please help. ",
                    "Q: ",
                    "ok so ",
                    "Question - ",
                    "Hola, ",
                    "Bonjour ! ",
                ]
            )
            + instr
        )
    r = rng.random()
    if r < 0.04:
        instr = f"Task: {instr}"
    elif r < 0.08:
        instr = f"Question: {instr}\nAnswer:"
    elif r < 0.11:
        instr = f"{instr} Explain your reasoning."
    elif r < 0.14:
        instr = f"I need help with something. {instr}"
    elif r < 0.16:
        instr = f"{instr} Be brief."
    if rng.random() < 0.1:
        instr += rng.choice(
            [" Thanks!", " thx", " Thank you in advance.", " pls", " :)", " Cheers.", " Merci.", " Danke!"]
        )
    return instr


# -- composing an instruction with its context ---------------------------------------------------------


def wrap_context(rng: random.Random, context: str, label: str = "text") -> str:
    style = rng.randrange(6)
    if style == 0:
        return f'"""\n{context}\n"""'
    if style == 1:
        return f"<{label}>\n{context}\n</{label}>"
    if style == 2:
        return f"---\n{context}\n---"
    if style == 3:
        return f"{label.capitalize()}:\n{context}"
    if style == 4:
        return f"```\n{context}\n```"
    return context


def compose(rng: random.Random, instr: str, context: str | None, label: str = "text") -> str:
    if context is None:
        return instr
    ctx = wrap_context(rng, context, label)
    r = rng.random()
    if r < 0.55:
        return f"{instr}\n\n{ctx}"
    if r < 0.9:
        return f"{ctx}\n\n{instr}"
    return f"{instr}\n\n{ctx}\n\nAgain: {instr}"
