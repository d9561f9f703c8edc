"""Final-answer extraction from free-text math replies, and answer normal forms.

Pure string functions. `extract_final_answer` finds the answer a reply commits
to, `clean_answer` strips presentation (markup, currency, units, separators),
`parse_number` reads exact numbers and `normalize_answer` gives the normal form
used for majority voting.
"""

from __future__ import annotations

import fractions
import re

# Start of text that is not part of the reply to the question asked: a new
# question the model invents, or a chat-template turn marker left in the text.
_RUN_ON_MARKER = re.compile(
    r"\n[ \t]*(?:#+[ \t]*)?(?:\*\*)?"
    r"(?:Question|Problem|Q|Human|User|Instruction|Exercise)"
    r"[ \t]*\d*[ \t]*(?:\*\*)?[ \t]*[:：]"
    r"|<\|im_start\|>|<\|im_end\|>|<\|endoftext\|>|<\|eot_id\|>"
    r"|<\|start_header_id\|>|<start_of_turn>|<end_of_turn>|</s>"
)
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)\s*")
_HASH_ANSWER = re.compile(r"####[ \t]*([^\n]*)")
_ANSWER_PHRASE = re.compile(
    r"\banswer\b(?:\*\*)?"
    r"(?:[ \t]+(?:is|was|would be|will be)\b[ \t]*:?|[ \t]*[:=])",
    re.IGNORECASE,
)
# A number as replies write it: optional sign and currency, thousands
# separators, decimals, or a plain fraction a/b.
_NUMBER_IN_TEXT = re.compile(
    r"(?<![\w.])-?(?:\\?\$\s?)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?"
    r"|(?<![\w.])-?\.\d+"
)
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
# A number that starts a phrase's value and is followed by words or
# punctuation, not by more math: "18 dollars, so ..." gives 18.
_LEADING_NUMBER = re.compile(
    r"^(?:\*\*)?\\?\$?\s*(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?)"
    r"(?:\*\*)?(?=\s+[A-Za-z]|\s*(?:[,;!?)]|\.(?!\d)|$))"
)
_INLINE_MATH = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]")
_PLAIN_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
# Replies no longer than this, on one line, with at most this many plain
# words and no equation (`x = 5` aside), are taken whole as an already
# extracted answer.
_BARE_ANSWER_MAX_CHARS = 200
_BARE_ANSWER_MAX_WORDS = 2

_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_LATEX_THIN_SPACE_IN_NUMBER = re.compile(r"(?<=\d)\\[,;: ](?=\d{3})")
_UNIT_TEXT_AFTER_NUMBER = re.compile(
    r"(?<=[\d}])\s*\\(?:text|textrm|mbox|mathrm)\{\s*[A-Za-z][A-Za-z .]*\}"
)
_WORDS_AFTER_NUMBER = re.compile(
    r"^([+-]?\d[\d,]*(?:\.\d+)?)\s+[A-Za-z][A-Za-z .]*$"
)
_SINGLE_VARIABLE_ASSIGNMENT = re.compile(r"^[A-Za-z]\s*=\s*(?=\S)")
_DEGREE = re.compile(r"\^\s*\{?\\circ\}?|°")
_WRAPPERS = (
    re.compile(r"^\\(?:boxed|fbox)\s*\{(.*)\}$", re.DOTALL),
    re.compile(r"^\$\$(.*)\$\$$", re.DOTALL),
    re.compile(r"^\$(.*)\$$", re.DOTALL),
    re.compile(r"^\\\((.*)\\\)$", re.DOTALL),
    re.compile(r"^\\\[(.*)\\\]$", re.DOTALL),
    re.compile(r"^\*\*(.*)\*\*$", re.DOTALL),
    re.compile(r"^\\textbf\{(.*)\}$", re.DOTALL),
    re.compile(r"^\\(?:text|textrm|mbox|mathrm)\{([^{}]*)\}$", re.DOTALL),
)

