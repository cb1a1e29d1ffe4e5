// heroes investigators' page: vanilla JS, no build step, no external requests.
//
// Rules this file keeps:
// - Every name, path and value that comes from a case is evidence-controlled and hostile: it is
//   only ever written with textContent or as an attribute value, never parsed as HTML.
// - The API key lives in sessionStorage only, and goes out only in the Authorization header.
// - Images are fetched with that header as blobs and shown through object URLs, revoked when the
//   view changes. Thumbnails are blurred by the server; a reveal is a separate, audited request.
"use strict";

(() => {
  const KEY_STORE = "heroes.key";
  const PAGE = 60;
  const CATEGORIES = [
    [0, "Non-pertinent"],
    [1, "Child abuse material"],
    [2, "Child exploitive / age difficult"],
    [3, "CGI/animation"],
    [4, "Comparison"],
  ];
  const CATEGORY_NAME = new Map(CATEGORIES);

  const state = {
    me: null,
    view: null, // {name, case, ...}
    urls: new Set(), // object URLs of the current view
    tiles: [], // tiles of the current grid, in order
    focus: 0,
    revealed: null, // the tile shown unblurred
    focusByView: new Map(), // grid position to come back to, by location
  };

  // ---------------------------------------------------------------- DOM helpers

  /** Element with attributes and children; strings become text nodes (never HTML). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = String(v);
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const SVG = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") el.textContent = String(v);
      else el.setAttribute(k, String(v));
    }
    for (const c of children) el.append(c);
    return el;
  }

  const $ = (sel) => document.querySelector(sel);
  const enc = encodeURIComponent;
  const caseHref = (c) => `#/case/${enc(c)}`;
  const itemHref = (c, id) => `#/case/${enc(c)}/item/${enc(id)}`;
  const fmt = (x, d = 2) => (typeof x === "number" && Number.isFinite(x) ? x.toFixed(d) : "–");

  function say(message, kind = "info") {
    const box = $("#status");
    box.className = `status ${kind}`;
    box.textContent = message;
    if (kind === "info") {
      clearTimeout(say.timer);
      say.timer = setTimeout(() => {
        if (box.textContent === message) box.textContent = "";
      }, 4000);
    }
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, title, detail) {
      super(detail ? `${title}: ${detail}` : title);
      this.status = status;
    }
  }

  const key = () => sessionStorage.getItem(KEY_STORE);

  async function api(path, { method = "GET", json, body, blob = false } = {}) {
    const headers = { Authorization: `Bearer ${key()}` };
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    }
    const res = await fetch(path, { method, headers, body, cache: "no-store" });
    if (!res.ok) {
      let title = res.statusText || "Error";
      let detail = "";
      try {
        const p = await res.json();
        title = p.title || title;
        detail = typeof p.detail === "string" ? p.detail : JSON.stringify(p.detail ?? "");
      } catch (_) {
        /* not problem+json */
      }
      if (res.status === 401 && path !== "/api/v1/me") signOut("Your key was refused: sign in again.");
      throw new ApiError(res.status, `${res.status} ${title}`, detail);
    }
    if (blob) return res.blob();
    if (res.status === 204) return null;
    return res.json();
  }

  const casePath = (c) => `/api/v1/cases/${enc(c)}`;

  async function objectUrl(path) {
    const url = URL.createObjectURL(await api(path, { blob: true }));
    state.urls.add(url);
    return url;
  }

  function dropUrl(url) {
    if (url && state.urls.delete(url)) URL.revokeObjectURL(url);
  }

  function resetView() {
    for (const url of state.urls) URL.revokeObjectURL(url);
    state.urls.clear();
    state.tiles = [];
    state.focus = 0;
    state.revealed = null;
  }

  // ---------------------------------------------------------------- the user

  async function loadMe() {
    state.me = await api("/api/v1/me");
    const me = state.me;
    $("#who").hidden = false;
    $("#user").textContent = `${me.user} (${me.role})`;
    $("#pref-blur").checked = me.prefs.blur !== false;
    $("#pref-grey").checked = !!me.prefs.greyscale;
    document.body.classList.toggle("greyscale", !!me.prefs.greyscale);
    showExposure();
  }

  function showExposure() {
    const e = state.me?.exposure || {};
    const cap = state.me?.prefs?.daily_reveal_cap;
    const reveals = `${e.reveals_today ?? 0}${cap ? ` / ${cap}` : ""}`;
    $("#exposure").textContent = `Today: ${reveals} reveals, ${fmt(e.minutes_today ?? 0, 0)} min`;
  }

  async function refreshExposure() {
    try {
      const me = await api("/api/v1/me");
      state.me.exposure = me.exposure;
      showExposure();
    } catch (_) {
      /* the next view shows the error */
    }
  }

  async function setPref(name, value) {
    try {
      await api("/api/v1/me/prefs", { method: "PATCH", json: { [name]: value } });
      state.me.prefs[name] = value;
      if (name === "greyscale") document.body.classList.toggle("greyscale", value);
      if (name === "blur" && value && state.revealed) blurTile(state.revealed);
      say(`${name === "blur" ? "Blur" : "Greyscale"} ${value ? "on" : "off"}`);
    } catch (err) {
      say(err.message, "error");
    }
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY_STORE);
    state.me = null;
    $("#who").hidden = true;
    resetView();
    location.hash = "#/";
    route();
    if (message) say(message, "error");
  }

  // ---------------------------------------------------------------- thumbnails

  /**
   * A thumbnail tile: the blurred image (fetched with the key), optional face/detection boxes,
   * a caption. `reveal()` asks the server for the unblurred image (audited there); `blur()`
   * puts the blurred one back and forgets the revealed image.
   */
  function thumb(caseName, item, { boxes = null, big = false } = {}) {
    const id = item.item_id;
    const img = h("img", { alt: "", decoding: "async" });
    const frame = h("div", { class: `thumb blurred${big ? " big" : ""}` }, img);
    const t = { caseName, item, frame, img, blurredUrl: null, revealedUrl: null, label: null };
    const path = `${casePath(caseName)}/items/${enc(id)}/thumbnail`;
    if (item.media_type === "image" || item.media_type === "video") {
      objectUrl(path)
        .then((url) => {
          t.blurredUrl = url;
          if (!t.revealedUrl) img.src = url;
        })
        .catch((err) => frame.replaceChildren(h("span", { class: "nothumb", text: err.status === 404 ? "no thumbnail" : err.message })));
    } else {
      frame.replaceChildren(h("span", { class: "nothumb", text: item.media_type || "file" }));
    }
    if (boxes && item.width && item.height) frame.append(overlay(item, boxes));
    return t;
  }

  async function revealTile(t) {
    if (state.revealed && state.revealed !== t) blurTile(state.revealed);
    if (t.revealedUrl) return;
    try {
      const path = `${casePath(t.caseName)}/items/${enc(t.item.item_id)}/thumbnail?reveal=true`;
      t.revealedUrl = await objectUrl(path);
      t.img.src = t.revealedUrl;
      t.frame.classList.remove("blurred");
      t.frame.classList.add("revealed");
      state.revealed = t;
      say(`Item ${t.item.item_id} revealed (recorded)`);
    } catch (err) {
      say(err.status === 429 ? `Daily reveal limit reached: ${err.message}` : err.message, "error");
    }
    refreshExposure();
  }

  function blurTile(t) {
    if (!t.revealedUrl) return;
    dropUrl(t.revealedUrl);
    t.revealedUrl = null;
    t.img.src = t.blurredUrl || "";
    t.frame.classList.add("blurred");
    t.frame.classList.remove("revealed");
    if (state.revealed === t) state.revealed = null;
  }

  function toggleReveal(t) {
    if (t.revealedUrl) blurTile(t);
    else revealTile(t);
  }

  /** Face and detection boxes over an image, in the file's pixel coordinates. */
  function overlay(item, boxes) {
    const svg = s("svg", {
      class: "boxes",
      viewBox: `0 0 ${item.width} ${item.height}`,
      preserveAspectRatio: "none",
      "aria-hidden": "true",
    });
    const stroke = Math.max(2, Math.round(Math.max(item.width, item.height) / 200));
    for (const b of boxes) {
      const [x1, y1, x2, y2] = b.bbox.map(Number);
      if (![x1, y1, x2, y2].every(Number.isFinite)) continue;
      const g = s("g", { class: `box ${b.kind}` });
      g.append(s("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1, "stroke-width": stroke }));
      g.append(s("text", { x: x1 + stroke, y: Math.max(y1 - stroke, stroke * 6), "font-size": stroke * 7, text: b.text }));
      svg.append(g);
    }
    return svg;
  }

  function faceBoxes(item, frameTime = null) {
    const out = [];
    for (const f of item.faces || []) {
      if (!f.bbox || (f.frame_time ?? null) !== frameTime) continue;
      const minor = typeof f.p_minor === "number" && f.p_minor >= 0.5;
      out.push({ kind: minor ? "face minor" : "face", bbox: f.bbox, text: `age ${fmt(f.age, 0)}` });
    }
    const n = item.nudity;
    if (n && (n.frame_time ?? null) === frameTime) {
      for (const d of n.detections || []) {
        if (d.bbox) out.push({ kind: "detection", bbox: d.bbox, text: `${d.label} ${fmt(d.score)}` });
      }
    }
    return out;
  }

  // ---------------------------------------------------------------- grids and keys

  function grid(label) {
    return h("ul", { class: "grid", "aria-label": label });
  }

  /** A tile in a navigable grid: focus, Enter opens, click reveals, leaving re-blurs. */
  function gridTile(list, t, href, caption) {
    const index = state.tiles.length;
    const cell = h(
      "li",
      {
        class: "tile",
        tabindex: index === 0 ? "0" : "-1",
        "data-item": t.item.item_id,
        "aria-label": `Item ${t.item.item_id}, ${t.item.path ?? ""}. Press r to reveal, Enter to open.`,
      },
      t.frame,
      caption,
    );
    t.cell = cell;
    t.href = href;
    t.frame.addEventListener("click", () => {
      setFocus(index);
      toggleReveal(t);
    });
    cell.addEventListener("focus", () => {
      if (state.focus !== index) setFocus(index, false);
    });
    cell.addEventListener("mouseleave", () => rebluring(t));
    cell.addEventListener("focusout", (e) => {
      if (!cell.contains(e.relatedTarget)) rebluring(t);
    });
    state.tiles.push(t);
    list.append(cell);
    return t;
  }

  function rebluring(t) {
    if (state.me?.prefs?.blur !== false) blurTile(t);
  }

  function setFocus(i, move = true) {
    if (!state.tiles.length) return;
    i = Math.max(0, Math.min(state.tiles.length - 1, i));
    const old = state.tiles[state.focus];
    if (old && old.cell) old.cell.tabIndex = -1;
    state.focus = i;
    const t = state.tiles[i];
    t.cell.tabIndex = 0;
    if (move) t.cell.focus();
  }

  function columns() {
    const tiles = state.tiles;
    if (tiles.length < 2) return 1;
    const top = tiles[0].cell.offsetTop;
    let n = 0;
    while (n < tiles.length && tiles[n].cell.offsetTop === top) n++;
    return Math.max(1, n);
  }

  // ---------------------------------------------------------------- labels

  function labelText(label) {
    if (!label || label.category === null || label.category === undefined) return "unlabelled";
    return `${label.category} ${CATEGORY_NAME.get(label.category) ?? ""}`.trim();
  }

  async function setLabel(caseName, item, fields) {
    const old = item.label || {};
    const body = {
      category: old.category ?? null,
      victim_identified: old.victim_identified ?? false,
      offender_identified: old.offender_identified ?? false,
      series: old.series ?? null,
      note: old.note ?? null,
      ...fields,
    };
    try {
      const res = await api(`${casePath(caseName)}/items/${enc(item.item_id)}/label`, {
        method: "POST",
        json: body,
      });
      item.label = res && typeof res === "object" && "category" in res ? res : { ...body };
      say(`Item ${item.item_id} labelled ${labelText(item.label)}`);
      return item.label;
    } catch (err) {
      say(err.message, "error");
      return null;
    }
  }

  function labelBadge(label) {
    const cat = label?.category;
    return h("span", {
      class: `label cat${cat ?? "none"}`,
      text: labelText(label),
      title: label?.by ? `by ${label.by} at ${label.at}` : null,
    });
  }

  // ---------------------------------------------------------------- views

  function main(...children) {
    const m = $("#main");
    m.replaceChildren(...children.flat().filter(Boolean));
    return m;
  }

  function crumbs(...parts) {
    const nav = $("#crumbs");
    nav.replaceChildren();
    for (const [text, href] of parts) {
      nav.append(h("span", { class: "sep", "aria-hidden": "true", text: "/" }));
      nav.append(href ? h("a", { href, text }) : h("span", { "aria-current": "page", text }));
    }
  }

  function viewSignIn() {
    crumbs();
    const input = h("input", {
      id: "key",
      type: "password",
      autocomplete: "off",
      spellcheck: "false",
      required: true,
      "aria-describedby": "key-help",
    });
    const form = h(
      "form",
      { class: "signin", "aria-labelledby": "signin-title" },
      h("h1", { id: "signin-title", text: "Sign in" }),
      h("label", { for: "key", text: "API key" }),
      input,
      h("p", {
        id: "key-help",
        class: "hint",
        text: "The key stays in this browser tab only (session storage) and is forgotten when the tab closes.",
      }),
      h("button", { type: "submit", text: "Sign in" }),
    );
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      sessionStorage.setItem(KEY_STORE, input.value.trim());
      try {
        await loadMe();
        route();
      } catch (err) {
        sessionStorage.removeItem(KEY_STORE);
        say(err.status === 401 || err.status === 403 ? "This key was refused." : err.message, "error");
      }
    });
    main(form);
    input.focus();
  }

  async function viewCases() {
    crumbs(["Cases", null]);
    const cases = await api("/api/v1/cases");
    const rows = cases.map((c) =>
      h(
        "tr",
        {},
        h("th", { scope: "row" }, h("a", { href: caseHref(c.case), text: c.case })),
        h("td", { class: "num", text: c.items }),
        h("td", { class: "num", text: c.queued }),
        h("td", {}, h("a", { href: `${caseHref(c.case)}/persons`, text: "persons" }), " · ",
          h("a", { href: `${caseHref(c.case)}/search`, text: "search" })),
      ),
    );
    main(
      h("h1", { text: "Cases" }),
      cases.length
        ? h("table", { class: "table" },
            h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Case" }), h("th", { scope: "col", text: "Items" }),
              h("th", { scope: "col", text: "Queued" }), h("th", { scope: "col", text: "" }))),
            h("tbody", {}, rows))
        : h("p", { text: "No case is granted to this key." }),
    );
    $("#main").querySelector("a")?.focus();
  }

  function whyText(item) {
    return (item.why || [])
      .map((w) => (typeof w.value === "number" ? `${w.reason} ${fmt(w.value)}` : String(w.reason)))
      .join(", ");
  }

  async function viewQueue(caseName, params) {
    const offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
    const status = params.get("status") || "";
    const minPriority = params.get("min_priority") || "";
    crumbs(["Cases", "#/"], [caseName, null]);
    const q = new URLSearchParams({ offset, limit: PAGE });
    if (status) q.set("status", status);
    if (minPriority) q.set("min_priority", minPriority);
    const page = await api(`${casePath(caseName)}/queue?${q}`);
    state.lastQueue = { case: caseName, hash: location.hash, ids: page.items.map((r) => r.item_id) };
    const list = grid(`Review queue of ${caseName}`);
    for (const item of page.items) {
      const t = thumb(caseName, item);
      t.label = labelBadge(item.label);
      const caption = h(
        "div",
        { class: "caption" },
        h("div", { class: "row" },
          h("span", { class: "rank", text: `#${item.rank ?? "–"}` }),
          h("span", { class: "prio", text: `priority ${fmt(item.priority)}`, title: "priority 0..1" }),
          t.label),
        h("a", { class: "path", href: itemHref(caseName, item.item_id), text: item.path ?? "", title: item.path ?? "" }),
        h("div", { class: "why", text: whyText(item) || item.error || item.status }),
      );
      gridTile(list, t, itemHref(caseName, item.item_id), caption);
    }
    const filters = h(
      "form",
      { class: "filters", "aria-label": "Filter the queue" },
      h("label", {}, "Status ",
        h("select", { name: "status" },
          ["", "ok", "duplicate", "error", "skipped", "known_good"].map((v) =>
            h("option", { value: v, selected: v === status, text: v || "any" })))),
      h("label", {}, "Minimum priority ",
        h("input", { name: "min_priority", type: "number", min: 0, max: 1, step: 0.05, value: minPriority })),
      h("button", { type: "submit", text: "Apply" }),
    );
    filters.addEventListener("submit", (e) => {
      e.preventDefault();
      const f = new URLSearchParams();
      const fd = new FormData(filters);
      for (const [k, v] of fd) if (v) f.set(k, v);
      location.hash = `${caseHref(caseName)}?${f}`;
    });
    const pageHref = (o) => {
      const p = new URLSearchParams(params);
      p.set("offset", o);
      return `${caseHref(caseName)}?${p}`;
    };
    state.view.pages = {
      next: offset + PAGE < page.total ? pageHref(offset + PAGE) : null,
      prev: offset > 0 ? pageHref(Math.max(0, offset - PAGE)) : null,
    };
    const pager = h(
      "nav",
      { class: "pager", "aria-label": "Pages" },
      state.view.pages.prev ? h("a", { href: state.view.pages.prev, text: "← previous" }) : null,
      h("span", { text: `${page.total ? offset + 1 : 0}–${Math.min(offset + PAGE, page.total)} of ${page.total}` }),
      state.view.pages.next ? h("a", { href: state.view.pages.next, text: "next →" }) : null,
    );
    main(
      h("div", { class: "head" },
        h("h1", { text: `Queue: ${caseName}` }),
        h("a", { href: `${caseHref(caseName)}/search`, text: "Search by image (/)" }),
        h("a", { href: `${caseHref(caseName)}/persons`, text: "Persons (p)" })),
      filters,
      page.items.length ? list : h("p", { text: "Nothing in the queue with these filters." }),
      pager,
    );
    if (state.tiles.length) setFocus(Math.min(state.view.focus ?? 0, state.tiles.length - 1));
  }

  function kv(rows) {
    const present = rows.filter(([, v]) => v !== null && v !== undefined && v !== "");
    if (!present.length) return h("p", { class: "hint", text: "none" });
    return h(
      "table",
      { class: "kv" },
      h("tbody", {}, present.map(([k, v]) =>
        h("tr", {}, h("th", { scope: "row", text: k }), h("td", { text: typeof v === "object" ? JSON.stringify(v) : v })))),
    );
  }

  function labelForm(caseName, item, onSaved) {
    const l = item.label || {};
    const form = h(
      "form",
      { class: "labelform", "aria-labelledby": "label-title" },
      h("h2", { id: "label-title", text: "Label (VICS-US)" }),
      h("label", {}, "Category ",
        h("select", { name: "category" },
          h("option", { value: "", text: "uncategorised", selected: l.category === null || l.category === undefined }),
          CATEGORIES.map(([n, name]) => h("option", { value: n, text: `${n} ${name}`, selected: l.category === n })))),
      h("label", {}, h("input", { type: "checkbox", name: "victim_identified", checked: !!l.victim_identified }), " Victim identified"),
      h("label", {}, h("input", { type: "checkbox", name: "offender_identified", checked: !!l.offender_identified }), " Offender identified"),
      h("label", {}, "Series ", h("input", { name: "series", value: l.series ?? "", maxlength: 200 })),
      h("label", {}, "Note ", h("textarea", { name: "note", rows: 2, maxlength: 2000 })),
      h("button", { type: "submit", text: "Save label" }),
      l.by ? h("p", { class: "hint", text: `Last set by ${l.by} at ${l.at}` }) : null,
    );
    form.elements.note.value = l.note ?? "";
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = form.elements;
      const saved = await setLabel(caseName, item, {
        category: f.category.value === "" ? null : Number(f.category.value),
        victim_identified: f.victim_identified.checked,
        offender_identified: f.offender_identified.checked,
        series: f.series.value.trim() || null,
        note: f.note.value.trim() || null,
      });
      if (saved) onSaved(saved);
    });
    return form;
  }

  async function viewItem(caseName, id) {
    crumbs(["Cases", "#/"], [caseName, caseHref(caseName)], [`item ${id}`, null]);
    const item = await api(`${casePath(caseName)}/items/${enc(id)}`);
    const t = thumb(caseName, item, { boxes: faceBoxes(item), big: true });
    t.cell = t.frame;
    state.tiles = [t];
    t.frame.tabIndex = 0;
    t.frame.setAttribute("role", "button");
    t.frame.setAttribute("aria-label", "Reveal this item (r)");
    t.frame.addEventListener("click", () => toggleReveal(t));
    t.frame.addEventListener("keydown", (e) => {
      if (e.key === " ") {
        e.preventDefault();
        toggleReveal(t);
      }
    });
    t.frame.addEventListener("mouseleave", () => rebluring(t));
    const badge = h("div", { class: "current-label" }, labelBadge(item.label));
    t.onLabel = (label) => badge.replaceChildren(labelBadge(label));
    const faces = (item.faces || []).map((f) =>
      h("tr", {},
        h("td", { text: f.face_id ?? "" }),
        h("td", { class: "num", text: fmt(f.age, 0) }),
        h("td", { class: "num", text: fmt(f.p_minor) }),
        h("td", { text: Array.isArray(f.age_interval) ? f.age_interval.map((a) => fmt(a, 0)).join("–") : "" }),
        h("td", { class: "num", text: f.frame_time === null || f.frame_time === undefined ? "" : `${fmt(f.frame_time, 1)} s` }),
        h("td", { text: Array.isArray(f.bbox) ? f.bbox.map((v) => Math.round(v)).join(", ") : "" })));
    const similar = h("section", { "aria-labelledby": "sim-title" }, h("h2", { id: "sim-title", text: "Near-duplicates and similar scenes" }));
    const n = item.nudity || {};
    main(
      h("div", { class: "head" },
        h("h1", {}, `Item ${item.item_id}`),
        h("a", { href: caseHref(caseName), text: "Back to the queue (u)" })),
      h("p", { class: "path big", text: item.path ?? "" }),
      h("div", { class: "item" },
        h("div", { class: "left" }, t.frame,
          h("p", { class: "hint", text: "Click or press r to reveal (recorded in the audit log). Boxes: faces (age), detections." })),
        h("div", { class: "right" },
          badge,
          kv([
            ["Status", item.status], ["Error", item.error], ["Media", item.media_type], ["MIME", item.mime],
            ["Priority", fmt(item.priority)], ["Rank", item.rank],
            ["Size", item.width && item.height ? `${item.width} × ${item.height}` : null],
            ["Nudity", item.nudity ? `${fmt(n.score)}${n.explicit ? " (explicit)" : ""}` : null],
            ["Duplicate of", item.duplicate_of], ["Visual group", item.visual_group],
          ]),
          h("h2", { text: "Why" }),
          (item.why || []).length
            ? h("ul", { class: "why-list" }, item.why.map((w) => h("li", {}, h("strong", { text: String(w.reason ?? "") }),
              Object.entries(w).filter(([k]) => k !== "reason").map(([k, v]) => ` · ${k} ${typeof v === "object" ? JSON.stringify(v) : typeof v === "number" ? fmt(v, 3) : v}`).join(""))))
            : h("p", { class: "hint", text: "no reason recorded" }),
          labelForm(caseName, item, t.onLabel))),
      h("section", { "aria-labelledby": "faces-title" },
        h("h2", { id: "faces-title", text: `Faces (${(item.faces || []).length})` }),
        faces.length
          ? h("table", { class: "table" },
              h("thead", {}, h("tr", {}, ["face", "age", "P(minor)", "80% interval", "frame", "box"].map((c) => h("th", { scope: "col", text: c })))),
              h("tbody", {}, faces))
          : h("p", { class: "hint", text: "none" })),
      h("section", { "aria-labelledby": "hash-title" },
        h("h2", { id: "hash-title", text: "Hashes" }),
        kv([["MD5", item.md5], ["SHA-1", item.sha1], ["SHA-256", item.sha256], ["PDQ", item.pdq], ["PDQ quality", item.pdq_quality],
          ["Known match", item.known_match]])),
      h("section", { "aria-labelledby": "exif-title" },
        h("h2", { id: "exif-title", text: "EXIF" }),
        kv(Object.entries(item.exif || {}))),
      item.video ? h("section", {}, h("h2", { text: "Video" }),
        kv([["Duration", item.video.duration], ["Codec", item.video.codec], ["FPS", item.video.fps], ["Keyframes", (item.video.keyframes || []).length]])) : null,
      similar,
    );
    t.frame.focus();
    api(`${casePath(caseName)}/items/${enc(id)}/similar`)
      .then((sim) => {
        const rows = [
          ...(sim.pdq || []).map((r) => ({ ...r, what: `PDQ distance ${r.distance}` })),
          ...(sim.scene || []).map((r) => ({ ...r, what: `scene ${fmt(r.score)}` })),
        ];
        if (!rows.length) return similar.append(h("p", { class: "hint", text: "none" }));
        similar.append(h("ul", { class: "links" }, rows.map((r) =>
          h("li", {}, h("a", { href: itemHref(caseName, r.item_id), text: `item ${r.item_id}` }), ` ${r.what} · `, h("span", { class: "path", text: r.path ?? "" })))));
      })
      .catch((err) => similar.append(h("p", { class: "hint", text: err.message })));
  }

  async function viewSearch(caseName) {
    crumbs(["Cases", "#/"], [caseName, caseHref(caseName)], ["search", null]);
    const file = h("input", { id: "search-file", type: "file", accept: "image/*", "aria-describedby": "drop-help" });
    const drop = h(
      "div",
      { class: "drop", id: "drop" },
      h("p", { id: "drop-help", text: "Drop an image here, or choose one. The query image is shown blurred; click it to see it." }),
      h("label", { for: "search-file", class: "filebutton", text: "Choose an image" }),
      file,
    );
    const kind = h("fieldset", { class: "kind" },
      h("legend", { text: "Search for" }),
      h("label", {}, h("input", { type: "radio", name: "kind", value: "faces", checked: true }), " the same faces"),
      h("label", {}, h("input", { type: "radio", name: "kind", value: "scenes" }), " the same place / objects"));
    const k = h("input", { id: "search-k", type: "number", min: 1, max: 100, value: 20 });
    const preview = h("div", { class: "preview" });
    const results = h("section", { "aria-live": "polite", "aria-labelledby": "results-title" });
    main(
      h("h1", { text: `Search: ${caseName}` }),
      h("form", { class: "search", "aria-label": "Search by image" }, drop, kind,
        h("label", { for: "search-k" }, "Results ", k)),
      preview,
      results,
    );
    const run = async (blob) => {
      resetView();
      const mode = kind.querySelector("input:checked").value;
      const url = URL.createObjectURL(blob);
      state.urls.add(url);
      const img = h("img", { src: url, alt: "query image" });
      const qframe = h("div", { class: "thumb blurred query", role: "button", tabindex: 0, "aria-label": "Show or blur the query image" }, img);
      qframe.addEventListener("click", () => qframe.classList.toggle("blurred"));
      preview.replaceChildren(qframe);
      results.replaceChildren(h("p", { text: "Searching…" }));
      const form = new FormData();
      form.append("image", blob, blob.name || "query");
      form.append("k", String(Math.max(1, Math.min(100, parseInt(k.value, 10) || 20))));
      try {
        const res = await api(`${casePath(caseName)}/search/${mode}`, { method: "POST", body: form });
        const qfaces = res.query?.faces || [];
        const drawQueryFaces = () => {
          if (qfaces.length && img.naturalWidth) {
            qframe.append(overlay({ width: img.naturalWidth, height: img.naturalHeight },
              qfaces.filter((f) => f.bbox).map((f, i) => ({ kind: "face", bbox: f.bbox, text: `query face ${i}` }))));
          }
        };
        if (img.complete) drawQueryFaces();
        else img.addEventListener("load", drawQueryFaces, { once: true });
        const list = grid("Search results");
        for (const r of res.results || []) {
          const item = { item_id: r.item_id, path: r.path, media_type: "image" };
          const t = thumb(r.case ?? caseName, item);
          const href = itemHref(r.case ?? caseName, r.item_id);
          const caption = h("div", { class: "caption" },
            h("div", { class: "row" }, h("span", { class: "score", text: `score ${fmt(r.score, 3)}` }),
              r.frame_time !== null && r.frame_time !== undefined ? h("span", { text: `at ${fmt(r.frame_time, 1)} s` }) : null),
            h("a", { class: "path", href, text: r.path ?? `item ${r.item_id}`, title: r.path ?? "" }));
          gridTile(list, t, href, caption);
        }
        results.replaceChildren(
          h("h2", { id: "results-title", text: `${(res.results || []).length} results${mode === "faces" ? ` for ${qfaces.length} face(s) in the query` : ""}` }),
          list);
        if (state.tiles.length) setFocus(0);
      } catch (err) {
        results.replaceChildren(h("p", { class: "error", text: err.message }));
      }
    };
    file.addEventListener("change", () => file.files[0] && run(file.files[0]));
    for (const ev of ["dragenter", "dragover"]) {
      drop.addEventListener(ev, (e) => {
        e.preventDefault();
        drop.classList.add("over");
      });
    }
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      const f = e.dataTransfer?.files?.[0];
      if (f) run(f);
    });
    file.focus();
  }

  async function viewPersons(caseName) {
    crumbs(["Cases", "#/"], [caseName, caseHref(caseName)], ["persons", null]);
    const persons = await api(`${casePath(caseName)}/persons`);
    main(
      h("h1", { text: `Persons: ${caseName}` }),
      h("p", { class: "hint", text: "Faces grouped by identity across the case." }),
      persons.length
        ? h("table", { class: "table" },
            h("thead", {}, h("tr", {}, ["person", "faces", "items"].map((c) => h("th", { scope: "col", text: c })))),
            h("tbody", {}, persons.map((p) =>
              h("tr", {},
                h("th", { scope: "row" }, h("a", { href: `${caseHref(caseName)}/person/${enc(p.person_id)}`, text: `person ${p.person_id}` })),
                h("td", { class: "num", text: p.faces }),
                h("td", {}, (p.items || []).slice(0, 20).map((id, i) => [i ? ", " : "", h("a", { href: itemHref(caseName, id), text: id })]),
                  (p.items || []).length > 20 ? ` … (${p.items.length})` : "")))))
        : h("p", { text: "No persons in this case yet." }),
    );
    $("#main").querySelector("tbody a")?.focus();
  }

  async function viewPerson(caseName, pid) {
    crumbs(["Cases", "#/"], [caseName, caseHref(caseName)], ["persons", `${caseHref(caseName)}/persons`], [`person ${pid}`, null]);
    const p = await api(`${casePath(caseName)}/persons/${enc(pid)}`);
    const list = grid(`Faces of person ${pid}`);
    const cache = new Map();
    for (const f of p.faces || []) {
      const item = { item_id: f.item_id, path: f.path, media_type: "image" };
      const t = thumb(caseName, item);
      const href = itemHref(caseName, f.item_id);
      gridTile(list, t, href, h("div", { class: "caption" },
        h("div", { class: "row" }, h("span", { text: f.face_id ?? "" }),
          f.frame_time !== null && f.frame_time !== undefined ? h("span", { text: `at ${fmt(f.frame_time, 1)} s` }) : null),
        h("a", { class: "path", href, text: f.path ?? `item ${f.item_id}`, title: f.path ?? "" })));
      // boxes need the item's size: fetch each item once
      if (f.bbox && f.frame_time == null) {
        if (!cache.has(f.item_id)) cache.set(f.item_id, api(`${casePath(caseName)}/items/${enc(f.item_id)}`));
        cache.get(f.item_id).then((rec) => {
          if (rec.width && rec.height) t.frame.append(overlay(rec, [{ kind: "face", bbox: f.bbox, text: "" }]));
        }).catch(() => {});
      }
    }
    main(h("h1", { text: `Person ${p.person_id}: ${(p.faces || []).length} faces` }), list);
    if (state.tiles.length) setFocus(0);
  }

  // ---------------------------------------------------------------- routing

  async function route() {
    resetView();
    if (!key()) return viewSignIn();
    try {
      if (!state.me) await loadMe();
      const [pathPart, query = ""] = location.hash.replace(/^#/, "").split("?");
      const parts = pathPart.split("/").filter(Boolean).map(decodeURIComponent);
      const params = new URLSearchParams(query);
      state.view = { key: location.hash, parts, focus: state.focusByView.get(location.hash) ?? 0 };
      if (parts[0] !== "case" || !parts[1]) return await viewCases();
      const c = parts[1];
      state.view.case = c;
      if (parts[2] === "item" && parts[3]) return await viewItem(c, parts[3]);
      if (parts[2] === "search") return await viewSearch(c);
      if (parts[2] === "persons") return await viewPersons(c);
      if (parts[2] === "person" && parts[3]) return await viewPerson(c, parts[3]);
      return await viewQueue(c, params);
    } catch (err) {
      if (!key()) return viewSignIn();
      main(h("h1", { text: "Something went wrong" }), h("p", { class: "error", text: err.message }),
        h("p", {}, h("a", { href: "#/", text: "Back to the cases" })));
    }
  }

  // ---------------------------------------------------------------- keyboard

  function typing(target) {
    return target instanceof HTMLElement &&
      (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName)) &&
      !(target instanceof HTMLInputElement && ["checkbox", "radio", "button", "submit"].includes(target.type));
  }

  /** On an item page: open the next (+1) or previous (-1) item of the queue page last seen. */
  function stepItem(c, step) {
    const q = state.lastQueue;
    if (!q || q.case !== c) return false;
    const i = q.ids.findIndex((id) => String(id) === state.view.parts[3]);
    const next = q.ids[i + step];
    if (i < 0 || next === undefined) return false;
    state.focusByView.set(q.hash, i + step);
    location.hash = itemHref(c, next);
    return true;
  }

  function onKey(e) {
    const help = $("#help");
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (help.open) return; // the dialog handles Esc itself
    if (typing(e.target)) {
      if (e.key === "Escape") e.target.blur();
      return;
    }
    if (!key() || !state.view) return;
    const c = state.view.case;
    const t = state.tiles[state.focus];
    const inItem = state.view.parts?.[2] === "item";
    let handled = true;
    switch (e.key) {
      case "?":
        help.showModal();
        break;
      case "j":
      case "ArrowRight":
        if (inItem) handled = stepItem(c, +1);
        else setFocus(state.focus + 1);
        break;
      case "k":
      case "ArrowLeft":
        if (inItem) handled = stepItem(c, -1);
        else setFocus(state.focus - 1);
        break;
      case "ArrowDown":
        if (inItem) handled = false;
        else setFocus(state.focus + columns());
        break;
      case "ArrowUp":
        if (inItem) handled = false;
        else setFocus(state.focus - columns());
        break;
      case "Enter":
        if (t && t.href && !inItem && (e.target === t.cell || e.target === document.body)) {
          state.focusByView.set(state.view.key, state.focus);
          location.hash = t.href;
        } else handled = false;
        break;
      case "r":
        if (t) toggleReveal(t);
        break;
      case "0":
      case "1":
      case "2":
      case "3":
      case "4":
        if (t && c) {
          setLabel(t.caseName, t.item, { category: Number(e.key) }).then((label) => {
            if (!label) return;
            if (t.label) {
              const badge = labelBadge(label);
              t.label.replaceWith(badge);
              t.label = badge;
            }
            if (t.onLabel) t.onLabel(label);
          });
        }
        break;
      case "/":
        if (c) location.hash = `${caseHref(c)}/search`;
        break;
      case "p":
        if (c) location.hash = `${caseHref(c)}/persons`;
        break;
      case "n":
        if (state.view.pages?.next) location.hash = state.view.pages.next;
        break;
      case "b":
        if (state.view.pages?.prev) location.hash = state.view.pages.prev;
        break;
      case "Escape":
      case "u":
        if (c && state.view.parts.length > 2) {
          location.hash = state.lastQueue?.case === c ? state.lastQueue.hash : caseHref(c);
        }
        else if (c) location.hash = "#/";
        else handled = false;
        break;
      default:
        handled = false;
    }
    if (handled) e.preventDefault();
  }

  // ---------------------------------------------------------------- start

  document.addEventListener("DOMContentLoaded", () => {
    document.addEventListener("keydown", onKey);
    window.addEventListener("hashchange", route);
    // leaving the page or hiding the tab re-blurs what was revealed
    document.addEventListener("visibilitychange", () => {
      if (document.hidden && state.revealed) blurTile(state.revealed);
    });
    $("#signout").addEventListener("click", () => signOut());
    $("#help-button").addEventListener("click", () => $("#help").showModal());
    $("#pref-blur").addEventListener("change", (e) => setPref("blur", e.target.checked));
    $("#pref-grey").addEventListener("change", (e) => setPref("greyscale", e.target.checked));
    route();
  });
})();
