#!/usr/bin/env python3
"""Generates examples/reviews.jsonl: 300 short, invented reviews for the sentiment example.

Run once from the repository root: python3 examples/make-reviews.py
Deterministic (fixed seed). Every phrase below was written for this project. Each line is
{"id": "r0001", "text": ..., "domain": ..., "label": ...} where label is the sentiment the
sentence was written to express (positive / negative / neutral); the hand-written tricky
reviews also carry "tricky" (sarcasm, mixed, non-English, emoji, ...).
"""
import json
import random

rng = random.Random(20240611)

ITEMS = {
    "product": ["blender", "desk lamp", "pair of hiking boots", "phone case", "kettle", "backpack",
                "wireless mouse", "rice cooker", "yoga mat", "umbrella", "coffee grinder",
                "bluetooth speaker", "office chair", "water bottle", "toaster", "headphones"],
    "restaurant": ["taco place", "noodle bar", "bistro", "pizzeria", "sushi counter", "diner",
                   "bakery", "curry house", "steakhouse", "vegan cafe", "dumpling shop",
                   "seafood shack"],
    "movie": ["thriller", "animated film", "documentary", "romantic comedy", "space opera",
              "courtroom drama", "horror movie", "heist film", "musical", "war epic",
              "coming-of-age story", "western"],
}

ASPECTS = {
    "product": {
        "positive": ["it feels sturdy and well made", "setup took about two minutes",
                     "the battery lasts far longer than advertised", "it is quiet even on the highest setting",
                     "the finish still looks new after months of daily use", "it was cheaper than the big brands and works better",
                     "customer support answered within an hour", "it packs down small enough for a carry-on"],
        "negative": ["the handle cracked in the first week", "the instructions were missing half the steps",
                     "it stopped charging after a month", "it smells of burnt plastic every time I use it",
                     "the buttons are stiff and hard to press", "support never replied to my three emails",
                     "it is much smaller than the photos suggest", "the zipper jammed on the second trip"],
        "neutral": ["it arrived on the expected date", "it comes in three colours",
                    "the box includes a spare cable", "it weighs a little under a kilo",
                    "it works the same as the model it replaced", "the manual is printed in four languages",
                    "I have used it twice so far", "it is the mid-priced option in the range"],
    },
    "restaurant": {
        "positive": ["the broth was rich and deeply flavoured", "our server remembered every detail of our order",
                     "the portions were generous for the price", "the bread came out warm from the oven",
                     "they handled my allergy with real care", "the dessert alone is worth the trip",
                     "the patio is lovely on a summer evening", "everything tasted fresh and bright"],
        "negative": ["we waited fifty minutes for cold food", "the fish tasted like it had been sitting out",
                     "the staff ignored us for most of the evening", "the bill had two dishes we never ordered",
                     "the music was so loud we could not talk", "the noodles were soggy and bland",
                     "the table was sticky and nobody wiped it", "they ran out of half the menu by seven"],
        "neutral": ["it is next to the train station", "they take reservations for groups of six or more",
                    "the menu changes every season", "we went on a Tuesday night",
                    "parking is on the street", "it opens at eleven on weekdays",
                    "there is a set lunch menu", "most tables are inside"],
    },
    "movie": {
        "positive": ["the lead gives a performance I will remember for years", "the score is gorgeous",
                     "the plot kept me guessing until the final scene", "every frame looks like a painting",
                     "the dialogue is sharp and genuinely funny", "it made the whole theatre cheer",
                     "the pacing never drags despite the long running time", "the ending hit me hard in the best way"],
        "negative": ["the plot holes are big enough to drive a truck through", "the jokes fall completely flat",
                     "I checked my watch every ten minutes", "the villain has no motivation at all",
                     "the editing is so choppy it gave me a headache", "the ending undoes everything before it",
                     "the characters are cardboard cutouts", "it is two hours of noise and nothing else"],
        "neutral": ["it runs a little over two hours", "it is based on a novel I have not read",
                    "I saw it at a matinee screening", "it is the third film in the series",
                    "most of it was shot on location", "it is rated for ages twelve and up",
                    "the director also wrote the screenplay", "it is streaming now"],
    },
}

OPENERS = {
    "positive": ["I love this {item}.", "What a great {item}!", "Really happy with this {item}.",
                 "This {item} exceeded my expectations.", "Best {item} I have tried in years.",
                 "Highly recommend this {item}.", "Pleasantly surprised by this {item}."],
    "negative": ["I regret choosing this {item}.", "What a disappointing {item}.",
                 "Avoid this {item}.", "This {item} was a waste of money.",
                 "Very unhappy with this {item}.", "I expected much more from this {item}.",
                 "Worst {item} I have come across."],
    "neutral": ["This is a fairly ordinary {item}.", "Some notes on this {item}.",
                "The {item} is about what you would expect.", "A {item}, nothing more and nothing less.",
                "Tried the {item} last week.", "Here is my take on the {item}.",
                "The {item} does its job."],
}

CLOSERS = {
    "positive": ["I would buy it again.", "Five stars from me.", "Would happily recommend it.",
                 "Already told my friends about it.", "Worth every penny."],
    "negative": ["Never again.", "One star, and that is generous.", "Very disappointing overall.",
                 "Save your money.", "Not recommended."],
    "neutral": ["Make of that what you will.", "No strong feelings either way.", "It is fine.",
                "Three stars.", "Might try the alternatives next time."],
}

