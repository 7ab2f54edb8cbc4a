// Heaters review pages: frame stepping, sprite scrubbing and animated sprites, actions over
// fetch, the merge confirmation, the keys overlay, progress polling. Every action is also a
// plain <form>, so the pages work (coarsely) without this script; the grid's selection keys
// are in grid.js. Notices come back in a one-shot cookie, never in the URL.
(() => {
  "use strict";
  const $ = (sel) => document.querySelector(sel);
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const page = document.body.dataset.page;
  const notice = $("#notice");
  const review = $("#review");
  let busy = false;

  // The notice's box is always laid out (visibility, not display): showing one moves nothing.
  function say(message, isError) {
    notice.textContent = message;
    notice.classList.remove("quiet");
    notice.classList.toggle("error", !!isError);
  }

  async function post(url, body) {
    const res = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json",
                "X-CSRF-Token": csrf},
      body: JSON.stringify(Object.assign({flash: "1"}, body || {})),
    });
    const text = await res.text();
    try { return JSON.parse(text); } catch (e) { return {ok: false, message: text}; }
  }

  const here = () => window.location.pathname + window.location.search;
  // The server sets the notice for the page `next` (flash=1); a refusal is said here.
  async function act(url, body) {
    if (busy) return null;
    busy = true;
    const data = await post(url, body);
    if (data.ok) { window.location.assign(data.next); return data; }
    say(data.message || "Refused.", true);
    busy = false;
    return data;
  }

  function why(action) {
    const line = $("#why-" + action);
    const button = $("#btn-" + action);
    return (line && line.textContent.trim()) || (button && button.dataset.why) || "Not possible now.";
  }

  async function run(action) {
    const button = $("#btn-" + action);
    if (button && button.disabled) { say(why(action), true); return; }
    if (action === "undo") {
      const body = (page === "queue" || page === "grid") ? {return_to: here()} : {};
      await act("/api/undo", body);
    } else if (action === "merge") {
      window.location.assign(`/merge?clip=${review.dataset.clip}`);
    } else {
      const body = {version: review.dataset.version};
      if (action === "split") body.frame = String(player.sourceFrame());
      await act(`/api/clips/${review.dataset.clip}/${action}`, body);
    }
  }

  function formBody(form) {
    const body = {};
    new FormData(form).forEach((value, key) => { if (key !== "csrf_token") body[key] = value; });
    return body;
  }

  document.querySelectorAll("form[data-action]").forEach((form) => {
    const action = form.dataset.action;
    if (action === "batch") return;  // grid.js
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (review && ["approve", "skip", "archive", "merge", "split", "undo"].includes(action)) {
        run(action);
      } else if (action === "undo") {
        run("undo");
      } else {
        act(form.action, formBody(form));  // reopen, merge-confirm
      }
    });
  });

  // ---------------------------------------------------------------- keys overlay
  const help = $("#keys-help");
  const toggleHelp = (show) => { help.hidden = !show; if (show) $("#btn-help-close").focus(); };
  $("#btn-help").addEventListener("click", () => toggleHelp(help.hidden));
  $("#btn-help-close").addEventListener("click", () => toggleHelp(false));

  // ---------------------------------------------------------------- animated sprites
  // A sprite's tile i shows time i / sprite_fps of the clip (its metadata JSON): step through
  // the tiles in real time, 8 updates a second at most.
  function showTileOf(el, tile, meta) {
    const cols = Number(meta.cols), rows = Number(meta.rows);
    const col = tile % cols, row = Math.floor(tile / cols);
    el.style.backgroundPosition =
      `${cols > 1 ? (col / (cols - 1)) * 100 : 0}% ${rows > 1 ? (row / (rows - 1)) * 100 : 0}%`;
    el.dataset.tile = String(tile);
  }
  const sprites = Array.from(document.querySelectorAll(".thumb.sprite[data-tiles]"));
  if (sprites.length) {
    const still = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    const t0 = performance.now();
    window.setInterval(() => {
      const seconds = (performance.now() - t0) / 1000;
      for (const el of sprites) {
        if (still && !el.closest(".tile.focused, :hover")) continue;
        const tiles = Number(el.dataset.tiles) || 1;
        showTileOf(el, Math.floor(seconds * Number(el.dataset.spriteFps)) % tiles, el.dataset);
      }
    }, 125);
  }

  // ---------------------------------------------------------------- player and scrubber
  const player = (() => {
    if (!review) return null;
    const video = $("#video");
    const fps = Number(review.dataset.fps);
    const start = Number(review.dataset.start);
    const frames = Number(review.dataset.frames);
    const scrubber = $("#scrubber");
    const splitButton = $("#btn-split");
    const splitWhy = $("#why-split[data-frame0]");
    let frame = 0;

    function showTile(fraction) {
      if (!scrubber) return;
      const d = scrubber.dataset;
      const tiles = Number(d.tiles);
      // Sprite metadata: tile i shows time i / sprite_fps of the clip.
      const tile = Math.min(tiles - 1, Math.floor(fraction * Number(d.duration) * Number(d.spriteFps)));
      showTileOf($("#scrub-image"), tile, d);
      $("#scrub-head").style.left = `${fraction * 100}%`;
      d.tile = String(tile);
    }

    function timecode(seconds) {
      const centis = Math.round(seconds * 100);
      const pad = (n) => String(n).padStart(2, "0");
      const s = Math.floor(centis / 100);
      return `${Math.floor(s / 3600)}:${pad(Math.floor(s / 60) % 60)}:${pad(s % 60)}.${pad(centis % 100)}`;
    }

    function show(next, seek) {
      frame = Math.max(0, Math.min(frames - 1, next));
      $("#frame").textContent = String(frame);
      $("#source-frame").textContent = String(start + frame);
      $("#timecode").textContent = timecode((start + frame) / fps);
      const splitFrame = $("#split-frame");
      if (splitFrame) splitFrame.value = String(start + frame);
      if (splitButton && splitWhy) {
        splitButton.disabled = frame < 1;
        splitWhy.textContent = frame < 1
          ? "Split: step past the first frame (→) to cut before the shown frame."
          : `Split: cuts before frame ${frame} (source frame ${start + frame}).`;
      }
      showTile(frame / frames);
      if (seek && video) {
        video.pause();
        video.currentTime = (frame + 0.5) / fps;  // middle of the frame: no rounding surprises
      }
    }

    if (video) {
      video.addEventListener("timeupdate", () => {
        if (!video.paused) show(Math.floor(video.currentTime * fps), false);
      });
      video.addEventListener("seeked", () => {
        const shown = Math.floor(video.currentTime * fps);
        if (shown !== frame) show(shown, false);
      });
    }

    if (scrubber) {
      let dragging = false;
      const fractionAt = (event) => {
        const box = scrubber.getBoundingClientRect();
        return Math.max(0, Math.min(0.9999, (event.clientX - box.left) / box.width));
      };
      scrubber.addEventListener("pointermove", (event) => {
        showTile(fractionAt(event));
        if (dragging) show(Math.floor(fractionAt(event) * frames), true);
      });
      scrubber.addEventListener("pointerdown", (event) => {
        dragging = true;
        scrubber.setPointerCapture(event.pointerId);
        show(Math.floor(fractionAt(event) * frames), true);
      });
      scrubber.addEventListener("pointerup", () => { dragging = false; });
      scrubber.addEventListener("pointerleave", () => { if (!dragging) showTile(frame / frames); });
    }

    show(0, false);
    return {
      step: (delta) => show(frame + delta, true),
      sourceFrame: () => start + frame,
      toggle: () => { if (video) { if (video.paused) video.play(); else video.pause(); } },
    };
  })();

  // ---------------------------------------------------------------- keyboard
  const keys = {a: "approve", s: "skip", x: "archive", m: "merge", c: "split", u: "undo", z: "undo"};
  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, textarea, select") || event.metaKey || event.altKey) return;
    if (event.key === "?" || (event.key === "Escape" && !help.hidden)) {
      toggleHelp(event.key === "?" && help.hidden);
    } else if (!help.hidden) {
      return;
    } else if (page === "merge" && (event.key === "Enter" || event.key.toLowerCase() === "m")) {
      const confirm = $("#btn-confirm-merge");
      if (confirm.disabled) say($("#why-merge").textContent.trim(), true);
      else confirm.form.requestSubmit();
    } else if (page === "merge" && event.key === "Escape") {
      window.location.assign($("#btn-cancel-merge").getAttribute("href"));
    } else if (page === "grid" || (event.ctrlKey && event.key !== "z")) {
      return;  // the grid's keys are grid.js's
    } else {
      const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
      if (player && (key === "ArrowLeft" || key === "ArrowRight")) {
        player.step((key === "ArrowLeft" ? -1 : 1) * (event.shiftKey ? 10 : 1));
      } else if (player && key === " ") {
        player.toggle();
      } else if (keys[key] && (review || keys[key] === "undo")) {
        run(keys[key]);
      } else {
        return;
      }
    }
    event.preventDefault();
  });

  // ---------------------------------------------------------------- progress of jobs
  const progress = $("#progress");
  const interval = Number(progress ? progress.dataset.poll : 0) || 2000;
  async function poll() {
    if (progress.querySelector("[data-pending]")) {
      try {
        const res = await fetch("/progress", {credentials: "same-origin"});
        if (res.ok) progress.innerHTML = await res.text();
      } catch (e) { /* server restarting: try again later */ }
    }
    window.setTimeout(poll, interval);
  }
  if (progress) window.setTimeout(poll, interval);

  window.heatersReview = {say, post, here};  // for grid.js (same page, same policy)
})();