_INTEGER = re.compile(r"^[+-]?\d+$")
_DECIMAL = re.compile(r"^[+-]?(?:\d+\.\d*|\.\d+)$")
_LATEX_FRACTION = re.compile(r"^([+-]?)\\frac\{([+-]?\d+)\}\{([+-]?\d+)\}$")
_LATEX_SHORT_FRACTION = re.compile(r"^([+-]?)\\frac(\d)(\d)$")
_SLASH_FRACTION = re.compile(r"^([+-]?\d+)/([+-]?\d+)$")


def find_boxed(text: str) -> list[str]:
  r"""Return the contents of every complete `\boxed{...}` or `\fbox{...}`.

  Braces nest, so `\boxed{\frac{1}{2}}` gives `\frac{1}{2}`. A box whose
  closing brace is missing (a reply cut off mid-answer) is skipped. The
  brace-less form `\boxed 5` gives its first token.
  """
  contents = []
  for match in _BOX_COMMAND.finditer(text):
    start = match.end()
    if start < len(text) and text[start] == "{":
      depth = 0
      for index in range(start, len(text)):
        if text[index] == "{":
          depth += 1
        elif text[index] == "}":
          depth -= 1
          if depth == 0:
            contents.append(text[start + 1 : index])
            break
    elif match.group(0)[-1].isspace():
      # `\boxed 5`: a space, then one token.
      token = re.match(r"[^\s$]+", text[start:])
      if token:
        contents.append(token.group(0))
  return contents


def _run_on_cut_points(text: str) -> list[int]:
  """Return the ends of the candidate reply prefixes, shortest first."""
  points = [match.start() for match in _RUN_ON_MARKER.finditer(text)]
  return [point for point in points if point > 0] + [len(text)]


def _answer_from_phrase(value: str) -> str | None:
  """Return the answer in the rest of a line after "the answer is"."""
  value = value.strip()
  math = _INLINE_MATH.search(value)
  if math and math.start() == 0:
    inner = next(group for group in math.groups() if group is not None)
    return inner.strip() or None
  number = _LEADING_NUMBER.match(value)
  if number:
    return number.group(1)
  end = _SENTENCE_END.search(value)
  if end:
    value = value[: end.start()]
  return value.strip() or None


def _is_bare_answer(text: str) -> bool:
  """Return whether `text` reads as an answer alone, not as a reply."""
  stripped = text.strip()
  return (
      0 < len(stripped) <= _BARE_ANSWER_MAX_CHARS
      and "\n" not in stripped
      and not _BOX_COMMAND.search(stripped)
      and "=" not in _SINGLE_VARIABLE_ASSIGNMENT.sub("", stripped, count=1)
      and len(_PLAIN_WORD.findall(stripped)) <= _BARE_ANSWER_MAX_WORDS
  )


def _extract_from_segment(segment: str) -> str | None:
  """Return the raw final answer of one reply segment, or None."""
  boxed = [content for content in find_boxed(segment) if content.strip()]
  if boxed:
    return boxed[-1]
  hashes = [m.group(1) for m in _HASH_ANSWER.finditer(segment)]
  hashes = [value for value in hashes if value.strip()]
  if hashes:
    return hashes[-1]
  # The phrase itself is matched, not the rest of its line, so that
  # "Answer: the final answer is 18" finds both phrases.
  for match in reversed(list(_ANSWER_PHRASE.finditer(segment))):
    line_end = segment.find("\n", match.end())
    rest = segment[match.end() : None if line_end < 0 else line_end]
    value = _answer_from_phrase(rest)
    if value is not None:
      return value
  if _is_bare_answer(segment):
    return segment.strip()
  numbers = _NUMBER_IN_TEXT.findall(segment)
  if numbers:
    return numbers[-1]
  return None


def extract_final_answer(text: str) -> str | None:
  r"""Return the cleaned final answer of a math reply, or None.

  The reply is searched for these, in order:
  - the last complete `\boxed{}` or `\fbox{}`;
  - the last `#### n` line;
  - the last "the answer is X" or "Answer: X";
  - the whole text, when it is a short answer on its own;
  - the last number.

  When the model runs on after its answer and starts a new question or chat
  turn, only the text before that point is searched. Longer prefixes are
  tried only when the shorter ones contain no answer.
  """
  if not text or not text.strip():
    return None
  for cut in _run_on_cut_points(text):
    raw = _extract_from_segment(text[:cut])
    if raw is not None:
      answer = clean_answer(raw)
      if answer:
        return answer
  return None


