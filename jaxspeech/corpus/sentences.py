"""English sentences for the synthetic corpus: the grammar rules, and split-disjoint drawing.

``SentenceGenerator(min_words, max_words)`` draws sentences of a bounded length from an English
grammar (statements in six tenses, questions, commands, two-clause sentences, relative and
reported clauses) over the word lists of ``words``. Each sentence belongs to exactly one split,
so splits are disjoint by construction however many sentences are drawn, on the fly or for the
prepared corpus:

* ``open_vocab``: the sentences holding a word of ``open_vocab_words()``, a fixed ~10 % of the
  nouns, names and verbs (every inflected form of each) held out of every other split;
* ``train``, ``dev``, ``test``: the other sentences, by a hash of their transcript (``split_of``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib

import numpy as np

from jaxspeech.corpus import words
from jaxspeech.corpus.grammar import Grammar, Slot, render

GENERATOR_VERSION = "sentences-2"
OPEN_VOCAB = "open_vocab"
SPLITS = ("train", "dev", "test", OPEN_VOCAB)
_TEXT_ONLY_STREAM = 2  # the random streams of the corpus's utterances use 0 (text) and 1 (voice)
# Per-mille of the sentence space given to each held-out split (the rest is train).
_SPLIT_PER_MILLE = {"dev": 25, "test": 25}
# The word classes whose entries the open-vocabulary split holds out, and the share held out of each.
OPEN_VOCAB_SLOTS = (
    "person",
    "relative",
    "animal",
    "food",
    "food_mass",
    "drink",
    "object",
    "furniture",
    "place",
    "nature",
    "idea",
    "event",
    "name",
    "surname",
    "city",
    "country",
    "v_food",
    "v_drink",
    "v_thing",
    "v_give",
    "v_person",
    "v_place",
    "v_idea",
    "v_animal",
    "v_animal_act",
    "v_intr",
    "v_motion",
    "v_inf",
    "v_ger",
    "v_say",
)
OPEN_VOCAB_FRACTION = 0.1

RULES = r"""
S            -> 10: STATEMENT . | 3: QUESTION ? | 2: COMMAND . | 4: COMPLEX .

# ---- clauses -----------------------------------------------------------------------------
STATEMENT    -> 12: CLAUSE | 2: TIME_PAST , PAST_CLAUSE | 2: COPULA | 2: ANIMAL_CLAUSE
             | 1: THERE | 1: WEATHER | 1: SUBJ_SG {freq} VP[s] | 1: SUBJ_PL {freq} VP[base]
CLAUSE       -> 4: SUBJ_SG VP[s] MOD_HABIT | 3: SUBJ_PL VP[base] MOD_HABIT | 1: i VP[base] MOD_HABIT
             | 10: PAST_CLAUSE
             | 3: SUBJ_ANY will VP[base] MOD_FUT | 3: SUBJ_ANY MODAL VP[base] MOD_FREE
             | 2: SUBJ_SG is going to VP[base] MOD_FUT | 2: SUBJ_PL are going to VP[base] MOD_FUT
             | 2: SUBJ_SG is VP[ing] MOD_NOW | 2: SUBJ_PL are VP[ing] MOD_NOW | 1: i am VP[ing] MOD_NOW
             | 2: SUBJ_SG has VP[pp] MOD_PERFECT | 2: SUBJ_PL have VP[pp] MOD_PERFECT
             | 1: i have VP[pp] MOD_PERFECT
             | 2: SUBJ_SG does not VP[base] MOD_HABIT | 2: SUBJ_PL do not VP[base] MOD_HABIT
PAST_CLAUSE  -> 8: SUBJ_ANY VP[past] MOD_PAST | 2: SUBJ_SG was VP[ing] MOD_PAST
             | 2: SUBJ_PL were VP[ing] MOD_PAST | 2: SUBJ_ANY did not VP[base] MOD_PAST
             | 1: SUBJ_ANY had already VP[pp] | 1: SUBJ_ANY had never VP[pp] before
             | 1: SUBJ_SG was {degree} {adj_person} MOD_PAST | 1: SUBJ_PL were {adj_person} MOD_PAST
