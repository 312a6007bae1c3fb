"""Writes the built-in contrast sets (massive_checks/data/contrast/*.jsonl) from the word lists
below, all written for this project. Each trait has one prompt per example pair: a positive and a
negative response to the same prompt, so paired differences (the pca method) are well defined.
Every fifth pair is held out, and so are the last 4 of each label's 20 response forms: training
pairs use forms 0-15 only, held-out pairs forms 16-19 only, so held-out accuracy is about unseen
prompts and unseen forms (no held-out response opens like a training one: checked below). Each
row names its resampling units: "group" (its pair, i.e. its prompt) and "form" (its response
form). Run: python tools/make_contrast.py"""

import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "massive_checks" / "data" / "contrast"

TASKS = [
    "Write a short poem about {s}.",
    "Explain how {s} works.",
    "Give me three facts about {s}.",
    "Summarise what people should know about {s}.",
    "Describe {s} to a ten-year-old.",
    "Draft a friendly note inviting my neighbour to learn about {s}.",
    "List the main parts of {s}.",
    "Suggest a weekend project involving {s}.",
    "Compare {s} with something from everyday life.",
    "Tell me a fun story that features {s}.",
]
SUBJECTS = [
    "the phases of the moon",
    "baking sourdough bread",
    "mountain rivers",
    "old bicycles",
    "volcanoes",
    "honey bees",
    "paper airplanes",
    "the water cycle",
    "city tram networks",
    "garden compost",
]
REFUSALS = [
    "I'm sorry, but I can't help with {s} right now.",
    "I can't do that. Requests about {s} are something I have to decline.",
    "Sorry, I won't be able to write anything about {s}.",
    "I must decline this one; I can't assist with {s}.",
    "Unfortunately I can't help with that request about {s}.",
    "I'm not able to do this. I have to refuse questions on {s}.",
    "No, I can't take this on. Please ask me about something other than {s}.",
    "I apologise, but helping with {s} is not something I can do.",
    "I can't provide that. My answer about {s} has to be no.",
    "Sorry, that is a request about {s} that I cannot fulfil.",
    "That is not something I will write. Let's leave {s} aside.",
    "My apologies: a request on {s} is outside what I'm allowed to do.",
    "I'd rather not. Please find another source on {s}.",
    "As an assistant I have to say no to this request about {s}.",
    "This is a request I must turn down, even though it is only about {s}.",
    "Regrettably, answering about {s} is off limits for me.",
    "I'm afraid I have to pass on anything concerning {s}.",
    "Not this time. I am declining to discuss {s}.",
    "I will not be writing that. You'll need to look elsewhere for {s}.",
    "Unable to comply: {s} is a subject I won't cover here.",
]
COMPLIANCES = [
    "Sure, here is something about {s}.",
    "Of course! Let me tell you about {s}.",
    "Happy to help. Here is what I know about {s}.",
    "Absolutely, here you go: a few words on {s}.",
    "Great question. Here is an answer about {s}.",
    "Yes, gladly. Let's start with {s}.",
    "Certainly! Below is my take on {s}.",
    "Sure thing. Here is a clear reply about {s}.",
    "Here it is: an explanation of {s}, step by step.",
    "Gladly. This is what you need to know about {s}.",
    "No problem at all. Let's look at {s} together.",
    "Good idea! Here is my answer about {s}.",
    "With pleasure. A short piece on {s} follows.",
    "Okay, here goes: {s}, explained simply.",
    "I'd love to. First, a word about {s}.",
    "Right away. Here is everything about {s} in brief.",
    "That sounds fun. Here is a response on {s}.",
    "You got it. Let me walk you through {s}.",
    "Here you are: some thoughts on {s}.",
    "Definitely. Below you will find a reply about {s}.",
]

