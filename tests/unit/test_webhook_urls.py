"""A webhook's URL checked once per process (automation/actions/webhooks.py, check_url_syntax):
a run's call parsed it when the action was prepared and again when the request left."""

import pytest

from automation.actions import webhooks


def test_a_url_is_parsed_once_and_given_again():
    webhooks.check_url_syntax.cache_clear()
    first = webhooks.check_url_syntax("https://hooks.example.com/a?b=1")
    assert webhooks.check_url_syntax("https://hooks.example.com/a?b=1") is first
    assert (first.scheme, first.host, first.path) == ("https", "hooks.example.com", "/a")
    assert webhooks.check_url_syntax("https://hooks.example.com/other") is not first


@pytest.mark.parametrize(
    "url", ["ftp://hooks.example.com/", "https:///no-host", "https://user:secret@example.com/"]
)
def test_a_refused_url_is_refused_every_time(url):
    for _ in range(2):  # a refusal is not kept: each check says it
        with pytest.raises(webhooks.WebhookRefused):
            webhooks.check_url_syntax(url)
