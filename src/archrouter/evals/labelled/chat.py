"""chat: short conversational or support questions (including ones that mention logs, parity, code,
documents or sequences without asking for any of those tasks)."""

from __future__ import annotations

import random

from archrouter.evals.labelled.base import Item, pick, template
from archrouter.evals.labelled.vocab import Vocab

T = "chat"

_ERRORS = [
    "'invalid credentials'",
    "'too many attempts, try later'",
    "error 403",
    "'session expired'",
    "a blank page",
    "'account locked'",
    "'something went wrong'",
    "'verification code expired'",
]


@template(T, "support_login")
def support_login(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            [
                "I can't log into my {s} account, it keeps saying {e}. What should I do?",
                "Hi, since yesterday the {s} app shows {e} when I sign in. Any idea?",
                "my {s} login is broken ({e}) - how do I reset it?",
                "No puedo entrar en mi cuenta de {s}, me sale {e}. ¿Qué hago?",
                "Je n'arrive pas à me connecter à {s}, il affiche {e}. Que faire ?",
                "Why does {s} say {e} every time I try to log in from my phone?",
                "Ich kann mich nicht bei {s} anmelden, es kommt immer {e}. Was soll ich tun?",
            ],
            s=v.company,
            e=rng.choice(_ERRORS),
        )
    )


@template(T, "support_order")
def support_order(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            [
                "My order #{n} from {c} hasn't arrived yet, it was due {d}. Can you help?",
                "I was charged twice for order {n} at {c}. How do I get a refund?",
                "How do I return the {p} I bought from {c}? It doesn't fit my needs.",
                "Is it possible to change the delivery address for order {n}?",
                "The {p} I ordered arrived broken. What are my options?",
                "Mi pedido {n} de {c} todavía no ha llegado, ¿me pueden ayudar?",
                "Can I cancel my {c} subscription without paying a fee?",
            ],
            n=rng.randint(10000, 999999),
            c=v.company,
            d=rng.choice(["on Monday", "last week", "yesterday", "3 days ago"]),
            p=v.product,
        )
    )


@template(T, "smalltalk")
def smalltalk(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            [
                "hi! how's your day going?",
                "Tell me a joke about a {a}.",
                "What's your favourite {a}, and why?",
                "Good morning :) anything fun I could do this weekend in {c}?",
                "Do you ever get bored?",
                "Can you tell me a fun fact about {a}s?",
                "I'm bored. Entertain me!",
                "what's up",
                "Salut ! Tu peux me raconter une blague ?",
                "Would a {a} make a good pet for a small flat?",
                "Who would win in a race, a {a} or a {a2}?",
                "Say something nice to cheer me up please",
            ],
            a=v.animal,
            a2=v.animal,
            c=v.city,
        )
    )


@template(T, "advice")
def advice(rng: random.Random, v: Vocab) -> Item:
    act = rng.choice(
        [
            "running",
            "cycling to work",
            "learning the guitar",
            "studying for exams",
            "cooking {f}",
            "saving money",
            "sleeping better",
            "working from home",
            "training a puppy",
            "public speaking",
            "keeping houseplants alive",
            "meal prepping",
        ]
    ).format(f=v.food)
    return Item(
        pick(
            rng,
            [
                "Any tips for {a} when {c}?",
                "I'm struggling with {a}. Where do I start?",
                "What are the most common mistakes people make with {a}?",
                "How can I stay motivated with {a}?",
                "Give me three quick tips on {a}.",
                "¿Algún consejo para {a}?",
                "Is it normal to find {a} hard at first?",
            ],
            a=act,
            c=rng.choice(
                [
                    "you have little time",
                    "it's very hot",
                    "you're a beginner",
                    "you live in a small flat",
                    "you have kids",
                ]
            ),
        )
    )


