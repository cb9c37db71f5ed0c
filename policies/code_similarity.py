"""How alike two answers' Python code is, without running it: the agreement measure for code.

An answer's code is its first fenced block that defines a function (else its first block, else the
whole text). It is tokenized with Python's own `tokenize`; comments, blank-line tokens and bare string
statements (docstrings, and strings used as comments) are dropped; line structure stays as NEWLINE /
INDENT / DEDENT tokens, because in Python indentation is meaning. Optionally, names a piece of code
binds itself (parameters, locals, loop variables, its own helpers) are renamed by order of first
binding, so `for i in xs` and `for k in xs` compare equal while `len` and `.append` still must match.

Two scores over the normalised tokens:
- `bag`: F1 of the token multisets (order-blind; robust to reordered statements);
- `sequence`: difflib's matching-blocks ratio 2*M/T over the token sequences (order-aware).
`code_similarity` (bag, names as written) is the one the gateway should use, with `CODE_AGREEMENT`
as its threshold (see its docstring for why); the others are exposed so the evaluation can compare
them. Pure functions: no I/O, no gateway imports.
"""

from __future__ import annotations

import builtins
import io
import keyword
import re
import tokenize
from collections import Counter
from collections.abc import Sequence
from difflib import SequenceMatcher
from typing import Literal

