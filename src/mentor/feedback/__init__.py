"""Critics that write step-aligned feedback on a solver's trace (docs/methods.md, section 1).

The world has an exact programmatic critic (``mentor.world.critic``); :mod:`.llm_critic` asks a
language model for the same "faithful scribe" critique and parses it robustly.
"""

from mentor.feedback.llm_critic import (
    CRITIC_INSTRUCTIONS,
    LLMCritic,
    build_critic_messages,
    parse_critique,
    strip_thinking,
)

__all__ = ["CRITIC_INSTRUCTIONS", "LLMCritic", "build_critic_messages", "parse_critique", "strip_thinking"]