@template(T, "recommend")
def recommend(rng: random.Random, v: Vocab) -> Item:
    kind = rng.choice(["book", "movie", "podcast", "board game", "TV series", "album", "video game"])
    return Item(
        pick(
            rng,
            [
                "Can you recommend a {k} for someone who likes {t}?",
                "What's a good {k} to watch/read on a rainy day?",
                "Suggest a {k} for my {r} who is into {t}.",
                "Looking for a {k} similar to the ones about {t}, ideas?",
                "Quel {k} me conseilles-tu si j'aime {t} ?",
                "I need a gift for my {r}, they love {t}. Ideas?",
                "best {k} about {t}?",
            ],
            k=kind,
            t=v.topic,
            r=v.relation,
        )
    )


_CONCEPTS = [
    "purchasing power parity",
    "a parity bit",
    "parity in chess",
    "the parity of a number",
    "a log cabin",
    "a ship's log",
    "logarithms",
    "a time series",
    "a state machine",
    "the state of the union",
    "copyright",
    "a summary judgment",
    "a document of title",
    "recursion",
    "a sequence in maths",
    "a swap in finance",
    "inflation",
    "compound interest",
    "machine learning",
    "a blockchain",
    "the cloud",
    "an API",
    "photosynthesis",
    "a black hole",
    "quantum computing",
    "a mortgage",
    "a haiku",
    "a sonnet",
    "the stock market",
    "a memory palace",
    "the Fibonacci sequence",
    "a Python (the snake)",
]


@template(T, "define_concept")
def define_concept(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            [
                "What does {c} mean?",
                "Can you explain {c} in simple terms?",
                "ELI5: {c}",
                "What's the difference between {c} and {c2}?",
                "Why do people care about {c}?",
                "¿Qué significa {c}?",
                "Was ist {c}? Kurz bitte.",
                "Is {c} something I should worry about?",
                "In one sentence, what is {c}?",
                "my {r} keeps talking about {c}. what is that",
            ],
            c=rng.choice(_CONCEPTS),
            c2=rng.choice(_CONCEPTS),
            r=v.relation,
        )
    )


@template(T, "travel", held_out=True)
def travel(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            [
                "I'm visiting {c} for {n} days in {m}. What should I see?",
                "Is {c} worth visiting in {m}?",
                "What should I pack for a trip to {c} in {m}?",
                "Any food I must try in {c}?",
                "Vou a {c} em {m}, o que devo visitar?",
                "Is it safe to walk around {c} at night?",
                "How many days do I need in {c}?",
                "train or plane from {c} to {c2}?",
            ],
            c=v.city,
            c2=v.city,
            n=rng.randint(2, 10),
            m=v.month,
        )
    )


@template(T, "emotional", held_out=True)
def emotional(rng: random.Random, v: Vocab) -> Item:
    ev = rng.choice(
        [
            "job interview",
            "exam",
            "first day at a new job",
            "wedding speech",
            "driving test",
            "presentation",
            "date",
            "surgery",
        ]
    )
    return Item(
        pick(
            rng,
            [
                "I'm nervous about my {e} tomorrow, any advice?",
                "I had a really bad day and I just want to talk.",
                "How do I tell my {r} that I'm moving to {c}?",
                "I failed my {e}. I feel terrible.",
                "Estoy muy estresado por mi {e}, ¿qué puedo hacer?",
                "Is it okay to feel lonely after moving to {c}?",
                "I think my {r} is upset with me. How do I bring it up?",
            ],
            e=ev,
            r=v.relation,
            c=v.city,
        )
    )


@template(T, "howto_everyday")
def howto_everyday(rng: random.Random, v: Vocab) -> Item:
    t = rng.choice(
        [
            "get a red wine stain out of a carpet",
            "boil an egg so the yolk stays soft",
            "fold a fitted sheet",
            "unclog a sink without chemicals",
            "make {f} at home",
            "keep a {a} cool in summer",
            "reset my {p}",
            "clean a cast-iron pan",
            "write a cover letter as a {j}",
            "change a bike tyre",
            "ask for a raise",
            "sharpen a kitchen knife",
        ]
    ).format(f=v.food, a=v.animal, p=v.product, j=v.job)
    return Item(
        pick(
            rng,
            [
                "How do I {t}?",
                "What's the easiest way to {t}?",
                "Quick question: best way to {t}?",
                "Comment {t} ? (réponds en anglais stp)",
                "Can you walk me through how to {t}?",
                "how to {t}",
            ],
            t=t,
        )
    )


