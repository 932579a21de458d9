"""`{% load ui %}`: the page components of templates/components/ that wrap
markup of their own. An `{% include %}` passes values, not markup, so a card's
header (its intro and what stands beside the title) and a table (its rows)
are block tags that render the markup in place and hand it to the component:

    {% card_header "api-key-list-title" "Keys" %}
      Revoke a key that is no longer used.
    {% aside %}
      <span class="badge">…</span>
    {% endcard_header %}

    {% table "Name" "Attempts:num" actions=True %}
      {% for key in api_keys %}<tr>…</tr>{% endfor %}
    {% endtable %}
"""

from __future__ import annotations

from typing import NamedTuple

from django import template
from django.template.base import FilterExpression, NodeList, Parser, Token
from django.template.context import Context
from django.utils.safestring import SafeString, mark_safe

register = template.Library()


class Heading(NamedTuple):
    """A column heading: "Attempts:num" is the heading Attempts, class num."""

    label: str
    css_class: str

    @classmethod
    def parse(cls, spec: str) -> Heading:
        label, _, css_class = spec.partition(":")
        return cls(label, css_class)


class ComponentNode(template.Node):
    """Renders `template_name` in a context of its own holding the tag's
    arguments and the markup between its tags (`slots`), stripped."""

    def __init__(
        self,
        template_name: str,
        args: list[FilterExpression],
        kwargs: dict[str, FilterExpression],
        slots: dict[str, NodeList],
    ) -> None:
        self.template_name = template_name
        self.args = args
        self.kwargs = kwargs
        self.slots = slots

    def values(self, context: Context) -> dict[str, object]:
        values: dict[str, object] = {
            name: value.resolve(context) for name, value in self.kwargs.items()
        }
        for name, nodelist in self.slots.items():
            values[name] = mark_safe(nodelist.render(context).strip())
        return values

    def render(self, context: Context) -> SafeString:
        assert context.template is not None
        component = context.template.engine.get_template(self.template_name)
        return component.render(context.new(self.values(context)))


class CardHeaderNode(ComponentNode):
    def values(self, context: Context) -> dict[str, object]:
        title_id, title = (arg.resolve(context) for arg in self.args)
        return {"title_id": title_id, "title": title, **super().values(context)}


class TableNode(ComponentNode):
    def values(self, context: Context) -> dict[str, object]:
        headings = [Heading.parse(str(arg.resolve(context))) for arg in self.args]
        return {"headings": headings, **super().values(context)}


def _arguments(
    parser: Parser, token: Token
) -> tuple[list[FilterExpression], dict[str, FilterExpression]]:
    args: list[FilterExpression] = []
    kwargs: dict[str, FilterExpression] = {}
    for bit in token.split_contents()[1:]:
        name, equals, value = bit.partition("=")
        if equals and name.isidentifier():
            kwargs[name] = parser.compile_filter(value)
        else:
            args.append(parser.compile_filter(bit))
    return args, kwargs


@register.tag
def card_header(parser: Parser, token: Token) -> CardHeaderNode:
    """`{% card_header "title-id" "Title" %}intro{% aside %}beside the title{% endcard_header %}`
    (components/card_header.html): the intro and the aside are optional."""
    args, kwargs = _arguments(parser, token)
    if len(args) != 2:
        raise template.TemplateSyntaxError("card_header takes a title id and a title")
    slots = {"intro": parser.parse(("aside", "endcard_header"))}
    if parser.next_token().contents == "aside":
        slots["aside"] = parser.parse(("endcard_header",))
        parser.delete_first_token()
    return CardHeaderNode("components/card_header.html", args, kwargs, slots)


@register.tag
def table(parser: Parser, token: Token) -> TableNode:
    """`{% table "Heading" "Heading:css-class" class="extra" actions=True %}rows{% endtable %}`
    (components/table.html): `actions` adds a last column, Actions for screen readers."""
    args, kwargs = _arguments(parser, token)
    slots = {"rows": parser.parse(("endtable",))}
    parser.delete_first_token()
    return TableNode("components/table.html", args, kwargs, slots)
