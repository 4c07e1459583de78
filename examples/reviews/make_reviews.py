"""Writes train.csv, validation.csv and test.csv of the demo's review set (run from anywhere; seeded, so the files
are reproducible). Hand-written clauses about 20 products, combined the way real reviews mix them: plain praise and
complaints, but also a complaint turned around by a "but", praise undone by one, negated praise ("not as sturdy as I
hoped"), faint praise ("no complaints so far") and sarcasm ("Great, another kettle that ..."). A review's label is
the verdict a reader takes away, which for a contrast is the clause after "but". About one review in nine is mixed
with no verdict in its text (its label is the writer's rating, a coin flip here), as in real review data: no model can
score 100%, and a good one lands well above always answering the commonest label."""

from __future__ import annotations

import csv
import random
from pathlib import Path

PRODUCTS = ["kettle", "blender", "desk lamp", "phone case", "yoga mat", "water bottle", "backpack", "office chair",
            "toaster", "pair of headphones", "keyboard", "coffee grinder", "rain jacket", "frying pan", "phone charger",
            "bike light", "suitcase", "wireless mouse", "air fryer", "tent"]
GOOD = ["it heats up in under two minutes", "it survived a fall off the counter without a scratch",
        "the battery lasts a full week", "the stitching is neat and tight", "it is whisper quiet",
        "setup took five minutes", "the handle stays cool", "it folds flat and fits in a drawer",
        "the buttons feel solid", "it cleans up with one rinse", "support replaced a missing part the next day",
        "it looks even better than in the photos", "it is light enough to carry all day",
        "my kids use it daily and it still works like new", "the instructions were clear",
        "it kept me dry through a whole afternoon of rain", "the colour has not faded at all",
        "it charges my phone twice as fast as the old one", "it feels much pricier than it was",
        "it does exactly what the listing promised"]
BAD = ["the lid cracked within a week", "it smells of burnt plastic", "the cable frayed after a month",
       "it rattles on every bump", "the paint chipped on day two", "the zipper jammed the first time",
       "it stopped charging after three weeks", "it is much smaller than pictured", "the seams split along the side",
       "it is loud enough to wake the house", "the app keeps disconnecting", "it wobbles on a flat table",
       "the handle gets too hot to touch", "the return took a month", "the coating is already peeling",
       "half the screws were missing", "it leaks every time I fill it", "the light flickers constantly",
       "it died the day after the warranty ended", "it scratched the first time I used it"]
GOOD_END = ["Would buy again.", "Highly recommend.", "Worth every penny.", "Five stars from me.",
            "Exactly what I needed.", "I already ordered a second one.", "Very happy with it.", ""]
BAD_END = ["Returning it.", "Save your money.", "One star.", "Not worth the price.", "I regret buying it.",
           "Avoid.", "Disappointed.", ""]
FAINT_GOOD = ["It is not the prettiest {p}, but it does the job well.", "It isn't cheap, but it is built to last.",
              "No complaints so far.", "Nothing fancy, but the {p} has not let me down once.",
              "I was sceptical about this {p}, and I was wrong.", "Better than I expected for the price."]
NEGATED_GOOD = ["The {p} is not as sturdy as I hoped.", "It isn't nearly as quiet as the listing says.",
                "I wanted to love this {p}.", "Not what I would call good value.",
                "The {p} looked fine at first, sadly not for long.", "I can't say it was worth the wait."]
SARCASM = ["Great, another {p} that breaks in a week.", "Love how the {p} needs a reset every morning.",
           "Fantastic if you enjoy mopping up leaks.", "Wonderful, the {p} arrived in pieces.",
           "Five stars for the packaging, none for the {p}.", "Brilliant design, if you never plan to use it."]
OPEN = ["", "Honestly, ", "After two weeks, ", "I must say ", "To be fair, ", "Update: "]


def cap(s: str) -> str:
    return s[0].upper() + s[1:]


def review(rnd: random.Random) -> tuple[str, str]:
    p = rnd.choice(PRODUCTS)
    good, bad = rnd.choice(GOOD), rnd.choice(BAD)
    kind = rnd.choices(["good", "bad", "turned_good", "turned_bad", "faint", "negated", "sarcasm", "mixed"],
                       weights=[20, 20, 15, 15, 10, 10, 10, 12])[0]
    good2, bad2 = rnd.choice([g for g in GOOD if g != good]), rnd.choice([b for b in BAD if b != bad])
    if kind == "good":
        text = rnd.choice([f"the {p} is great: {good}.", f"{good}.", f"really pleased with the {p}; {good}.",
                           f"{good} and {good2}."])
        text, label = f"{rnd.choice(OPEN)}{text} {rnd.choice(GOOD_END)}", "positive"
    elif kind == "bad":
        text = rnd.choice([f"the {p} is a letdown: {bad}.", f"{bad}.", f"not happy with the {p}; {bad}.",
                           f"{bad} and {bad2}."])
        text, label = f"{rnd.choice(OPEN)}{text} {rnd.choice(BAD_END)}", "negative"
    elif kind == "turned_good":  # a complaint, then the verdict (said outright only sometimes)
        tail = rnd.choice([f", so I'm keeping the {p}", "", "", ", and that is what matters"])
        text, label = f"{cap(bad)}, but {good}{tail}. {rnd.choice(GOOD_END) if rnd.random() < 0.3 else ''}", "positive"
    elif kind == "turned_bad":  # praise, then the verdict
        tail = rnd.choice([f", so the {p} is going back", "", "", ", which ruins it"])
        text, label = f"{cap(good)}, but {bad}{tail}. {rnd.choice(BAD_END) if rnd.random() < 0.3 else ''}", "negative"
    elif kind == "faint":
        text, label = rnd.choice(FAINT_GOOD).format(p=p), "positive"
    elif kind == "negated":
        text, label = rnd.choice(NEGATED_GOOD).format(p=p) + f" {cap(bad)}.", "negative"
    elif kind == "sarcasm":
        text, label = rnd.choice(SARCASM).format(p=p), "negative"
    else:  # both sides and no verdict: the star rating the writer gave is not in the text (a coin flip here)
        text = rnd.choice([f"{good}, and {bad}.", f"{bad}; on the other hand, {good}.", f"the {p}? {cap(good)}. {cap(bad)}."])
        label = rnd.choice(["positive", "negative"])
    return cap(" ".join(text.split())), label


def main(folder: Path = Path(__file__).parent, seed: int = 13) -> None:
    rnd = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < 500:
        text, label = review(rnd)
        if text not in seen:  # no review in two splits
            seen.add(text)
            rows.append((text, label))
    for name, part in (("train", rows[:360]), ("validation", rows[360:430]), ("test", rows[430:])):
        with open(folder / f"{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows(part)


if __name__ == "__main__":
    main()