Measure = Literal["bag", "sequence"]
# Two code answers agree when `code_similarity` reaches this (chosen on the even-numbered recorded
# HumanEval problems; docs/evaluation.md "Coding workload" shows how well it predicts the two answers
# passing or failing the tests alike).
CODE_AGREEMENT = 0.7

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:\n[ \t]*```|\Z)", re.DOTALL | re.IGNORECASE)
_DEF = re.compile(r"^\s*(?:async\s+)?def\s", re.MULTILINE)
_SKIP = frozenset({tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER})
_STRUCTURE = {tokenize.NEWLINE: "<newline>", tokenize.INDENT: "<indent>", tokenize.DEDENT: "<dedent>"}
_KEEP_NAMES = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(dir(builtins))
# Keywords after which a name is being bound by this code (import x as y, for v in ...). The names
# after `def` and `class` are kept: they are the code's interface (the tests call the entry point).
_BINDERS = frozenset({"as", "for", "global", "nonlocal"})


def extract_code(answer: str) -> str:
    """The code of an answer: the first fenced block defining a function (an unclosed last block
    counts, as a tier cut off by max_tokens leaves one), else the first block, else the whole text."""
    blocks = [match.group(1) for match in _FENCE.finditer(answer)]
    for block in blocks:
        if _DEF.search(block):
            return block
    return blocks[0] if blocks else answer


def is_code_answer(answer: str) -> bool:
    """Whether an answer carries code to compare: a fenced block that defines a function or class.
    (How a prober can tell a code answer from prose without being told the workload.)"""
    return any(re.search(r"^\s*(?:async\s+def|def|class)\s", match.group(1), re.MULTILINE)
               for match in _FENCE.finditer(answer))


def _raw_tokens(code: str) -> list[tokenize.TokenInfo]:
    tokens: list[tokenize.TokenInfo] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            tokens.append(token)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass  # a cut-off answer: compare what tokenized before the break
    return tokens


def code_tokens(answer: str, rename: bool = True) -> list[str]:
    """The normalised token sequence of an answer's code (see the module docstring)."""
    raw = [t for t in _raw_tokens(extract_code(answer)) if t.type not in _SKIP]
    kept: list[tokenize.TokenInfo] = []
    dropped_string = False
    for i, token in enumerate(raw):
        if dropped_string and token.type == tokenize.NEWLINE:
            dropped_string = False
            continue  # the dropped string statement's own line end
        at_statement_start = i == 0 or raw[i - 1].type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
        ends_statement = i + 1 == len(raw) or raw[i + 1].type == tokenize.NEWLINE
        if token.type == tokenize.STRING and at_statement_start and ends_statement:
            dropped_string = True
            continue  # a docstring or a string used as a comment: no behaviour
        kept.append(token)
    names = _bound_names(kept) if rename else {}
    out: list[str] = []
    for token in kept:
        if token.type in _STRUCTURE:
            out.append(_STRUCTURE[token.type])
        elif token.type == tokenize.NAME and token.string in names:
            out.append(names[token.string])
        else:
            out.append(token.string)
    return out


def _bound_names(tokens: Sequence[tokenize.TokenInfo]) -> dict[str, str]:
    """Names this code binds (after def/class/for/as/lambda, before `=`, parameters), in order of
    first binding, mapped to v0, v1, ...; builtins and keywords are never renamed, attribute names
    (after a dot) are not bindings."""
    order: dict[str, str] = {}

    def bind(name: str) -> None:
        if name not in _KEEP_NAMES and name not in order:
            order[name] = f"v{len(order)}"

    depth = 0  # bracket depth, to find parameters of a def and the targets of an assignment
    in_params = False
    for i, token in enumerate(tokens):
        previous = tokens[i - 1].string if i else ""
        following = tokens[i + 1].string if i + 1 < len(tokens) else ""
        if token.type == tokenize.OP and token.string in "([{":
            depth += 1
        elif token.type == tokenize.OP and token.string in ")]}":
            depth -= 1
            if depth == 0:
                in_params = False
        if token.type != tokenize.NAME or previous == ".":
            continue
        if previous in ("def", "lambda"):
            in_params = True
        if _binds(previous, following, depth, in_params) or previous == "lambda":
            bind(token.string)
    return order


_ASSIGN = frozenset({"=", "+=", "-=", "*=", "/=", "//=", "%=", "|=", "&=", ":="})


def _binds(previous: str, following: str, depth: int, in_params: bool) -> bool:
    """Whether the name between `previous` and `following` is bound here (not used)."""
    if previous in _BINDERS:
        return True
    if in_params and previous in ("(", ",", "*", "**") and following in (",", ")", ":", "=", ""):
        return True  # a parameter (of a def or a lambda)
    if following in _ASSIGN and depth == 0:
        return True  # an assignment target (keyword arguments are inside brackets)
    return following == "," and previous in ("for", ",") and depth <= 1  # tuple targets: for a, b in ...


def bag_f1(left: Sequence[str], right: Sequence[str]) -> float:
    """F1 of two token multisets; 1.0 for two empty ones."""
    if not left or not right:
        return float(len(left) == len(right))
    common = sum((Counter(left) & Counter(right)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(left), common / len(right)
    return 2 * precision * recall / (precision + recall)


def sequence_ratio(left: Sequence[str], right: Sequence[str]) -> float:
    """difflib's ratio (2 * matched tokens / all tokens) of two token sequences; 1.0 for two empty ones."""
    if not left and not right:
        return 1.0
    return SequenceMatcher(None, left, right, autojunk=False).ratio()


def similarity(a: str, b: str, measure: Measure = "sequence", rename: bool = True) -> float:
    """How alike two answers' code is, in [0, 1], by the named measure."""
    left, right = code_tokens(a, rename), code_tokens(b, rename)
    return bag_f1(left, right) if measure == "bag" else sequence_ratio(left, right)


def code_similarity(a: str, b: str) -> float:
    """The agreement measure for code answers: F1 of the normalised token multisets, names as written.

    Chosen on 164 recorded HumanEval answer pairs of each lower tier with the top tier (docs/evaluation.md,
    "Coding workload"): it predicts whether the two pass or fail the tests alike with ROC AUC
    0.68 against raw-text token-F1's 0.62, and whether the lower answer passes with 0.77 against 0.73;
    the order-aware sequence ratio did as well (0.68 / 0.76), renaming bound names did not help (the
    tiers mostly keep the prompt's names; renaming also equates code that uses a name differently).
    At 0.7 (`CODE_AGREEMENT`, chosen on the even-numbered problems) agreeing pairs passed alike in
    80 % of the odd-numbered problems, against 84 % for token-F1 at 0.5, which however called only
    20 % of pairs agreeing (37 % here) while 61 % really passed alike.
    """
    return similarity(a, b, "bag", rename=False)
