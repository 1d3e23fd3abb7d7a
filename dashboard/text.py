"""Text from files and links, made safe to show in Streamlit's Markdown.

Most of Streamlit's text elements (``st.markdown``, ``st.info``, ``st.caption``, alert
boxes, image captions) read Markdown: a run id, a source description or a class name
taken from a results file, a store or a link could otherwise carry a link, a remote image
the browser would fetch, a colour directive, an emoji code or LaTeX. :func:`plain` escapes
every character Markdown and Streamlit give a meaning to, writes control characters as
escapes (:func:`storage.bench.results.printable`), and puts an invisible word joiner
(U+2060) into ``http:``, ``www.`` and ``@``, which GitHub-flavoured Markdown would turn into
links even when escaped, so what is shown is exactly the text. Widgets' option labels and
tables are not Markdown: they need only :func:`printable`.
"""

from __future__ import annotations

import re

from storage.bench.results import printable

__all__ = ["plain", "printable"]

# CommonMark lets any ASCII punctuation be escaped with a backslash; these are the ones that
# mean something to Markdown, GitHub's extensions or Streamlit (``:red[...]``, ``:smile:``, ``$x$``).
MARKDOWN_CHARACTERS = frozenset("\\`*_{}[]()<>#+-.!|~:$&@")
WORD_JOINER = "\u2060"
# What GitHub-flavoured Markdown links by itself, in plain text: http(s)://..., www.... and e-mail addresses.
_AUTOLINKED = re.compile(r"(?i)(https?(?=:)|\bwww(?=\.)|(?=@))")


def plain(value: object) -> str:
    """``value`` as Markdown that shows its text literally, control characters escaped."""
    text = _AUTOLINKED.sub(lambda match: match.group(0) + WORD_JOINER, printable(value))
    return "".join("\\" + char if char in MARKDOWN_CHARACTERS else char for char in text)