FUTURE_CLAUSE -> 3: SUBJ_ANY will VP[base] | 1: SUBJ_ANY will not VP[base]
             | 1: SUBJ_SG is going to VP[base] | 1: SUBJ_PL are going to VP[base]
             | 1: SUBJ_ANY might VP[base]

SUBJ_ANY     -> 4: SUBJ_SG | 3: SUBJ_PL | 1: i
SUBJ_SG      -> 8: NP_PERSON_SG | 1: he | 1: she
SUBJ_PL      -> 8: NP_PERSON_PL | 1: we | 1: they | 1: you
MODAL        -> can | could | should | might | must | may | would

# ---- verb phrases, parameterised by verb form F (base, s, past, pp, ing) -----------------
VP[F]        -> 4: {v_food:F} NP_FOOD | 2: {v_drink:F} NP_DRINK | 6: {v_thing:F} NP_THING
             | 2: {v_give:F} OBJ_PERSON NP_THING | 1: {v_give:F} NP_THING to OBJ_PERSON
             | 4: {v_person:F} OBJ_PERSON | 3: {v_place:F} NP_PLACE | 3: {v_idea:F} NP_IDEA
             | 2: {v_animal:F} NP_ANIMAL | 3: {v_intr:F} INTR_MOD | 4: {v_motion:F} to NP_DEST
             | 1: {v_motion:F} home | 1: {v_motion:F} back to NP_DEST
             | 2: {v_inf:F} to VP[base] | 2: {v_ger:F} VP[ing] | 1: {v_say:F} that CLAUSE
             | 1: {v_thing:F} NP_THING {adv} | 1: {v_person:F} OBJ_PERSON at the {place}
             | 1: {v_thing:F} NP_THING for OBJ_PERSON | 1: {v_food:F} NP_FOOD with OBJ_PERSON
INTR_MOD     -> 3: _ | 2: {adv} | 1: in the {place} | 1: at the {place} | 1: with OBJ_PERSON
             | 1: for NUMBER_TIME | 1: all day | 1: together | 1: near the {nature}

# ---- noun phrases --------------------------------------------------------------------------
NP_PERSON_SG -> 4: the {person} | 2: @a {person} | 3: the ADJ_PERSON {person} | 1: @a ADJ_PERSON {person}
             | 3: POSS {relative} | 5: {name} | 1: {name} {surname} | 1: mister {surname}
             | 1: doctor {surname} | 1: professor {surname} | 1: the {person} from {city}
             | 1: the {person} who VP[past] | 1: our new {person} | 1: this {person}
             | 1: POSS ADJ_PERSON {relative}
NP_PERSON_PL -> 4: the {person:pl} | 2: some {person:pl} | 2: NUMBER {person:pl}
             | 2: the ADJ_PERSON {person:pl} | 2: POSS {relative:pl} | 3: {name} and {name}
             | 1: the {person:pl} from {city} | 1: many {person:pl} | 1: all the {person:pl}
             | 1: a few {person:pl} | 1: the {person:pl} who VP[past] | 1: {name} and POSS {relative}
OBJ_PERSON   -> 5: NP_PERSON_SG | 3: NP_PERSON_PL | him | her | them | us | me
POSS         -> my | your | his | her | our | their
ADJ_PERSON   -> 4: {adj_person} | 1: {degree} {adj_person}

NP_THING     -> 3: NP_THING_SG | 2: NP_THING_PL
NP_THING_SG  -> 4: the {object} | 3: @a {object} | 3: @a ADJ_THING {object} | 3: the ADJ_THING {object}
             | 3: POSS {object} | 1: POSS ADJ_THING {object} | 1: this {object} | 1: that {object}
             | 1: the {object} LOCATION | 1: @a {object} LOCATION