@template(T, "near_miss_topics")
def near_miss_topics(rng: random.Random, v: Vocab) -> Item:
    """Mentions code, logs, documents, recall or sequences, but is just a conversational question."""
    return Item(
        pick(
            rng,
            [
                "What programming language should I learn first if I want to work in {t}?",
                "Is Python hard to learn when you're {n}?",
                "Should I keep a log of my workouts or is an app better?",
                "How long should a book summary for school be?",
                "Do you think coding bootcamps are worth it?",
                "What's a good way to remember people's names at parties?",
                "I keep forgetting where I put my {o}. Any memory tricks?",
                "Is it weird to keep a diary at {n}?",
                "Which is more fun to learn: chess or the {l} language?",
                "My {r} says reading long documents on screens is bad for your eyes. True?",
                "How do I become a data analyst with no degree?",
                "Are standing desks worth it for programmers?",
                "What's your opinion on tabs vs spaces? Just curious, no code needed.",
                "I have to read a 300-page report for work by Friday. How do I stay focused?",
            ],
            t=v.topic,
            n=rng.randint(14, 70),
            o=v.object,
            l=v.lang,
            r=v.relation,
        )
    )


@template(T, "short_creative")
def short_creative(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            [
                "Write a short birthday message for my {r} {n}.",
                "Give me a catchy name for a {f} food truck.",
                "Write a two-line poem about a {a}.",
                "Help me word a polite text saying I'll be late to dinner.",
                "Suggest a toast for my {r}'s retirement party.",
                "Écris un petit mot de remerciement pour {n}.",
                "Come up with 3 team names for a {t} quiz night.",
            ],
            r=v.relation,
            n=v.name,
            f=v.food,
            a=v.animal,
            t=v.topic,
        )
    )


@template(T, "opinion_compare", held_out=True)
def opinion_compare(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            [
                "Is it better to rent or buy in {c}?",
                "{p} or a {p2}, which should I get first?",
                "Which is healthier, {f} or {f2}?",
                "Should I learn {l} or {l2} as a hobby?",
                "What do you think about {t}?",
                "Cats or dogs? Be honest.",
                "¿Qué es mejor, {c} o {c2} para vivir?",
            ],
            c=v.city,
            c2=v.city,
            p=v.product,
            p2=v.product,
            f=v.food,
            f2=v.food,
            l=v.lang,
            l2=v.lang,
            t=v.topic,
        )
    )


_SYSTEMS = [
    "You are a friendly customer support agent for {c}.",
    "You are a helpful assistant.",
    "Be concise and kind.",
    "You are {c}'s virtual assistant. Answer politely.",
]


@template(T, "multi_turn_support")
def multi_turn_support(rng: random.Random, v: Vocab) -> Item:
    c = v.company
    msgs = [{"role": "system", "content": rng.choice(_SYSTEMS).format(c=c)}] if rng.random() < 0.7 else []
    msgs += [
        {
            "role": "user",
            "content": pick(rng, ["Hi there", "hello", "Hey, I need some help", "Good evening"]),
        },
        {"role": "assistant", "content": "Hello! How can I help you today?"},
        {
            "role": "user",
            "content": pick(
                rng,
                [
                    "My {p} from {c} won't turn on after the update.",
                    "I want to upgrade my plan, what are the options?",
                    "I moved to {city}, how do I update my address?",
                    "Can I talk to a human?",
                    "What are your opening hours on Sunday?",
                ],
                p=v.product,
                c=c,
                city=v.city,
            ),
        },
    ]
    if rng.random() < 0.5:
        msgs += [
            {
                "role": "assistant",
                "content": pick(
                    rng,
                    [
                        "I'm sorry to hear that. Have you tried restarting it?",
                        "Sure, I can help with that.",
                        "Of course. Could you tell me a bit more?",
                    ],
                ),
            },
            {
                "role": "user",
                "content": pick(
                    rng,
                    [
                        "Yes, twice. Still nothing.",
                        "ok thanks, what next?",
                        "That didn't help.",
                        "Great, thank you!",
                        "And how long will that take?",
                    ],
                ),
            },
        ]
    return Item(messages=msgs)
