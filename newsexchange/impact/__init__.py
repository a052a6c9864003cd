"""Impact: what each digest achieved — delivered, clicked, and picked up across the border.

- :mod:`.match` — the pick-up matcher (pure): does an item of the receiving side's media
  retell a story of a sent digest? A score and the evidence.
"""

from newsexchange.impact.match import CandidateText, Match, Matcher, StoryText

__all__ = ["CandidateText", "Match", "Matcher", "StoryText"]