NP_THING_PL  -> 3: the {object:pl} | 2: some {object:pl} | 2: NUMBER {object:pl}
             | 2: NUMBER ADJ_THING {object:pl} | 1: these {object:pl} | 1: those {object:pl}
             | 1: all the {object:pl} | 1: a few {object:pl} | 2: POSS {object:pl} | 1: many {object:pl}
             | 1: the ADJ_THING {object:pl}
ADJ_THING    -> 4: {adj_thing} | 2: {color} | 1: {adj_thing} {color} | 1: {degree} {adj_thing}
LOCATION     -> on the {furniture} | under the {furniture} | behind the {furniture}
             | next to the {furniture} | near the {furniture} | in the {place} | by the {nature}

NP_FOOD      -> 2: @a {food} | 2: the {food} | 2: the {food:pl} | 2: some {food:pl} | 3: some {food_mass}
             | 2: NUMBER {food:pl} | 2: @a {adj_food} {food} | 2: {adj_food} {food_mass}
             | 2: the {adj_food} {food_mass} | 1: @a bowl of {food_mass} | 1: @a plate of {food_mass}
             | 1: @a piece of {food_mass} | 1: POSS {food:pl} | 1: a few {food:pl} | 1: all the {food:pl}
             | 1: the {food_mass} | 1: some {adj_food} {food:pl}
NP_DRINK     -> 2: @a cup of {drink} | 2: @a glass of {drink} | 2: some {drink} | 2: the {drink}
             | 1: @a bottle of {drink} | 1: DRINK_TEMP {drink} | 1: @a jug of {drink} | 1: POSS {drink}
DRINK_TEMP   -> hot | cold | warm | fresh | iced

NP_PLACE     -> 4: the {place} | 3: the {adj_place} {place} | 1: @a {adj_place} {place} | 1: @a {place}
             | 2: {city} | 1: {country} | 1: the {place} near the {nature} | 1: the {place} in {city}
             | 1: POSS {place} | 1: the old {place}
NP_DEST      -> 4: the {place} | 2: the {adj_place} {place} | 2: {city} | 1: {country}
             | 1: the {place} in {city} | 1: POSS {place} | 1: the {nature}

NP_IDEA      -> 3: the {idea} | 2: @a {idea} | 2: @a {adj_idea} {idea} | 2: the {adj_idea} {idea}
             | 2: POSS {idea} | 1: POSS {adj_idea} {idea} | 1: the {idea} about the {object}
             | 1: the {idea:pl} | 1: some {idea:pl} | 1: that {idea} | 1: the {idea} about the {event}
             | 1: the whole {idea}

NP_ANIMAL    -> 3: NP_ANIMAL_SG | 2: NP_ANIMAL_PL
NP_ANIMAL_SG -> 4: the {animal} | 2: @a {animal} | 2: the {adj_animal} {animal} | 1: @a {adj_animal} {animal}
             | 2: POSS {animal} | 1: the {color} {animal} | 1: POSS {adj_animal} {animal}
NP_ANIMAL_PL -> 3: the {animal:pl} | 2: some {animal:pl} | 2: NUMBER {animal:pl}
             | 1: the {adj_animal} {animal:pl} | 1: POSS {animal:pl} | 1: many {animal:pl}

NP_EVENT     -> 3: the {event} | 1: POSS {event} | 1: the {adj_idea} {event} | 1: @a {event}

# ---- modifiers -----------------------------------------------------------------------------
MOD_HABIT    -> 5: _ | 2: TIME_HABIT | 1: {adv} | 1: PLACE_PP
MOD_PAST     -> 4: _ | 4: TIME_PAST | 1: {adv} | 2: PLACE_PP | 1: PLACE_PP TIME_PAST
MOD_FUT      -> 3: _ | 4: TIME_FUT | 1: PLACE_PP | 1: PLACE_PP TIME_FUT
MOD_NOW      -> 4: _ | 2: right now | 1: at the moment | 1: today | 2: PLACE_PP | 1: this DAYTIME
MOD_PERFECT  -> 4: _ | 2: already | 1: before | 1: this week | 1: twice | 1: many times | 1: recently
MOD_FREE     -> 4: _ | 1: {adv} | 1: PLACE_PP | 1: TIME_FUT
PLACE_PP     -> 3: in the {place} | 2: at the {place} | 1: near the {place} | 2: in {city}
             | 1: at home | 1: outside | 1: by the {nature} | 1: in the {adj_place} {place}
             | 1: behind the {place}
