"""The conversation so far from a session's log, for an agent that lost its own history."""

from __future__ import annotations

from tether.recap import recap
from tether.stores.memory import MemoryEventLog


def log_of(*events: tuple[str, dict]) -> MemoryEventLog:
    log = MemoryEventLog("s")
    for kind, payload in events:
        log.append(kind, payload)
    return log


def test_every_turn_before_the_prompt_being_sent_oldest_first() -> None:
    log = log_of(("user", {"turn": 1, "text": "remember 42"}),
                 ("text_delta", {"text": "Ok", "index": 0}),
                 ("text", {"text": "Ok, 42."}),
                 ("tool_use", {"tool_use_id": "t", "name": "Bash", "input": {}}),
                 ("text", {"text": "Done."}),
                 ("turn_end", {"turn": 1, "reason": "completed"}),
                 ("user", {"turn": 2, "text": "what number?"}))
    assert recap(log.read_after(0)) == "User: remember 42\n\nAssistant: Ok, 42.\n\nDone."


def test_nothing_before_the_first_prompt_is_none() -> None:
    assert recap(log_of(("user", {"turn": 1, "text": "hi"})).read_after(0)) is None
    assert recap([]) is None


def test_history_of_a_continued_conversation_counts_and_command_output_does_not() -> None:
    log = log_of(("history", {"role": "user", "text": "old question"}),
                 ("history", {"role": "assistant", "text": "old answer"}),
                 ("user", {"turn": 1, "text": "/cost"}),
                 ("text", {"text": "Total cost: $0", "command_output": True}),
                 ("user", {"turn": 2, "text": "go on"}))
    assert recap(log.read_after(0)) == ("User: old question\n\nAssistant: old answer\n\n"
                                        "User: /cost")


def test_the_oldest_turns_are_dropped_past_the_limit_and_the_cut_is_said() -> None:
    log = log_of(*[("user", {"turn": n, "text": f"prompt {n} " + "x" * 50}) for n in range(1, 21)])
    text = recap(log.read_after(0), limit_chars=300)
    assert text is not None and text.startswith("[earlier turns left out]")
    assert "prompt 19" in text and "prompt 1 " not in text and "prompt 20" not in text
    assert len(text) <= 300 + len("[earlier turns left out]") + 2