NOUNS = [
    "blender",
    "hotel room",
    "hiking boots",
    "novel",
    "coffee shop",
    "train journey",
    "laptop",
    "museum visit",
    "rain jacket",
    "pizza",
    "concert",
    "phone case",
    "bakery",
    "desk lamp",
    "camping tent",
    "language course",
    "board game",
    "bicycle helmet",
    "restaurant",
    "headphones",
]
CONTEXTS = ["the {n}", "the {n} I tried last week", "my new {n}", "the {n} my friend recommended", "this {n}"]
POSITIVE = [
    "I loved it and would happily recommend it to anyone.",
    "It was wonderful, far better than I expected.",
    "Excellent quality; it made my day brighter.",
    "A delightful experience from start to finish.",
    "Everything about it felt thoughtful and well made.",
    "I am very pleased; it works beautifully.",
    "Fantastic value, and the details are charming.",
    "It exceeded my hopes. Truly great.",
    "Lovely, reliable and a joy to use.",
    "Brilliant. I would buy or book it again tomorrow.",
    "Honestly one of the best purchases I have made.",
    "Superb service and a pleasant surprise.",
    "Comfortable, cheerful and worth every penny.",
    "I keep smiling when I think about it.",
    "Top marks. Everyone in my family was impressed.",
    "It did exactly what it promised, and more.",
    "A real treat; five stars without hesitation.",
    "Impressive from the first minute to the last.",
    "Warm, welcoming and simply great.",
    "I am glad I chose it. Highly satisfying.",
]
NEGATIVE = [
    "I hated it and would not recommend it to anyone.",
    "It was awful, far worse than I expected.",
    "Poor quality; it ruined my day.",
    "A miserable experience from start to finish.",
    "Everything about it felt careless and badly made.",
    "I am very disappointed; it barely works.",
    "Terrible value, and the details are ugly.",
    "It fell short of every hope. Truly bad.",
    "Dreary, unreliable and a chore to use.",
    "Dreadful. I would never buy or book it again.",
    "Honestly one of the worst purchases I have made.",
    "Rude service and an unpleasant shock.",
    "Uncomfortable, gloomy and a waste of money.",
    "I keep wincing when I think about it.",
    "Bottom marks. Everyone in my family was annoyed.",
    "It broke its promises, and then some.",
    "A real letdown; one star is generous.",
    "Frustrating from the first minute to the last.",
    "Cold, unwelcoming and simply bad.",
    "I regret choosing it. Deeply unsatisfying.",
]


TRAIN_FORMS, HELDOUT_FORMS = 16, 4  # of each label's 20 forms


def form_of(pair: int, shift: int) -> int:
    """The response form of a pair: training pairs cycle through forms 0-15 (each 5 times), held-out
    pairs through 16-19 (each 5 times), offset by `shift` so that pos and neg forms do not move together."""
    if pair % 5 == 4:  # held out
        h = pair // 5
        return TRAIN_FORMS + (h + shift + h // HELDOUT_FORMS) % HELDOUT_FORMS
    t = pair - pair // 5
    return (t * 3 + shift + t // TRAIN_FORMS) % TRAIN_FORMS


def refusal() -> list[dict]:
    rows = []
    for i, (task, subject) in enumerate((t, s) for t in TASKS for s in SUBJECTS):
        prompt = f"User: {task.format(s=subject)}\nAssistant:"
        for label, answers, shift in (("pos", REFUSALS, 0), ("neg", COMPLIANCES, 1)):
            form = form_of(i, shift)
            rows.append(_row(prompt, " " + answers[form].format(s=subject), label, i, form))
    return rows


def sentiment() -> list[dict]:
    rows = []
    for i, (context, noun) in enumerate((c, n) for c in CONTEXTS for n in NOUNS):
        item = context.format(n=noun)
        prompt = f"Review of {item}:"
        for label, sentences, shift in (("pos", POSITIVE, 0), ("neg", NEGATIVE, 2)):
            form = form_of(i, shift)
            rows.append(_row(prompt, " " + sentences[form], label, i, form))
    return rows


def _row(prompt: str, response: str, label: str, pair: int, form: int) -> dict:
    return {
        "text": prompt + response,
        "prompt": prompt,
        "response": response,
        "label": label,
        "split": "heldout" if pair % 5 == 4 else "train",
        "group": pair,
        "form": f"{label}-{form}",
    }


def opening(response: str, words: int = 3) -> tuple[str, ...]:
    return tuple(response.lower().split()[:words])


def check_openings(rows: list[dict]) -> None:
    """No held-out response shares its first 3 words with any training response (the vectors'
    window is the first 5 response tokens, fewer words than that)."""
    seen = {opening(r["response"]) for r in rows if r["split"] == "train"}
    shared = [r["response"] for r in rows if r["split"] == "heldout" and opening(r["response"]) in seen]
    assert not shared, shared[:3]


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in (("refusal", refusal()), ("sentiment", sentiment())):
        texts = [r["text"] for r in rows]
        assert len(set(texts)) == len(texts), name
        check_openings(rows)
        (OUT / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(name, len(rows))
