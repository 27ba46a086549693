"""The default prompt: the code-block protocol in the system message and one worked example.

Small models (the embedded 0.5B) follow a shown exchange far better than a described one; large
models lose nothing by it. Both adapt to the profile's markers.
"""

from __future__ import annotations

from typing import Any

from kernel_bridge.parsing import Profile


def default_system_prompt(profile: Profile) -> str:
    """Tells the model the protocol of ``profile``: how to run code and where answers go."""
    if profile.code == "tag":
        how = f"write {profile.code_tags[0]}your code{profile.code_tags[1]}"
    else:
        how = "write a ```python block (close it with ``` on its own line)"
    answer = (
        f" End with the final answer in {profile.answer_tags[0]}…{profile.answer_tags[1]}."
        if profile.answer_tags
        else ""
    )
    return (
        "You are a careful problem solver with a live Python kernel. Answer exactly the question "
        f"asked. Whenever a computation helps, {how}; it runs at once, variables persist between "
        f"blocks, and the real output appears after it in a {profile.output_tags[0]} block. Never "
        f"write an output block yourself and never guess a result you can compute. Read the "
        f"output, then continue.{answer}"
    )


def _block(profile: Profile, code: str) -> str:
    if profile.code == "tag":
        return f"{profile.code_tags[0]}\n{code}{profile.code_tags[1]}\n"
    return f"```python\n{code}```\n"


def default_examples(profile: Profile) -> list[dict[str, Any]]:
    """One worked exchange in the profile's format: a block, its real output, the answer."""
    code = (
        "from datetime import date\n"
        "days = (date(2024, 3, 1) - date(2024, 1, 15)).days\n"
        "print(days)\n"
    )
    answer = f"{profile.answer_tags[0]}46{profile.answer_tags[1]}" if profile.answer_tags else "46"
    return [
        {"role": "user", "content": "How many days are there from 2024-01-15 to 2024-03-01?"},
        {
            "role": "assistant",
            "content": "I will compute the difference of the two dates.\n"
            + _block(profile, code)
            + profile.format_output("46")
            + f"The difference is 46 days.\n{answer}",
        },
    ]