TIME_PAST    -> 3: yesterday | 2: last night | 2: last {weekday} | 2: on {weekday} | 1: on {weekday} {part_of_day}
             | 2: this DAYTIME | 2: in {month} | 1: last {season} | 1: NUMBER days ago
             | 1: a few minutes ago | 1: an hour ago | 2: at CLOCK_TIME | 1: after the {event}
             | 1: before MEAL | 1: last week | 1: last year | 1: the day before yesterday
             | 1: earlier today | 1: NUMBER years ago
TIME_FUT     -> 3: tomorrow | 2: next {weekday} | 2: next week | 2: on {weekday} | 2: this DAYTIME
             | 2: tonight | 2: soon | 1: later today | 1: in NUMBER days | 2: at CLOCK_TIME
             | 1: after the {event} | 1: before MEAL | 1: next {season} | 1: the day after tomorrow
             | 1: next {month} | 1: next year
TIME_HABIT   -> 3: every day | 2: every {part_of_day} | 2: on {weekday:pl} | 2: in the {part_of_day}
             | 1: at night | 1: on weekends | 1: twice a week | 1: once a month | 1: every {season}
             | 1: in {season} | 1: after MEAL | 1: every {weekday}
CLOCK_TIME   -> 3: {clock} | 1: {clock} thirty | 1: half past {clock} | 1: a quarter to {clock}
             | 1: a quarter past {clock} | 1: noon | 1: midnight | 1: {clock} in the {part_of_day}
NUMBER_TIME  -> @a few minutes | an hour | NUMBER hours | NUMBER minutes | @a long time | @a while
MEAL         -> breakfast | lunch | dinner
DAYTIME      -> morning | afternoon | evening
NUMBER       -> 6: {number} | 1: several | 1: a couple of

# ---- other statements ----------------------------------------------------------------------
COPULA       -> 3: SUBJ_SG is ADJ_PERSON MOD_NOW | 2: SUBJ_PL are ADJ_PERSON MOD_NOW
             | 2: SUBJ_SG looked ADJ_PERSON MOD_PAST | 2: SUBJ_ANY felt ADJ_PERSON MOD_PAST
             | 1: SUBJ_SG seems {adj_person} and {adj_person} | 1: SUBJ_SG became {adj_person}
             | 2: NP_THING_SG is ADJ_THING | 2: NP_THING_PL are ADJ_THING | 2: NP_THING_SG was LOCATION
             | 1: NP_THING_PL were LOCATION TIME_PAST | 1: NP_THING_SG is not {adj_thing}
             | 2: the {place} was {degree} {adj_place} MOD_PAST | 1: the {place} in {city} is {adj_place}
             | 2: the {food_mass} tastes {adj_food} | 2: the {food:pl} are {adj_food}
             | 1: this {food_mass} is too {adj_food} | 1: the {food} smells {adj_food}
             | 2: the {idea} was {adj_idea} | 1: that is @a {adj_idea} {idea} | 1: POSS {idea} sounds {adj_idea}
             | 1: NP_EVENT was {degree} {adj_idea} | 1: NP_EVENT will be ADJ_IDEA_P TIME_FUT
             | 1: {name} is @a ADJ_PERSON {person} | 1: POSS {relative} is @a {person}
             | 1: POSS {relative} works as @a {person} | 1: {name} is from {city}
