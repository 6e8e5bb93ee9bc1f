"""One citation style for the whole book: author-year labels in the bibliography, to match the
author-year citations in the text (``{cite:p}`` -> "(Dinh et al., 2014)", listed as
"[Dinh et al., 2014]"). Loaded by ``_config.yml`` (``sphinx: local_extensions``); it registers the
pybtex formatting style ``authoryear`` that ``bibtex_default_style`` names.
"""

from __future__ import annotations

import re

from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle


def _last_name(person) -> str:
    name = " ".join(person.prelast_names + person.last_names)
    return re.sub(r"[{}\\]", "", name)


def author_year(entry) -> str:
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    year = entry.fields.get("year", "n.d.")
    if not persons:
        return f"{re.sub(r'[{}]', '', entry.fields.get('title', entry.key))[:30]}, {year}"
    if len(persons) == 1:
        who = _last_name(persons[0])
    elif len(persons) == 2:
        who = f"{_last_name(persons[0])} and {_last_name(persons[1])}"
    else:
        who = f"{_last_name(persons[0])} et al."
    return f"{who}, {year}"


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        seen: dict[str, int] = {}
        labels = [author_year(e) for e in sorted_entries]
        counts = {lab: labels.count(lab) for lab in labels}
        for label in labels:
            if counts[label] > 1:  # two works by the same authors in one year: 2016a, 2016b
                seen[label] = seen.get(label, 0) + 1
                label = f"{label}{'abcdefghij'[seen[label] - 1]}"
            yield label


class AuthorYearStyle(PlainStyle):
    default_label_style = AuthorYearLabels
    default_sorting_style = "author_year_title"


register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)


def setup(app):
    return {"parallel_read_safe": True, "parallel_write_safe": True}
