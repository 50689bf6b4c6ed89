"""Prompts and rows shared by the in-process LLM tests (batching, prefix cache, int8): the
same messages in each, so their pinned tolerances speak of the same computations."""

from __future__ import annotations

from typing import Any

from retlink.tools.llm.transformers_llm import ANSWER_PREFIX, SENTENCE_END, Row

#: option log-likelihoods of a row in a padded batch vs alone (float32 on CPU: ~1e-5 seen)
LOGP_ATOL = 1e-3
SYSTEM = {"role": "system", "content": "You are an entity linking assistant."}


def ask(text: str) -> list[dict[str, str]]:
    return [SYSTEM, {"role": "user", "content": text}]


CHOOSE = ask(
    "Sentence: The [Seine] flows through Paris.\nCandidates:\n- Q1: Seine, river in France\n"
    "- Q2: Seine-Maritime, a department\n- NIL: none of the candidates\n"
    "In one sentence say which candidate fits. Then write 'Answer:' and the id."
)
CHOOSE_LONG = ask(
    "Sentence: Nothing starts the morning like a fresh cup of [Java] on the saucer, strong and black.\n"
    "Image shows: espresso, cup, saucer\nCandidates:\n- java_coffee: Java coffee, coffee grown on Java\n"
    "- java_lang: Java, a programming language\n- java_island: Java, an island of Indonesia\n- NIL: none\n"
    "In one sentence say which candidate fits. Then write 'Answer:' and the id."
)
DESCRIBE = ask("Entity: Seine\nKnown description: River in France.\n\nWrite one sentence describing Seine.")


def rows(llm: Any) -> list[Row]:
    """Prompts of different lengths, generation lengths (0 included: the repair prompt), stop
    strings and option counts: what concurrent links send."""
    return [
        Row(llm._prompt_ids(CHOOSE), 8, (ANSWER_PREFIX,), ["Q1", "Q2", "NIL"]),
        Row(llm._prompt_ids(DESCRIBE), 10, SENTENCE_END),
        Row(llm._prompt_ids(CHOOSE_LONG), 6, (ANSWER_PREFIX,), ["java_coffee", "java_lang", "java_island", "NIL"]),
        Row(llm._prompt_ids(CHOOSE), 0, (ANSWER_PREFIX,), ["Q1", "Q2", "NIL"]),
        Row(llm._prompt_ids(DESCRIBE), 6, ()),
    ]
