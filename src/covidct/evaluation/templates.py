# ruff: noqa: E501
"""Jinja2 templates of report.md and report.html (tables laid out like the papers)."""

from __future__ import annotations

import jinja2

PER_CLASS_COLUMNS = (
    ("sensitivity", "Sensitivity"),
    ("ppv", "PPV"),
    ("specificity", "Specificity"),
    ("npv", "NPV"),
    ("f1", "F1"),
    ("auc", "AUC (bootstrap)"),
)
BINARY_COLUMNS = (
    ("sensitivity", "Sensitivity"),
    ("specificity", "Specificity"),
    ("f1", "F1"),
    ("kappa", "Kappa"),
    ("auc", "AUC"),
)
DIGITS = 3


def fmt(iv: dict | None, pct: bool = False) -> str:
    """``0.912 (0.871-0.945)``; undefined values say so with their reason."""
    if not iv:
        return "n/a"
    if iv.get("estimate") is None:
        return "undefined" + (f" ({iv['reason']})" if iv.get("reason") else "")
    scale, unit = (100.0, "%") if pct else (1.0, "")
    est = f"{iv['estimate'] * scale:.{DIGITS if not pct else 1}f}{unit}"
    if iv.get("low") is None:
        return est
    d = DIGITS if not pct else 1
    return f"{est} ({iv['low'] * scale:.{d}f}-{iv['high'] * scale:.{d}f})"


def num(value, digits: int = DIGITS) -> str:
    return "n/a" if value is None else (f"{value:.{digits}g}" if isinstance(value, float) else str(value))


MARKDOWN = """# {{ m.title }}

> {{ m.research_use }}

## {{ t.summary }}
{{ m.n_patients }} patients ({{ m.n_rows }} rows), classes {{ m.class_counts }}; aggregation `{{ m.aggregation }}`;
{{ (m.level * 100) | round | int }}% intervals: {{ m.ci_method }} bootstrap over patients, {{ m.n_boot }} resamples, seed {{ m.seed }}.
{% for n in m.notes %}- {{ n }}
{% endfor %}
| Metric | Value (95% CI) |
|---|---|
{% for k, iv in m.overall.items() %}| {{ k }} | {{ fmt(iv) }} |
{% endfor %}
## {{ t.per_class }}
| Class | {% for k, h in pc %}{{ h }} | {% endfor %}AUC (DeLong) |
|---|{% for k, h in pc %}---|{% endfor %}---|
{% for c, row in m.per_class.items() %}| {{ c }} | {% for k, h in pc %}{{ fmt(row[k], True) if k != 'auc' else fmt(row[k]) }} | {% endfor %}{{ fmt(row.auc_delong) }} |
{% endfor %}
## {{ t.binary.format(positive=m.positive_class) }}
| {% for k, h in bc %}{{ h }} | {% endfor %}
|{% for k, h in bc %}---|{% endfor %}
| {% for k, h in bc %}{{ fmt(m.binary[k]) }} | {% endfor %}

Wilson intervals: sensitivity {{ fmt(m.binary.sensitivity_wilson) }}, specificity {{ fmt(m.binary.specificity_wilson) }}.

## {{ t.confusion }}
| true \\ predicted | {% for c in m.confusion_matrix.labels %}{{ c }} | {% endfor %}
|---|{% for c in m.confusion_matrix.labels %}---|{% endfor %}
{% for row in m.confusion_matrix.matrix %}| {{ m.confusion_matrix.labels[loop.index0] }} | {% for v in row %}{{ v }} | {% endfor %}
{% endfor %}
![confusion matrix](confusion_matrix.png)

## {{ t.roc }}
{% if 'roc.png' in m.figures %}![ROC](roc.png){% else %}No ROC curve: the test set has one class.{% endif %}

## {{ t.calibration }}
ECE {{ num(m.calibration.ece) }}, Brier ({{ m.positive_class }} vs rest) {{ num(m.calibration.brier_binary) }}, multi-class Brier {{ fmt(m.overall.brier) }}.

![calibration](calibration.png)
{% if m.slice_level %}
## {{ t.slice_level }}
| Metric | Value (95% CI) |
|---|---|
{% for k in ['accuracy', 'kappa', 'f1_macro', 'auc_macro'] %}| {{ k }} | {{ fmt(m.slice_level[k]) }} |
{% endfor %}{% endif %}{% if m.operating_point %}
## {{ t.operating_point }}
Rule `{{ m.operating_point.chosen_on.rule }}` on split `{{ m.operating_point.chosen_on.split }}`: threshold {{ num(m.operating_point.chosen_on.threshold, 4) }}
(tuning sensitivity {{ num(m.operating_point.chosen_on.sensitivity) }}, specificity {{ num(m.operating_point.chosen_on.specificity) }}).

| {% for k, h in bc %}{{ h }} | {% endfor %}
|{% for k, h in bc %}---|{% endfor %}
| {% for k, h in bc %}{{ fmt(m.operating_point.test[k]) }} | {% endfor %}
{% endif %}{% if m.comparison %}
## {{ t.comparison }}
Difference this model - {{ m.comparison.other }} (paired bootstrap):

| Metric | Difference (95% CI) | p |
|---|---|---|
{% for k, d in m.comparison.differences.items() %}| {{ k }} | {{ fmt(d) }} | {{ num(d.p_value) }} |
{% endfor %}
McNemar ({{ m.comparison.mcnemar.method }}): b={{ m.comparison.mcnemar.b }}, c={{ m.comparison.mcnemar.c }}, p={{ num(m.comparison.mcnemar.p_value) }}.
{% if m.comparison.delong %}DeLong ({{ m.positive_class }} AUC): difference {{ num(m.comparison.delong.difference) }}, p={{ num(m.comparison.delong.p_value) }}.{% endif %}
{% endif %}{% if m.reader_study %}
## {{ t.readers }}
| Reader | AI | n | Sensitivity | Specificity | Accuracy | vs model: accuracy diff (p) |
|---|---|---|---|---|---|---|
{% for r in m.reader_study.readers %}| {{ r.reader }} | {{ 'with' if r.with_ai else 'without' }} | {{ r.n }} | {{ fmt(r.sensitivity) }} | {{ fmt(r.specificity) }} | {{ fmt(r.accuracy) }} | {{ fmt(r.vs_model.accuracy) }} ({{ num(r.vs_model.accuracy.p_value) }}) |
{% endfor %}
{% for w in m.reader_study.with_vs_without_ai %}- {{ w.reader }}, with - without AI (n={{ w.n }}): sensitivity {{ fmt(w.sensitivity) }}, specificity {{ fmt(w.specificity) }}, McNemar p={{ num(w.mcnemar.p_value) }}
{% endfor %}
| AI | Readers | Kappa | Category |
|---|---|---|---|
{% for a in m.reader_study.agreement %}| {{ 'with' if a.with_ai else 'without' }} | {{ a.readers | join(', ') }} | {{ num(a.kappa if a.kappa is defined else a.fleiss_kappa) }}{{ '' if a.kappa is defined else ' (Fleiss)' }} | {{ a.category }} |
{% endfor %}
![readers](readers_roc.png)
{% endif %}
## {{ t.limitations }}
{% for l in m.limitations %}- {{ l }}
{% else %}- none found
{% endfor %}
## {{ t.statement }}
{{ m.research_use }}
"""

HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ m.title }}</title>
<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}th{background:#eee}td:first-child{text-align:left}
.note{background:#fff3cd;padding:8px;border:1px solid #e0c060}img{max-width:480px}</style></head><body>
<h1>{{ m.title }}</h1>
<p class="note">{{ m.research_use }}</p>
<h2>{{ t.summary }}</h2>
<p>{{ m.n_patients }} patients ({{ m.n_rows }} rows); aggregation <code>{{ m.aggregation }}</code>;
{{ (m.level * 100) | round | int }}% intervals: {{ m.ci_method }} bootstrap over patients, {{ m.n_boot }} resamples, seed {{ m.seed }}.</p>
<ul>{% for n in m.notes %}<li>{{ n }}</li>{% endfor %}</ul>
<table><tr><th>Metric</th><th>Value (95% CI)</th></tr>
{% for k, iv in m.overall.items() %}<tr><td>{{ k }}</td><td>{{ fmt(iv) }}</td></tr>{% endfor %}</table>
<h2>{{ t.per_class }}</h2>
<table><tr><th>Class</th>{% for k, h in pc %}<th>{{ h }}</th>{% endfor %}<th>AUC (DeLong)</th></tr>
{% for c, row in m.per_class.items() %}<tr><td>{{ c }}</td>{% for k, h in pc %}<td>{{ fmt(row[k], True) if k != 'auc' else fmt(row[k]) }}</td>{% endfor %}<td>{{ fmt(row.auc_delong) }}</td></tr>{% endfor %}</table>
<h2>{{ t.binary.format(positive=m.positive_class) }}</h2>
<table><tr>{% for k, h in bc %}<th>{{ h }}</th>{% endfor %}</tr>
<tr>{% for k, h in bc %}<td>{{ fmt(m.binary[k]) }}</td>{% endfor %}</tr></table>
<p>Wilson intervals: sensitivity {{ fmt(m.binary.sensitivity_wilson) }}, specificity {{ fmt(m.binary.specificity_wilson) }}.</p>
<h2>{{ t.confusion }}</h2>
<table><tr><th>true \\ predicted</th>{% for c in m.confusion_matrix.labels %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in m.confusion_matrix.matrix %}<tr><td>{{ m.confusion_matrix.labels[loop.index0] }}</td>{% for v in row %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</table>
{% if 'confusion_matrix.png' in m.figures %}<img src="confusion_matrix.png" alt="confusion matrix">{% endif %}
<h2>{{ t.roc }}</h2>
{% if 'roc.png' in m.figures %}<img src="roc.png" alt="ROC curve">{% else %}<p>No ROC curve: the test set has one class.</p>{% endif %}
<h2>{{ t.calibration }}</h2>
<p>ECE {{ num(m.calibration.ece) }}, Brier ({{ m.positive_class }} vs rest) {{ num(m.calibration.brier_binary) }}, multi-class Brier {{ fmt(m.overall.brier) }}.</p>
{% if 'calibration.png' in m.figures %}<img src="calibration.png" alt="calibration">{% endif %}
{% if m.slice_level %}<h2>{{ t.slice_level }}</h2><table><tr><th>Metric</th><th>Value (95% CI)</th></tr>
{% for k in ['accuracy', 'kappa', 'f1_macro', 'auc_macro'] %}<tr><td>{{ k }}</td><td>{{ fmt(m.slice_level[k]) }}</td></tr>{% endfor %}</table>{% endif %}
{% if m.operating_point %}<h2>{{ t.operating_point }}</h2>
<p>Rule <code>{{ m.operating_point.chosen_on.rule }}</code> on split <code>{{ m.operating_point.chosen_on.split }}</code>: threshold {{ num(m.operating_point.chosen_on.threshold, 4) }}
(tuning sensitivity {{ num(m.operating_point.chosen_on.sensitivity) }}, specificity {{ num(m.operating_point.chosen_on.specificity) }}).</p>
<table><tr>{% for k, h in bc %}<th>{{ h }}</th>{% endfor %}</tr><tr>{% for k, h in bc %}<td>{{ fmt(m.operating_point.test[k]) }}</td>{% endfor %}</tr></table>{% endif %}
{% if m.comparison %}<h2>{{ t.comparison }}</h2><p>Difference this model - {{ m.comparison.other }} (paired bootstrap)</p>
<table><tr><th>Metric</th><th>Difference (95% CI)</th><th>p</th></tr>
{% for k, d in m.comparison.differences.items() %}<tr><td>{{ k }}</td><td>{{ fmt(d) }}</td><td>{{ num(d.p_value) }}</td></tr>{% endfor %}</table>
<p>McNemar ({{ m.comparison.mcnemar.method }}): b={{ m.comparison.mcnemar.b }}, c={{ m.comparison.mcnemar.c }}, p={{ num(m.comparison.mcnemar.p_value) }}.
{% if m.comparison.delong %}DeLong: difference {{ num(m.comparison.delong.difference) }}, p={{ num(m.comparison.delong.p_value) }}.{% endif %}</p>{% endif %}
{% if m.reader_study %}<h2>{{ t.readers }}</h2>
<table><tr><th>Reader</th><th>AI</th><th>n</th><th>Sensitivity</th><th>Specificity</th><th>Accuracy</th><th>vs model: accuracy diff (p)</th></tr>
{% for r in m.reader_study.readers %}<tr><td>{{ r.reader }}</td><td>{{ 'with' if r.with_ai else 'without' }}</td><td>{{ r.n }}</td><td>{{ fmt(r.sensitivity) }}</td><td>{{ fmt(r.specificity) }}</td><td>{{ fmt(r.accuracy) }}</td><td>{{ fmt(r.vs_model.accuracy) }} ({{ num(r.vs_model.accuracy.p_value) }})</td></tr>{% endfor %}</table>
<ul>{% for w in m.reader_study.with_vs_without_ai %}<li>{{ w.reader }}, with - without AI (n={{ w.n }}): sensitivity {{ fmt(w.sensitivity) }}, specificity {{ fmt(w.specificity) }}, McNemar p={{ num(w.mcnemar.p_value) }}</li>{% endfor %}</ul>
<table><tr><th>AI</th><th>Readers</th><th>Kappa</th><th>Category</th></tr>
{% for a in m.reader_study.agreement %}<tr><td>{{ 'with' if a.with_ai else 'without' }}</td><td>{{ a.readers | join(', ') }}</td><td>{{ num(a.kappa if a.kappa is defined else a.fleiss_kappa) }}{{ '' if a.kappa is defined else ' (Fleiss)' }}</td><td>{{ a.category }}</td></tr>{% endfor %}</table>
{% if 'readers_roc.png' in m.figures %}<img src="readers_roc.png" alt="readers on the ROC curve">{% endif %}{% endif %}
<h2>{{ t.limitations }}</h2>
<ul>{% for l in m.limitations %}<li>{{ l }}</li>{% else %}<li>none found</li>{% endfor %}</ul>
<h2>{{ t.statement }}</h2><p>{{ m.research_use }}</p>
</body></html>
"""


def _render(source: str, m: dict, titles: dict, autoescape: bool) -> str:
    env = jinja2.Environment(
        autoescape=autoescape, undefined=jinja2.ChainableUndefined, keep_trailing_newline=True
    )
    return env.from_string(source).render(
        m=m, t=titles, fmt=fmt, num=num, pc=PER_CLASS_COLUMNS, bc=BINARY_COLUMNS
    )


def render_markdown(m: dict, titles: dict) -> str:
    return _render(MARKDOWN, m, titles, autoescape=False)


def render_html(m: dict, titles: dict) -> str:
    return _render(HTML, m, titles, autoescape=True)
