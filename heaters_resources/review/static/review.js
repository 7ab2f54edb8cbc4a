// Heaters review page: frame stepping, sprite scrubbing, actions over fetch, progress polling.
// Every action is also a plain <form> POST, so the page works (coarsely) without this script.
(() => {
  "use strict";
  const $ = (sel) => document.querySelector(sel);
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const notice = $("#notice");
  const review = $("#review");
  let busy = false;

  function say(message, isError) {
    notice.hidden = false;
    notice.textContent = message;
    notice.classList.toggle("error", !!isError);
  }

  async function post(url, body) {
    const res = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json",
                "X-CSRF-Token": csrf},
      body: JSON.stringify(body || {}),
    });
    const text = await res.text();
    try { return JSON.parse(text); } catch (e) { return {ok: false, message: text}; }
  }

  function go(next, message) {
    const sep = next.includes("?") ? "&" : "?";
    window.location.assign(next + sep + "notice=" + encodeURIComponent(message));
  }

  async function run(action) {
    if (busy) return;
    const button = $("#btn-" + action);
    if (button && button.disabled) return;
    busy = true;
    let data;
    if (action === "undo") {
      data = await post("/api/undo");
    } else {
      const body = {version: review.dataset.version};
      if (action === "split") body.frame = String(player.sourceFrame());
      data = await post(`/api/clips/${review.dataset.clip}/${action}`, body);
    }
    if (data.ok) { go(data.next, data.message); return; }
    say(data.message || "Refused.", true);
    busy = false;
  }

  document.querySelectorAll("form[data-action]").forEach((form) => {
    form.addEventListener("submit", (event) => { event.preventDefault(); run(form.dataset.action); });
  });

  // ---------------------------------------------------------------- player and scrubber
  const player = (() => {
    if (!review) return null;
    const video = $("#video");
    const fps = Number(review.dataset.fps);
    const start = Number(review.dataset.start);
    const frames = Number(review.dataset.frames);
    const scrubber = $("#scrubber");
    const splitButton = $("#btn-split");
    let frame = 0;

    function showTile(fraction) {
      if (!scrubber) return;
      const d = scrubber.dataset;
      const cols = Number(d.cols), rows = Number(d.rows), tiles = Number(d.tiles);
      // Sprite metadata: tile i shows time i / sprite_fps of the clip.
      const tile = Math.min(tiles - 1, Math.floor(fraction * Number(d.duration) * Number(d.spriteFps)));
      const col = tile % cols, row = Math.floor(tile / cols);
      $("#scrub-image").style.backgroundPosition =
        `${cols > 1 ? (col / (cols - 1)) * 100 : 0}% ${rows > 1 ? (row / (rows - 1)) * 100 : 0}%`;
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
      if (splitButton && review.dataset.state === "pending_review") splitButton.disabled = frame < 1;
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
    if (event.ctrlKey && event.key !== "z") return;
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
})();
