"""What end users write with their feedback, for generated load: the words agree with the label.

A bad event complains, a good one praises, a three-star rating is lukewarm, a
correction says what it fixed and carries the corrected answer. The wording
depends on the kind (a "was it helpful?" no reads differently from a one-star
rating), and for the demo's capabilities (``product-search``, ``returns``,
``order-tracking``) some comments are about the capability itself; other
capabilities get the general ones.
"""

from __future__ import annotations

import random
from functools import cache

#: label -> kind -> what users write, whatever the answer was about
GENERAL: dict[str, dict[str, tuple[str, ...]]] = {
    "bad": {
        "thumb": (
            "Wrong answer", "That is not what I asked", "It made that up",
            "Way too long, I gave up reading", "Did not answer the question",
        ),
        "rating": (
            "Partly right, but the important part was wrong", "Had to ask three times",
            "Too vague to act on", "Slow and mostly unhelpful",
        ),
        "bool": (
            "No, I still don't know what to do", "Didn't help, I'll call support instead",
            "Not helpful at all",
        ),
    },
    "good": {
        "thumb": ("Exactly what I needed", "Perfect, thanks", "Spot on", "Short and right"),
        "rating": ("Really helpful, thanks", "Clear and quick", "Better than the FAQ"),
        "bool": ("Yes, that solved it", "Helpful, thank you", "Solved my problem"),
    },
    "neutral": {
        "rating": (
            "Okay, but a bit generic", "Right in the end, took a while to get there",
            "Fine, nothing special", "Correct but far too long",
        ),
    },
}  # fmt: skip

#: label -> capability -> what users write about that capability in particular
ABOUT: dict[str, dict[str, tuple[str, ...]]] = {
    "bad": {
        "product-search": (
            "Showed me winter boots when I asked for sandals",
            "None of these come in my size", "Everything it listed is out of stock",
            "I said under $50, every result was over $100",
        ),
        "returns": (
            "It says 90 days to return, your policy page says 30",
            "Made up a return address", "It says sale items can be returned, they can't",
            "I asked about an exchange and it explained refunds",
        ),
        "order-tracking": (
            "My parcel was delivered yesterday, it says it is still in the warehouse",
            "Gave me a tracking number that does not exist",
            "It mixed up my two orders", "Couldn't find my order even with the order number",
        ),
    },
    "good": {
        "product-search": (
            "Found the exact jacket I was looking for", "Great picks, all in my size",
            "Filtered by price just as I asked",
        ),
        "returns": (
            "Clear steps, the return label was in my inbox a minute later",
            "Finally someone explains the exchange policy properly",
        ),
        "order-tracking": (
            "Knew where my parcel was before the courier did", "Right delivery date, thanks",
        ),
    },
}  # fmt: skip

#: capability -> (what the user says they fixed, the corrected answer); "" for any capability
CORRECTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "": (
        ("Fixed a wrong detail", "The same answer with the wrong detail corrected."),
        ("Shortened it to what matters", "The first two sentences of the answer."),
    ),
    "product-search": (
        ("Only the blue one is under $50",
         "The Trail Runner in blue is $45; the other colours are $65."),
        ("Fixed the size range", "The Alpine jacket comes in XS to XXL, not S to L."),
    ),
    "returns": (
        ("The return window is 30 days, not 90",
         "You can return unworn items within 30 days of delivery for a full refund."),
        ("Sale items are final sale",
         "Items bought on sale cannot be returned, but they can be exchanged for another size."),
    ),
    "order-tracking": (
        ("It was delivered on Tuesday",
         "Your order was delivered on Tuesday and signed for at the front desk."),
        ("Wrong carrier", "Your parcel ships with DHL; the tracking link is in your email."),
    ),
}  # fmt: skip


def comment(rng: random.Random, label: str, kind: str, capability: str) -> str | None:
    """A comment for an event of this label and kind about ``capability``; None when users of
    that kind and label write nothing (signals, custom labels)."""
    if label == "edit":
        return correction(rng, capability)[0]
    general = GENERAL.get(label, {}).get(kind, ())
    about = ABOUT.get(label, {}).get(capability, ())
    if not general and not about:
        return None
    # Half of what users write about a capability they know is about that capability.
    return rng.choice(about if about and (not general or rng.random() < 0.5) else general)


def correction(rng: random.Random, capability: str) -> tuple[str, str]:
    """What a user who corrects an answer about ``capability`` says, and the corrected answer."""
    return rng.choice(CORRECTIONS.get(capability) or CORRECTIONS[""])


@cache
def said(label: str) -> frozenset[str]:
    """Every comment an event of ``label`` may carry."""
    if label == "edit":
        return frozenset(c for pairs in CORRECTIONS.values() for c, _ in pairs)
    general = (c for texts in GENERAL.get(label, {}).values() for c in texts)
    about = (c for texts in ABOUT.get(label, {}).values() for c in texts)
    return frozenset((*general, *about))


@cache
def about(capability: str) -> frozenset[str]:
    """Every comment that is about ``capability`` in particular."""
    by_label = (texts.get(capability, ()) for texts in ABOUT.values())
    corrections = (c for c, _ in CORRECTIONS.get(capability, ()))
    return frozenset((*(c for texts in by_label for c in texts), *corrections))


#: capability -> (question, answer) of the demo's assistant: what its traces' content says
EXCHANGES: dict[str, tuple[tuple[str, str], ...]] = {
    "product-search": (
        ("Do you have waterproof hiking boots under 120 euros?",
         "Yes: the Trailmaster GTX (109 €) and the Alpine Lite (95 €) are waterproof and in "
         "stock in sizes 38 to 46."),
        ("Which laptop bag fits a 16-inch laptop?",
         "The Metro Pro 16 and the Commuter XL both take laptops up to 16 inches."),
        ("Is the blue kettle available in stores?",
         "The Aurora kettle in blue is in stock online; stores get it next week."),
    ),
    "returns": (
        ("How do I return a jacket I bought last week?",
         "You have 30 days: print the label from your orders page, pack the jacket with its "
         "tags and drop it at any parcel shop. The refund follows within 5 days."),
        ("Can I return shoes I have worn outside?",
         "Worn shoes can be returned only if they are faulty; otherwise they must be unworn."),
        ("When will I get my refund?",
         "Refunds reach your card within 5 working days after we receive the parcel."),
    ),
    "order-tracking": (
        ("Where is my order 48213?",
         "Order 48213 left our warehouse yesterday and arrives Thursday with DHL."),
        ("Why is my parcel late?",
         "Your parcel is held at the carrier's depot because of the weather; it should move "
         "tomorrow."),
        ("Can I change the delivery address of my order?",
         "The order has shipped, so the address is the carrier's now: change it on the "
         "tracking page."),
    ),
}  # fmt: skip
_EXCHANGE = (("Can you help me?", "Of course: what are you looking for?"),)


def exchange(rng: random.Random, capability: str) -> tuple[str, str]:
    """A question a user asks about ``capability`` and the assistant's answer."""
    return rng.choice(EXCHANGES.get(capability) or _EXCHANGE)
