"""Word pools for the labelled-prompt generator.

Every pool is split in two: three quarters for items that may land in training, one quarter (every 4th
entry) kept for held-out-template items only, so part of the test set uses names, objects and places
the classifier never saw (see `evals.labelled.generate`).
"""

from __future__ import annotations

import random

_POOLS: dict[str, list[str]] = {
    "name": """Alice Bob Claire Dave Eve Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy Rupert Sybil
        Trent Victor Walter Yusuf Zara Amara Bilal Chen Dmitri Esra Fatima Gustavo Hana Ingrid Jamal Kenji
        Lucia Mateo Noor Oskar Priya Quentin Rosa Sanjay Tomas Uma Vera Wei Ximena Yara Zoltan Aisha Bruno
        Carmen Dariusz Elif Femi Giulia Hiroshi Ines Jonas Kwame Leila Magnus Nadia Omar Paula Ravi Sofia
        Thabo Ulla Valentina Wanjiru Yuki Aleksander Beatriz Cyrus Daniela Emeka Freya Goran Hyun Ilse
        Joaquin Kalani Lars Mei Nikolai Ottilie Pedro Rania Stefan Tariq Ugne Viktor Wiebke Xavier Yosef""".split(),
    "object": """apple ball book key coin ring watch pen lamp cup hat scarf phone wallet badge ticket marble
        candle compass spoon feather shell stone bottle camera card glove mug notebook umbrella whistle
        brush clock map flute kite puzzle sock teddy dice orange lemon pear envelope button trophy yoyo
        magnet hammer ruler stapler crayon ribbon bell drum statue vase helmet leaf acorn pinecone lantern
        torch badge medal ticket-stub rubber-duck snow-globe harmonica""".split(),
    "container": """box drawer basket bag chest crate jar bin suitcase envelope cabinet locker tray bucket
        pouch shelf cupboard backpack tin carton trunk safe barrel hamper""".split(),
    "place": """kitchen garden hallway office bathroom bedroom garage attic basement balcony library lobby
        cellar porch pantry studio classroom gym lab warehouse rooftop courtyard laundry-room greenhouse
        playroom workshop terrace corridor""".split(),
    "city": """Lisbon Osaka Nairobi Toronto Krakow Lima Hanoi Oslo Seville Montreal Accra Tbilisi Porto
        Kyoto Bogota Tallinn Cusco Marrakech Dublin Vienna Hobart Valparaiso Ljubljana Chiang-Mai Cork
        Antwerp Bergen Cape-Town Quebec Mendoza Busan Zanzibar Reykjavik Tromso Salzburg Bruges""".split(),
    "company": """Acme Globex Initech Umbrella Hooli Vandelay Stark Wayne Tyrell Cyberdyne Soylent Wonka
        Nakatomi Oscorp Gringotts Dunder Pied-Piper Massive-Dynamic Aperture Blue-Sun Virtucon Monarch
        Northwind Contoso Fabrikam Tailspin Litware Adatum Proseware Woodgrove Lumen Helix Quanta Borealis
        Meridian Kestrel Nimbus Solstice Vertex Orchid""".split(),
    "service": """payments auth search checkout inventory billing gateway notifications profile orders
        shipping catalog recommendations analytics scheduler mailer ledger reports uploads sessions
        pricing reviews cart loyalty fraud-check""".split(),
    "animal": """cat dog otter penguin fox owl hedgehog llama panda koala badger raccoon parrot tortoise
        dolphin squirrel goat heron lynx walrus capybara ferret beaver moose""".split(),
    "topic": """solar energy|urban planning|coral reefs|supply chains|vaccine trials|railway history|
        wine making|coffee farming|cybersecurity|river restoration|public libraries|electric buses|
        sleep research|bee populations|microfinance|space debris|glacier retreat|school lunches|
        remote work|carbon pricing|water desalination|tidal power|antibiotic resistance|music education|
        bridge maintenance|urban gardening|ocean shipping|forest fires|language learning|housing policy|
        drought farming|deep-sea mining|e-sports|wildlife corridors|food waste|heritage tourism""".replace(
        "\n", "").split("|"),
    "food": """pancakes lasagna dumplings paella ramen tacos curry risotto falafel pierogi bibimbap
        ceviche goulash shakshuka moussaka pad-thai gnocchi empanadas borscht jollof""".split(),
    "product": """headphones laptop blender e-reader smartwatch router printer vacuum kettle monitor
        keyboard drone camera-lens air-fryer thermostat scooter treadmill projector tablet speaker""".split(),
    "colour": """red blue green yellow purple orange black white silver golden teal pink brown grey
        crimson navy olive ivory""".split(),
    "lang": """Python JavaScript TypeScript Go Rust Java C C++ Ruby Kotlin Swift PHP Scala Haskell Bash
        C# Elixir Julia Lua R""".split(),
    "month": """January February March April May June July August September October November
        December""".split(),
    "relation": """sister brother mom dad grandma grandpa aunt uncle cousin boss colleague neighbour
        friend roommate teacher coach niece nephew partner mentor""".split(),
    "job": """nurse engineer teacher accountant designer pilot chef lawyer plumber farmer journalist
        librarian electrician pharmacist architect dentist firefighter translator""".split(),
}


class Vocab:
    """Draws from one side of the pools: `held_out=False` the 3/4 share, `held_out=True` the other 1/4."""

    def __init__(self, rng: random.Random, *, held_out: bool):
        self.rng = rng
        self.held_out = held_out
        self.pools = {k: [w for i, w in enumerate(v) if (i % 4 == 3) == held_out] for k, v in _POOLS.items()}

    def __getattr__(self, kind: str) -> str:
        pools = self.__dict__.get("pools", {})
        if kind not in pools:
            raise AttributeError(kind)
        return self.rng.choice(pools[kind]).replace("-", " ")

    def many(self, kind: str, k: int) -> list[str]:
        """k distinct entries (fewer if the pool is smaller)."""
        pool = self.pools[kind]
        return [w.replace("-", " ") for w in self.rng.sample(pool, min(k, len(pool)))]
