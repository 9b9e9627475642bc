// The taskgate dashboard: polls the JSON API and redraws. No framework, no build.
// Every piece of data goes into the page through textContent, never as HTML.
"use strict";

(function () {
  const POLL_MS = 1000;
  const KEY_STORAGE = "taskgate.apiKey";
  const SVG = "http://www.w3.org/2000/svg";
  const FINAL = new Set(["succeeded", "failed", "cancelled"]);

  const $ = (id) => document.getElementById(id);
  let selectedId = null;
  let timer = null;
  let locked = false;

  // A problem answer (401, 403, 5xx...) as an Error carrying status and body.
  class ProblemError extends Error {
    constructor(status, problem) {
      const title = problem.title || "HTTP " + status;
      super(problem.detail ? title + ": " + problem.detail : title);
      this.status = status;
      this.problem = problem;
    }
  }

  function apiKey() {
    return sessionStorage.getItem(KEY_STORAGE);
  }

  async function api(path, options) {
    const headers = { Accept: "application/json" };
    const key = apiKey();
    if (key) {
      headers.Authorization = "Bearer " + key;
    }
    const response = await fetch(path, Object.assign({ headers: headers }, options));
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = {};
    }
    if (!response.ok) {
      throw new ProblemError(response.status, body || {});
    }
    return body;
  }

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) {
      node.textContent = String(text);
    }
    if (className) {
      node.className = className;
    }
    return node;
  }

  function setLive(state, text) {
    const live = $("live");
    live.dataset.state = state;
    live.textContent = text;
  }

  function say(text, isError) {
    const message = $("message");
    message.textContent = text;
    message.classList.toggle("error", Boolean(isError));
    clearTimeout(say.timer);
    say.timer = setTimeout(() => { message.textContent = ""; }, 5000);
  }

  function ago(iso) {
    if (!iso) {
      return "";
    }
    const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (seconds < 60) {
      return Math.round(seconds) + " s ago";
    }
    if (seconds < 3600) {
      return Math.round(seconds / 60) + " min ago";
    }
    return new Date(iso).toLocaleString();
  }

  function badge(status) {
    return el("span", status, "badge " + status);
  }

  function fillBody(table, rows, columns, emptyText) {
    const body = table.querySelector("tbody");
    body.replaceChildren();
    if (rows.length === 0) {
      const row = el("tr");
      const cell = el("td", emptyText, "empty");
      cell.colSpan = columns;
      row.append(cell);
      body.append(row);
      return;
    }
    body.append(...rows);
  }

  // Key handling ------------------------------------------------------------

  function lock(error) {
    locked = true;
    clearTimeout(timer);
    setLive("locked", error.status === 401 ? "key needed" : "key refused");
    $("key-problem").textContent = error.status + " " + error.message;
    $("key-panel").hidden = false;
    $("key-input").focus();
  }

  function unlock() {
    locked = false;
    $("key-panel").hidden = true;
    $("key-problem").textContent = "";
    poll();
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("key-input").value.trim();
    if (value) {
      sessionStorage.setItem(KEY_STORAGE, value);
    }
    $("key-input").value = "";
    unlock();
  });

  $("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    say("key forgotten");
    unlock();
  });

  $("key-open").addEventListener("click", () => {
    $("key-panel").hidden = !$("key-panel").hidden;
  });

  // Drawing -----------------------------------------------------------------

  function drawTotals(stats) {
    $("total-workers").textContent = stats.workers;
    $("total-queued").textContent = stats.queued;
    $("total-running").textContent = stats.running;
    const finished = stats.throughput.buckets.reduce(
      (sum, b) => sum + b.succeeded + b.failed + b.cancelled, 0);
    $("total-finished").textContent = finished;
  }

  function drawNames(stats) {
    const rows = stats.task_names.map((entry) => {
      const row = el("tr");
      row.dataset.name = entry.name;
      row.append(
        el("td", entry.name, "mono"),
        el("td", entry.queued, "num"),
        el("td", entry.running, "num"),
        el("td", entry.pools, "num"),
        el("td", entry.idle_slots + " / " + entry.slots, "num"),
      );
      return row;
    });
    fillBody($("names"), rows, 5, "no task names announced");
  }

  function drawWorkers(workers) {
    const rows = workers.map((worker) => {
      const row = el("tr");
      row.dataset.workerId = worker.id;
      const pool = el("td");
      pool.append(el("div", worker.id, "mono"), el("small", worker.host + " pid " + worker.pid));
      const current = el("td");
      if (worker.current_tasks.length === 0) {
        current.append(el("span", worker.draining ? "draining" : "idle", "badge"));
      }
      for (const task of worker.current_tasks) {
        const link = el("button", task.name + " " + task.id.slice(0, 8), "quiet small current-task");
        link.dataset.taskId = task.id;
        link.addEventListener("click", () => select(task.id));
        current.append(link, " ");
      }
      row.append(
        pool,
        el("td", worker.processes, "num"),
        current,
        el("td", worker.tasks_done, "num"),
        el("td", ago(worker.last_heartbeat)),
      );
      return row;
    });
    fillBody($("workers"), rows, 5, "no live worker pools");
  }

  function progressCell(task) {
    const cell = el("td");
    const progress = task.progress;
    if (task.status === "running" && progress && progress.total) {
      const bar = el("progress");
      bar.max = progress.total;
      bar.value = progress.current;
      cell.append(bar, el("span", progress.current + "/" + progress.total, "progress-text"));
      if (progress.message) {
        bar.title = progress.message;
      }
    } else if (task.status === "succeeded") {
      cell.append(el("span", "done", "progress-text"));
    }
    return cell;
  }

  function cancelButton(task) {
    const button = el("button", "Cancel", "danger small cancel");
    button.disabled = FINAL.has(task.status);
    button.addEventListener("click", (event) => {
      event.stopPropagation();
      cancel(task.id);
    });
    return button;
  }

  function drawTasks(tasks) {
    const rows = tasks.map((task) => {
      const row = el("tr", null, "task");
      row.dataset.taskId = task.id;
      row.dataset.status = task.status;
      if (task.id === selectedId) {
        row.classList.add("selected");
      }
      const status = el("td");
      status.append(badge(task.status));
      const action = el("td");
      action.append(cancelButton(task));
      row.append(
        el("td", task.id.slice(0, 12), "mono"),
        el("td", task.name, "mono"),
        status,
        progressCell(task),
        el("td", ago(task.created_at)),
        action,
      );
      row.addEventListener("click", () => select(task.id));
      return row;
    });
    fillBody($("tasks"), rows, 6, "no tasks yet");
  }

  function svg(tag, attributes) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) {
      node.setAttribute(name, String(value));
    }
    return node;
  }

  function drawChart(throughput) {
    const chart = $("chart");
    const buckets = throughput.buckets;
    // Drawn in the element's own pixels, so that text is not stretched.
    const width = Math.max(300, Math.round(chart.getBoundingClientRect().width));
    const height = 150;
    chart.setAttribute("viewBox", "0 0 " + width + " " + height);
    const top = 12;
    const bottom = 18;
    const plot = height - top - bottom;
    const step = width / buckets.length;
    const peak = Math.max(1, ...buckets.map((b) => Math.max(
      b.submitted, b.succeeded + b.failed + b.cancelled)));
    const scale = (n) => (n / peak) * plot;

    chart.replaceChildren();
    chart.append(svg("line", { x1: 0, y1: top + plot, x2: width, y2: top + plot, class: "axis" }));
    buckets.forEach((bucket, index) => {
      let y = top + plot;
      for (const status of ["succeeded", "failed", "cancelled"]) {
        const h = scale(bucket[status]);
        if (h > 0) {
          y -= h;
          const bar = svg("rect", {
            x: index * step + 1, y: y, width: Math.max(1, step - 2), height: h, class: status,
          });
          const tip = svg("title", {});
          tip.textContent = bucket.start + ": " + bucket[status] + " " + status;
          bar.append(tip);
          chart.append(bar);
        }
      }
    });
    const points = buckets.map((b, i) =>
      (i * step + step / 2).toFixed(1) + "," + (top + plot - scale(b.submitted)).toFixed(1));
    chart.append(svg("polyline", { points: points.join(" "), class: "submitted" }));
    const label = (x, text, anchor) => {
      const node = svg("text", { x: x, y: height - 4, "text-anchor": anchor });
      node.textContent = text;
      chart.append(node);
    };
    label(0, Math.round(buckets.length * throughput.bucket_s / 60) + " min ago", "start");
    label(width, "now", "end");
    const peakLabel = svg("text", { x: 2, y: top - 2 });
    peakLabel.textContent = "max " + peak;
    chart.append(peakLabel);
  }

  // Task detail and cancel --------------------------------------------------

  async function select(taskId) {
    selectedId = taskId;
    $("detail").hidden = false;
    $("detail-id").textContent = taskId;
    for (const row of document.querySelectorAll("#tasks tr.task")) {
      row.classList.toggle("selected", row.dataset.taskId === taskId);
    }
    await refreshDetail();
  }

  async function refreshDetail() {
    if (!selectedId) {
      return;
    }
    const taskId = selectedId;
    try {
      const task = await api("/v1/tasks/" + encodeURIComponent(taskId));
      if (taskId !== selectedId) {
        return;
      }
      const status = $("detail-status");
      status.className = "badge " + task.status;
      status.textContent = task.status;
      $("detail-cancel").disabled = FINAL.has(task.status);
      $("detail-record").textContent = JSON.stringify(task, null, 2);
    } catch (error) {
      handle(error);
    }
  }

  async function cancel(taskId) {
    try {
      const task = await api("/v1/tasks/" + encodeURIComponent(taskId), { method: "DELETE" });
      say("task " + taskId.slice(0, 12) + " " + task.status);
    } catch (error) {
      handle(error);
    }
    await refresh();
  }

  $("detail-cancel").addEventListener("click", () => {
    if (selectedId) {
      cancel(selectedId);
    }
  });

  $("detail-close").addEventListener("click", () => {
    selectedId = null;
    $("detail").hidden = true;
    for (const row of document.querySelectorAll("#tasks tr.selected")) {
      row.classList.remove("selected");
    }
  });

  // The loop ----------------------------------------------------------------

  function handle(error) {
    if (error instanceof ProblemError && (error.status === 401 || error.status === 403)) {
      lock(error);
      return;
    }
    setLive("error", "error");
    say(error instanceof ProblemError ? error.status + " " + error.message : String(error), true);
  }

  async function refresh() {
    const [workers, stats, tasks] = await Promise.all([
      api("/v1/workers"),
      api("/v1/stats"),
      api("/v1/tasks?limit=20"),
    ]);
    drawTotals(stats);
    drawNames(stats);
    drawWorkers(workers.workers);
    drawTasks(tasks.tasks);
    drawChart(stats.throughput);
    await refreshDetail();
    setLive("live", "live · " + new Date().toLocaleTimeString());
  }

  async function poll() {
    clearTimeout(timer);
    try {
      await refresh();
    } catch (error) {
      handle(error);
    }
    if (!locked) {
      timer = setTimeout(poll, POLL_MS);
    }
  }

  poll();
})();
