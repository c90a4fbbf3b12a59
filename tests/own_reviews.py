"""Reviews in two languages (English and Indonesian words), written as a user's CSV for the own-data tests.

Each review is four filler words and one sentiment word at a random place, so a tiny model learns
the task in seconds and its circuit is the heads that find the sentiment word."""

from __future__ import annotations

import csv
import random

WORDS = {
    "eng": {
        "good": ["great", "lovely", "tasty", "superb"],
        "bad": ["awful", "bland", "rude", "dirty"],
        "other": ["the", "food", "was", "really", "service", "here", "and", "staff"],
    },
    "ind": {
        "good": ["enak", "bagus", "ramah", "mantap"],
        "bad": ["buruk", "hambar", "kasar", "kotor"],
        "other": ["makanannya", "sangat", "pelayanan", "di", "sini", "dan", "stafnya", "tempatnya"],
    },
}


def write_reviews(path, per_lang: int = 90) -> list[dict]:
    """Reviews in two languages: four filler words and one sentiment word in a random place."""
    rng = random.Random(0)
    rows = []
    for lang, words in WORDS.items():
        for _ in range(per_lang):
            mood = rng.choice(["bad", "good"])
            text = rng.sample(words["other"], 4)
            text.insert(rng.randrange(5), rng.choice(words[mood]))
            rows.append({"review": " ".join(text), "mood": mood, "language": lang})
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["review", "mood", "language"])
        writer.writeheader()
        writer.writerows(rows)
    return rows
