"""Task 2: a booking sentence to JSON, generated with held-out phrasings."""

from __future__ import annotations

import json
import random

from .splits import JSON_SPLIT_SIZES, SEED, SPLITS


# ---------------------------------------------------------------------------
# Task 2: sentence -> JSON fields
# ---------------------------------------------------------------------------

JSON_FIELDS = ("name", "people", "day", "time", "place")
_PEOPLE_NAMES = ("Amara", "Bruno", "Chloe", "Dev", "Elena", "Farah", "Goran", "Hana", "Ivan", "Jade", "Kofi", "Lena")
_PLACES = ("Luigi's", "The Blue Door", "Casa Verde", "Saffron House", "Harbour Grill", "Noodle Bar", "Old Mill")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_NUMBER_WORDS = ("two", "three", "four", "five", "six", "seven", "eight")
JSON_PHRASINGS = (
    ("Hi, this is {name}. Could I book a table for {people_text} at {place} on {day} at {time_text}?", False),
    ("{name} here: table at {place}, {day}, {time_text}, {people_text} people please.", False),
    ("Please reserve {place} for {people_text} on {day} at {time_text}. The booking is under {name}.", False),
    ("We are {people_text}. {name} would like {place} at {time_text} this {day}.", False),
    ("Booking request from {name} for {day}: {people_text} guests, {time_text}, at {place}.", False),
    # Held out (test only).
    ("On {day} at {time_text}, {people_text} of us want to eat at {place}; the name is {name}.", True),
    ("{place}, {time_text}, {day}. Party of {people_text}. Contact: {name}.", True),
)
JSON_INSTRUCTION = ("Extract the booking as JSON with keys name, people (a number), day, "
                    "time (24-hour HH:MM) and place.")


def _time_text(hour: int, minute: int) -> str:
    suffix = "am" if hour < 12 else "pm"
    h12 = hour % 12 or 12
    return f"{h12}{suffix}" if minute == 0 else f"{h12}:{minute:02d}{suffix}"


def generate_json_examples(seed: int = SEED, sizes: dict[str, int] | None = None) -> dict[str, list[dict]]:
    """Generate the three splits of the booking-extraction task."""
    sizes = sizes or JSON_SPLIT_SIZES
    rng = random.Random(seed + 1)
    seen = [p for p, held in JSON_PHRASINGS if not held]
    new = [p for p, held in JSON_PHRASINGS if held]
    used: set[str] = set()

    def draw(phrasings: list[str], split: str, group: str) -> dict:
        while True:
            people = rng.randint(2, 8)
            hour, minute = rng.choice(range(11, 23)), rng.choice((0, 15, 30, 45))
            fields = {"name": rng.choice(_PEOPLE_NAMES), "people": people, "day": rng.choice(_DAYS),
                      "time": f"{hour:02d}:{minute:02d}", "place": rng.choice(_PLACES)}
            people_text = _NUMBER_WORDS[people - 2] if rng.random() < 0.5 else str(people)
            phrasing = rng.choice(phrasings)
            sentence = phrasing.format(people_text=people_text, time_text=_time_text(hour, minute),
                                       **{k: v for k, v in fields.items() if k != "people"})
            if sentence in used:
                continue
            used.add(sentence)
            index = [p for p, _ in JSON_PHRASINGS].index(phrasing)
            return {"task": "json", "split": split, "question": sentence,
                    "answer": json.dumps(fields, ensure_ascii=False), "template": f"phrasing_{index}",
                    "group": group}

    splits: dict[str, list[dict]] = {}
    for split in ("test", "validation", "train"):
        n = sizes[split]
        if split == "test":
            rows = [draw(seen, split, "seen") for _ in range(n - n // 2)] + [draw(new, split, "heldout_template")
                                                                             for _ in range(n // 2)]
        else:
            rows = [draw(seen, split, "seen") for _ in range(n)]
        for i, row in enumerate(rows):
            row["id"] = f"json-{split}-{i:04d}"
        splits[split] = rows
    return {s: splits[s] for s in SPLITS}
