/* Axon dashboard: polls v1/monitor once a second and keeps the page in step with it.
 *
 * Everything that comes from the server (agent ids, event fields, error messages) is data: it
 * reaches the DOM only through textContent, dataset or title, never as HTML. URLs are relative,
 * so the page also works behind a proxy that mounts Axon under a path.
 */
"use strict";
(function () {
  const POLL_MS = 1000;
  const REQUEST_TIMEOUT_MS = 10000;
  const FEED_MAX = 500;
  const TOKEN_KEY = "axon.token";
  const SIGNALS = { 1: "SIGHUP", 2: "SIGINT", 6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 15: "SIGTERM" };

  const $ = (id) => document.getElementById(id);
  const authRequired = document.querySelector('meta[name="axon-auth"]').content === "token";

  let token = takeToken();
  let since = null;      // the last feed seq received
  let timer = null;
  let polling = false;
  let stopped = false;   // waiting for a token
  const agentBlocks = new Map();
  const charts = makeCharts();

  // -- token --------------------------------------------------------------------------------

  function takeToken() {
    // #token=... in the URL: keep it for this tab, and take it out of the address bar.
    const fragment = new URLSearchParams(window.location.hash.slice(1));
    const fromUrl = fragment.get("token");
    if (fromUrl) {
      sessionStorage.setItem(TOKEN_KEY, fromUrl);
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function askForToken(message) {
    stopped = true;
    clearTimeout(timer);
    setStatus("auth", "token needed");
    $("auth").hidden = false;
    $("auth-message").textContent = message || "";
    $("forget-token").hidden = true;
    $("token-input").focus();
  }

  $("auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) return;
    token = value;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token-input").value = "";
    $("auth").hidden = true;
    $("auth-message").textContent = "";
    stopped = false;
    since = null;
    poll();
  });

  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    token = null;
    askForToken("");
  });

  function refused() {
    sessionStorage.removeItem(TOKEN_KEY);
    token = null;
    askForToken("The server refused this token (401 Unauthorized). Enter the server's API token.");
  }

  // -- HTTP ---------------------------------------------------------------------------------

  async function api(method, path) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const abort = new AbortController();
    const timeout = setTimeout(() => abort.abort(), method === "GET" ? REQUEST_TIMEOUT_MS : 120000);
    try {
      const response = await fetch(path, { method, headers, signal: abort.signal, cache: "no-store" });
      let body = null;
      try {
        body = await response.json();
      } catch (_) {
        body = null;
      }
      return { status: response.status, body };
    } finally {
      clearTimeout(timeout);
    }
  }

  function errorText(result) {
    const error = result.body && result.body.error;
    if (error && typeof error === "object") return String(error.type) + ": " + String(error.message);
    return "HTTP " + result.status;
  }

  // -- polling ------------------------------------------------------------------------------

  async function poll() {
    if (stopped || polling) return;
    if (authRequired && !token) {
      askForToken("");
      return;
    }
    polling = true;
    clearTimeout(timer);
    try {
      const cursor = since;
      const query = cursor === null ? "" : "?since=" + encodeURIComponent(cursor);
      const result = await api("GET", "v1/monitor" + query);
      if (result.status === 401) {
        refused();
        return;
      }
      if (result.status !== 200 || !result.body) {
        setStatus("retrying", "error: " + errorText(result));
        $("main").classList.add("stale");
      } else {
        render(result.body, cursor);
        setStatus("live", "live");
        $("main").classList.remove("stale");
        $("forget-token").hidden = !token;
      }
    } catch (_) {
      setStatus("retrying", "disconnected, retrying");
      $("main").classList.add("stale");
    } finally {
      polling = false;
      if (!stopped && !document.hidden) timer = setTimeout(poll, POLL_MS);
    }
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) poll();
  });

  function setStatus(kind, text) {
    const el = $("status");
    el.className = "status status-" + kind;
    setText(el, text);
  }

  // -- rendering ----------------------------------------------------------------------------

  function render(snapshot, cursor) {
    renderFigures(snapshot);
    renderAgents(snapshot.agents);
    renderFeed(snapshot.events, snapshot.last_seq, cursor);
    renderCharts(snapshot.series);
    setText($("updated"), "updated " + clock(snapshot.time));
  }

  function renderFigures(snapshot) {
    const now = snapshot.now;
    const totals = snapshot.totals;
    setText($("now-rate"), rate(now.requests_per_s) + "/s");
    const ratio = now.error_ratio === null ? "" : " (" + (100 * now.error_ratio).toFixed(1) + "%)";
    setText($("now-errors"), rate(now.errors_per_s) + "/s" + ratio);
    setText($("now-p50"), ms(now.p50_s));
    setText($("now-p99"), ms(now.p99_s));
    setText($("now-inflight"), String(now.in_flight));
    setText($("now-queued"), String(now.queued));
    setText($("total-requests"), String(totals.requests));
    setText($("total-errors"), String(totals.errors));
    setText($("total-restarts"), String(totals.restarts));
    setText($("total-crashes"), String(totals.crashes));
  }

  function renderAgents(agents) {
    const table = $("tree");
    const seen = new Set();
    let previous = table.tHead;
    for (const agent of agents) {
      seen.add(agent.id);
      let block = agentBlocks.get(agent.id);
      if (!block) {
        block = makeAgentBlock(agent.id);
        agentBlocks.set(agent.id, block);
      }
      if (block.body.previousElementSibling !== previous) previous.after(block.body);
      updateAgentBlock(block, agent);
      previous = block.body;
    }
    for (const [id, block] of agentBlocks) {
      if (!seen.has(id)) {
        block.body.remove();
        agentBlocks.delete(id);
      }
    }
    setText($("agent-count"), "(" + agents.length + " agents)");
  }

  const COLUMNS = ["name", "state", "restarts", "in_flight", "queued", "pid", "cpu", "rss", "exit", "action"];
  const NUMERIC = new Set(["restarts", "in_flight", "queued", "pid", "cpu", "rss"]);

  function makeRow(kind) {
    const tr = document.createElement("tr");
    tr.className = kind;
    const cells = {};
    for (const name of COLUMNS) {
      const td = document.createElement("td");
      td.className = name + (NUMERIC.has(name) ? " num" : "");
      tr.appendChild(td);
      cells[name] = td;
    }
    return { tr, cells };
  }

  function makeAgentBlock(id) {
    const body = document.createElement("tbody");
    body.dataset.agent = id;
    const row = makeRow("agent");
    row.cells.name.textContent = id;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "restart";
    button.textContent = "restart";
    button.title = "Restart every worker of " + id;
    const outcome = document.createElement("span");
    outcome.className = "outcome";
    outcome.setAttribute("role", "status");
    row.cells.action.append(button, outcome);
    body.appendChild(row.tr);
    const block = { id, body, row, button, outcome, workers: new Map() };
    button.addEventListener("click", () => restart(block));
    return block;
  }

  function updateAgentBlock(block, agent) {
    const cells = block.row.cells;
    setState(cells.state, agent.state);
    setText(cells.restarts, String(agent.restarts));
    setText(cells.in_flight, String(agent.in_flight));
    setText(cells.queued, String(agent.queued));
    setExit(cells.exit, lastExit(agent));
    const seen = new Set();
    let previous = block.row.tr;
    for (const worker of agent.workers) {
      seen.add(worker.index);
      let row = block.workers.get(worker.index);
      if (!row) {
        row = makeRow("worker");
        row.tr.dataset.worker = String(worker.index);
        row.cells.name.textContent = "worker " + worker.index;
        block.workers.set(worker.index, row);
      }
      if (row.tr.previousElementSibling !== previous) previous.after(row.tr);
      previous = row.tr;
      const c = row.cells;
      setState(c.state, worker.state);
      setText(c.restarts, String(worker.restarts));
      setText(c.in_flight, String(worker.in_flight));
      setText(c.pid, worker.pid === null ? "-" : String(worker.pid));
      setText(c.cpu, worker.cpu_percent === null ? "-" : worker.cpu_percent.toFixed(1) + "%");
      setText(c.rss, bytes(worker.rss_bytes));
      setExit(c.exit, worker.last_exit);
    }
    for (const [index, row] of block.workers) {
      if (!seen.has(index)) {
        row.tr.remove();
        block.workers.delete(index);
      }
    }
  }

  async function restart(block) {
    block.button.disabled = true;
    showOutcome(block, "pending", "restarting...");
    try {
      const result = await api("POST", "v1/agents/" + encodeURIComponent(block.id) + "/restart");
      if (result.status === 200 && result.body) {
        const state = String(result.body.state);
        showOutcome(block, state === "running" ? "ok" : "error", "restarted: " + state);
        poll();
      } else if (result.status === 401) {
        showOutcome(block, "error", "not authorised");
        refused();
      } else {
        showOutcome(block, "error", "failed: " + errorText(result));
      }
    } catch (_) {
      showOutcome(block, "error", "failed: no answer from the server");
    } finally {
      block.button.disabled = false;
    }
  }

  function showOutcome(block, kind, text) {
    block.outcome.className = "outcome " + kind;
    block.outcome.textContent = text;
  }

  function renderFeed(events, lastSeq, cursor) {
    // Without a cursor (first load, new token) or below it (the server restarted), the answer
    // holds the whole feed: start over.
    const list = $("feed");
    const whole = cursor === null || lastSeq < cursor;
    if (whole) list.replaceChildren();
    for (const entry of events) {
      if (!whole && entry.seq <= cursor) continue;
      list.prepend(feedItem(entry));
    }
    while (list.childElementCount > FEED_MAX) list.lastElementChild.remove();
    since = lastSeq;
    $("feed-empty").hidden = list.childElementCount > 0;
  }

  function feedItem(entry) {
    const li = document.createElement("li");
    li.dataset.seq = String(entry.seq);
    li.dataset.event = entry.event;
    const time = document.createElement("time");
    time.textContent = clock(entry.time);
    const level = document.createElement("span");
    level.className = "level level-" + cssWord(entry.level);
    level.textContent = entry.level;
    const name = document.createElement("span");
    name.className = "event";
    name.textContent = entry.event;
    const fields = document.createElement("span");
    fields.className = "fields";
    fields.textContent = Object.entries(entry.fields)
      .filter(([, value]) => value !== null)
      .map(([key, value]) => key + "=" + (typeof value === "string" ? value : JSON.stringify(value)))
      .join(" ");
    li.append(time, level, name, fields);
    return li;
  }

  // -- charts (uPlot) -----------------------------------------------------------------------

  function makeCharts() {
    const specs = [
      ["chart-rate", [["runs/s", "#0b63c4"]], false],
      ["chart-errors", [["errors/s", "#c62828"]], false],
      ["chart-latency", [["p50 ms", "#1a7f37"], ["p99 ms", "#9a6700"]], true],
      ["chart-inflight", [["in flight", "#6f42c1"], ["queued", "#8c959f"]], false],
    ];
    const axis = { stroke: "#8c959f", grid: { stroke: "rgba(140,149,159,.2)" }, ticks: { stroke: "rgba(140,149,159,.3)" } };
    // Latency exists only for seconds with a successful run: bridge the gaps and show the
    // points. In-flight is sampled once a second: bridge the odd missed sample.
    return specs.map(([id, lines, sparse]) => {
      const target = $(id);
      const options = {
        width: Math.max(200, target.clientWidth),
        height: 150,
        scales: { x: { time: true }, y: { range: (_u, min, max) => [0, Math.max(1, max * 1.1)] } },
        series: [{}].concat(lines.map(([label, color]) => ({
          label,
          stroke: color,
          width: 1.5,
          spanGaps: sparse || id === "chart-inflight",
          points: sparse ? { show: true, size: 4, fill: color } : {},
        }))),
        axes: [axis, Object.assign({ size: 46 }, axis)],
        legend: { live: true },
        cursor: { drag: { x: false, y: false } },
      };
      const empty = [[]].concat(lines.map(() => []));
      return new uPlot(options, empty, target);
    });
  }

  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => {
      for (const chart of charts) {
        const width = Math.max(200, chart.root.parentNode.clientWidth);
        if (width !== chart.width) chart.setSize({ width, height: 150 });
      }
    }, 100);
  });

  function renderCharts(series) {
    const toMs = (values) => values.map((v) => (v === null ? null : v * 1000));
    const columns = [
      [series.requests],
      [series.errors],
      [toMs(series.p50_s), toMs(series.p99_s)],
      [series.in_flight, series.queued],
    ];
    charts.forEach((chart, i) => chart.setData([series.t].concat(columns[i])));
  }

  // -- formatting ---------------------------------------------------------------------------

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  function cssWord(value) {
    const word = String(value);
    return /^[a-z_]+$/.test(word) ? word : "unknown";
  }

  function setState(el, state) {
    const cls = "state state-" + cssWord(state);
    if (el.className !== cls) el.className = cls;
    setText(el, String(state));
  }

  function rate(value) {
    return value >= 10 ? value.toFixed(0) : value.toFixed(2);
  }

  function ms(seconds) {
    if (seconds === null) return "-";
    const value = seconds * 1000;
    return (value >= 100 ? value.toFixed(0) : value.toFixed(1)) + " ms";
  }

  function bytes(value) {
    if (value === null || value === undefined) return "-";
    return (value / 1048576).toFixed(1) + " MiB";
  }

  function clock(unixSeconds) {
    return new Date(unixSeconds * 1000).toLocaleTimeString([], { hour12: false });
  }

  function lastExit(agent) {
    const exits = agent.recent_exits.slice();
    for (const worker of agent.workers) if (worker.last_exit) exits.push(worker.last_exit);
    return exits.reduce((latest, e) => (latest === null || e.at > latest.at ? e : latest), null);
  }

  function exitText(record) {
    if (!record) return "-";
    let how = "lost";
    if (record.signal !== null) how = "signal " + (SIGNALS[record.signal] || record.signal);
    else if (record.exit_code !== null) how = "exit " + record.exit_code;
    const why = [record.during_startup ? "startup" : null, record.cause].filter(Boolean);
    return why.length ? how + " (" + why.join(", ") + ")" : how;
  }

  function setExit(cell, record) {
    setText(cell, exitText(record));
    const title = record ? "at " + clock(record.at) + (record.reason ? ": " + record.reason : "") : "";
    if (cell.title !== title) cell.title = title;
  }

  poll();
})();