ADJ_IDEA_P   -> {adj_idea} | {degree} {adj_idea}
THERE        -> 2: there is @a {object} LOCATION | 2: there are NUMBER {object:pl} LOCATION
             | 1: there was @a {person} at the {place} | 1: there were many {person:pl} in the {place}
             | 1: there is no {food_mass} in the {place} | 1: there are NUMBER {animal:pl} LOCATION
             | 1: there will be @a {event} TIME_FUT
WEATHER      -> 2: it is {adj_weather} today | 2: it was {degree} {adj_weather} TIME_PAST
             | 1: the weather will be {adj_weather} TIME_FUT | 1: it was @a {adj_weather} day in {city}
             | 1: it is {adj_weather} and {adj_weather} in {city} | 1: it will be {adj_weather} TIME_FUT
             | 1: it is always {adj_weather} in {month}
ANIMAL_CLAUSE -> 3: NP_ANIMAL_SG {v_animal_act:s} ANIMAL_MOD | 2: NP_ANIMAL_PL {v_animal_act:base} ANIMAL_MOD
             | 4: NP_ANIMAL {v_animal_act:past} ANIMAL_MOD_PAST | 1: NP_ANIMAL_SG is {v_animal_act:ing} ANIMAL_MOD
             | 1: NP_ANIMAL_PL are {v_animal_act:ing} ANIMAL_MOD | 1: NP_ANIMAL_SG was {adj_animal}
ANIMAL_MOD   -> 3: _ | 2: in the {place} | 1: near the {nature} | 1: under the {furniture}
             | 1: all day | 1: {adv} | 1: every {part_of_day} | 1: behind the {place}
ANIMAL_MOD_PAST -> 2: ANIMAL_MOD | 2: TIME_PAST | 1: ANIMAL_MOD TIME_PAST

# ---- questions -----------------------------------------------------------------------------
QUESTION     -> 3: did SUBJ_ANY VP[base] MOD_PAST | 2: does SUBJ_SG VP[base] MOD_HABIT
             | 2: do SUBJ_PL VP[base] MOD_HABIT | 3: WH did SUBJ_ANY VP[base] MOD_PAST
             | 2: WH does SUBJ_SG VP[base] | 2: WH do SUBJ_PL VP[base]
             | 2: what did SUBJ_ANY {v_thing:base} MOD_PAST | 1: what does SUBJ_SG {v_food:base} for MEAL
             | 2: who {v_person:past} OBJ_PERSON MOD_PAST | 1: who VP[past]
             | 2: can SUBJ_ANY VP[base] | 1: could you VP[base] for me | 2: will SUBJ_ANY VP[base] MOD_FUT
             | 1: should SUBJ_ANY VP[base] | 1: is SUBJ_SG VP[ing] MOD_NOW | 1: are SUBJ_PL VP[ing] MOD_NOW
             | 1: have you ever VP[pp] | 1: has SUBJ_SG ever VP[pp] | 1: is there @a {object} LOCATION
             | 1: are there any {object:pl} LOCATION | 1: where is NP_THING_SG | 1: where are NP_THING_PL
             | 1: how many {object:pl} did SUBJ_ANY {v_thing:base} | 1: how much {food_mass} do SUBJ_PL need for NP_EVENT
             | 1: which {object} did SUBJ_ANY {v_thing:base} | 1: what time does NP_EVENT start MOD_FUT
             | 1: what time did SUBJ_ANY {v_motion:base} home | 1: is NP_THING_SG {adj_thing}
             | 1: would you like NP_DRINK MOD_OFFER | 1: would you like to VP[base]
             | 1: do you want to VP[base] MOD_FUT | 1: why is SUBJ_SG so {adj_person}
             | 1: why were SUBJ_PL so {adj_person} TIME_PAST | 1: is it {adj_weather} in {city} today
WH           -> where | when | why | how
MOD_OFFER    -> 2: _ | with POSS MEAL | before the {event} | after POSS {event} | TIME_FUT

