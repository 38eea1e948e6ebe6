// recengine console: plain JavaScript, no framework, no build step. Every figure comes from the public API
// (/api/v1/…, documented at /docs); this file is also an example of calling it.
"use strict";

(() => {
  const API = "/api/v1";
  const KEY = "recengine.adminKey"; // sessionStorage: forgotten when the tab closes
  const WRITE_KEY = "recengine.writeKey";
  const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"];

  // ---- small helpers ----------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, detail, body) {
      super(detail);
      this.status = status;
      this.body = body;
    }
  }

  // A write key typed into any .write-key field, else the one kept from an earlier accepted write.
  function writeKey() {
    const typed = [...document.querySelectorAll(".write-key")].map((n) => n.value.trim()).find(Boolean);
    return typed || sessionStorage.getItem(WRITE_KEY);
  }

  async function api(path, { method = "GET", body, admin = false, write = false } = {}) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (admin) headers["X-API-Key"] = adminKey() || "";
    const wkey = write ? writeKey() : null;
    if (wkey) headers["X-API-Key"] = wkey;
    const res = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = null;
    }
    if (!res.ok) {
      const detail = (data && (data.detail || data.title)) || `HTTP ${res.status}`;
      if (wkey && (res.status === 401 || res.status === 403)) sessionStorage.removeItem(WRITE_KEY);
      throw new ApiError(res.status, detail, data);
    }
    if (wkey) sessionStorage.setItem(WRITE_KEY, wkey); // accepted: kept for this tab only
    return data;
  }

  // el("li", {class: "x", dataset: {item: "i1"}, onclick: f}, "text", childNode, …)
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "dataset") Object.assign(node.dataset, value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (value === true) node.setAttribute(name, "");
      else node.setAttribute(name, String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const $ = (selector) => document.querySelector(selector);
  const fmt = (x, digits = 4) => (x === null || x === undefined ? "—" : Number(x).toFixed(digits));
  const q = (params) =>
    Object.entries(params)
      .filter(([, v]) => v !== undefined && v !== null && v !== "")
      .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
      .join("&");

  function say(node, text, isError = false) {
    node.textContent = text;
    node.classList.toggle("error", isError);
  }

  function itemLabel(item) {
    return item.title ? item.title : item.item_id;
  }

  // ---- admin key (every page) -------------------------------------------------------------------------------
  const adminKey = () => sessionStorage.getItem(KEY);
  let onAdminChange = () => {};

  function setupAdminKey() {
    const form = $("#admin-key-form");
    const input = $("#admin-key");
    const forget = $("#admin-key-forget");
    const status = $("#admin-key-status");
    const reflect = () => {
      const on = Boolean(adminKey());
      forget.hidden = !on;
      onAdminChange(on);
    };
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) return say(status, "enter a key first", true);
      try {
        // Kept only once the admin API accepts it: a wrong key never shows admin controls.
        await fetch(API + "/admin/config", { headers: { "X-API-Key": key } }).then(async (res) => {
          if (!res.ok) {
            const body = await res.json().catch(() => ({}));
            throw new ApiError(res.status, body.detail || `HTTP ${res.status}`, body);
          }
        });
        sessionStorage.setItem(KEY, key);
        input.value = "";
        say(status, "admin controls on");
      } catch (err) {
        sessionStorage.removeItem(KEY);
        say(status, `key not accepted: ${err.message}`, true);
      }
      reflect();
    });
    forget.addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      say(status, "admin key forgotten");
      reflect();
      input.focus();
    });
    return reflect;
  }

  function removeAdmin() {
    for (const node of document.querySelectorAll("[data-admin]")) node.remove();
  }

  // ---- users page -------------------------------------------------------------------------------------------
  function usersPage() {
    const state = { user: null, engines: [], previous: new Map(), k: Number(document.body.dataset.defaultK) || 10 };
    const results = $("#user-results");
    const resultsStatus = $("#user-results-status");

    async function loadEngines() {
      const body = await api("/engines");
      state.engines = body.engines.filter((e) => e.loaded);
    }

    async function search(random) {
      const query = $("#user-query").value.trim();
      try {
        const body = await api("/users?" + q({ query, limit: random ? 1 : 20, random: random ? "true" : "" }));
        results.replaceChildren();
        if (random && body.users.length) return selectUser(body.users[0].user_id);
        say(resultsStatus, `${body.total} user${body.total === 1 ? "" : "s"} match${body.total === 1 ? "es" : ""}` +
          (body.total > body.users.length ? `; the first ${body.users.length} shown` : ""));
        for (const u of body.users) {
          results.append(el("li", {}, el("button", {
            type: "button", class: "secondary", dataset: { user: u.user_id },
            onclick: () => selectUser(u.user_id),
          }, `${u.user_id} (${u.n_items})`)));
        }
        if (!body.users.length && query) {
          // An id that is not in the seed data can still be asked for (a new user, or one known from events).
          results.append(el("li", {}, el("button", {
            type: "button", class: "secondary", dataset: { user: query }, onclick: () => selectUser(query),
          }, `open “${query}” anyway`)));
        }
      } catch (err) {
        say(resultsStatus, err.message, true);
      }
    }

    async function selectUser(userId) {
      if (state.user !== userId) state.previous = new Map();
      state.user = userId;
      $("#user-panel").hidden = false;
      $("#user-id").textContent = userId;
      $("#similar-panel").hidden = true;
      await Promise.all([loadUser(), refreshRecs()]);
    }

    async function loadUser() {
      const body = await api(`/users/${encodeURIComponent(state.user)}?limit=50`);
      const r = body.routing;
      $("#routing").replaceChildren(
        "The router picks ", el("strong", { id: "routing-engine" }, r.engine), ` (${r.reason})`,
        r.note ? ` — ${r.note}` : "", "; chain: ", r.chain.join(" → "), ".",
      );
      $("#history-count").textContent = body.n_items > body.history.length
        ? `(newest ${body.history.length} of ${body.n_items})` : `(${body.n_items})`;
      const list = $("#history");
      list.replaceChildren();
      for (const item of body.history) list.append(itemEntry(item, { dataset: { item: item.item_id } }));
      if (!body.history.length) list.append(el("li", { class: "muted" }, "no history: the floor answers"));
    }

    function itemEntry(item, attrs = {}, ...extra) {
      const meta = [item.item_id, ...(item.categories || [])].join(" · ");
      return el("li", attrs,
        el("button", {
          type: "button", class: "link", dataset: { item: item.item_id },
          onclick: () => showSimilar(item),
        }, itemLabel(item)),
        " ", el("span", { class: "meta" }, meta), ...extra);
    }

    async function recommend(engine) {
      try {
        return { engine, body: await api("/recommendations?" + q({ user_id: state.user, k: state.k, engine })) };
      } catch (err) {
        return { engine, error: err.message };
      }
    }

    async function refreshRecs() {
      const asked = ["", ...state.engines.map((e) => e.name)]; // "": what the router itself answers
      const answers = await Promise.all(asked.map((engine) => recommend(engine || undefined)));
      const counts = new Map();
      for (const a of answers.slice(1)) {
        for (const item of a.body ? a.body.items : []) counts.set(item.item_id, (counts.get(item.item_id) || 0) + 1);
      }
      const columns = $("#columns");
      columns.replaceChildren();
      const changes = [];
      const options = new Set();
      for (const a of answers) {
        const name = a.engine || "router";
        const before = state.previous.get(name);
        const ids = a.body ? a.body.items.map((i) => i.item_id) : [];
        const fresh = before ? ids.filter((id) => !before.includes(id)) : [];
        if (before && fresh.length) changes.push(`${name}: ${fresh.length} new`);
        state.previous.set(name, ids);
        columns.append(column(name, a, counts, new Set(fresh)));
        ids.forEach((id) => options.add(id));
      }
      $("#event-item-options").replaceChildren(...[...options].map((id) => el("option", { value: id })));
      return changes;
    }

    function column(name, answer, counts, fresh) {
      const title = name === "router" ? "Router's answer" : name;
      const box = el("section", { class: "column", dataset: { engine: name }, "aria-label": `${title} recommendations` },
        el("h4", {}, title));
      if (answer.error) {
        box.append(el("p", { class: "error" }, answer.error));
        return box;
      }
      const b = answer.body;
      box.append(el("p", { class: "answer" },
        `answered by ${b.engine} ${b.model_version} · ${fmt(b.took_ms, 1)} ms · ${b.cached ? "cached" : "computed"}`,
        b.experiment ? ` · experiment ${b.experiment.name}, arm ${b.experiment.arm}` : "",
        b.fallback ? el("span", { class: "fallback" }, ` · fallback: ${b.fallback}`) : ""));
      const list = el("ol", { class: "items" });
      for (const item of b.items) {
        const shared = name !== "router" && (counts.get(item.item_id) || 0) > 1;
        list.append(itemEntry(item,
          { class: shared ? "overlap" : undefined, dataset: { item: item.item_id, score: item.score } },
          el("span", { class: "meta" }, ` ${fmt(item.score, 3)}`),
          shared ? el("span", { class: "badge", title: "in other engines' lists too" }, `×${counts.get(item.item_id)}`) : "",
          fresh.has(item.item_id) ? el("span", { class: "badge new" }, "new") : ""));
      }
      if (!b.items.length) list.append(el("li", { class: "muted" }, "no items"));
      box.append(list);
      return box;
    }

    async function showSimilar(item) {
      const panel = $("#similar-panel");
      panel.hidden = false;
      $("#similar-of").textContent = itemLabel(item);
      $("#event-item").value = item.item_id;
      const list = $("#similar");
      list.replaceChildren();
      try {
        const b = await api(`/items/${encodeURIComponent(item.item_id)}/similar?` + q({ k: state.k }));
        say($("#similar-meta"), `${b.engine} ${b.model_version} · ${fmt(b.took_ms, 1)} ms` +
          (b.fallback ? ` · fallback: ${b.fallback}` : ""));
        for (const s of b.items) list.append(itemEntry(s, { dataset: { item: s.item_id } }));
      } catch (err) {
        say($("#similar-meta"), err.message, true);
      }
      $("#similar-heading").scrollIntoView({ block: "nearest" });
    }

    $("#user-search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      search(false);
    });
    $("#random-user").addEventListener("click", () => search(true));
    $("#recs-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const k = Number($("#recs-k").value);
      if (k >= 1) state.k = k;
      if (state.user) await refreshRecs();
    });
    $("#event-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const status = $("#event-status");
      const itemId = $("#event-item").value.trim();
      if (!state.user || !itemId) return;
      try {
        const b = await api("/events", {
          method: "POST", write: true, body: { user_id: state.user, item_id: itemId, type: $("#event-type").value },
        });
        say(status, `${b.accepted ? "stored" : "already stored"}: ${$("#event-type").value} of ${itemId}`);
        await loadUser();
        const changes = await refreshRecs();
        status.append(" · ", el("span", { class: "changed", id: "event-changes" },
          changes.length ? changes.join("; ") : "no list changed"));
      } catch (err) {
        say(status, err.message, true);
      }
    });

    onAdminChange = () => {}; // nothing admin on this page
    loadEngines().catch((err) => say(resultsStatus, err.message, true));
  }

  // ---- engines page -----------------------------------------------------------------------------------------
  function enginesPage() {
    let engines = [];
    let admin = false;
    let adminMessage = ["", false]; // kept across re-renders of the admin box

    async function loadState() {
      const body = await api("/engines");
      engines = body.engines;
      const rows = engines.map((e) => el("tr", { dataset: { engine: e.name } },
        el("td", {}, e.name), el("td", {}, e.enabled ? "yes" : "no"), el("td", {}, e.model_version || "—"),
        el("td", {}, e.n_items ?? "—"), el("td", {}, e.health), el("td", { class: "circuit" }, e.circuit)));
      $("#engines-table tbody").replaceChildren(...rows);
      renderAdmin();
    }

    async function loadStats() {
      const s = await api("/stats");
      const card = (label, value, id) => el("div", { id }, el("dt", {}, label), el("dd", {}, value));
      $("#stats").replaceChildren(
        card("requests / s", fmt(s.requests.per_s, 2), "stat-rate"),
        card("requests", s.requests.total, "stat-total"),
        card("cache hit ratio", s.cache.hit_ratio === null ? "—" : `${(100 * s.cache.hit_ratio).toFixed(1)} %`, "stat-cache"),
        card("p50 ms", fmt(s.latency_ms.p50, 1), "stat-p50"),
        card("p95 ms", fmt(s.latency_ms.p95, 1), "stat-p95"),
        card("p99 ms", fmt(s.latency_ms.p99, 1), "stat-p99"),
        card("fallbacks", s.requests.fallbacks, "stat-fallbacks"),
        card("uptime", `${Math.round(s.uptime_s)} s`, "stat-uptime"),
      );
      if (s.metrics === "disabled") $("#stats").append(el("p", { class: "muted" }, "metrics are disabled (observability.metrics)"));
      $("#latency-table tbody").replaceChildren(...s.engines.map((e) => el("tr", {},
        el("td", {}, e.engine), el("td", {}, e.requests), el("td", {}, fmt(e.p50_ms, 1)),
        el("td", {}, fmt(e.p95_ms, 1)), el("td", {}, fmt(e.p99_ms, 1)))));
    }

    async function loadMetrics() {
      const loaded = engines.filter((e) => e.loaded);
      const all = await Promise.all(loaded.map((e) => api(`/engines/${e.name}/metrics`).catch(() => null)));
      const got = all.filter(Boolean);
      const rows = [
        ["model version", (m) => m.model_version],
        ["trained", (m) => m.created || "—"],
        ["test hr@10", (m) => fmt(m.test["hr@10"])],
        ["test ndcg@10", (m) => fmt(m.test["ndcg@10"])],
        ["test hr@20", (m) => fmt(m.test["hr@20"])],
        ["test ndcg@20", (m) => fmt(m.test["ndcg@20"])],
        ["test mrr@10", (m) => fmt(m.test["mrr@10"])],
        ["test coverage@10", (m) => fmt(m.test["coverage@10"])],
        ["test users", (m) => m.test.n_users ?? "—"],
        ["valid ndcg@10 (best)", (m) => fmt(m.training["valid_ndcg@10"])],
        ["best epoch / run", (m) => `${m.training.best_epoch ?? "—"} / ${m.training.epochs_run ?? "—"}`],
        ["training s", (m) => fmt(m.training.train_seconds, 1)],
      ];
      $("#metrics-table thead").replaceChildren(el("tr", {}, el("th", { scope: "col" }, "figure"),
        ...got.map((m) => el("th", { scope: "col" }, m.name))));
      $("#metrics-table tbody").replaceChildren(...rows.map(([label, f]) =>
        el("tr", {}, el("th", { scope: "row" }, label), ...got.map((m) => el("td", {}, f(m))))));
      drawCurves(got);
    }

    function drawCurves(all) {
      const box = $("#curves");
      const series = all
        .map((m, i) => ({
          name: m.name, colour: PALETTE[i % PALETTE.length],
          points: m.valid_history.filter((h) => "valid/ndcg@10" in h.metrics).map((h) => [h.epoch, h.metrics["valid/ndcg@10"]]),
        }))
        .filter((s) => s.points.length);
      if (!series.length) return box.replaceChildren(el("p", { class: "muted" }, "no validation history in any metrics.json"));
      const W = 640, H = 260, L = 48, R = 12, T = 12, B = 34;
      const xs = series.flatMap((s) => s.points.map((p) => p[0]));
      const ys = series.flatMap((s) => s.points.map((p) => p[1]));
      const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
      const y0 = Math.min(0, ...ys), y1 = Math.max(...ys) * 1.05 || 1;
      const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
      const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
      const NS = "http://www.w3.org/2000/svg";
      const s = (tag, attrs, text) => {
        const n = document.createElementNS(NS, tag);
        for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
        if (text !== undefined) n.textContent = text;
        return n;
      };
      const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "validation NDCG@10 per epoch" });
      svg.append(s("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#888" }));
      svg.append(s("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#888" }));
      for (const t of [y0, (y0 + y1) / 2, y1]) {
        svg.append(s("text", { x: L - 6, y: sy(t) + 4, "text-anchor": "end", "font-size": 11 }, t.toFixed(3)));
      }
      for (const t of [x0, x1]) svg.append(s("text", { x: sx(t), y: H - B + 16, "text-anchor": "middle", "font-size": 11 }, t));
      svg.append(s("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", "font-size": 11 }, "epoch"));
      for (const line of series) {
        const pts = line.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
        svg.append(s("polyline", { points: pts, fill: "none", stroke: line.colour, "stroke-width": 2, "data-engine": line.name }));
        for (const [x, y] of line.points) svg.append(s("circle", { cx: sx(x), cy: sy(y), r: 3, fill: line.colour }));
      }
      const legend = el("ul", { class: "legend" }, ...series.map((l) =>
        el("li", {}, el("span", { style: `background:${l.colour}` }), l.name)));
      box.className = "curves";
      box.replaceChildren(svg, legend);
    }

    function renderAdmin() {
      removeAdmin();
      if (!admin) return;
      const status = el("p", { role: "status", "aria-live": "polite", id: "admin-status" });
      say(status, ...adminMessage);
      const tell = (text, isError = false) => {
        adminMessage = [text, isError];
        say(status, text, isError);
      };
      const reload = el("button", { type: "button", id: "admin-reload", onclick: async () => {
        try {
          const b = await api("/admin/reload", { method: "POST", body: {}, admin: true });
          tell(b.results.map((r) => `${r.engine}: ${r.status}`).join(", "));
          await refresh();
        } catch (err) {
          tell(err.message, true);
        }
      } }, "Reload models");
      const toggles = engines.map((e) => el("button", {
        type: "button", class: "secondary", dataset: { toggle: e.name },
        onclick: async () => {
          try {
            await api("/admin/config", { method: "PATCH", body: { engines: { [e.name]: { enabled: !e.enabled } } }, admin: true });
            tell(`${e.name} ${e.enabled ? "disabled" : "enabled"}`);
            await loadState();
          } catch (err) {
            tell(err.message, true);
          }
        },
      }, `${e.enabled ? "Disable" : "Enable"} ${e.name}`));
      const box = el("section", { class: "admin", dataset: { admin: "" }, "aria-label": "Admin controls" },
        el("h3", {}, "Admin"), el("div", { class: "row" }, reload, ...toggles), status);
      $("#admin-controls-slot").append(box);
    }

    async function refresh() {
      await loadState();
      await Promise.all([loadStats(), loadMetrics()]);
    }

    onAdminChange = (on) => {
      admin = on;
      renderAdmin();
    };
    $("#stats-refresh").addEventListener("click", () => loadStats());
    refresh().catch((err) => $("#stats").replaceChildren(el("p", { class: "error" }, err.message)));
  }

  // ---- catalogue page ---------------------------------------------------------------------------------------
  function cataloguePage() {
    const k = Number(document.body.dataset.defaultK) || 10;
    let current = null;

    async function search() {
      const status = $("#item-results-status");
      const params = {
        query: $("#item-query").value.trim(), category: $("#item-category").value.trim(),
        available: $("#item-available").value, limit: 50,
      };
      try {
        const b = await api("/items?" + q(params));
        say(status, `${b.items.length} item${b.items.length === 1 ? "" : "s"} · catalogue version ${b.catalogue_version}`);
        $("#item-results tbody").replaceChildren(...b.items.map((item) => el("tr", { dataset: { item: item.item_id } },
          el("td", {}, el("button", { type: "button", class: "link", dataset: { item: item.item_id },
            onclick: () => openItem(item.item_id) }, item.item_id)),
          el("td", {}, item.title || "—"), el("td", {}, item.categories.join(", ") || "—"),
          el("td", {}, item.available ? "yes" : "no"), el("td", {}, item.source))));
      } catch (err) {
        say(status, err.message, true);
      }
    }

    async function openItem(itemId) {
      current = itemId;
      const panel = $("#item-panel");
      panel.hidden = false;
      $("#item-id").textContent = itemId;
      say($("#item-status"), "");
      const details = $("#item-details");
      const list = $("#item-similar");
      list.replaceChildren();
      try {
        const item = await api(`/items/${encodeURIComponent(itemId)}`);
        const row = (label, value) => [el("dt", {}, label), el("dd", {}, value)];
        details.replaceChildren(
          ...row("title", item.title || "—"), ...row("categories", item.categories.join(", ") || "—"),
          ...row("attributes", Object.keys(item.attributes).length ? JSON.stringify(item.attributes) : "—"),
          ...row("available", item.available ? "yes" : "no"), ...row("source", item.source),
        );
        $("#item-retire").hidden = !item.available;
      } catch (err) {
        details.replaceChildren(el("dd", { class: "error" }, err.message));
        $("#item-retire").hidden = true;
        return;
      }
      try {
        const b = await api(`/items/${encodeURIComponent(itemId)}/similar?` + q({ k }));
        say($("#item-similar-meta"), `${b.engine} ${b.model_version} · ${fmt(b.took_ms, 1)} ms`);
        for (const s of b.items) {
          list.append(el("li", { dataset: { item: s.item_id } },
            el("button", { type: "button", class: "link", onclick: () => openItem(s.item_id) }, itemLabel(s)),
            " ", el("span", { class: "meta" }, [s.item_id, ...(s.categories || [])].join(" · "))));
        }
      } catch (err) {
        say($("#item-similar-meta"), err.message, true);
      }
    }

    $("#item-search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      search();
    });
    $("#item-retire").addEventListener("click", async () => {
      if (!current) return;
      try {
        await api(`/items/${encodeURIComponent(current)}`, { method: "DELETE", write: true });
        say($("#item-status"), `${current} retired: no engine recommends it any more`);
        $("#item-retire").hidden = true;
        await search();
      } catch (err) {
        say($("#item-status"), err.message, true);
      }
    });
    $("#item-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const status = $("#item-form-status");
      const itemId = $("#new-item-id").value.trim();
      let attributes = {};
      const raw = $("#new-item-attributes").value.trim();
      if (raw) {
        try {
          attributes = JSON.parse(raw);
        } catch (_) {
          return say(status, "attributes: not a JSON object", true);
        }
      }
      const title = $("#new-item-title").value.trim();
      const body = {
        title: title || null,
        categories: $("#new-item-categories").value.split(",").map((c) => c.trim()).filter(Boolean),
        attributes,
      };
      try {
        await api(`/items/${encodeURIComponent(itemId)}`, { method: "PUT", body, write: true });
        say(status, `${itemId} saved`);
        await openItem(itemId);
      } catch (err) {
        const fields = err.body && err.body.errors ? err.body.errors.map((e) => e.loc.join(".")).join(", ") : "";
        say(status, fields ? `${err.message} (${fields})` : err.message, true);
      }
    });
    search();
  }

  // ---- experiments page -------------------------------------------------------------------------------------
  function experimentsPage() {
    let admin = false;
    const pct = (x) => (x === null || x === undefined ? "—" : `${(100 * x).toFixed(1)} %`);
    const ci = (r) => (r.value === null ? "—" : `${pct(r.value)} [${pct(r.ci_low)}, ${pct(r.ci_high)}]`);
    const p = (t) => (t && t.p_value !== null && t.p_value !== undefined ? Number(t.p_value).toFixed(3) : "—");

    async function render() {
      removeAdmin();
      $("#experiments-locked").hidden = admin;
      if (!admin) return;
      const box = el("div", { dataset: { admin: "" } });
      $("#experiments-slot").append(box);
      let readout = null;
      let config = null;
      let engines = [];
      const status = el("p", { role: "status", "aria-live": "polite", id: "weights-status" });
      try {
        [config, engines] = await Promise.all([
          api("/admin/config", { admin: true }),
          api("/engines").then((b) => b.engines.map((e) => e.name)),
        ]);
        readout = await api("/admin/experiments?k=10", { admin: true }).catch((err) => ({ error: err.message }));
      } catch (err) {
        box.append(el("p", { class: "error" }, err.message));
        return;
      }
      const weights = config.values["routing.experiment.weights"] || {};
      const name = config.values["routing.experiment.name"];
      const panel = el("section", { class: "panel", "aria-labelledby": "readout-heading" },
        el("h2", { id: "readout-heading" }, `Experiment “${readout.experiment || name}”`));
      box.append(panel);
      if (readout.error) {
        panel.append(el("p", { class: "muted", id: "readout-empty" }, readout.error));
      } else {
        const totalUsers = readout.arms.reduce((n, a) => n + a.users, 0);
        const totalImpr = readout.arms.reduce((n, a) => n + a.impressions, 0);
        panel.append(el("p", { class: "muted" },
          `mode ${readout.mode} · control ${readout.control || "—"} · online HR@${readout.k} · ${readout.methods.ci}; ${readout.methods.test}`));
        const head = ["arm", "weight", "users (share)", "impressions (share)", "attributed events", "CTR (95 % CI)",
          `HR@${readout.k} (95 % CI)`, "p CTR vs control", `p HR@${readout.k} vs control`];
        panel.append(el("div", { class: "scroll" }, el("table", { id: "arms-table" },
          el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", {}, ...readout.arms.map((a) => el("tr", { dataset: { arm: a.arm } },
            el("td", {}, a.arm), el("td", {}, weights[a.arm] ?? "—"),
            el("td", {}, `${a.users} (${pct(totalUsers ? a.users / totalUsers : null)})`),
            el("td", {}, `${a.impressions} (${pct(totalImpr ? a.impressions / totalImpr : null)})`),
            el("td", {}, a.attributed_events), el("td", {}, ci(a.ctr)), el("td", {}, ci(a.hr_at_k)),
            el("td", {}, a.vs_control ? p(a.vs_control.ctr) : "control"),
            el("td", {}, a.vs_control ? p(a.vs_control.hr_at_k) : "control")))))));
        if (readout.interleave) {
          const il = readout.interleave;
          panel.append(el("p", { id: "interleave" },
            `Interleaving ${il.engines.join(" vs ")}: ${il.wins} wins, ${il.ties} ties, ${il.losses} losses over ` +
            `${il.users_with_clicks} users with clicks; sign test p = ${Number(il.sign_test.p_value).toFixed(3)}`));
        }
      }
      // Weights: PATCH /api/v1/admin/config, shared with every replica through Redis.
      const form = el("form", { id: "weights-form", class: "row" });
      for (const engine of engines) {
        const id = `weight-${engine}`;
        form.append(el("label", { for: id }, engine),
          el("input", { id, type: "number", min: "0", step: "any", value: weights[engine] ?? 0, dataset: { engine }, class: "weight" }));
      }
      form.append(el("button", { type: "submit", id: "weights-save" }, "Save weights"));
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const next = {};
        for (const input of form.querySelectorAll("input.weight")) {
          const w = Number(input.value);
          if (w > 0) next[input.dataset.engine] = w;
        }
        try {
          await api("/admin/config", { method: "PATCH", admin: true, body: { "routing.experiment.weights": next } });
          say(status, Object.keys(next).length ? `weights saved: ${JSON.stringify(next)}` : "no experiment: rules decide");
        } catch (err) {
          say(status, err.message, true);
        }
      });
      box.append(el("section", { class: "panel", "aria-labelledby": "weights-heading" },
        el("h2", { id: "weights-heading" }, "Traffic weights"),
        el("p", { class: "muted" }, "Each engine's share of users is its weight over the sum; 0 leaves it out."),
        form, status));
    }

    onAdminChange = (on) => {
      admin = on;
      render();
    };
  }

  // ---- start ------------------------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", async () => {
    const page = document.body.dataset.page;
    if (page === "users") usersPage();
    else if (page === "engines") enginesPage();
    else if (page === "catalogue") cataloguePage();
    else if (page === "experiments") experimentsPage();
    const reflect = setupAdminKey();
    if (adminKey()) {
      // A key kept from earlier in this tab: check it again before showing anything of admin.
      try {
        await api("/admin/config", { admin: true });
      } catch (_) {
        sessionStorage.removeItem(KEY);
      }
    }
    reflect();
  });
})();
