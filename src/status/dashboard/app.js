// multijob dashboard: a one-page app over the read-only status API.
//
// Plain JS, no framework, no build step. Every string from the API reaches
// the page through textContent or an attribute set with setAttribute, never
// through HTML parsing (a unit test in dashboard.rs keeps it that way).
//
// Live updates: an EventSource on /api/v1/events (the SSE form) resumes
// after the newest event the page has seen; the browser reconnects it with
// Last-Event-ID. When the stream is not available (the server answers with
// something else than text/event-stream, or the browser has no
// EventSource), the page polls /api/v1/events?after=<id> every 2 s with
// fetch and the Authorization header, and tries the stream again every
// minute. Either way each event updates the page: the events tail grows,
// and the current page re-reads its data (throttled), so new runs appear
// and statuses change without a reload. A periodic full refresh (5/10/30/
// 60 s, kept in localStorage) is the safety net; Pause stops both.
//
// Auth: when the daemon has MULTIJOB_API_TOKEN, API calls answer 401; the
// page then asks for the token once, keeps it in localStorage and sends it
// as `Authorization: Bearer`. EventSource cannot send headers, so the
// stream URL carries it as `?access_token=`, which the daemon accepts on
// /api/v1/events only. A refused token asks again.
'use strict';

(() => {
  const API = '/api/v1';
  const LS_TOKEN = 'multijob.api_token';
  const LS_REFRESH = 'multijob.refresh_sec';
  const INTERVALS = [5, 10, 30, 60];
  const DEFAULT_INTERVAL = 10;
  const POLL_MS = 2000;
  const SSE_RETRY_MS = 60000;
  const VIEW_THROTTLE_MS = 1000;
  const EVENT_BUFFER = 500;
  const RUN_STATUSES = ['queued', 'awaiting_approval', 'running', 'succeeded', 'failed',
    'timed_out', 'cancelled', 'retrying'];
  // SSE events may be sent with `event: <type>`; EventSource only hands
  // named events to listeners registered for that name.
  const EVENT_TYPES = ['reconcile.applied', 'reconcile.rejected', 'job.created', 'job.updated',
    'job.deleted', 'job.enabled', 'job.disabled', 'job.cooldown', 'job.paused', 'job.resumed',
    'job.failure_memory_reset', 'job.backfill', 'run.queued', 'run.started',
    'run.completed', 'run.failed', 'run.retrying', 'run.timed_out', 'run.cancelled',
    'approval.requested', 'approval.approved', 'approval.rejected', 'approval.failed',
    'trigger.rejected', 'follow_up.refused', 'scheduler.pressure_on', 'scheduler.pressure_off',
    ...['overlap', 'flow_limit', 'pressure', 'cooldown', 'approval', 'tick_limit', 'missed', 'paused']
      .map((r) => 'scheduler.dispatch_skipped_' + r)];

  // ---------------------------------------------------------------- DOM

  /** An element: h('td', {class: 'x', title: t}, 'text', child, [more]). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function setAttrs(el, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'on') {
        for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
      } else if (k === 'dataset') {
        for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = String(dv);
      } else if (k === 'text') {
        el.textContent = String(v);
      } else {
        el.setAttribute(k, v === true ? '' : String(v));
      }
    }
  }

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    append(el, children);
    return el;
  }

  const $ = (sel) => document.querySelector(sel);

  // ------------------------------------------------------------ format

  function parseTs(ts) {
    const t = Date.parse(ts);
    return Number.isNaN(t) ? null : t;
  }

  function relText(ts) {
    const t = parseTs(ts);
    if (t === null) return '—';
    const d = (t - Date.now()) / 1000;
    const a = Math.abs(d);
    let txt;
    if (a < 1.5) return 'now';
    if (a < 60) txt = Math.round(a) + ' s';
    else if (a < 3600) txt = Math.round(a / 60) + ' min';
    else if (a < 86400 * 2) txt = (a / 3600).toFixed(a < 36000 ? 1 : 0) + ' h';
    else txt = Math.round(a / 86400) + ' d';
    return d < 0 ? txt + ' ago' : 'in ' + txt;
  }

  /** A relative time, with the RFC 3339 time in its tooltip; kept fresh by the ticker. */
  function time(ts) {
    if (!ts) return h('span', {class: 'muted'}, '—');
    return h('time', {datetime: ts, title: ts, dataset: {ts}}, relText(ts));
  }

  function duration(ms) {
    if (ms === null || ms === undefined) return '—';
    if (ms < 1000) return Math.round(ms) + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
    const m = Math.floor(ms / 60000);
    const sec = Math.round((ms % 60000) / 1000);
    return m < 60 ? `${m} min ${sec} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  function uptime(sec) {
    if (sec < 60) return sec + ' s';
    if (sec < 3600) return Math.floor(sec / 60) + ' min';
    if (sec < 86400) return `${Math.floor(sec / 3600)} h ${Math.floor((sec % 3600) / 60)} min`;
    return `${Math.floor(sec / 86400)} d ${Math.floor((sec % 86400) / 3600)} h`;
  }

  function between(a, b) {
    const x = parseTs(a);
    const y = parseTs(b);
    return x === null || y === null ? null : y - x;
  }

  function badge(status) {
    const st = status || 'unknown';
    return h('span', {class: 'badge st-' + st.replace(/[^a-z_]/g, '')}, st.replace(/_/g, ' '));
  }

  function json(v) {
    return JSON.stringify(v, null, 2);
  }

  function compact(v, max) {
    let t = typeof v === 'string' ? v : JSON.stringify(v);
    if (t === undefined) t = '';
    return t.length > max ? t.slice(0, max - 1) + '…' : t;
  }

  function shortId(id) {
    return id && id.length > 13 ? id.slice(0, 8) + '…' + id.slice(-4) : id || '';
  }

  function link(href, text, attrs) {
    return h('a', Object.assign({href}, attrs || {}), text);
  }

  const jobHref = (id) => '#/jobs/' + encodeURIComponent(id);
  const runHref = (id) => '#/runs/' + encodeURIComponent(id);

  function pre(v) {
    return h('pre', {class: 'json'}, typeof v === 'string' ? v : json(v));
  }

  function kv(pairs) {
    const dl = h('dl', {class: 'kv'});
    for (const [k, v] of pairs) {
      if (v === undefined) continue;
      dl.appendChild(h('dt', null, k));
      dl.appendChild(h('dd', null, v === null || v === '' ? h('span', {class: 'muted'}, '—') : v));
    }
    return dl;
  }

  function card(title, ...body) {
    return h('section', {class: 'card'}, title ? h('h2', null, title) : null, body);
  }

  function empty(text) {
    return h('p', {class: 'empty'}, text);
  }

  /**
   * A table: cols = [{label, cell: (row) => node|string, class?}], opts.rowAttrs(row),
   * opts.href(row) makes the whole row a link to that hash.
   */
  function table(cols, rows, opts) {
    const o = opts || {};
    const thead = h('thead', null, h('tr', null, cols.map((c) => h('th', {class: c.class}, c.label))));
    const tbody = h('tbody');
    for (const row of rows) {
      const tr = h('tr', o.rowAttrs ? o.rowAttrs(row) : null);
      if (o.href) {
        const href = o.href(row);
        tr.classList.add('clickable');
        tr.addEventListener('click', (e) => {
          if (e.target.closest('a, button, summary, pre') || window.getSelection().toString()) return;
          location.hash = href;
        });
      }
      for (const c of cols) tr.appendChild(h('td', {class: c.class}, c.cell(row)));
      tbody.appendChild(tr);
    }
    const t = h('table', {class: 'data'}, thead, tbody);
    return h('div', {class: 'table-wrap'}, t, rows.length ? null : empty(o.empty || 'Nothing here yet.'));
  }

  function fileLine(file, line, column) {
    if (!file) return h('span', {class: 'muted'}, '—');
    return h('code', {class: 'file'}, file + (line ? ':' + line + (column ? ':' + column : '') : ''));
  }

  /** Config diagnostics, one per line: file:line:col [code] kind id: message. */
  function diagnostics(errors) {
    const ul = h('ul', {class: 'diagnostics'});
    for (const e of errors || []) {
      if (typeof e === 'string') {
        ul.appendChild(h('li', null, e));
        continue;
      }
      ul.appendChild(h('li', null,
        fileLine(e.file, e.line, e.column), ' ',
        e.code ? h('span', {class: 'tag'}, e.code) : null, ' ',
        e.kind || e.id ? h('span', {class: 'muted'}, [e.kind, e.id].filter(Boolean).join(' ') + ': ') : null,
        e.message || compact(e, 300)));
    }
    return ul;
  }

  // --------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  const auth = {
    token: localStorage.getItem(LS_TOKEN) || '',
    prompt: null,
  };

  /** GET an API path as JSON; on 401 ask for the token and try again. */
  async function api(path) {
    for (;;) {
      const sent = auth.token;
      const headers = {Accept: 'application/json'};
      if (sent) headers.Authorization = 'Bearer ' + sent;
      let res;
      try {
        res = await fetch(API + path, {headers, cache: 'no-store'});
      } catch (e) {
        connection.set('offline');
        throw new ApiError(0, 'The daemon is not reachable (' + e.message + ').');
      }
      if (res.status === 401) {
        if (auth.token !== sent) continue; // someone already entered a new one
        await askToken(sent
          ? 'The daemon refused that token. Enter the right one.'
          : 'This daemon requires an API token.');
        continue;
      }
      let body = null;
      try {
        body = await res.json();
      } catch (_) {
        body = null;
      }
      if (!res.ok) {
        throw new ApiError(res.status, (body && body.error) || res.status + ' ' + res.statusText);
      }
      if (connection.mode === 'offline') connection.set(live.mode);
      return body;
    }
  }

  /** All pages of a list endpoint (bounded). */
  async function apiAll(path, maxPages) {
    const items = [];
    let cursor = null;
    for (let i = 0; i < (maxPages || 10); i++) {
      const sep = path.includes('?') ? '&' : '?';
      const page = await api(path + (cursor === null ? '' : sep + 'cursor=' + encodeURIComponent(cursor)));
      items.push(...(page.items || []));
      if (page.next_cursor === null || page.next_cursor === undefined) break;
      cursor = page.next_cursor;
    }
    return items;
  }

  function askToken(message) {
    if (!auth.prompt) {
      auth.prompt = new Promise((resolve) => {
        const dialog = $('#token-dialog');
        const input = $('#token-input');
        $('#token-message').textContent = message;
        input.value = '';
        dialog.classList.remove('hidden');
        input.focus();
        const form = $('#token-form');
        const submit = (e) => {
          e.preventDefault();
          const token = input.value.trim();
          if (!token) return;
          form.removeEventListener('submit', submit);
          dialog.classList.add('hidden');
          auth.token = token;
          localStorage.setItem(LS_TOKEN, token);
          auth.prompt = null;
          updateTokenButton();
          resolve();
          live.restart();
        };
        form.addEventListener('submit', submit);
      });
    }
    return auth.prompt;
  }

  function updateTokenButton() {
    $('#forget-token').classList.toggle('hidden', !auth.token);
  }

  // --------------------------------------------------------- connection

  const connection = {
    mode: 'connecting',
    set(mode) {
      this.mode = mode;
      const el = $('#conn');
      const shown = settings.paused ? 'paused' : mode;
      const text = {
        sse: 'live',
        polling: 'live (polling)',
        connecting: 'connecting',
        offline: 'offline',
        paused: 'paused',
      }[shown] || shown;
      el.textContent = text;
      el.className = 'pill conn-' + shown;
      el.title = {
        sse: 'Following the server-sent event stream',
        polling: 'The event stream is unavailable: polling for new events every 2 s',
        offline: 'The daemon does not answer',
        paused: 'Live updates and periodic refresh are paused',
      }[shown] || 'Connecting to the event stream';
      document.body.dataset.live = mode;
    },
  };

  // --------------------------------------------------------------- live

  /** The newest events, oldest first, for the events page. */
  const eventLog = [];

  const live = {
    mode: 'connecting',
    lastId: null,
    es: null,
    pollTimer: null,
    sseRetry: null,
    polling: false,

    async start() {
      if (this.lastId === null) {
        try {
          await loadEventTail();
        } catch (e) {
          showBanner(e.message);
          setTimeout(() => this.start(), POLL_MS * 2);
          return;
        }
      }
      this.connectSse();
    },

    restart() {
      // Before the tail is known, start() is still on its way to connect.
      if (this.lastId === null) return;
      this.stopSse();
      this.stopPolling();
      this.connectSse();
    },

    setMode(mode) {
      this.mode = mode;
      connection.set(mode);
    },

    connectSse() {
      this.stopSse();
      if (!window.EventSource) {
        this.startPolling();
        return;
      }
      let url = API + '/events?after=' + encodeURIComponent(this.lastId || 0);
      if (auth.token) url += '&access_token=' + encodeURIComponent(auth.token);
      const es = new EventSource(url);
      this.es = es;
      const onMessage = (m) => {
        let ev;
        try {
          ev = JSON.parse(m.data);
        } catch (_) {
          return;
        }
        if (ev && typeof ev.id !== 'number' && m.lastEventId) ev.id = Number(m.lastEventId);
        if (ev && typeof ev.id === 'number') receive([ev]);
      };
      es.onopen = () => {
        this.stopPolling();
        this.setMode('sse');
      };
      es.onmessage = onMessage;
      for (const t of EVENT_TYPES) es.addEventListener(t, onMessage);
      // Too far behind: the server skipped ahead; re-read what the page shows.
      es.addEventListener('lagged', () => refreshView(true));
      es.onerror = () => {
        if (es.readyState === EventSource.CLOSED) {
          // Not a stream (no SSE on this server, or 401): poll instead.
          this.stopSse();
          this.startPolling();
        } else if (this.mode === 'sse') {
          // The browser reconnects by itself, with Last-Event-ID.
          this.setMode('connecting');
        }
      };
    },

    stopSse() {
      if (this.es) {
        this.es.onerror = null;
        this.es.close();
        this.es = null;
      }
      clearTimeout(this.sseRetry);
      this.sseRetry = null;
    },

    startPolling() {
      if (!this.polling) {
        this.polling = true;
        this.setMode('polling');
        this.poll();
      }
      if (window.EventSource && !this.sseRetry) {
        this.sseRetry = setTimeout(() => {
          this.sseRetry = null;
          this.connectSse();
        }, SSE_RETRY_MS);
      }
    },

    stopPolling() {
      this.polling = false;
      clearTimeout(this.pollTimer);
      this.pollTimer = null;
    },

    async poll() {
      clearTimeout(this.pollTimer);
      if (!this.polling) return;
      let more = false;
      try {
        const page = await api('/events?limit=1000&after=' + (this.lastId || 0));
        if (!this.polling) return;
        receive(page.items || []);
        more = page.next_cursor !== null && page.next_cursor !== undefined;
        if (this.mode !== 'polling') this.setMode('polling');
      } catch (e) {
        if (e.status !== 0) showBanner('Reading events: ' + e.message);
      }
      if (this.polling) this.pollTimer = setTimeout(() => this.poll(), more ? 0 : POLL_MS);
    },
  };

  /**
   * The events API lists forward from a cursor. To open at the tail of a
   * long history, find the newest id with one-item probes (exponential,
   * then binary search: about 2·log2(n) tiny requests), then read the last
   * few hundred. A short history is one request.
   */
  async function loadEventTail() {
    const first = await api('/events?limit=' + EVENT_BUFFER + '&after=0');
    const items = first.items || [];
    if (first.next_cursor === null || first.next_cursor === undefined || !items.length) {
      live.lastId = 0;
      receive(items, true);
      return;
    }
    const next = async (after) => {
      const r = await api('/events?limit=1&after=' + after);
      return r.items && r.items.length ? r.items[0].id : null;
    };
    let lo = items[items.length - 1].id;
    let step = 256;
    let hi;
    for (;;) {
      const r = await next(lo + step - 1);
      if (r === null) {
        hi = lo + step;
        break;
      }
      lo = r;
      step *= 2;
    }
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      const r = await next(mid - 1);
      if (r !== null && r < hi) lo = r;
      else hi = mid;
    }
    const page = await api('/events?limit=' + EVENT_BUFFER + '&after=' + Math.max(0, lo - EVENT_BUFFER));
    live.lastId = Math.max(0, lo - EVENT_BUFFER);
    receive(page.items || [], true);
    if (live.lastId < lo) live.lastId = lo;
  }

  /** New events, in id order: remember them and tell the current page. */
  function receive(events, initial) {
    const fresh = [];
    for (const ev of events) {
      if (live.lastId !== null && ev.id <= live.lastId) continue;
      live.lastId = ev.id;
      eventLog.push(ev);
      fresh.push(ev);
    }
    if (eventLog.length > EVENT_BUFFER) eventLog.splice(0, eventLog.length - EVENT_BUFFER);
    if (initial || !fresh.length || !current || settings.paused) return;
    if (current.ctl.onEvents) current.ctl.onEvents(fresh);
    const wants = current.ctl.wants || defaultWants;
    if (fresh.some(wants)) scheduleViewRefresh();
  }

  function defaultWants(ev) {
    return /^(run|job|reconcile|approval|trigger)\.|^scheduler\.pressure/.test(ev.type);
  }

  // ------------------------------------------------------ refresh cycle

  const settings = {
    interval: (() => {
      const v = Number(localStorage.getItem(LS_REFRESH));
      return INTERVALS.includes(v) ? v : DEFAULT_INTERVAL;
    })(),
    paused: false,
  };

  let current = null; // {name, route, ctl, ctx, refreshing, again}
  let throttle = null;
  let periodic = null;
  let lastUpdated = null;

  /** At most one live refresh per page's throttle (the overview reads 1000 runs: every 3 s). */
  function scheduleViewRefresh() {
    if (throttle || document.visibilityState === 'hidden') return;
    throttle = setTimeout(() => {
      throttle = null;
      refreshView(false);
    }, (current && current.ctl.throttle) || VIEW_THROTTLE_MS);
  }

  /** Re-read the current page's data. One at a time per page; a request during one runs after it. */
  async function refreshView(full) {
    const view = current;
    if (!view) return;
    if (view.refreshing) {
      view.again = view.again || (full ? 'full' : 'live');
      return view.refreshing;
    }
    view.refreshing = (async () => {
      try {
        await view.ctl.refresh(Boolean(full));
        if (view === current) {
          hideBanner();
          lastUpdated = new Date().toISOString();
          renderUpdated();
        }
      } catch (e) {
        if (view === current) showBanner(e.message);
      }
    })();
    await view.refreshing;
    view.refreshing = null;
    if (view.again && view === current) {
      const again = view.again;
      view.again = null;
      return refreshView(again === 'full');
    }
  }

  function restartPeriodic() {
    clearInterval(periodic);
    periodic = setInterval(() => {
      if (!settings.paused && document.visibilityState !== 'hidden') refreshView(true);
    }, settings.interval * 1000);
  }

  function renderUpdated() {
    const el = $('#updated');
    if (!lastUpdated) {
      el.textContent = '';
      return;
    }
    el.textContent = 'updated ' + relText(lastUpdated);
    el.title = lastUpdated;
  }

  function showBanner(text) {
    const b = $('#banner');
    b.textContent = text;
    b.classList.remove('hidden');
  }

  function hideBanner() {
    $('#banner').classList.add('hidden');
  }

  // ------------------------------------------------------------ router

  function parseRoute() {
    const raw = location.hash.replace(/^#\/?/, '');
    const [path, query] = raw.split('?');
    const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    return {page: parts[0] || 'overview', id: parts[1] || null, query: new URLSearchParams(query || '')};
  }

  function navigate() {
    const route = parseRoute();
    const page = pages[route.page] ? route.page : 'overview';
    if (current) current.ctx.alive = false;
    const root = $('#view');
    root.replaceChildren();
    const ctx = {alive: true};
    const ctl = pages[page](root, route, ctx);
    current = {name: page, route, ctl, ctx, refreshing: null, again: null};
    $('#page-title').textContent = ctl.title;
    document.title = ctl.title + ' · multijob';
    for (const a of document.querySelectorAll('#nav a')) {
      a.classList.toggle('active', a.dataset.page === page);
      if (a.dataset.page === page) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    hideBanner();
    refreshView(true);
  }

  /** A page's data area: replaced whole on each refresh, its controls kept. */
  function slot(root) {
    const el = h('div', {class: 'slot'});
    root.appendChild(el);
    return el;
  }

  /**
   * Replace a slot's content, keeping where the reader was: each table's
   * scroll position and which <details> are open (when the shape is the same).
   */
  function swap(el, ...nodes) {
    const scrolls = Array.from(el.querySelectorAll('.table-wrap'), (w) => [w.scrollTop, w.scrollLeft]);
    const open = Array.from(el.querySelectorAll('details'), (d) => d.open);
    el.replaceChildren(...nodes);
    el.querySelectorAll('.table-wrap').forEach((w, i) => {
      if (!scrolls[i]) return;
      w.scrollTop = scrolls[i][0];
      w.scrollLeft = scrolls[i][1];
    });
    const details = el.querySelectorAll('details');
    if (details.length === open.length) details.forEach((d, i) => { d.open = open[i]; });
  }

  // ------------------------------------------------------------- pages

  const pages = {
    overview(root, route, ctx) {
      const body = slot(root);
      return {
        title: 'Overview',
        throttle: 3000,
        async refresh() {
          const [st, runs] = await Promise.all([api('/status'), api('/runs?limit=1000')]);
          if (!ctx.alive) return;
          swap(body, overview(st, runs.items || []));
        },
      };
    },

    jobs(root, route, ctx) {
      if (route.id) return jobDetail(root, route.id, ctx);
      let rows = [];
      const filter = h('input', {type: 'search', placeholder: 'Filter by id, type, lane…', 'aria-label': 'Filter jobs'});
      const body = slot(root);
      const render = () => {
        const q = filter.value.trim().toLowerCase();
        const shown = q ? rows.filter((j) => [j.id, j.type, j.flow || '', (j.spec && j.spec.description) || '']
          .some((x) => x.toLowerCase().includes(q))) : rows;
        swap(body, jobsTable(shown));
      };
      filter.addEventListener('input', render);
      root.insertBefore(h('div', {class: 'toolbar'}, filter), body);
      return {
        title: 'Jobs',
        async refresh() {
          const items = await apiAll('/jobs?limit=1000');
          if (!ctx.alive) return;
          rows = items;
          render();
        },
      };
    },

    runs(root, route, ctx) {
      if (route.id) return runDetail(root, route.id, ctx);
      let limit = 100;
      const jobSel = h('select', {'aria-label': 'Job', id: 'filter-job'}, h('option', {value: ''}, 'all jobs'));
      const statusSel = h('select', {'aria-label': 'Status', id: 'filter-status'}, h('option', {value: ''}, 'any status'),
        RUN_STATUSES.map((st) => h('option', {value: st}, st.replace(/_/g, ' '))));
      const want = {job: route.query.get('job') || '', status: route.query.get('status') || ''};
      statusSel.value = want.status;
      const body = slot(root);
      const more = h('button', {type: 'button', class: 'hidden'}, 'Show older runs');
      const onChange = () => {
        const q = new URLSearchParams();
        if (jobSel.value) q.set('job', jobSel.value);
        if (statusSel.value) q.set('status', statusSel.value);
        const qs = q.toString();
        history.replaceState(null, '', '#/runs' + (qs ? '?' + qs : ''));
        limit = 100;
        refreshView(false);
      };
      jobSel.addEventListener('change', onChange);
      statusSel.addEventListener('change', onChange);
      more.addEventListener('click', () => {
        limit = Math.min(1000, limit + 100);
        refreshView(false);
      });
      root.insertBefore(h('div', {class: 'toolbar'}, h('label', null, 'Job ', jobSel), h('label', null, 'Status ', statusSel)), body);
      root.appendChild(h('div', {class: 'more'}, more));
      let jobsLoaded = false;
      return {
        title: 'Runs',
        async refresh() {
          if (!jobsLoaded) {
            const jobs = await apiAll('/jobs?limit=1000');
            const ids = jobs.map((j) => j.id);
            if (want.job && !ids.includes(want.job)) ids.push(want.job);
            for (const id of ids) jobSel.appendChild(h('option', {value: id}, id));
            jobSel.value = want.job;
            jobsLoaded = true;
          }
          const q = new URLSearchParams({limit: String(limit)});
          if (jobSel.value) q.set('job', jobSel.value);
          if (statusSel.value) q.set('status', statusSel.value);
          const page = await api('/runs?' + q);
          if (!ctx.alive) return;
          swap(body, runsTable(page.items || [], {showJob: true}));
          more.classList.toggle('hidden', page.next_cursor === null || page.next_cursor === undefined || limit >= 1000);
        },
      };
    },

    events(root, route, ctx) {
      const typeIn = h('input', {type: 'search', placeholder: 'type, e.g. run.* or run.failed', 'aria-label': 'Event type'});
      const jobIn = h('input', {type: 'search', placeholder: 'job id', 'aria-label': 'Job'});
      typeIn.value = route.query.get('type') || '';
      jobIn.value = route.query.get('job') || '';
      const count = h('span', {class: 'muted'});
      const body = slot(root);
      root.insertBefore(h('div', {class: 'toolbar'}, typeIn, jobIn, count), body);
      const matches = (ev) => {
        const t = typeIn.value.trim();
        const j = jobIn.value.trim();
        if (t && (t.endsWith('*') ? !ev.type.startsWith(t.slice(0, -1)) : ev.type !== t)) return false;
        return !j || ev.job_id === j;
      };
      let tbody = null;
      const render = () => {
        const shown = eventLog.filter(matches).reverse();
        const wrap = eventsTable(shown);
        tbody = wrap.querySelector('tbody');
        swap(body, wrap);
        count.textContent = `${shown.length} of the last ${eventLog.length} events`;
      };
      typeIn.addEventListener('input', render);
      jobIn.addEventListener('input', render);
      return {
        title: 'Events',
        wants: () => false,
        onEvents(evs) {
          if (!ctx.alive || !tbody) return;
          const add = evs.filter(matches);
          if (!add.length) return;
          if (!tbody.firstChild) {
            render();
            return;
          }
          for (const ev of add) {
            const row = eventRow(ev);
            row.classList.add('fresh');
            tbody.insertBefore(row, tbody.firstChild);
          }
          while (tbody.children.length > EVENT_BUFFER) tbody.lastChild.remove();
          count.textContent = `${tbody.children.length} of the last ${eventLog.length} events`;
        },
        async refresh(full) {
          if (live.lastId === null) await waitForTail(ctx);
          if (!ctx.alive) return;
          if (full || !tbody) render();
        },
      };
    },

    flows(root, route, ctx) {
      const body = slot(root);
      return {
        title: 'Flows',
        async refresh() {
          const [items, jobs] = await Promise.all([apiAll('/flows'), apiAll('/jobs?limit=1000')]);
          if (!ctx.alive) return;
          const byFlow = {};
          for (const j of jobs) if (j.flow) (byFlow[j.flow] = byFlow[j.flow] || []).push(j.id);
          swap(body, table([
            {label: 'Flow', cell: (f) => h('strong', null, f.id)},
            {label: 'Description', cell: (f) => f.spec.description || ''},
            {label: 'Priority', cell: (f) => f.spec.priority || 'normal'},
            {label: 'Active runs', class: 'num', cell: (f) => String(f.active_runs)},
            {label: 'Max active', class: 'num', cell: (f) => f.spec.max_active_runs === undefined ? '∞' : String(f.spec.max_active_runs)},
            {label: 'Load', cell: (f) => meter(f.active_runs, f.spec.max_active_runs)},
            {label: 'Jobs', cell: (f) => (byFlow[f.id] || []).length
              ? (byFlow[f.id]).map((id, i) => [i ? ', ' : '', link(jobHref(id), id)])
              : h('span', {class: 'muted'}, 'none')},
            {label: 'Source', cell: (f) => fileLine(f.file, f.line)},
          ], items, {empty: 'No flows (lanes) are defined.', rowAttrs: (f) => ({dataset: {flowId: f.id}})}));
        },
      };
    },

    connectors(root, route, ctx) {
      const body = slot(root);
      return {
        title: 'Connectors',
        wants: (ev) => ev.type === 'reconcile.applied',
        async refresh() {
          const items = await apiAll('/connectors');
          if (!ctx.alive) return;
          swap(body, table([
            {label: 'Connector', cell: (c) => h('strong', null, c.id)},
            {label: 'Provider', cell: (c) => c.spec.provider || ''},
            {label: 'Endpoint', cell: (c) => c.spec.base_url ? h('code', null, c.spec.base_url)
              : c.spec.command ? h('code', null, c.spec.command.join(' '))
              : h('span', {class: 'muted'}, '—')},
            {label: 'Secrets', cell: (c) => [
              ...Object.keys(c.spec.secrets || {}),
              ...Object.keys(c.spec.env || {}).map((k) => 'env.' + k),
              ...Object.keys(c.spec.headers || {}).map((k) => 'headers.' + k),
              ...(c.spec.token ? ['token'] : []),
            ].map((k) => h('span', {class: 'tag'}, k + ': ***'))},
            {label: 'Spec', cell: (c) => h('details', {class: 'toggle'}, h('summary', null, 'show'), pre(c.spec))},
            {label: 'Source', cell: (c) => fileLine(c.file, c.line)},
          ], items, {empty: 'No connectors are defined.'}));
        },
      };
    },

    skills(root, route, ctx) {
      const body = slot(root);
      return {
        title: 'Skills',
        wants: (ev) => ev.type === 'reconcile.applied',
        async refresh() {
          const items = await apiAll('/skills');
          if (!ctx.alive) return;
          swap(body, table([
            {label: 'Skill', cell: (k) => h('strong', null, k.id)},
            {label: 'Description', cell: (k) => k.spec.description || ''},
            {label: 'Tags', cell: (k) => (k.spec.tags || []).map((t) => h('span', {class: 'tag'}, t))},
            {label: 'Steps', cell: (k) => (k.spec.steps || []).map((st) => st.id).join(' → ')},
            {label: 'Flags', cell: (k) => [k.spec.requires_approval ? h('span', {class: 'tag warn'}, 'requires approval') : null,
              k.spec.sensitive ? h('span', {class: 'tag warn'}, 'sensitive') : null]},
            {label: 'Spec', cell: (k) => h('details', {class: 'toggle'}, h('summary', null, 'show'), pre(k.spec))},
            {label: 'Source', cell: (k) => fileLine(k.file, k.line)},
          ], items, {empty: 'No skills are defined.'}));
        },
      };
    },

    triggers(root, route, ctx) {
      const body = slot(root);
      return {
        title: 'Triggers',
        wants: (ev) => ev.type === 'reconcile.applied',
        async refresh() {
          const items = await apiAll('/triggers');
          if (!ctx.alive) return;
          swap(body,
            h('p', {class: 'note'}, 'Inbound requests to these paths reach the inbound listener (run --inbound-listen), not this page\'s API. Secrets show as their references.'),
            table([
              {label: 'Trigger', cell: (t) => h('strong', null, t.id)},
              {label: 'Path', cell: (t) => h('code', null, 'POST ' + t.url_path)},
              {label: 'Source', cell: (t) => h('span', {class: 'tag'}, t.source)},
              {label: 'Runs', cell: (t) => t.job ? ['job ', link(jobHref(t.job), t.job)]
                : t.action ? h('span', {class: 'muted'}, t.action === 'sync' ? 'no run: a git fetch (action: sync)' : 'action ' + t.action)
                : ['skill ', link('#/skills', t.skill || '')]},
              {label: 'Rate limit', cell: (t) => t.rate_limit ? `${t.rate_limit.per_minute}/min, burst ${t.rate_limit.burst}` : h('span', {class: 'muted'}, 'none')},
              {label: 'Flags', cell: (t) => [t.enabled ? null : h('span', {class: 'tag warn'}, 'disabled'),
                t.requires_approval ? h('span', {class: 'tag warn'}, 'requires approval') : null]},
              {label: 'Spec', cell: (t) => h('details', {class: 'toggle'}, h('summary', null, 'show'), pre(t.spec))},
              {label: 'Source file', cell: (t) => fileLine(t.file, t.line)},
            ], items, {empty: 'No triggers are defined.', rowAttrs: (t) => ({dataset: {triggerId: t.id}})}));
        },
      };
    },

    workers(root, route, ctx) {
      const body = slot(root);
      return {
        title: 'Workers',
        // Heartbeats are no events; runs starting and ending change
        // the busy counts.
        wants: (ev) => /^run\./.test(ev.type),
        async refresh() {
          const items = await apiAll('/workers');
          if (!ctx.alive) return;
          swap(body,
            h('p', {class: 'note'}, 'Live worker processes (a heartbeat within 5 s). A job with worker_group runs only on a worker of its group: start one with ', h('code', null, 'multijob worker --group NAME'), '.'),
            table([
              {label: 'Worker', cell: (w) => h('strong', null, w.id)},
              {label: 'Groups', cell: (w) => w.groups.length
                ? w.groups.map((g) => h('span', {class: 'tag'}, g === '*' ? 'every group' : g))
                : h('span', {class: 'muted'}, 'ungrouped only')},
              {label: 'Busy', cell: (w) => w.busy === undefined ? `? / ${w.slots}` : [`${w.busy} / ${w.slots} `, meter(w.busy, w.slots)]},
              {label: 'Last heartbeat', cell: (w) => time(w.last_heartbeat)},
              {label: 'Version', cell: (w) => w.version || h('span', {class: 'muted'}, 'earlier')},
            ], items, {empty: 'No live workers: runs wait in the queue until one joins.', rowAttrs: (w) => ({dataset: {workerId: w.id}})}));
        },
      };
    },

    approvals(root, route, ctx) {
      const body = slot(root);
      return {
        title: 'Approvals',
        wants: (ev) => /^(approval|run)\./.test(ev.type),
        async refresh() {
          const items = await apiAll('/approvals');
          if (!ctx.alive) return;
          // Pending first; the API's order (newest first) within each group.
          items.sort((a, b) => (b.status === 'pending') - (a.status === 'pending'));
          swap(body,
            h('p', {class: 'note'}, 'This page is read-only. Decide an approval with the CLI, on a machine that reaches the same state store.'),
            table([
              {label: 'Status', cell: (a) => badge(a.status)},
              {label: 'Job', cell: (a) => link(jobHref(a.job_id), a.job_id)},
              {label: 'Run', cell: (a) => link(runHref(a.run_id), shortId(a.run_id), {title: a.run_id, class: 'mono'})},
              {label: 'Step', cell: (a) => a.step_id || h('span', {class: 'muted'}, 'requires_approval')},
              {label: 'Reason', cell: (a) => a.reason || ''},
              {label: 'Requested', cell: (a) => time(a.requested_at)},
              {label: 'Decided', cell: (a) => a.decided_at ? [time(a.decided_at), a.decided_by ? ' by ' + a.decided_by : '',
                a.note ? h('div', {class: 'muted approval-note'}, a.note) : null] : '—'},
              {label: 'Decide with', cell: (a) => a.status === 'pending'
                ? h('div', {class: 'cmds'}, command('multijob approvals approve ' + a.id), command('multijob approvals reject ' + a.id))
                : h('code', {class: 'muted'}, a.id)},
            ], items, {empty: 'No approvals yet.', rowAttrs: (a) => ({dataset: {approvalId: a.id}})}));
        },
      };
    },

    revisions(root, route, ctx) {
      const planSlot = slot(root);
      const histSlot = slot(root);
      let planLoaded = false;
      return {
        title: 'Revisions',
        wants: (ev) => /^reconcile\./.test(ev.type),
        async refresh(full) {
          // The plan re-reads the directory: only on full refreshes.
          const [plan, revs] = await Promise.all([
            full || !planLoaded ? api('/plan') : Promise.resolve(null),
            apiAll('/revisions?limit=100', 2),
          ]);
          if (!ctx.alive) return;
          if (plan) {
            swap(planSlot, planCard(plan));
            planLoaded = true;
          }
          swap(histSlot, card('History', revisionsTable(revs)));
        },
      };
    },
  };

  // ----------------------------------------------------------- overview

  function overview(st, runs) {
    const lr = st.last_reconcile;
    const git = st.git;
    const counts = st.counts || {};
    const workers = st.workers || {busy: 0, total: 0};
    const sched = st.scheduler || {};
    const late = sched.lateness || {};
    const skipped = Object.entries(sched.skipped || {});
    const grid = h('div', {class: 'grid'},
      card('Revision', kv([
        ['Applied', st.revision ? h('code', {id: 'revision'}, st.revision) : h('span', {class: 'muted'}, 'none yet')],
        ['Git', git ? h('span', null, h('code', null, String(git.commit).slice(0, 12)), git.dirty ? h('span', {class: 'tag warn'}, 'dirty') : null)
          : h('span', {class: 'muted'}, 'not a git checkout')],
        ['Applied at', time(st.applied_at)],
        ['Directory', h('code', null, st.dir || '')],
      ])),
      card('Last reconcile', lr ? [
        h('div', {class: 'headline'}, badge(lr.result), ' ', time(lr.at), h('span', {class: 'muted'}, ` · ${lr.cause || ''} · ${duration(lr.duration_ms)}`)),
        lr.errors && lr.errors.length
          ? [h('p', {class: 'bad'}, `${lr.errors.length} error${lr.errors.length > 1 ? 's' : ''}; ${st.revision ? 'the last good revision keeps running' : 'no revision applied yet: nothing runs until they are fixed'}:`), diagnostics(lr.errors)]
          : h('p', {class: 'muted'}, lr.warnings ? `${lr.warnings} warning(s), no errors` : 'No errors.'),
      ] : empty('No reconcile yet.')),
      card('Resources', kv([
        ['Jobs', link('#/jobs', `${counts.jobs || 0} (${counts.enabled_jobs || 0} enabled)`)],
        ['Flows', link('#/flows', String(counts.flows || 0))],
        ['Connectors', link('#/connectors', String(counts.connectors || 0))],
        ['Skills', link('#/skills', String(counts.skills || 0))],
        ['Triggers', link('#/triggers', String(counts.triggers || 0))],
      ])),
      card('Queue', kv([
        ['Waiting', h('span', {class: 'big'}, String(st.queue_depth))],
        ['Running', h('span', {class: 'big'}, String(st.running))],
        ['Pressure mode', st.pressure_mode ? h('span', {class: 'badge st-failed'}, 'on: only critical dispatches') : h('span', {class: 'badge st-succeeded'}, 'off')],
        ['Since start', `${(st.runs_since_start || {}).started || 0} started, ${(st.runs_since_start || {}).finished || 0} finished`],
      ])),
      card('Workers', kv([
        ['Busy', h('span', {class: 'big'}, `${workers.busy} / ${workers.total}`)],
        ['', meter(workers.busy, workers.total)],
        ['Store', h('code', null, st.store || '')],
        ['Up', uptime(st.uptime_sec || 0)],
      ])),
      card('Scheduler', kv([
        ['Dispatched', String(sched.dispatched || 0)],
        ['Lateness', late.count ? `p50 ${late.p50_ms} ms · p99 ${late.p99_ms} ms · max ${late.max_ms} ms` : '—'],
        ['Skipped', skipped.length ? skipped.map(([k, v]) => h('span', {class: 'tag'}, `${k} ${v}`)) : 'none'],
      ])),
    );
    const chart = card('Runs per minute, last 30 minutes', runsChart(runs));
    chart.classList.add('wide');
    grid.appendChild(chart);
    const recent = card('Latest runs', runsTable(runs.slice(0, 8), {showJob: true, compact: true}),
      h('p', null, link('#/runs', 'All runs →')));
    recent.classList.add('wide');
    grid.appendChild(recent);
    return grid;
  }

  function meter(value, max) {
    if (!max) return h('span', {class: 'muted'}, '—');
    const pct = Math.max(0, Math.min(100, (100 * value) / max));
    const bar = h('span', {class: 'meter-fill' + (pct >= 100 ? ' full' : '')});
    bar.style.width = pct + '%';
    return h('span', {class: 'meter', title: `${value} of ${max}`}, bar);
  }

  const FAILED = new Set(['failed', 'timed_out']);

  /** Bars: runs finished per minute (green ok, red failed, grey other); line: success rate. */
  function runsChart(runs) {
    const minutes = 30;
    const now = Date.now();
    const end = Math.floor(now / 60000) * 60000 + 60000;
    const start = end - minutes * 60000;
    const buckets = Array.from({length: minutes}, (_, i) => ({at: start + i * 60000, ok: 0, bad: 0, other: 0}));
    let oldest = Infinity;
    for (const r of runs) {
      const t = parseTs(r.finished_at);
      const q = parseTs(r.queued_at);
      if (q !== null) oldest = Math.min(oldest, q);
      if (t === null || t < start || t >= end) continue;
      const b = buckets[Math.floor((t - start) / 60000)];
      if (r.status === 'succeeded') b.ok++;
      else if (FAILED.has(r.status)) b.bad++;
      else b.other++;
    }
    // A multiple of 4, so the half-way gridline has a whole number.
    const max = Math.max(4, Math.ceil(Math.max(...buckets.map((b) => b.ok + b.bad + b.other)) / 4) * 4);
    const W = 720;
    const H = 180;
    const pad = {l: 34, r: 40, t: 10, b: 22};
    const cw = (W - pad.l - pad.r) / minutes;
    const ih = H - pad.t - pad.b;
    const y = (v) => pad.t + ih - (ih * v) / max;
    const svg = s('svg', {viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img',
      'aria-label': 'Runs finished per minute and success rate over the last 30 minutes'});
    for (const frac of [0, 0.5, 1]) {
      const yy = pad.t + ih - ih * frac;
      svg.appendChild(s('line', {x1: pad.l, x2: W - pad.r, y1: yy, y2: yy, class: 'grid-line'}));
      svg.appendChild(s('text', {x: pad.l - 6, y: yy + 4, 'text-anchor': 'end', class: 'axis'}, String(Math.round(max * frac))));
      svg.appendChild(s('text', {x: W - pad.r + 6, y: yy + 4, class: 'axis rate'}, Math.round(100 * frac) + '%'));
    }
    const points = [];
    buckets.forEach((b, i) => {
      const x = pad.l + i * cw + 1;
      const w = Math.max(1, cw - 2);
      const g = s('g', {class: 'bar'});
      let base = 0;
      for (const [n, cls] of [[b.ok, 'ok'], [b.bad, 'bad'], [b.other, 'other']]) {
        if (!n) continue;
        g.appendChild(s('rect', {x, y: y(base + n), width: w, height: y(base) - y(base + n), class: cls}));
        base += n;
      }
      const hhmm = new Date(b.at).toTimeString().slice(0, 5);
      // An invisible full-height target so the tooltip works on empty minutes too.
      g.appendChild(s('rect', {x, y: pad.t, width: w, height: ih, class: 'hit'},
        s('title', {}, `${hhmm}: ${b.ok} succeeded, ${b.bad} failed` + (b.other ? `, ${b.other} other` : '') +
          (b.ok + b.bad ? ` · ${Math.round((100 * b.ok) / (b.ok + b.bad))}% success` : ''))));
      svg.appendChild(g);
      if (b.ok + b.bad > 0) points.push([x + w / 2, pad.t + ih - (ih * b.ok) / (b.ok + b.bad)]);
    });
    if (points.length > 1) {
      svg.appendChild(s('polyline', {points: points.map((p) => p.join(',')).join(' '), class: 'rate-line'}));
    }
    for (const p of points) svg.appendChild(s('circle', {cx: p[0], cy: p[1], r: 2.5, class: 'rate-dot'}));
    for (const [i, label] of [[0, '-30 min'], [15, '-15 min'], [minutes - 1, 'now']]) {
      svg.appendChild(s('text', {x: pad.l + i * cw + cw / 2, y: H - 6, 'text-anchor': 'middle', class: 'axis'}, label));
    }
    const legend = h('div', {class: 'legend'},
      h('span', {class: 'key ok'}, 'succeeded'), h('span', {class: 'key bad'}, 'failed / timed out'),
      h('span', {class: 'key other'}, 'other'), h('span', {class: 'key rate'}, 'success rate'));
    const partial = runs.length >= 1000 && oldest > start
      ? h('p', {class: 'muted'}, 'Drawn from the latest 1000 runs, which do not reach back 30 minutes.') : null;
    return [svg, legend, partial];
  }

  // --------------------------------------------------------------- jobs

  function jobsTable(rows) {
    return table([
      {label: 'Job', cell: (j) => h('div', null, link(jobHref(j.id), j.id, {class: 'strong'}),
        j.spec && j.spec.description ? h('div', {class: 'sub'}, j.spec.description) : null)},
      {label: 'Type', cell: (j) => h('code', null, j.type)},
      {label: 'Enabled', cell: (j) => h('span', null,
        j.enabled ? h('span', {class: 'yes'}, 'yes') : h('span', {class: 'badge st-cancelled'}, 'disabled'),
        j.paused ? [' ', pausedBadge(j.paused)] : null)},
      {label: 'Lane', cell: (j) => j.flow ? link('#/flows', j.flow) : h('span', {class: 'muted'}, '—')},
      {label: 'Priority', cell: (j) => h('span', {class: 'prio prio-' + j.priority}, j.priority)},
      {label: 'Next fire', cell: (j) => j.next_fire_at ? time(j.next_fire_at) : h('span', {class: 'muted'}, j.spec && j.spec.schedule ? '—' : 'manual')},
      {label: 'Last run', cell: (j) => j.last_run
        ? h('span', {class: 'last-run'}, link(runHref(j.last_run.id), badge(j.last_run.status)), ' ', time(j.last_run.finished_at || j.last_run.started_at || j.last_run.queued_at))
        : h('span', {class: 'muted'}, 'never')},
      {label: 'Failure memory', cell: (j) => failureMemory(j.failure_memory)},
      {label: 'Active', class: 'num', cell: (j) => j.active_runs ? h('span', {class: 'badge st-running'}, String(j.active_runs)) : '0'},
    ], rows, {
      empty: 'No jobs in the applied revision.',
      href: (j) => jobHref(j.id),
      rowAttrs: (j) => ({dataset: {jobId: j.id}}),
    });
  }

  /** An operator's pause (kept in the store, not in git). */
  function pausedBadge(p) {
    return h('span', {class: 'badge st-cancelled', title: `paused since ${p.since} by ${p.by}${p.note ? ': ' + p.note : ''}`}, 'paused');
  }

  function pausedText(p) {
    if (!p) return null;
    return h('span', null, pausedBadge(p), ' since ', time(p.since), ' by ', p.by, p.note ? ': ' + p.note : '',
      ' — ', command('multijob resume ' + p.job));
  }

  function failureMemory(fm) {
    if (!fm || (!fm.consecutive_failures && !fm.cooldown_until)) return h('span', {class: 'muted'}, 'ok');
    const cooling = fm.cooldown_until && parseTs(fm.cooldown_until) > Date.now();
    return h('span', {title: fm.last_error || ''},
      h('span', {class: 'bad'}, `${fm.consecutive_failures} failed in a row`),
      cooling ? [h('br'), 'cooling down until ', time(fm.cooldown_until)] : null);
  }

  function jobDetail(root, id, ctx) {
    const head = slot(root);
    const runsSlot = slot(root);
    return {
      title: 'Job ' + id,
      wants: (ev) => ev.job_id === id || /^reconcile\./.test(ev.type),
      async refresh() {
        const [job, runs] = await Promise.all([
          api('/jobs/' + encodeURIComponent(id)).catch((e) => {
            if (e.status === 404) return null;
            throw e;
          }),
          api('/jobs/' + encodeURIComponent(id) + '/runs?limit=100'),
        ]);
        if (!ctx.alive) return;
        if (!job) {
          swap(head, card(null, h('p', {class: 'bad'}, `No job "${id}" in the applied revision.`),
            h('p', {class: 'muted'}, 'It may have been deleted; its run history is kept and listed below.')));
        } else {
          const spec = job.spec || {};
          const sched = spec.schedule;
          swap(head, h('div', {class: 'split'},
            card(null, h('div', {class: 'headline'}, h('strong', {class: 'big'}, job.id), ' ', h('code', null, job.type),
              job.enabled ? null : h('span', {class: 'badge st-cancelled'}, 'disabled'),
              job.paused ? [' ', pausedBadge(job.paused)] : null),
            spec.description ? h('p', null, spec.description) : null,
            kv([
              ['Source', fileLine(job.file, job.line)],
              ['Schedule', sched ? h('code', null, scheduleText(sched)) : 'manual (trigger or schedule_job)'],
              ['Next fire', time(job.next_fire_at)],
              ['Lane', job.flow ? link('#/flows', job.flow) : null],
              ['Priority', job.priority],
              ['Overlap', spec.overlap],
              ['Timeout', spec.timeout_ms ? duration(spec.timeout_ms) : null],
              ['Retries', spec.retry_policy ? String(spec.retry_policy.max_retry || 0) : null],
              ['Paused', job.paused ? pausedText(Object.assign({job: job.id}, job.paused)) : null],
              ['Active runs', String(job.active_runs)],
              ['Failure memory', failureMemory(job.failure_memory)],
              ['Last error', job.failure_memory && job.failure_memory.last_error ? h('span', {class: 'bad'}, job.failure_memory.last_error) : null],
              ['Spec hash', h('code', {class: 'muted'}, String(job.spec_hash || '').slice(0, 16))],
            ]),
            h('p', {class: 'muted'}, 'Queue a run now: ', command('multijob trigger ' + job.id)),
            dailyBudgets(job),
            agentMemory(job)),
            card('Spec', pre(spec))));
        }
        swap(runsSlot, card('Runs', runsTable(runs.items || [], {showJob: false})));
      },
    };
  }

  // The job's daily budgets today: used/limit per scope and kind.
  function dailyBudgets(job) {
    const uses = job.budgets || [];
    if (!uses.length) return null;
    const cols = [
      {label: 'Budget', cell: (u) => h('code', null, u.field)},
      {label: 'Scope', cell: (u) => u.scope},
      {label: 'Used today', class: 'num', cell: (u) => h('span', {class: u.used >= u.limit ? 'bad' : null}, u.used + ' / ' + u.limit)},
      {label: 'Last run', class: 'num', cell: (u) => String(u.last_run)},
      {label: 'Resets', cell: (u) => time(u.resets_at)},
    ];
    return h('div', {class: 'budgets'}, h('h3', null, 'Daily budgets'), table(cols, uses));
  }

  // What the job's agents remember of their tool calls (read-only; reset
  // with the CLI). Tool text is put in as text nodes by h(), never as HTML.
  function agentMemory(job) {
    const sigs = Object.entries(job.memory || {});
    if (!sigs.length) return null;
    const cols = [
      {label: 'Tool signature', cell: ([sig]) => h('code', null, sig)},
      {label: 'Failed', class: 'num', cell: ([, e]) => String(e.failures)},
      {label: 'OK', class: 'num', cell: ([, e]) => String(e.successes)},
      {label: 'In a row', class: 'num', cell: ([, e]) => String(e.consecutive_failures)},
      {label: 'Last seen', cell: ([, e]) => time(e.last_seen)},
      {label: 'Last error', class: 'err', cell: ([, e]) => e.last_error ? h('span', {class: 'bad', title: e.last_error}, compact(e.last_error, 90)) : ''},
    ];
    return h('div', {class: 'agent-memory'}, h('h3', null, 'Agent memory'), table(cols, sigs),
      h('p', {class: 'muted'}, 'Forget it: ', command('multijob memory reset ' + job.id)));
  }

  function scheduleText(sched) {
    const parts = [];
    if (sched.cron) parts.push('cron ' + sched.cron);
    if (sched.every) parts.push('every ' + sched.every);
    if (sched.interval_sec) parts.push('every ' + sched.interval_sec + 's');
    if (sched.timezone) parts.push(sched.timezone);
    return parts.join(' · ') || compact(sched, 120);
  }

  // --------------------------------------------------------------- runs

  function runsTable(rows, opts) {
    const o = opts || {};
    const cols = [
      {label: 'Run', cell: (r) => link(runHref(r.id), shortId(r.id), {title: r.id, class: 'mono'})},
      o.showJob ? {label: 'Job', cell: (r) => link(jobHref(r.job_id), r.job_id)} : null,
      {label: 'Status', cell: (r) => badge(r.status)},
      {label: 'Trigger', cell: (r) => r.trigger},
      o.compact ? null : {label: 'Attempt', class: 'num', cell: (r) => String(r.attempt)},
      {label: 'Scheduled', cell: (r) => time(r.scheduled_at || r.queued_at)},
      o.compact ? null : {label: 'Started', cell: (r) => time(r.started_at)},
      {label: 'Duration', class: 'num', cell: (r) => r.duration_ms !== null && r.duration_ms !== undefined
        ? duration(r.duration_ms) : (r.started_at ? h('span', {class: 'muted'}, 'running') : '—')},
      {label: 'Error', class: 'err', cell: (r) => r.error ? h('span', {class: 'bad', title: r.error}, compact(r.error, 90)) : ''},
    ].filter(Boolean);
    return table(cols, rows, {
      empty: 'No runs yet.',
      href: (r) => runHref(r.id),
      rowAttrs: (r) => ({dataset: {runId: r.id, status: r.status}}),
    });
  }

  function runDetail(root, id, ctx) {
    const body = slot(root);
    return {
      title: 'Run ' + shortId(id),
      wants: (ev) => ev.run_id === id,
      async refresh() {
        const r = await api('/runs/' + encodeURIComponent(id));
        if (!ctx.alive) return;
        const attempts = r.attempts || [];
        const steps = r.steps || [];
        const summary = card(null,
            h('div', {class: 'headline'}, badge(r.status), ' ', link(jobHref(r.job_id), r.job_id, {class: 'strong'}),
              h('span', {class: 'muted'}, ` · ${r.trigger} · attempt ${r.attempt}`)),
            r.error ? h('div', {class: 'error-box'}, r.error) : null,
            kv([
              ['Run id', h('code', null, r.id)],
              ['Run key', r.run_key ? h('code', null, r.run_key) : undefined],
              ['Scheduled', time(r.scheduled_at)],
              ['Queued', time(r.queued_at)],
              ['Started', time(r.started_at)],
              ['Finished', time(r.finished_at)],
              ['Duration', duration(r.duration_ms)],
              ['Wait before start', duration(between(r.queued_at, r.started_at))],
              ['Lane', r.flow ? link('#/flows', r.flow) : undefined],
              ['Priority', r.priority],
              ['Revision', r.revision ? h('code', null, r.revision) : null],
              ['Spec hash', r.spec_hash ? h('code', {class: 'muted'}, r.spec_hash.slice(0, 16)) : null],
              ['LLM tokens', r.usage ? String(r.usage.llm_tokens || 0) : undefined],
            ]));
        summary.querySelector('dl').classList.add('cols2');
        swap(body, h('div', {class: 'stack', dataset: {runId: r.id, status: r.status}},
          summary,
          card('Attempts', table([
            {label: '#', class: 'num', cell: (a) => String(a.n)},
            {label: 'Status', cell: (a) => badge(a.status)},
            {label: 'Started', cell: (a) => time(a.started_at)},
            {label: 'Finished', cell: (a) => time(a.finished_at)},
            {label: 'Took', class: 'num', cell: (a) => duration(between(a.started_at, a.finished_at))},
            {label: 'Error', class: 'err', cell: (a) => a.error ? h('span', {class: 'bad'}, a.error) : ''},
          ], attempts, {empty: 'Not started yet.'})),
          steps.length ? card('Steps', table([
            {label: 'Step', cell: (st) => h('strong', null, st.id)},
            {label: 'Status', cell: (st) => badge(st.status)},
            {label: 'Took', class: 'num', cell: (st) => duration(st.duration_ms)},
            {label: 'Error', class: 'err', cell: (st) => st.error ? h('span', {class: 'bad'}, st.error) : ''},
            {label: 'Output', cell: (st) => st.output === null || st.output === undefined ? h('span', {class: 'muted'}, '—')
              : h('details', null, h('summary', null, compact(st.output, 60)), pre(st.output))},
          ], steps)) : null,
          h('div', {class: 'split even'},
            card('Inputs', pre(r.inputs === undefined ? {} : r.inputs)),
            card('Output', r.output !== undefined && r.output !== null ? pre(r.output) : empty('No output.'))),
        ));
      },
    };
  }

  // ------------------------------------------------------------- events

  function eventsTable(events) {
    const t = table([
      {label: 'Id', class: 'num', cell: (e) => String(e.id)},
      {label: 'When', cell: (e) => time(e.at)},
      {label: 'Type', cell: (e) => h('span', {class: 'evtype ev-' + e.type.split('.')[0]}, e.type)},
      {label: 'Job', cell: (e) => e.job_id ? link(jobHref(e.job_id), e.job_id) : ''},
      {label: 'Run', cell: (e) => e.run_id ? link(runHref(e.run_id), shortId(e.run_id), {title: e.run_id, class: 'mono'}) : ''},
      {label: 'Data', class: 'data-cell', cell: (e) => eventData(e.data)},
    ], events, {empty: 'No events yet. New ones appear here as they happen.', rowAttrs: (e) => ({dataset: {eventId: e.id}})});
    return t;
  }

  function eventRow(e) {
    // Same cells as eventsTable, for prepending one row.
    const wrap = eventsTable([e]);
    return wrap.querySelector('tbody tr');
  }

  function eventData(data) {
    if (data === null || data === undefined || (typeof data === 'object' && !Object.keys(data).length)) return '';
    const text = compact(data, 140);
    if (text.length < 140) return h('code', {class: 'muted'}, text);
    return h('details', null, h('summary', null, h('code', null, text)), pre(data));
  }

  async function waitForTail(ctx) {
    while (live.lastId === null && ctx.alive) await new Promise((r) => setTimeout(r, 100));
  }

  // ---------------------------------------------------------- revisions

  function planCard(plan) {
    if (plan.valid === false) {
      return card('Pending plan',
        h('p', {class: 'bad'}, 'The directory does not validate now; applying would be rejected:'),
        diagnostics(plan.errors));
    }
    const sum = plan.summary || {};
    const changes = plan.changes || [];
    const parts = [
      h('p', null, `${sum.create || 0} to create, ${sum.update || 0} to update, ${sum.delete || 0} to delete, ${sum.unchanged || 0} unchanged`,
        h('span', {class: 'muted'}, ' — the directory on disk against the running revision.')),
    ];
    if (changes.length) {
      parts.push(table([
        {label: '', cell: (c) => h('span', {class: 'action action-' + c.action}, {create: '+', update: '~', delete: '-'}[c.action] || c.action)},
        {label: 'Kind', cell: (c) => c.kind},
        {label: 'Id', cell: (c) => h('strong', null, c.id)},
        {label: 'File', cell: (c) => fileLine(c.file)},
        {label: 'Changed fields', cell: (c) => fieldChanges(c.fields)},
        {label: 'Next fires', cell: (c) => (c.next_fires || []).map((t) => h('div', null, time(t)))},
      ], changes));
    }
    if ((plan.catchup || []).length) {
      parts.push(h('h3', null, 'Missed slots to catch up'), h('ul', null, plan.catchup.map((c) =>
        h('li', null, h('strong', null, c.job), `: ${(c.run || []).length} to run, ${c.skipped || 0} skipped`))));
    }
    if ((plan.lanes_under_load || []).length) {
      parts.push(h('h3', null, 'Lanes whose limit changes under load'), h('ul', null, plan.lanes_under_load.map((l) =>
        h('li', null, h('strong', null, l.flow), `: max ${l.old_max ?? '∞'} → ${l.new_max ?? '∞'} with ${l.active_runs} active`))));
    }
    if ((plan.in_flight || []).length) {
      parts.push(h('h3', null, 'Runs in flight'), h('ul', null, plan.in_flight.map((f) =>
        h('li', null, h('strong', null, f.job), `: ${f.active_runs} active, job ${f.action}`))));
    }
    return card('Pending plan', parts);
  }

  function fieldChanges(fields) {
    if (!fields || !fields.length) return '';
    return h('ul', {class: 'fields'}, fields.map((f) => h('li', null, h('code', null, f.path), ': ',
      h('span', {class: 'old'}, compact(f.old === undefined ? null : f.old, 60)), ' → ',
      h('span', {class: 'new'}, compact(f.new === undefined ? null : f.new, 60)))));
  }

  function revisionsTable(revs) {
    return table([
      {label: '#', class: 'num', cell: (r) => String(r.seq)},
      {label: 'Status', cell: (r) => badge(r.status)},
      {label: 'Revision', cell: (r) => h('code', null, r.id)},
      {label: 'At', cell: (r) => time(r.at)},
      {label: 'Summary', class: 'summary', cell: (r) => r.status === 'rejected' ? `${(r.errors || []).length} error(s)`
        : `${(r.summary || {}).create || 0} created, ${(r.summary || {}).update || 0} updated, ${(r.summary || {}).delete || 0} deleted`},
      {label: 'Details', class: 'wide-cell', cell: (r) => {
        if (r.errors && r.errors.length) return diagnostics(r.errors);
        const ch = r.changes || [];
        if (!ch.length) return h('span', {class: 'muted'}, 'no changes');
        return h('details', null, h('summary', null, `${ch.length} change${ch.length > 1 ? 's' : ''}`),
          h('ul', {class: 'changes'}, ch.map((c) => h('li', null,
            h('span', {class: 'action action-' + c.action}, {create: '+', update: '~', delete: '-'}[c.action] || c.action), ' ',
            c.kind, ' ', h('strong', null, c.id)))));
      }},
    ], revs, {empty: 'No revisions yet.', rowAttrs: (r) => ({dataset: {revision: r.id, status: r.status}})});
  }

  // -------------------------------------------------------------- misc

  /** A command to copy: the page itself changes nothing. */
  function command(text) {
    const code = h('code', {class: 'cmd'}, text);
    const btn = h('button', {type: 'button', class: 'copy', title: 'Copy to the clipboard'}, 'copy');
    btn.addEventListener('click', async () => {
      try {
        await navigator.clipboard.writeText(text);
        btn.textContent = 'copied';
      } catch (_) {
        const range = document.createRange();
        range.selectNodeContents(code);
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
        btn.textContent = 'selected';
      }
      setTimeout(() => {
        btn.textContent = 'copy';
      }, 1500);
    });
    return h('span', {class: 'command'}, code, btn);
  }

  function tick() {
    for (const el of document.querySelectorAll('[data-ts]')) {
      const txt = relText(el.dataset.ts);
      if (el.textContent !== txt) el.textContent = txt;
    }
    renderUpdated();
  }

  function setPaused(paused) {
    settings.paused = paused;
    const b = $('#pause');
    b.textContent = paused ? 'Resume' : 'Pause';
    b.setAttribute('aria-pressed', String(paused));
    document.body.classList.toggle('paused', paused);
    connection.set(live.mode);
    if (!paused) refreshView(true);
  }

  function init() {
    const sel = $('#refresh-interval');
    sel.value = String(settings.interval);
    sel.addEventListener('change', () => {
      settings.interval = Number(sel.value);
      localStorage.setItem(LS_REFRESH, String(settings.interval));
      restartPeriodic();
    });
    $('#pause').addEventListener('click', () => setPaused(!settings.paused));
    $('#refresh').addEventListener('click', () => refreshView(true));
    $('#forget-token').addEventListener('click', () => {
      localStorage.removeItem(LS_TOKEN);
      auth.token = '';
      updateTokenButton();
      live.restart();
      refreshView(true);
    });
    updateTokenButton();
    window.addEventListener('hashchange', navigate);
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible' && !settings.paused) refreshView(true);
    });
    connection.set('connecting');
    navigate();
    live.start();
    api('/status').then((st) => {
      $('#nav-foot').textContent = `multijob ${st.version || ''}`;
      $('#nav-foot').title = st.store || '';
    }, () => {});
    restartPeriodic();
    setInterval(tick, 5000);
  }

  init();
})();
