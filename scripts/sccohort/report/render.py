"""Rendering of the report's templates (report/templates) through sccohort.pages.

Every piece of HTML of the report comes from a template with autoescaping on; a fragment passed
into another template is the Markup this module returns for a rendered template.
"""

from __future__ import annotations

from pathlib import Path

from markupsafe import Markup

from .. import pages

TEMPLATES = Path(__file__).parent / "templates"


def render(template: str, **context) -> Markup:
    """A template of report/templates (or a shared one) rendered with `context`, as Markup."""
    pages.add_template_folder(TEMPLATES)
    return Markup(pages.render(template, **context))


def link(href: str, text: str) -> Markup:
    """An <a> to `href` (both escaped), for a table cell."""
    return render("report_link.html.j2", href=href, text=text)
