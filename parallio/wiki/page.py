"""The wiki's page: a search box that asks /search as you type, and the
entry of the headword picked, fetched from /entry. One static document, no
framework, no build step; the dictionary's cross references (``{Word}``)
become links."""

from __future__ import annotations

__all__ = ["render_page"]

_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
  :root { color-scheme: light dark; --accent: #2f6fdf; --muted: #777; --line: #8884; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 16px/1.45 system-ui, sans-serif; }
  header { padding: 1.2rem 2rem .6rem; border-bottom: 1px solid var(--line); }
  header h1 { margin: 0; font-size: 1.35rem; }
  header p { margin: .2rem 0 0; color: var(--muted); font-size: .9rem; }
  main { display: grid; grid-template-columns: minmax(14rem, 22rem) 1fr; gap: 1.5rem;
         padding: 1rem 2rem; }
  #q { width: 100%; font-size: 1.1rem; padding: .5rem .7rem; border: 1px solid var(--line);
       border-radius: 6px; }
  #q:focus { outline: 2px solid var(--accent); }
  #status { min-height: 1.2em; margin: .4rem 0; color: var(--muted); font-size: .85rem; }
  #results { list-style: none; margin: 0; padding: 0; }
  #results li a { display: block; padding: .2rem .5rem; border-radius: 4px;
                  color: inherit; text-decoration: none; }
  #results li a:hover, #results li[aria-selected="true"] a { background: var(--accent);
                                                              color: white; }
  #results .count { float: right; opacity: .6; font-size: .8rem; }
  #entry h2 { margin: 0 0 .5rem; }
  #entry pre { white-space: pre-wrap; font: .95rem/1.45 ui-monospace, monospace; margin: 0; }
  #entry a { color: var(--accent); }
  #entry .hint { color: var(--muted); }
  @media (max-width: 40rem) { main { grid-template-columns: 1fr; } }
</style>
</head>
<body>
<header>
  <h1>__TITLE__</h1>
  <p>Instant search, served on every core by parallio from one shared index.</p>
</header>
<main>
  <section>
    <input id="q" type="search" placeholder="Type a word&hellip;" autocomplete="off"
           spellcheck="false" autofocus aria-label="Search headwords" aria-controls="results">
    <p id="status" aria-live="polite"></p>
    <ol id="results" role="listbox"></ol>
  </section>
  <article id="entry">
    <h2 id="entry-word"></h2>
    <pre id="entry-text"><span class="hint">Results appear as you type; pick one to read it.</span
    ></pre>
  </article>
</main>
<script>
"use strict";
const box = document.getElementById("q");
const status = document.getElementById("status");
const list = document.getElementById("results");
const entryWord = document.getElementById("entry-word");
const entryText = document.getElementById("entry-text");
const baseTitle = document.title;
let pending = null;   // the AbortController of the search in flight
let selected = -1;

async function search(prefix) {
  if (pending) pending.abort();
  if (!prefix.trim()) {
    pending = null;
    list.replaceChildren();
    status.textContent = "";
    return;
  }
  const controller = pending = new AbortController();
  const started = performance.now();
  try {
    const response = await fetch("/search?limit=20&q=" + encodeURIComponent(prefix),
                                 {signal: controller.signal});
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    const found = await response.json();
    show(found.results);
    const count = found.results.length;
    status.textContent = count
      ? `${count}${found.more ? "+" : ""} headword${count === 1 && !found.more ? "" : "s"}` +
        ` \u00b7 ${Math.round(performance.now() - started)} ms`
      : "no headword starts so";
  } catch (error) {
    if (error.name !== "AbortError") status.textContent = `search failed: ${error.message}`;
  }
}

function show(results) {
  selected = -1;
  list.replaceChildren(...results.map((result, number) => {
    const item = document.createElement("li");
    item.setAttribute("role", "option");
    item.id = `result-${number}`;
    const link = document.createElement("a");
    link.href = "#" + encodeURIComponent(result.headword);
    link.textContent = result.headword;
    if (result.entries.length > 1) {
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = `${result.entries.length} entries`;
      link.append(count);
    }
    item.append(link);
    return item;
  }));
}

function select(number) {
  const items = list.children;
  if (!items.length) return;
  if (selected >= 0) items[selected].removeAttribute("aria-selected");
  selected = (number + items.length) % items.length;
  items[selected].setAttribute("aria-selected", "true");
  items[selected].scrollIntoView({block: "nearest"});
}

function linked(text) {
  // {Word} is how dictd databases write a cross reference.
  const nodes = [];
  let last = 0;
  for (const found of text.matchAll(/\{([^{}\n]{1,100})\}/g)) {
    nodes.push(document.createTextNode(text.slice(last, found.index)));
    const link = document.createElement("a");
    link.href = "#" + encodeURIComponent(found[1]);
    link.textContent = found[1];
    nodes.push(link);
    last = found.index + found[0].length;
  }
  nodes.push(document.createTextNode(text.slice(last)));
  return nodes;
}

async function openEntry(word) {
  entryWord.textContent = word;
  document.title = `${word} \u2014 ${baseTitle}`;
  try {
    const response = await fetch("/entry/" + encodeURIComponent(word));
    if (response.status === 404) {
      entryText.textContent = "No entry for this word.";
      return;
    }
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    entryText.replaceChildren(...linked(await response.text()));
  } catch (error) {
    entryText.textContent = `could not load the entry: ${error.message}`;
  }
}

function openFromHash() {
  let word = "";
  try { word = decodeURIComponent(location.hash.slice(1)); } catch (error) { return; }
  if (word) openEntry(word);
}

box.addEventListener("input", () => search(box.value));
box.addEventListener("keydown", (event) => {
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    select(selected + (event.key === "ArrowDown" ? 1 : -1));
  } else if (event.key === "Enter" && list.children.length) {
    list.children[Math.max(selected, 0)].querySelector("a").click();
  }
});
window.addEventListener("hashchange", openFromHash);
openFromHash();
</script>
</body>
</html>
"""


def render_page(title: str) -> str:
    """The page, titled ``title`` (HTML-escaped already)."""
    return _TEMPLATE.replace("__TITLE__", title)
