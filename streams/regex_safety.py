"""Registration regexes that could stall a worker: nested unbounded repetition.

Python's ``re`` backtracks, with no time limit. A namespace regex such as
``@(a+)+$`` takes exponential time on a user ID that almost matches: one
28-character sender froze a worker for ~14 s (its Kafka session expired and
its partitions moved). Such a regex is refused when the registration is
loaded, naming the file and field, rather than met at run time.

The check is structural, on the parsed pattern: a repetition without an
upper bound (``*``, ``+``, ``{n,}``) inside another one. It is a sufficient
test for the classic exponential cases (``(a+)+``, ``(a*)*``, ``(.*a)*``), not
a proof of safety, and it also refuses some nested patterns that happen to be
harmless (``(ab+)+``); possessive repeats and atomic groups never backtrack
and are allowed.
"""

from __future__ import annotations

# ``re._parser`` is the parser ``re.compile`` itself uses (``sre_parse`` before
# Python 3.11). tests/unit/test_regex_safety.py fails if its shape changes.
from re import _constants as c  # type: ignore[attr-defined]
from re import _parser  # type: ignore[attr-defined]
from typing import Any

_REPEATS = {c.MAX_REPEAT, c.MIN_REPEAT}


def nested_repetition(regex: str) -> bool:
    """Whether ``regex`` repeats, without an upper bound, something that itself so repeats.

    Raises: re.error if ``regex`` does not parse.
    """
    return _nested(_parser.parse(regex), inside_unbounded=False)


def _nested(items: Any, *, inside_unbounded: bool) -> bool:
    for op, argument in items:
        if op in _REPEATS:
            _, upper, body = argument
            unbounded = upper == c.MAXREPEAT
            if unbounded and inside_unbounded:
                return True
            if _nested(body, inside_unbounded=inside_unbounded or unbounded):
                return True
        elif op == c.SUBPATTERN:
            if _nested(argument[3], inside_unbounded=inside_unbounded):
                return True
        elif op == c.BRANCH:
            if any(_nested(branch, inside_unbounded=inside_unbounded) for branch in argument[1]):
                return True
        elif op in (c.ASSERT, c.ASSERT_NOT):
            if _nested(argument[1], inside_unbounded=inside_unbounded):
                return True
        elif op == c.GROUPREF_EXISTS:
            _, yes, no = argument
            if _nested(yes, inside_unbounded=inside_unbounded) or (
                no is not None and _nested(no, inside_unbounded=inside_unbounded)
            ):
                return True
        # POSSESSIVE_REPEAT and ATOMIC_GROUP never backtrack into: not walked.
    return False
