// rqbeat dashboard: show times in the viewer's zone and refresh the page's data from
// its JSON endpoint every few seconds. Data only ever reaches the page as text
// (textContent, never innerHTML), so a schedule's args or an error cannot inject markup.
"use strict";

(function () {
  const root = document.documentElement;
  root.classList.add("js");

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined && value !== false) node.setAttribute(name, String(value));
    }
    for (const child of children || []) {
      if (child === null || child === undefined || child === "") continue;
      node.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
    }
    return node;
  }

  function localize(scope) {
    for (const node of scope.querySelectorAll("time[datetime]")) {
      const moment = new Date(node.getAttribute("datetime"));
      if (Number.isNaN(moment.getTime())) continue;
      node.textContent = moment.toLocaleString([], { dateStyle: "medium", timeStyle: "medium" });
      node.title = "your time (" + Intl.DateTimeFormat().resolvedOptions().timeZone + ")";
    }
  }

  function when(w) {
    if (!w) return ["–"];
    return [el("time", { datetime: w.iso }, [w.utc]), " ", el("span", { class: "utc" }, [w.utc]), " ",
            el("span", { class: "rel" }, [w.relative])];
  }

  function stateBadge(state) {
    return el("span", { class: "state state-" + state, "data-field": "state" }, [state]);
  }

  function listRow(r) {
    const last = [];
    if (r.last_result) {
      last.push(el("span", { class: "result result-" + r.last_result }, [r.last_result]), " ",
                el("span", { class: "rel" }, [r.last ? r.last.relative : ""]));
    }
    if (r.error) last.push(el("div", { class: "error" }, [r.error]));
    const state = [stateBadge(r.state)];
    if (r.attempt > 1) state.push(" ", el("span", { class: "attempt" }, ["retry " + r.attempt]));
    return el("tr", { "data-id": r.id }, [
      el("td", { "data-label": "ID" }, [el("a", { href: r.url }, [r.id])]),
      el("td", { "data-label": "Trigger" }, [el("span", { class: "words" }, [r.words]),
                                             r.words === r.trigger ? null : el("code", {}, [r.trigger])]),
      el("td", { "data-label": "Zone" }, [r.timezone]),
      el("td", { "data-label": "State" }, state),
      el("td", { "data-label": "Next fire" }, when(r.next)),
      el("td", { "data-label": "Last result" }, last),
    ]);
  }

  function refreshList(body, data) {
    const rows = data.schedules.map(listRow);
    if (!rows.length) rows.push(el("tr", { class: "empty" }, [el("td", { colspan: 6 }, ["No schedule matches."])]));
    body.replaceChildren(...rows);
    for (const node of document.querySelectorAll("[data-count]")) {
      const value = data.counts[node.getAttribute("data-count")];
      if (value !== undefined) node.textContent = String(value);
    }
  }

  function historyItem(h) {
    const job = h.job_id ? (h.job_url ? el("a", { class: "job", href: h.job_url }, [h.job_id])
                                      : el("code", { class: "job" }, [h.job_id])) : null;
    return el("li", { class: "event-" + h.event }, [
      el("time", { datetime: h.at }, [h.at_utc]), " ",
      el("span", { class: "event" }, [h.event]), " ",
      h.by ? el("span", { class: "by" }, ["by " + h.by]) : null, " ",
      h.attempt ? el("span", { class: "attempt" }, ["attempt " + h.attempt]) : null, " ",
      job, " ",
      h.duration_ms !== null ? el("span", { class: "duration" }, [h.duration_ms + " ms"]) : null, " ",
      h.outcome ? el("span", { class: "outcome" }, [h.outcome]) : null,
    ]);
  }

  function field(scope, name, children) {
    const node = scope.querySelector('[data-field="' + name + '"]');
    if (node) node.replaceChildren(...children);
  }

  function refreshSchedule(box, s) {
    const badge = box.querySelector('h1 [data-field="state"]');
    badge.className = "state state-" + s.state;
    badge.textContent = s.state;
    field(box, "next", when(s.next));
    const job = s.job_id ? [s.job_url ? el("a", { href: s.job_url }, [s.job_id]) : el("code", {}, [s.job_id]),
                            " (fire ", ...when(s.fire), ")"] : ["–"];
    field(box, "job", job);
    field(box, "last", s.last_result ? [el("span", { class: "result result-" + s.last_result }, [s.last_result]), " ",
                                        ...when(s.last)] : ["–"]);
    const items = s.history.map(historyItem);
    if (!items.length) items.push(el("li", { class: "empty" }, ["No history yet."]));
    box.querySelector("#history").replaceChildren(...items);
    document.getElementById("changed").hidden = String(s.version) === box.getAttribute("data-version");
  }

  function cells(values, labels) {
    return values.map((v, i) => el("td", { "data-label": labels[i] }, [v === null ? "" : String(v)]));
  }

  function refreshCluster(box, c) {
    field(box, "leader", c.leader ? [el("span", { class: "state state-due" }, [c.leader]), " epoch " + c.epoch]
                                   : [el("span", { class: "state state-broken" }, ["none"]), ": no replica holds the lease"]);
    const s = c.schedules;
    field(box, "schedules", [s.total + " total: " + s.due + " due (" + s.overdue + " overdue), " + s.running +
                             " running, " + s.paused + " paused, " + s.broken + " broken"]);
    field(box, "now", [c.now_utc]);
    box.querySelector("#replicas").replaceChildren(...c.replicas.map((n) => {
      const row = el("tr", {}, cells([n.node, n.role, n.epoch, n.heartbeat, n.host, n.pid],
                                     ["Replica", "Role", "Epoch", "Heartbeat", "Host", "PID"]));
      if (n.stale) row.children[3].className = "stale";
      return row;
    }));
    box.querySelector("#queues").replaceChildren(...c.queues.map((q) =>
      el("tr", {}, cells([q.name, q.queued, q.started, q.failed, q.workers],
                         ["Queue", "Queued", "Started", "Failed", "Workers"]))));
    box.querySelector("#workers").replaceChildren(...c.worker_rows.map((w) =>
      el("tr", {}, cells([w.name, w.state, w.queues, w.job, w.heartbeat, w.clock, w.host, w.pid],
                         ["Worker", "State", "Queues", "Job", "Heartbeat", "Clock", "Host", "PID"]))));
  }

  const views = [
    ["#rows", refreshList],
    ["#schedule", refreshSchedule],
    ["#cluster", refreshCluster],
  ];

  async function tick(node, render) {
    if (document.hidden) return;
    const live = document.getElementById("live");
    try {
      const response = await fetch(node.getAttribute("data-api"), { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error("HTTP " + response.status);
      render(node, await response.json());
      localize(node);
      // how many refreshes the page has taken in (tests wait for one before they look)
      document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
      live.textContent = "live";
      live.className = "live";
    } catch (error) {
      live.textContent = "offline";
      live.className = "live offline";
      live.title = String(error);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    localize(document);
    const seconds = Number(document.body.getAttribute("data-refresh-s")) || 5;
    for (const [selector, render] of views) {
      const node = document.querySelector(selector);
      if (node && node.getAttribute("data-api")) {
        setInterval(() => tick(node, render), seconds * 1000);
      }
    }
  });
})();