# ---- commands ------------------------------------------------------------------------------
COMMAND      -> 3: please VP[base] | 3: VP[base] MOD_COMMAND | 2: do not VP[base]
             | 1: please do not VP[base] MOD_COMMAND | 2: let us VP[base] MOD_COMMAND
             | 1: try to VP[base] | 1: remember to VP[base] MOD_COMMAND | 1: do not forget to VP[base]
             | 1: {adv} VP[base] | 1: please VP[base] for me | 1: VP[base] and then VP[base]
MOD_COMMAND  -> 3: _ | 1: now | 1: right now | 1: today | 1: tonight | 2: TIME_FUT | 1: before MEAL
             | 1: after the {event} | 1: {adv}

# ---- two clauses ---------------------------------------------------------------------------
COMPLEX      -> 2: when PAST_CLAUSE , PAST_CLAUSE | 2: after PAST_CLAUSE , PAST_CLAUSE
             | 1: before PAST_CLAUSE , PAST_CLAUSE | 2: PAST_CLAUSE because PAST_CLAUSE
             | 2: PAST_CLAUSE , but PAST_CLAUSE | 2: PAST_CLAUSE and then SUBJ_ANY VP[past]
             | 1: PAST_CLAUSE , so PAST_CLAUSE | 1: PAST_CLAUSE while SUBJ_SG was VP[ing]
             | 2: if SUBJ_SG VP[s] , FUTURE_CLAUSE | 1: if it is {adj_weather} TIME_FUT , FUTURE_CLAUSE
             | 2: SUBJ_ANY {v_say:past} that CLAUSE | 2: i think that CLAUSE | 1: i know that CLAUSE
             | 1: i wonder if CLAUSE | 1: SUBJ_SG asked if CLAUSE | 1: SUBJ_ANY {v_say:past} that FUTURE_CLAUSE
             | 1: i do not know why PAST_CLAUSE | 1: the {person} who VP[past] is {adj_person}
             | 1: the {object} that SUBJ_ANY {v_thing:past} was {adj_thing}
             | 1: CLAUSE , and CLAUSE | 1: although PAST_CLAUSE , PAST_CLAUSE
