// Live findings: every poll interval, ask the server for findings newer than the last one shown
// and add them to the "Live findings" table (and refresh the flagged counters). No reload, no library.
"use strict";
(function () {
  const body = document.body;
  const table = document.querySelector("#live-findings tbody");
  const status = document.getElementById("live-status");
  const interval = Math.max(1, Number(body.dataset.pollInterval || 5)) * 1000;
  let last = Number(body.dataset.lastFinding || 0);
  if (!table || !Number.isFinite(last)) return;

  function cell(row, text, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    if (text instanceof Node) td.appendChild(text); else td.textContent = text;
    row.appendChild(td);
  }
  function link(kind, id) {
    const a = document.createElement("a");
    a.href = "/dashboard/" + (kind === "cluster" ? "clusters/" : "accounts/") + encodeURIComponent(id);
    a.textContent = kind + " " + id;
    return a;
  }
  function utc(ts) { return new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC"; }

  async function poll() {
    try {
      const r = await fetch("/dashboard/api/live?after=" + last, { credentials: "same-origin", cache: "no-store" });
      if (r.status === 401) { status.textContent = "session expired: log in again"; return; }
      if (!r.ok) { status.textContent = "live updates: server answered " + r.status; }
      else {
        const data = await r.json();
        for (const f of data.findings) {
          const empty = table.querySelector(".empty-row");
          if (empty) empty.remove();
          const row = document.createElement("tr");
          row.className = "fresh";
          row.dataset.findingId = String(f.id);
          cell(row, utc(f.ts));
          cell(row, link(f.subject_kind, f.subject_id));
          cell(row, f.score.toFixed(4));
          const badge = document.createElement("span");
          badge.className = f.flagged ? "badge red" : "badge";
          badge.textContent = f.flagged ? "flagged" : "scored";
          cell(row, badge);
          cell(row, f.reason, "why");
          table.insertBefore(row, table.firstChild);
          while (table.rows.length > 100) table.deleteRow(table.rows.length - 1);
        }
        last = data.last_id;
        for (const key of ["flagged_accounts", "flagged_clusters"]) {
          const el = document.querySelector('[data-live="' + key + '"]');
          if (el) el.textContent = Number(data[key]).toLocaleString("en-US");
        }
        status.textContent = "live · updated " + new Date().toLocaleTimeString();
      }
    } catch (e) {
      status.textContent = "live updates paused (" + e + ")";
    }
    setTimeout(poll, interval);
  }
  setTimeout(poll, Math.min(interval, 2000));
})();
