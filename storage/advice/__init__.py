"""Which format should I use? Advice from the user's own measurements, projected to their whole dataset.

    from storage.advice import Question, advise
    from storage.bench import ResultsDB
    with ResultsDB() as db:
        advice = advise(Question(source="data/imagenet-sample", count=1_281_167, access="shuffled", workers=8,
                                 disk_budget_bytes=200 * 10**9), db)
    print(advice.text)            # one recommendation and why
    advice.to_dict()              # "recommended", and "formats": one row per format weighed

One module per job: ``question`` (the question and its checks), ``candidates`` (the formats
weighed and what they offer other tools), ``sampling`` (measurements on a sample within a
time budget, reusing earlier runs), ``model`` (fixed + per-image cost fits with ranges),
``projection`` (a format at the full count), ``rules`` (what rules a format out),
``recommend`` (the ranking and the words), ``report`` (the reasoning as a table) and
``advisor`` (all of it in order).
"""

from .advisor import advise, advise_from, candidates_for, weigh
from .candidates import Candidate
from .model import Range
from .question import ACCESS_PATTERNS, InvalidQuestionError, Question, check_question, parse_seconds, parse_size
from .recommend import Advice, Weighed
from .rules import Machine
from .sampling import Evidence

__all__ = [
    "ACCESS_PATTERNS",
    "Advice",
    "Candidate",
    "Evidence",
    "InvalidQuestionError",
    "Machine",
    "Question",
    "Range",
    "Weighed",
    "advise",
    "advise_from",
    "candidates_for",
    "check_question",
    "parse_seconds",
    "parse_size",
    "weigh",
]
