"""A Markdown table of method accuracies for logs and READMEs."""

from __future__ import annotations

from collections.abc import Mapping


def _percent(value: float | None) -> str:
  return "n/a" if value is None else f"{100 * value:.1f}"


def format_methods_table(methods: Mapping[str, dict]) -> str:
  """Format method summaries as a Markdown table, one row per method in the given order.

  Args:
    methods: method name -> {accuracy, correct, total, unanswered, unlabelled} with an optional
      `interval` [low, high], or {"unavailable": reason}.

  Returns:
    The table with accuracy and its interval in percent; unavailable methods show their reason.
  """
  lines = ["| method | accuracy % | 95 % interval | correct / total | unanswered | unlabelled |",
           "| --- | ---: | ---: | ---: | ---: | ---: |"]
  for name, summary in methods.items():
    if "unavailable" in summary:
      lines.append(f"| {name} | unavailable: {summary['unavailable']} | | | | |")
      continue
    interval = summary.get("interval")
    interval_text = ("" if interval is None else
                     f"{_percent(interval[0])} to {_percent(interval[1])}")
    correct = summary["correct"]
    correct_text = f"{correct:g}" if isinstance(correct, float) else str(correct)
    lines.append(
        f"| {name} | {_percent(summary['accuracy'])} | {interval_text} | "
        f"{correct_text} / {summary['total']} | {summary['unanswered']} | "
        f"{summary['unlabelled']} |")
  return "\n".join(lines)
