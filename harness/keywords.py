"""``-k`` cell filters, as pytest's: words matched case-insensitively as substrings of a cell's
name (``Job.name``), joined with ``and``, ``or``, ``not`` and parentheses.

    -k "bias-only or last-layer"      -k "mcunet and not transfer"
"""
import re

TOKENS = re.compile(r"\(|\)|[^\s()]+")
OPERATORS = ("and", "or", "not")


class KeywordError(ValueError):
    pass


def matcher(expression):
    """A predicate over cell names for ``expression``; ``KeywordError`` if it does not parse."""
    tokens = TOKENS.findall(expression)
    pos = [0]

    def fail(what):
        raise KeywordError("-k %r: %s" % (expression, what))

    def peek():
        return tokens[pos[0]] if pos[0] < len(tokens) else None

    def take():
        pos[0] += 1
        return tokens[pos[0] - 1]

    def either():
        left = both()
        while peek() == "or":
            take()
            left = (lambda a, b: lambda name: a(name) or b(name))(left, both())
        return left

    def both():
        left = negation()
        while peek() == "and":
            take()
            left = (lambda a, b: lambda name: a(name) and b(name))(left, negation())
        return left

    def negation():
        if peek() == "not":
            take()
            inner = negation()
            return lambda name: not inner(name)
        return atom()

    def atom():
        token = peek()
        if token is None:
            fail("expected a word or '(' at the end")
        if token == "(":
            take()
            inner = either()
            if peek() != ")":
                fail("missing ')'")
            take()
            return inner
        if token == ")" or token in OPERATORS:
            fail("unexpected %r" % token)
        word = take().lower()
        return lambda name: word in name.lower()

    predicate = either()
    if peek() is not None:
        fail("unexpected %r" % peek())
    return predicate
