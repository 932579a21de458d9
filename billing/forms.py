from __future__ import annotations

from django import forms

PROMPT_MAX_LENGTH = 500


class AssistantForm(forms.Form):
    """The demo assistant's one input."""

    prompt = forms.CharField(
        label="Prompt",
        max_length=PROMPT_MAX_LENGTH,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Summarize this week's usage"}),
        error_messages={"required": "Write a prompt for the assistant."},
    )
