// The grid review page: select clips with the mouse (click, Shift+click for a range) or the
// keys (arrows, Space, Shift+arrows, * or Ctrl+A), then approve / skip / archive them in one
// request (one review event per clip, one undo for all). With nothing selected, A / S / X act
// on the focused clip and focus moves on, so a run of good clips costs one key each.
(() => {
  "use strict";
  const grid = document.getElementById("grid-review");
  const list = document.getElementById("tiles");
  if (!grid) return;
  const {say, post, here} = window.heatersReview;
  const help = document.getElementById("keys-help");
  const tiles = list ? Array.from(list.querySelectorAll(".tile")) : [];
  let focus = 0;
  let anchor = null;
  let busy = false;

  const open = () => tiles.filter((t) => !t.classList.contains("done"));
  const box = (t) => t.querySelector("input[type=checkbox]");
  const selected = () => open().filter((t) => box(t).checked);

  function select(tile, on) {
    box(tile).checked = on;
    tile.classList.toggle("selected", on);
    tile.setAttribute("aria-selected", String(on));
  }

  function render() {
    tiles.forEach((t, i) => t.classList.toggle("focused", i === focus));
    const n = selected().length;
    document.getElementById("grid-selected").textContent = n ? `${n} selected` : "none selected";
    if (tiles[focus]) tiles[focus].scrollIntoView({block: "nearest"});
  }

  function columns() {
    const live = open();
    if (!live.length) return 1;
    const top = live[0].offsetTop;
    const n = live.filter((t) => t.offsetTop === top).length;
    return Math.max(1, n);
  }

  // Move among the clips still open (done ones are skipped over).
  function moveTo(index) {
    const live = open();
    if (!live.length) return;
    const target = Math.max(0, Math.min(live.length - 1, index));
    focus = tiles.indexOf(live[target]);
  }

  function rangeTo(index) {
    const live = open();
    const from = live.indexOf(tiles[anchor === null ? focus : anchor]);
    const [lo, hi] = from <= index ? [from, index] : [index, from];
    live.forEach((t, i) => select(t, i >= lo && i <= hi));
  }

  async function batch(action) {
    if (busy) return;
    let chosen = selected();
    if (!chosen.length && tiles[focus] && !tiles[focus].classList.contains("done")) {
      chosen = [tiles[focus]];
    }
    if (!chosen.length) { say("Nothing selected: select clips (Space, Shift+arrows, *) first.", true); return; }
    busy = true;
    const last = open().length === chosen.length;  // the page is done: load the next clips
    const data = await post(`/api/batch/${action}`, {
      clips: chosen.map((t) => `${t.dataset.clip}|${t.dataset.version}`),
      return_to: grid.dataset.return,
      flash: last ? "1" : "0",
    });
    busy = false;
    if (data.ok && last && !Object.keys(data.refused || {}).length) {
      window.location.assign(data.next);
      return;
    }
    const done = new Set((data.done || []).map(String));
    const after = tiles.indexOf(chosen[chosen.length - 1]);
    for (const t of chosen) {
      select(t, false);
      if (done.has(t.dataset.clip)) {
        t.classList.add("done");
        t.dataset.state = action;
      } else if (data.refused && data.refused[t.dataset.clip]) {
        t.classList.add("refused");
        t.title = data.refused[t.dataset.clip];
      }
    }
    say(data.message || "Refused.", !data.ok || Object.keys(data.refused || {}).length > 0);
    const next = tiles.slice(after + 1).find((t) => !t.classList.contains("done"))
      || open()[0];
    if (next) focus = tiles.indexOf(next);
    anchor = null;
    document.getElementById("grid-count").textContent = `${open().length} left of ${tiles.length}`;
    render();
    if (!open().length) window.location.assign(data.next || grid.dataset.return);
  }

  async function undo() {
    if (busy) return;
    busy = true;
    const data = await post("/api/undo", {return_to: grid.dataset.return});
    if (data.ok) { window.location.assign(data.next); return; }
    say(data.message || "Nothing to undo.", true);
    busy = false;
  }

  tiles.forEach((tile, i) => {
    tile.addEventListener("click", (event) => {
      if (event.target.closest("a") || tile.classList.contains("done")) return;
      event.preventDefault();  // the checkbox follows `select`, not its own click
      if (event.shiftKey && anchor !== null) {
        rangeTo(open().indexOf(tile));
      } else {
        select(tile, !box(tile).checked);
        anchor = i;
      }
      focus = i;
      render();
    });
  });

  document.getElementById("btn-select-all").addEventListener("click", () => {
    open().forEach((t) => select(t, true));
    render();
  });
  document.querySelectorAll("[data-batch]").forEach((button) => {
    button.addEventListener("click", (event) => { event.preventDefault(); batch(button.dataset.batch); });
  });

  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input:not([type=checkbox]), textarea, select") || event.altKey) return;
    if (!help.hidden || event.key === "?") return;  // review.js runs the overlay
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    const live = open();
    const at = live.indexOf(tiles[focus]);
    const steps = {ArrowLeft: -1, ArrowRight: 1, ArrowUp: -columns(), ArrowDown: columns()};
    if (steps[key] !== undefined) {
      if (event.shiftKey && anchor === null) anchor = focus;
      moveTo(at + steps[key]);
      if (event.shiftKey) rangeTo(open().indexOf(tiles[focus]));
      else anchor = null;
    } else if (key === " ") {
      if (tiles[focus]) { select(tiles[focus], !box(tiles[focus]).checked); anchor = focus; }
    } else if (key === "*" || (key === "a" && (event.ctrlKey || event.metaKey))) {
      live.forEach((t) => select(t, true));
    } else if (key === "Escape") {
      live.forEach((t) => select(t, false));
      anchor = null;
    } else if (event.ctrlKey || event.metaKey) {
      if (key !== "z") return;
      undo();
    } else if (key === "a" || key === "s" || key === "x") {
      batch({a: "approve", s: "skip", x: "archive"}[key]);
    } else if (key === "u") {
      undo();
    } else {
      return;
    }
    event.preventDefault();
    render();
  });

  render();
})();
