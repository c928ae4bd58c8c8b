"""The search page in real headless Chromium (Debian's ``chromium``, which
scripts/test installs): type a prefix, see the results come, open one, follow
a cross reference.

Each run saves a screenshot under pytest's temporary directory; set
``PARALLIO_WIKI_SCREENSHOT=docs/wiki-search.png`` to write the one of the
real corpus (dict-gcide) where the README shows it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from parallio.wiki.app import Wiki

from .._http_client import address_of
from ..conftest import engine_skip_reason, host_skip_reason, serving
from .chromium import Browser, find_chromium


@dataclass(frozen=True)
class Scenario:
    prefix: str
    first_results: list[str]
    pick: str
    shows: str           # a fragment of the picked entry's text
    cross_reference: str  # a {link} in it, and what its entry shows
    cross_shows: str


SCENARIOS = {
    "sample": Scenario("ap", ["Apple", "application", "apricot"], "apricot",
                       "A fruit; see", "Apple", "To grow like an apple."),
    "gcide": Scenario("dilu", ["Dilucid", "Dilucidate", "Dilucidation"], "Dilute",
                      "To make thinner or more liquid", "Deluge", "A washing away"),
}


def best_combo() -> tuple[str, str]:
    host = "interpreters" if host_skip_reason("interpreters") is None else "processes"
    return host, "uring" if engine_skip_reason("uring") is None else "epoll"


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (scripts/test installs Debian's chromium "
                    "where it may)")
    return binary


RESULTS = "[...document.querySelectorAll('#results li a')].map(a => a.firstChild.textContent)"


@pytest.mark.parametrize("corpus", sorted(SCENARIOS))
def test_search_as_you_type(request, corpus, chromium, tmp_path):
    data = request.getfixturevalue(f"{corpus}_data")
    scenario = SCENARIOS[corpus]
    wiki = Wiki(data)
    wiki.prepare(workers=2)
    try:
        with serving(wiki, best_combo(), workers=2) as runtime:
            host, port = address_of(runtime)[:2]
            browser = Browser(chromium, tmp_path / "profile")
            try:
                browser.open(f"http://{host}:{port}/")
                assert browser.evaluate("document.activeElement.id") == "q"  # autofocus
                browser.type(scenario.prefix)
                assert browser.evaluate("document.getElementById('q').value") == scenario.prefix
                # The answers to the shorter prefixes may show first: wait for this one's.
                wanted = json.dumps(json.dumps(scenario.first_results, separators=(",", ":")))
                shown = browser.wait_for(
                    f"(() => {{ const r = {RESULTS}; return JSON.stringify(r.slice(0,"
                    f" {len(scenario.first_results)})) === {wanted} ? r : null; }})()",
                    f"the results {scenario.first_results}")
                assert "headword" in browser.evaluate(
                    "document.getElementById('status').textContent")
                # Click the result whose text is the word to pick.
                number = shown.index(scenario.pick)
                browser.click(f"#result-{number} a")
                text = browser.wait_for(
                    f"(() => {{ const t = document.getElementById('entry-text').textContent;"
                    f" return t.includes({json.dumps(scenario.shows)}) ? t : null; }})()",
                    "the entry")
                assert browser.evaluate("document.getElementById('entry-word').textContent") \
                    == scenario.pick
                assert browser.evaluate("decodeURIComponent(location.hash)") == \
                    "#" + scenario.pick
                screenshot = browser.screenshot()
                # Cross references became links; follow one.
                assert "{" + scenario.cross_reference + "}" not in text
                browser.click(f"#entry-text a[href='#{scenario.cross_reference}']")
                browser.wait_for(
                    f"document.getElementById('entry-text').textContent"
                    f".includes({json.dumps(scenario.cross_shows)})", "the cross reference")
                # The keyboard: down twice from the box, then Enter, opens the second result.
                browser.click("#q")
                for key in ("ArrowDown", "ArrowDown", "Enter"):
                    browser.press(key)
                browser.wait_for(f"document.getElementById('entry-word').textContent === "
                                 f"{json.dumps(shown[1])}", f"the entry of {shown[1]}")
                assert browser.evaluate("document.getElementById('result-1')"
                                        ".getAttribute('aria-selected')") == "true"
            finally:
                browser.close()
    finally:
        wiki.close()
    assert screenshot.startswith(b"\x89PNG\r\n\x1a\n")
    (tmp_path / f"wiki-{corpus}.png").write_bytes(screenshot)
    target = os.environ.get("PARALLIO_WIKI_SCREENSHOT")
    if target and corpus == "gcide":
        Path(target).write_bytes(screenshot)