"""


def _noun(entry: str, form: str | None) -> str:
    return words.noun_forms(entry)["pl" if form == "pl" else "sg"]


def _verb(entry: str, form: str | None) -> str:
    forms = words.verb_forms(entry)
    if (form or "base") not in forms:
        raise ValueError(f"verb form {form!r} is not one of {sorted(forms)}")
    return forms[form or "base"]


def _plain(entry: str, form: str | None) -> str:
    if form is not None:
        raise ValueError(f"word class without inflection asked for form {form!r}")
    return entry


_SLOT_TABLE = {
    "person": (words.PERSON, _noun),
    "relative": (words.RELATIVE, _noun),
    "animal": (words.ANIMAL, _noun),
    "food": (words.FOOD, _noun),
    "food_mass": (words.FOOD_MASS, _plain),
    "drink": (words.DRINK, _plain),
    "object": (words.OBJECT, _noun),
    "furniture": (words.FURNITURE, _noun),
    "place": (words.PLACE, _noun),
    "nature": (words.NATURE, _noun),
    "idea": (words.IDEA, _noun),
    "event": (words.EVENT, _noun),
    "name": (words.FIRST_NAME, _plain),
    "surname": (words.SURNAME, _plain),
    "city": (words.CITY, _plain),
    "country": (words.COUNTRY, _plain),
    "weekday": (words.WEEKDAY, _noun),
    "month": (words.MONTH, _plain),
    "part_of_day": (words.PART_OF_DAY, _plain),
    "season": (words.SEASON, _plain),
    "clock": (words.CLOCK, _plain),
    "number": (words.NUMBER, _plain),
    "v_food": (words.VERB_FOOD, _verb),
    "v_drink": (words.VERB_DRINK, _verb),
    "v_thing": (words.VERB_THING, _verb),
    "v_give": (words.VERB_GIVE, _verb),
    "v_person": (words.VERB_PERSON, _verb),
    "v_place": (words.VERB_PLACE, _verb),
    "v_idea": (words.VERB_IDEA, _verb),
    "v_animal": (words.VERB_ANIMAL, _verb),
    "v_animal_act": (words.VERB_ANIMAL_ACTION, _verb),
    "v_intr": (words.VERB_INTRANSITIVE, _verb),
    "v_motion": (words.VERB_MOTION, _verb),
    "v_inf": (words.VERB_INFINITIVE, _verb),
    "v_ger": (words.VERB_GERUND, _verb),
    "v_say": (words.VERB_SAY, _verb),
    "adj_thing": (words.ADJ_THING, _plain),
    "adj_person": (words.ADJ_PERSON, _plain),
    "adj_animal": (words.ADJ_ANIMAL, _plain),
    "adj_place": (words.ADJ_PLACE, _plain),
    "adj_food": (words.ADJ_FOOD, _plain),
    "adj_idea": (words.ADJ_IDEA, _plain),
    "adj_weather": (words.ADJ_WEATHER, _plain),
    "color": (words.COLOR, _plain),
    "adv": (words.ADVERB_MANNER, _plain),
    "freq": (words.ADVERB_FREQUENCY, _plain),
    "degree": (words.DEGREE, _plain),
}


@functools.lru_cache(maxsize=None)
def english_grammar() -> Grammar:
    """The corpus grammar (built once per process)."""
    slots = {name: Slot(words.words(block), inflect) for name, (block, inflect) in _SLOT_TABLE.items()}
    return Grammar(RULES, slots)


def _entry_forms(slot: str, entry: str) -> set[str]:
    """Every word an entry of ``slot`` can put in a sentence (all its inflected forms)."""
    inflect = _SLOT_TABLE[slot][1]
    forms = ("sg", "pl") if inflect is _noun else ("base", "s", "past", "pp", "ing") if inflect is _verb else (None,)
    return {word for form in forms for word in inflect(entry, form).split()}


@functools.lru_cache(maxsize=None)
def rule_literals() -> frozenset[str]:
    """The words the rules themselves write ("the", "home", "thirty"...), not drawn from a word class."""
    return frozenset(
        token
        for line in RULES.split("\n")
        for token in line.split("#", 1)[0].split()
        if token.isalpha() and token.islower()
    )


@functools.lru_cache(maxsize=None)
def slot_words(slot: str) -> frozenset[str]:
    """Every word the entries of word class ``slot`` can put in a sentence (all inflected forms; each
    word of a multi-word entry)."""
    if slot not in _SLOT_TABLE:
        raise ValueError(f"unknown word class {slot!r}; expected one of {sorted(_SLOT_TABLE)}")
    return frozenset(word for entry in english_grammar().slots[slot].entries for word in _entry_forms(slot, entry))


def word_classes() -> tuple[str, ...]:
    """The names of the grammar's word classes (its lexicon slots: ``{number}``, ``{color}``, ...)."""
    return tuple(_SLOT_TABLE)


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


@functools.lru_cache(maxsize=None)
def open_vocab_entries() -> dict[str, tuple[str, ...]]:
    """{slot: held-out entries} for the slots of ``OPEN_VOCAB_SLOTS``: in each, the
    ``OPEN_VOCAB_FRACTION`` (rounded, at least one) of its one-word entries with the lowest hash
    whose forms are no word of the rules themselves nor of another word class ("the", "home",
    adjectives, numbers...), so that holding them out removes whole nouns, names and verbs only."""
    grammar = english_grammar()
    shared = rule_literals() | {
        word for slot in _SLOT_TABLE if slot not in OPEN_VOCAB_SLOTS for word in slot_words(slot)
    }
    held_out = {}
    for slot in OPEN_VOCAB_SLOTS:
        candidates = [
            entry
            for entry in grammar.slots[slot].entries
            if " " not in entry and not _entry_forms(slot, entry) & shared
        ]
        count = max(1, round(OPEN_VOCAB_FRACTION * len(candidates)))
        held_out[slot] = tuple(sorted(candidates, key=lambda entry: _stable_hash(f"open_vocab/{entry}"))[:count])
    return held_out