def _strip_wrappers(answer: str) -> str:
  """Remove enclosing boxes, math delimiters, bold and text markup."""
  while True:
    previous = answer
    answer = answer.strip().rstrip(".,;:!").strip()
    for wrapper in _WRAPPERS:
      match = wrapper.match(answer)
      if match:
        answer = match.group(1)
        break
    if answer == previous:
      return answer


def clean_answer(answer: str) -> str:
  r"""Strip presentation from an extracted answer, keeping its value.

  Removes enclosing `\boxed{}`, `$...$` and `**bold**` markup, currency
  signs, trailing punctuation, degree signs and percent signs, `\text{}`
  units and words after a number, a leading `x =`, thousands separators
  (`1,000`, `1{,}000`, `1\,000`), `\left`/`\right`, and writes `\dfrac` and
  `\tfrac` as `\frac`.
  """
  answer = _strip_wrappers(answer)
  answer = answer.replace("\\$", "").replace("$", "")
  answer = answer.replace("**", "").replace("\\!", "").replace("{,}", ",")
  answer = _LATEX_THIN_SPACE_IN_NUMBER.sub(",", answer)
  answer = answer.replace("\\left", "").replace("\\right", "")
  answer = answer.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
  answer = _DEGREE.sub("", answer)
  answer = _UNIT_TEXT_AFTER_NUMBER.sub("", answer)
  answer = _strip_wrappers(answer)
  answer = re.sub(r"\\?%$", "", answer).strip()
  answer = _SINGLE_VARIABLE_ASSIGNMENT.sub("", answer)
  words = _WORDS_AFTER_NUMBER.match(answer)
  if words:
    answer = words.group(1)
  answer = answer.strip().rstrip(".,;:!").strip()
  if _THOUSANDS.match(answer):
    answer = answer.replace(",", "")
  return answer


def parse_number(answer: str) -> fractions.Fraction | None:
  r"""Return the exact value of a numeric answer, or None.

  Reads integers, decimals, `a/b` and `\frac{a}{b}` (after `clean_answer`),
  so `1,000`, `$18.00` and `\dfrac{1}{2}` are numbers and `\sqrt{2}` is not.
  """
  text = re.sub(r"\s+", "", clean_answer(answer))
  try:
    if _INTEGER.match(text) or _DECIMAL.match(text):
      return fractions.Fraction(text)
    match = _LATEX_FRACTION.match(text) or _LATEX_SHORT_FRACTION.match(text)
    if match:
      sign, numerator, denominator = match.groups()
      value = fractions.Fraction(int(numerator), int(denominator))
      return -value if sign == "-" else value
    match = _SLASH_FRACTION.match(text)
    if match:
      return fractions.Fraction(int(match.group(1)), int(match.group(2)))
  except ZeroDivisionError:
    return None
  return None


def format_number(value: fractions.Fraction) -> str:
  """Return `value` as `n` or `p/q` in lowest terms."""
  if value.denominator == 1:
    return str(value.numerator)
  return f"{value.numerator}/{value.denominator}"


def normalize_answer(answer: str) -> str:
  r"""Return the normal form of a math answer for majority voting.

  Exact numbers become `n` or `p/q` in lowest terms (`0.5`, `1/2` and
  `\frac{2}{4}` all give `1/2`). Other answers are cleaned and have their
  whitespace removed.
  """
  value = parse_number(answer)
  if value is not None:
    return format_number(value)
  return re.sub(r"\s+", "", clean_answer(answer))


def gsm8k_ground_truth(solution: str) -> str:
  """Return the final answer of a GSM8K solution: the text after its last `####`.

  Raises:
    ValueError: the solution has no `####` line.
  """
  if "####" not in solution:
    raise ValueError(
        f"GSM8K-style answer has no '#### <answer>' line: {solution[-200:]!r}"
    )
  return clean_answer(solution.rsplit("####", 1)[1])