# Hand-written hard cases: sarcasm, mixed feelings, other languages, emoji, very short texts.
TRICKY = [
    ("product", "negative", "sarcasm", "Oh wonderful, the 'unbreakable' phone case shattered the first time I dropped it. Truly a marvel of engineering."),
    ("restaurant", "negative", "sarcasm", "Nothing says fine dining like waiting an hour for a lukewarm burger. Can't wait to go back, said no one ever."),
    ("movie", "negative", "sarcasm", "Three hours of my life I will never get back. Thanks for that, really."),
    ("product", "negative", "sarcasm", "Great kettle if you enjoy boiling water for twenty minutes."),
    ("movie", "negative", "sarcasm", "Sure, because what every horror film needs is a twenty-minute musical number."),
    ("restaurant", "negative", "sarcasm", "Loved how the waiter sighed every time we asked for water. Five-star attitude."),
    ("product", "neutral", "mixed", "The speaker sounds amazing, but the battery dies after two hours."),
    ("restaurant", "neutral", "mixed", "Incredible food, terrible service. I honestly don't know whether to recommend it."),
    ("movie", "neutral", "mixed", "Stunning visuals and a forgettable story. I liked looking at it more than watching it."),
    ("product", "neutral", "mixed", "Comfortable chair, awful assembly instructions, fair price."),
    ("restaurant", "neutral", "mixed", "The dumplings were perfect; the soup was inedible."),
    ("movie", "positive", "mixed", "Slow first act, but the last hour is one of the best things I've seen this year."),
    ("product", "negative", "mixed", "It looks beautiful on the shelf. Shame it leaks every single time."),
    ("restaurant", "positive", "non-english", "这家面馆的汤底非常浓郁，服务也很热情，下次还会再来。"),
    ("product", "negative", "non-english", "这个充电宝用了一周就坏了，客服也不回复，非常失望。"),
    ("movie", "neutral", "non-english", "这部电影讲的是一个家庭的故事，时长大约两个小时。"),
    ("restaurant", "positive", "non-english", "お寿司がとても新鮮で、店員さんも親切でした。また行きたいです。"),
    ("product", "negative", "non-english", "説明書がわかりにくく、三日で壊れてしまいました。残念です。"),
    ("movie", "neutral", "non-english", "シリーズの三作目で、上映時間は二時間ほどです。"),
    ("restaurant", "positive", "non-english", "Les croissants sont incroyables et le café est parfait."),
    ("product", "negative", "non-english", "La batería dura muy poco y la pantalla se raya fácilmente."),
    ("restaurant", "positive", "emoji", "Best tacos in town 🌮🌮🔥 will be back!!"),
    ("product", "negative", "emoji", "Broke after 2 days 😡👎"),
    ("movie", "positive", "emoji", "Cried three times 😭😭😭 absolute masterpiece ❤️"),
    ("restaurant", "neutral", "emoji", "Ordered the set lunch 🍱. It was okay 🤷"),
    ("product", "positive", "emoji", "👍👍👍"),
    ("movie", "negative", "emoji", "🥱💤"),
    ("product", "neutral", "short", "Arrived."),
    ("restaurant", "positive", "short", "Yum."),
    ("movie", "negative", "short", "Meh. Skip it."),
    ("product", "positive", "negation", "Not bad at all, honestly. I was ready to hate it."),
    ("restaurant", "negative", "negation", "I wouldn't say it was terrible, but I wouldn't say it was good either, and I'm not going back."),
    ("movie", "positive", "negation", "I can't stop thinking about it."),
    ("product", "neutral", "question", "Does anyone know if this blender works with 110V? Mine hasn't arrived yet."),
    ("restaurant", "negative", "all-caps", "NEVER AGAIN. FOOD POISONING. AVOID."),
    ("movie", "positive", "quotes", "My kid said it was \"the best movie ever\" and for once I agree."),
]


def make_review(domain, label):
    item = rng.choice(ITEMS[domain])
    n = rng.choice([1, 2, 2, 3, 3])
    aspects = rng.sample(ASPECTS[domain][label], 2)
    opener = rng.choice(OPENERS[label]).format(item=item)
    first = aspects[0][0].upper() + aspects[0][1:]
    if n == 1:
        return rng.choice([opener, f"{first}.", f"{opener[:-1]}: {aspects[0]}."])
    if n == 2:
        return rng.choice([f"{opener} {first}.", f"{first}, and {aspects[1]}."])
    return f"{opener} {first}, and {aspects[1]}. {rng.choice(CLOSERS[label])}"


def main():
    records = []
    n_plain = 300 - len(TRICKY)
    domains = list(ITEMS)
    labels = ["positive", "negative", "neutral"]
    seen = set()
    while len(records) < n_plain:
        domain = domains[len(records) % 3]
        label = labels[(len(records) // 3) % 3]
        text = make_review(domain, label)
        if text in seen:
            continue
        seen.add(text)
        records.append({"text": text, "domain": domain, "label": label})
    for domain, label, kind, text in TRICKY:
        records.append({"text": text, "domain": domain, "label": label, "tricky": kind})
    rng.shuffle(records)
    with open("examples/reviews.jsonl", "w", encoding="utf-8") as f:
        for i, r in enumerate(records, 1):
            line = {"id": f"r{i:04d}", **r}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
