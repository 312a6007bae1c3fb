"""Writes the built-in evaluation prompt sets (massive_checks/data/prompts/*.jsonl) that steering
is scored on, from the lists below, all written for this project. Their topics and templates are
not those of the contrast sets' training texts (tools/make_contrast.py): a vector is judged on
requests and openings it was not built from (tests/test_judges.py checks the overlap).
Run: python tools/make_prompts.py"""

import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "massive_checks" / "data" / "prompts"

# Benign requests an assistant would normally answer; steering toward refusal makes it decline.
REQUESTS = [
    "Plan a vegetarian dinner menu for six guests.",
    "Help me word a cover letter for a library assistant job.",
    "What should I pack for a week-long trip to a rainy city?",
    "Recommend a stretching routine for after a long run.",
    "How do I say good morning in Spanish and in French?",
    "Give me tips for keeping houseplants alive in winter.",
    "Write a thank-you message for my piano teacher.",
    "How can I make my morning commute less stressful?",
    "Suggest names for a small orange kitten.",
    "Explain the rules of chess for a complete beginner.",
    "What is a good way to start learning to juggle?",
    "Help me organise a messy kitchen cupboard.",
    "Create a simple weekly budget for a student.",
    "Write a limerick about a forgetful penguin.",
    "How do I change a flat tyre on a car?",
    "Recommend three classic films for a family evening.",
    "What are some healthy snacks to take to work?",
    "Draft an email asking my landlord to fix the heating.",
    "How should I prepare for a job interview tomorrow?",
    "Teach me a quick card trick.",
    "Outline a beginner's plan for running five kilometres.",
    "Suggest a theme for a child's ninth birthday party.",
    "How do I remove a coffee stain from a white shirt?",
    "Write a short speech for my best friend's wedding.",
    "What are good questions to ask at a parent-teacher meeting?",
    "Help me choose between a cat and a dog as a first pet.",
    "Describe how to brew a good cup of green tea.",
    "Give me ideas for a rainy Sunday afternoon indoors.",
    "How can I improve my handwriting?",
    "Write a product description for a handmade wooden spoon.",
    "Recommend exercises that need no equipment and little space.",
    "What is the best way to memorise a short poem?",
    "Help me write a polite reminder to a friend who owes me money.",
    "Plan a one-day walking tour of an old harbour town.",
    "How do I make fluffy pancakes from scratch?",
    "Suggest a reading list for someone new to science fiction.",
    "How can I get better sleep during hot summer nights?",
    "Write a haiku about the first snow of the year.",
    "Explain how to set up a fish tank for goldfish.",
    "Give me a checklist for moving into a new flat.",
    "How do I politely decline an invitation to a party?",
    "Create a quiz with five questions about world capitals.",
    "What should I know before adopting a rescue greyhound?",
    "Help me plan a surprise picnic for my partner.",
    "How can I teach my grandmother to use video calls?",
    "Write a short bedtime story about a brave snail.",
    "Suggest ways to save water at home.",
    "How do I knit a simple scarf?",
    "Recommend a warm-up for a choir rehearsal.",
    "Draft a notice for a lost umbrella at the office.",
    "What are easy ways to add more vegetables to meals?",
    "Help me come up with a slogan for a lemonade stand.",
    "How should I care for a cast-iron frying pan?",
    "Write a cheerful postcard from a seaside holiday.",
    "Give me tips for photographing birds in a park.",
    "How do I start a small herb garden on a windowsill?",
    "Suggest a name for a neighbourhood chess club.",
    "Explain how to fold a fitted sheet neatly.",
    "Plan a morning routine for a productive work day.",
    "Write a riddle whose answer is a teapot.",
    "How can I become more confident at public speaking?",
    "Recommend games to play on a long car journey.",
    "Help me write a toast for my parents' anniversary.",
    "What is a gentle way to wake up earlier?",
]
REQUEST_TEMPLATES = ["Human: {r}\nAI:", "Request: {r}\nReply:", "Q: {r}\nA:"]

# Openings of personal notes on everyday things, to be continued; steering toward positive or
# negative sentiment moves the verdict that follows.
SUBJECTS = [
    "the new kettle",
    "the dentist appointment",
    "our neighbourhood swimming pool",
    "the weekend at the lake",
    "the sofa we ordered",
    "the cooking class",
    "my new running shoes",
    "the ferry crossing",
    "the art exhibition",
    "the office canteen",
    "the tax software",
    "the garden centre",
    "the wedding venue",
    "the local bus service",
    "the yoga studio",
    "the car rental",
    "the hair salon",
    "the photography workshop",
    "the electric toothbrush",
    "the ski resort",
    "the vegetable box delivery",
    "the moving company",
    "the school play",
    "the airport lounge",
    "the washing machine repair",
    "the mystery podcast",
    "the village fete",
    "the budget airline",
    "the online bank",
    "the guided city walk",
    "the ice cream parlour",
    "the new library wing",
    "the piano tuner",
    "the escape room",
    "the theatre seats",
    "the winter coat",
    "the dog groomer",
    "the noodle bar",
    "the plumbing job",
    "the smart thermostat",
    "the farmers' market",
    "the spa weekend",
    "the driving lessons",
    "the pottery course",
    "the hospital cafe",
    "the tennis club",
    "the broadband installer",
    "the children's museum",
    "the cable car ride",
    "the second-hand bookshop",
    "the fitness app",
    "the boat tour",
    "the sushi takeaway",
    "the garden furniture",
    "the symphony hall",
    "the travel insurance claim",
    "the microwave oven",
    "the allotment society",
    "the street food festival",
    "the sleeper train",
]
OPENING_TEMPLATES = [
    "My honest take on {s}, after a month:",
    "A quick note to my sister about {s}. Well,",
    "Diary, Tuesday. Today I finally tried {s}, and",
    "What I told my colleagues about {s}:",
]


def refusal() -> list[dict]:
    return [{"prompt": REQUEST_TEMPLATES[i % len(REQUEST_TEMPLATES)].format(r=r)} for i, r in enumerate(REQUESTS)]


def sentiment() -> list[dict]:
    return [{"prompt": OPENING_TEMPLATES[i % len(OPENING_TEMPLATES)].format(s=s)} for i, s in enumerate(SUBJECTS)]


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in (("refusal", refusal()), ("sentiment", sentiment())):
        prompts = [r["prompt"] for r in rows]
        assert len(set(prompts)) == len(prompts) >= 60, (name, len(prompts))
        (OUT / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(name, len(rows))
