"""Tests for final-answer extraction and answer normal forms."""

import fractions

import pytest

from ec_jax.tasks import answer_extraction as ax


@pytest.mark.parametrize(
    "reply, expected",
    [
        # Boxed answers: the last complete box wins, braces nest.
        (r"So $x = \boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"First \boxed{3}, no wait: \boxed{\sqrt{2}}", r"\sqrt{2}"),
        (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"( 3, \frac{\pi}{2} )"),
        (r"\fbox{42}", "42"),
        (r"\boxed 5 is the answer", "5"),
        (r"\boxed{7} and then \boxed{8", "7"),
        (r"\boxed{\boxed{9}}", "9"),
        # GSM8K style.
        ("9 * 2 = 18 dollars.\n#### 18", "18"),
        ("#### 1,450,000", "1450000"),
        # Answer phrases, with markup and trailing periods.
        ("The answer is 18.", "18"),
        ("The final answer is: **18**.", "18"),
        ("Answer: 3.5. Hope this helps!", "3.5"),
        (r"The answer is $\frac{3}{4}$ of the pie.", r"\frac{3}{4}"),
        (r"The answer is \(\sqrt{2}\).", r"\sqrt{2}"),
        ("**Answer**: 18", "18"),
        ("Final Answer: The final answer is $18$. I hope it is correct.", "18"),
        ("The answer is 18 dollars, so she is happy.", "18"),
        ("The answer is 18x.", "18x"),
        ("The answer is 5 + 2i.", "5 + 2i"),
        ("The answer is:\n18", "18"),
        # Currency, thousands separators and units.
        ("She makes $1,000 a week. The answer is $1,000.", "1000"),
        (r"\boxed{\$18.00}", "18.00"),
        (r"\boxed{18 \text{ dollars}}", "18"),
        (r"\boxed{1{,}000}", "1000"),
        (r"\boxed{1\,000}", "1000"),
        ("The answer is 12 apples.", "12"),
        (r"\boxed{45^\circ}", "45"),
        ("The answer is 50%.", "50"),
        (r"\boxed{x = 5}", "5"),
        (r"\boxed{\text{Evelyn}}", "Evelyn"),
        # No phrase or box: the last number.
        ("3 + 4 = 7, so she has 7 apples left", "7"),
        ("10 - 5 = 5, then 5 - 3 = 2", "2"),
        # A bare answer is taken whole.
        ("42", "42"),
        (r"\dfrac{2}{4}", r"\frac{2}{4}"),
    ],
)
def test_extract_final_answer(reply, expected):
  assert ax.extract_final_answer(reply) == expected


@pytest.mark.parametrize(
    "reply, expected",
    [
        # The model answers, then invents and answers a new question.
        (
            "She has 16 - 3 - 4 = 9 eggs, so she makes 18.\n"
            "The answer is 18.\n\nQuestion: Tom has 5 apples and eats 2.\n"
            "The answer is 3.",
            "18",
        ),
        ("#### 18\n\nQuestion: A robe takes 2 bolts.\n#### 3", "18"),
        ("So \\boxed{12}.\n**Problem 2:** Find y.\nThen \\boxed{13}.", "12"),
        # The model repeats its answer.
        ("The answer is 18. The answer is 18. The answer is 18.", "18"),
        ("\\boxed{18}\n\\boxed{18}\n\\boxed{18}", "18"),
        # A leaked chat-template turn marker.
        ("So the result is \\boxed{12}<|im_end|>\n\\boxed{13}", "12"),
        # A restated question at the start is not a cut point.
        ("Question: what is 2 + 3?\nIt is 5. The answer is 5.", "5"),
    ],
)
def test_extract_reply_running_on(reply, expected):
  assert ax.extract_final_answer(reply) == expected


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "   \n",
        "I don't know how to solve this problem.",
        "Let me think about the problem step by step. \\boxed{",
    ],
)
def test_extract_missing_answer(reply):
  assert ax.extract_final_answer(reply) is None


def test_find_boxed_nested_braces():
  text = r"a \boxed{\frac{a}{b}} b \fbox{{x}} c \boxed{unclosed"
  assert ax.find_boxed(text) == [r"\frac{a}{b}", "{x}"]


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("42", fractions.Fraction(42)),
        ("-7", fractions.Fraction(-7)),
        ("1,000", fractions.Fraction(1000)),
        ("$18.00", fractions.Fraction(18)),
        ("0.5", fractions.Fraction(1, 2)),
        (".25", fractions.Fraction(1, 4)),
        (r"\frac{1}{2}", fractions.Fraction(1, 2)),
        (r"-\dfrac{3}{6}", fractions.Fraction(-1, 2)),
        (r"\frac12", fractions.Fraction(1, 2)),
        ("3/4", fractions.Fraction(3, 4)),
        (r"\sqrt{2}", None),
        ("1,2", None),
        (r"\frac{1}{0}", None),
        ("x", None),
    ],
)
def test_parse_number(answer, expected):
  assert ax.parse_number(answer) == expected


@pytest.mark.parametrize(
    "answers, expected",
    [
        (["0.5", "1/2", r"\frac{2}{4}", r"\dfrac{1}{2}", r"$\frac{1}{2}$"], "1/2"),
        (["1000", "1,000", "$1,000", "1000.0", r"1{,}000", "**1000**"], "1000"),
        ([r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"],
         r"(3,\frac{\pi}{2})"),
        ([r"\text{Evelyn}", "Evelyn"], "Evelyn"),
    ],
)
def test_normalize_answer_groups_equal_forms(answers, expected):
  for answer in answers:
    assert ax.normalize_answer(answer) == expected, answer


def test_extracted_answer_extracts_to_itself():
  replies = [
      r"So \boxed{\left( 3, \frac{\pi}{2} \right)}.",
      "The answer is $1,000.",
      r"\boxed{18 \text{ dollars}}",
      r"\boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}",
  ]
  for reply in replies:
    answer = ax.extract_final_answer(reply)
    assert answer is not None
    assert ax.extract_final_answer(answer) == answer


def test_gsm8k_ground_truth():
  assert ax.gsm8k_ground_truth("2 + 2 = <<2+2=4>>4\n#### 4") == "4"
  assert ax.gsm8k_ground_truth("...\n#### 2,125") == "2125"
  with pytest.raises(ValueError, match="####"):
    ax.gsm8k_ground_truth("no final line")