@functools.lru_cache(maxsize=None)
def open_vocab_words() -> frozenset[str]:
    """Every word form of the held-out entries (``open_vocab_entries``): words that appear in the
    ``open_vocab`` split only."""
    return frozenset(
        word
        for slot, entries in open_vocab_entries().items()
        for entry in entries
        for word in _entry_forms(slot, entry)
    )


def open_vocab_words_in(transcript: str) -> list[str]:
    """The sorted distinct held-out words of ``transcript``."""
    return sorted(set(transcript.split()) & open_vocab_words())


def split_of(transcript: str) -> str:
    """The split a sentence belongs to: ``open_vocab`` if it holds a held-out word, else from a
    stable hash of its transcript."""
    if open_vocab_words_in(transcript):
        return OPEN_VOCAB
    bucket = _stable_hash(transcript) % 1000
    if bucket < _SPLIT_PER_MILLE["dev"]:
        return "dev"
    if bucket < _SPLIT_PER_MILLE["dev"] + _SPLIT_PER_MILLE["test"]:
        return "test"
    return "train"


@dataclasses.dataclass(frozen=True)
class Sentence:
    transcript: str  # lower-case words separated by single spaces
    spoken: str  # the same words with punctuation, for the synthesizer's intonation


@dataclasses.dataclass(frozen=True)
class SentenceGenerator:
    """Draws sentences of ``min_words`` .. ``max_words`` words belonging to one split."""

    min_words: int = 8
    max_words: int = 16

    def __post_init__(self):
        if not 1 <= self.min_words <= self.max_words:
            raise ValueError(f"need 1 <= min_words <= max_words, got {self.min_words}, {self.max_words}")

    def draw(self, rng: np.random.Generator, split: str) -> Sentence:
        """One sentence of ``split``, by rejection (about 1 in 20 draws lands in dev or test, about 1
        in 3 holds a held-out word)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        grammar = english_grammar()
        for _ in range(100_000):
            try:
                tokens = grammar.sample(rng)
            except RecursionError:
                continue
            transcript, spoken = render(tokens, words.indefinite_article)
            if self.min_words <= transcript.count(" ") + 1 <= self.max_words and split_of(transcript) == split:
                return Sentence(transcript, spoken)
        raise RuntimeError(f"no {split} sentence of {self.min_words}-{self.max_words} words in 100000 draws")

    def distinct(self, rng: np.random.Generator, split: str, count: int) -> list[Sentence]:
        """``count`` different sentences of ``split``, drawn in order from ``rng``."""
        seen: set[str] = set()
        sentences: list[Sentence] = []
        while len(sentences) < count:
            sentence = self.draw(rng, split)
            if sentence.transcript not in seen:
                seen.add(sentence.transcript)
                sentences.append(sentence)
        return sentences

    def count_derivations(self) -> int:
        """Derivations of ``min_words`` .. ``max_words`` words (an upper bound on distinct sentences)."""
        by_length = english_grammar().count_by_length(self.max_words)
        return sum(by_length[self.min_words :])


@dataclasses.dataclass(frozen=True)
class SentenceStream:
    """The endless stream of one split's sentences, for training on text alone: ``stream[n]`` is the
    transcript of a sentence drawn from a random stream seeded by ``(seed, n)``, so every index is
    ready at once (a random-access source without a length, see ``data/text_batches.py``)."""

    seed: int = 0
    split: str = "train"
    min_words: int = 8
    max_words: int = 16

    def __getitem__(self, n: int) -> str:
        rng = np.random.default_rng([self.seed, _TEXT_ONLY_STREAM, SPLITS.index(self.split), int(n)])
        return SentenceGenerator(self.min_words, self.max_words).draw(rng, self.split).transcript
