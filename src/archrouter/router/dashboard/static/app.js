// archrouter dashboard: four views over the router's own endpoints. No framework, nothing fetched
// from outside this server. The API key (if the server has keys) lives in sessionStorage only.
'use strict';

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
const PALETTE = ['#4263eb', '#f08c00', '#2f9e44', '#d6336c', '#1098ad', '#7048e8', '#e8590c', '#5c940d', '#495057'];
const MAX_ROWS = 500;

const state = {
  key: sessionStorage.getItem('archrouter.key') || '',
  info: null,
  view: null,
  rows: [],          // newest first
  seen: new Set(),   // request ids already in the table (memory backlog and live queue may overlap)
  paused: false,
  pending: [],       // rows received while paused
  stream: null,      // AbortController of the decision stream
  load: null,        // last /dashboard/api/backends answer
  examples: [],
  context: [],       // earlier messages of a chat example; the textarea holds the last user turn
  policyLoaded: false,
};

// ---------------------------------------------------------------------------------------------- helpers

class ApiError extends Error {
  constructor(status, message, body) { super(message); this.status = status; this.body = body; }
}

function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  if (state.key) h.Authorization = 'Bearer ' + state.key;
  return h;
}

async function api(path, opts) {
  opts = opts || {};
  const res = await fetch(path, Object.assign({}, opts, { headers: authHeaders(opts.headers) }));
  const type = res.headers.get('content-type') || '';
  const body = type.includes('json') ? await res.json() : await res.text();
  if (!res.ok) {
    const msg = (body && body.error && body.error.message) || (typeof body === 'string' ? body : res.statusText);
    if (res.status === 401) showBanner('This server needs an API key: enter it in the box at the top right.');
    throw new ApiError(res.status, msg, body);
  }
  return body;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else if (k === 'title') e.title = v;
    else e[k] = v;
  }
  for (const c of children.flat()) if (c != null) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function colorOf(name) {
  const names = (state.info && state.info.backends.map((b) => b.name)) || [];
  let i = names.indexOf(name);
  if (i < 0) { i = 0; for (const ch of String(name)) i = (i * 31 + ch.charCodeAt(0)) % 997; }
  return PALETTE[i % PALETTE.length];
}

function swatch(name) { const s = el('span', { class: 'swatch' }); s.style.background = colorOf(name); return s; }

const fmt = {
  num(v, digits = 0) { return v == null ? '–' : Number(v).toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }); },
  ms(v) { return v == null ? '–' : v >= 10000 ? (v / 1000).toFixed(1) + ' s' : v >= 100 ? Math.round(v) + ' ms' : v.toFixed(1) + ' ms'; },
  rate(v) { return v == null ? '–' : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2); },
  pct(v) { return v == null ? '–' : (v * 100).toFixed(v >= 0.995 || v === 0 ? 0 : 1) + '%'; },
  cost(v) { return v == null ? '–' : '$' + (v < 0.001 ? v.toExponential(2) : v.toFixed(4)); },
  time(t) { return new Date(t * 1000).toLocaleTimeString('en-GB', { hour12: false }); },
};

function showBanner(text) { const b = $('#banner'); b.textContent = text; b.hidden = !text; }

// ---------------------------------------------------------------------------------------------- shell

async function loadInfo() {
  try {
    state.info = await api('/dashboard/api/info');
    showBanner('');
  } catch (e) {
    state.info = null;
    if (e.status !== 401) showBanner('Cannot reach the router: ' + e.message);
    return;
  }
  const info = state.info;
  $('#policy-id').textContent = info.policy;
  $('#auth-pill').textContent = info.auth === 'keys' ? (info.admin ? 'admin key' : 'API key') : 'open (loopback)';
  $('#auth-pill').title = info.auth === 'keys' ? 'this server checks API keys' : 'no keys configured: loopback only';
  fillSelect($('#f-backend'), info.backends.map((b) => b.name), 'all');
  fillSelect($('#f-rule'), info.rules, 'all');
  const model = $('#model');
  const chosen = model.value;
  model.replaceChildren(el('option', { value: 'auto', text: 'auto (route)' }),
    ...info.backends.map((b) => el('option', { value: b.name, text: `${b.name} (${b.family})` })));
  model.value = [...model.options].some((o) => o.value === chosen) ? chosen : 'auto';
}

function fillSelect(select, values, allLabel) {
  const cur = select.value;
  const have = new Set([...select.options].map((o) => o.value));
  if (!have.size) select.append(el('option', { value: '', text: allLabel }));
  for (const v of values) if (v && !have.has(v)) { select.append(el('option', { value: v, text: v })); have.add(v); }
  select.value = cur;
}

function showView(name) {
  if (!['live', 'backends', 'playground', 'capability'].includes(name)) name = 'live';
  state.view = name;
  for (const s of $$('main > section')) s.hidden = s.dataset.view !== name;
  for (const a of $$('nav.tabs a')) a.classList.toggle('active', a.dataset.view === name);
  if (name === 'backends') pollLoad();
  if (name === 'playground') enterPlayground();
  if (name === 'capability') loadCapability();
}

function setKey(key) {
  state.key = key.trim();
  if (state.key) sessionStorage.setItem('archrouter.key', state.key); else sessionStorage.removeItem('archrouter.key');
  loadInfo().then(() => { connectStream(); if (state.view) showView(state.view); });
}

// ---------------------------------------------------------------------------------------------- live decisions

function setConn(on, label) {
  const c = $('#conn');
  $('.dot', c).className = 'dot ' + (on ? 'on' : 'off');
  $('.label', c).textContent = label;
}

// Server-sent events read with fetch (EventSource cannot send the Authorization header).
async function connectStream() {
  if (state.stream) state.stream.abort();
  const ctl = new AbortController();
  state.stream = ctl;
  try {
    const res = await fetch('/dashboard/api/decisions/stream', { headers: authHeaders(), signal: ctl.signal });
    if (!res.ok) { setConn(false, res.status === 401 ? 'needs key' : 'error ' + res.status); return; }
    setConn(true, 'live');
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
        let kind = 'message', data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) kind = line.slice(6).trim();
          else if (line.startsWith('data:')) data += line.slice(5).trim();
        }
        if (data) onEvent(kind, JSON.parse(data));
      }
    }
  } catch (e) {
    if (ctl.signal.aborted) return;
  }
  if (state.stream === ctl) {
    setConn(false, 'reconnecting');
    setTimeout(() => { if (state.stream === ctl) connectStream(); }, 2000);
  }
}

function onEvent(kind, data) {
  if (kind === 'source') {
    state.backlogUntil = Date.now() + 1000;  // the backlog arrives at once: no flash for it
    $('#live-source').textContent = data.source === 'redis' ? `Redis stream ${data.stream}` : 'this process (memory)';
  } else if (kind === 'notice') {
    $('#live-source').textContent = 'memory (Redis unavailable)';
    $('#live-source').title = data.message;
  } else if (kind === 'decision') {
    addRow(data);
  }
}

function addRow(r) {
  if (r.request_id && state.seen.has(r.request_id)) return;
  if (r.request_id) state.seen.add(r.request_id);
  if (state.paused) { state.pending.push(r); updateCount(); return; }
  insertRow(r, Date.now() > (state.backlogUntil || 0));
}

function insertRow(r, animate) {
  state.rows.unshift(r);
  if (state.rows.length > MAX_ROWS) {
    const gone = state.rows.pop();
    state.seen.delete(gone.request_id);
    const tr = $(`#live-table tr[data-request-id="${CSS.escape(gone.request_id || '')}"]`);
    if (tr) { if (tr.nextSibling && tr.nextSibling.classList.contains('detail')) tr.nextSibling.remove(); tr.remove(); }
  }
  fillSelect($('#f-backend'), [r.backend], 'all');
  fillSelect($('#f-rule'), [r.rule], 'all');
  if (passes(r)) {
    const tr = rowElement(r);
    if (animate) tr.classList.add('new');
    $('#live-table tbody').prepend(tr);
  }
  updateCount();
}

function passes(r) {
  const b = $('#f-backend').value, rule = $('#f-rule').value;
  return (!b || r.backend === b) && (!rule || r.rule === rule);
}

function rowElement(r) {
  const fb = r.fallback, delta = fb && fb.expected_delta != null ? ` Δ${fb.expected_delta >= 0 ? '+' : ''}${fb.expected_delta.toFixed(2)}` : '';
  const fallback = fb ? el('span', { class: 'chip warn', text: `from ${fb.from} (${fb.reason})${delta}`, title: fb.error || '' })
    : r.fallbacks_used.length ? el('span', { class: 'chip warn', text: 'from ' + r.fallbacks_used.join(', ') }) : el('span', { class: 'faint', text: '–' });
  const cache = r.cache ? el('span', { class: 'chip ' + (r.cache === 'hit' ? 'ok' : ''), text: r.cache }) : el('span', { class: 'faint', text: '–' });
  const ok = r.status === 200;
  const status = el('span', { class: 'chip ' + (ok ? 'ok' : r.status === 499 ? 'warn' : 'bad'), text: r.status == null ? '–' : String(r.status) });
  const backend = r.backend ? el('span', {}, swatch(r.backend), r.backend) : el('span', { class: 'faint', text: 'none' });
  const tr = el('tr', { class: 'main', 'data-request-id': r.request_id, 'data-backend': r.backend || '', 'data-rule': r.rule || '' },
    el('td', { class: 'mono', text: fmt.time(r.time) }),
    el('td', { class: 'id', text: (r.request_id || '').slice(-12), title: r.request_id }),
    el('td', {}, backend),
    el('td', {}, el('span', { class: 'chip', text: r.rule || '–' })),
    el('td', { text: r.task || '–' }),
    el('td', { class: 'num', text: fmt.num(r.prompt_tokens) }),
    el('td', { class: 'num', text: fmt.num(r.completion_tokens) + (r.choices > 1 ? ` (${r.choices} choices)` : ''),
      title: r.choices > 1 ? `n=${r.n}; tokens of all ${r.choices} choices` : '' }),
    el('td', { class: 'num', text: fmt.ms(r.latency_ms) }),
    el('td', { class: 'num', text: fmt.ms(r.ttft_ms) }),
    el('td', { class: 'num', text: fmt.rate(r.tokens_per_s) }),
    el('td', {}, fallback),
    el('td', {}, cache),
    el('td', {}, status));
  tr.addEventListener('click', () => toggleDetail(tr, r));
  return tr;
}

function toggleDetail(tr, r) {
  const next = tr.nextSibling;
  if (next && next.classList && next.classList.contains('detail')) { next.remove(); return; }
  const lines = [
    `reason: ${r.reason || '–'}`,
    `decided: ${r.decided || '–'}   fallbacks: ${r.fallbacks.join(', ') || 'none'}   endpoint: ${r.endpoint}   model: ${r.model}   key: ${r.key}`,
    `policy: ${r.policy}   finish: ${r.finish_reason || '–'}`,
  ];
  if (r.error) lines.push('error: ' + r.error);
  tr.after(el('tr', { class: 'detail' }, el('td', { colSpan: 13 }, el('pre', { text: lines.join('\n') }))));
}

function renderRows() {
  const body = $('#live-table tbody');
  body.replaceChildren(...state.rows.filter(passes).map((r) => rowElement(r)));
  updateCount();
}

function updateCount() {
  const shown = $$('#live-table tbody tr.main').length;
  const total = state.rows.length;
  let text = shown === total ? `${total} request${total === 1 ? '' : 's'}` : `${shown} of ${total} requests`;
  if (state.pending.length) text += ` · ${state.pending.length} waiting`;
  $('#live-count').textContent = text;
  $('#live-empty').hidden = total > 0;
}

// ---------------------------------------------------------------------------------------------- backends

let loadTimer = null;

async function pollLoad() {
  clearTimeout(loadTimer);
  try {
    state.load = await api('/dashboard/api/backends');
    renderLoad();
  } catch (e) { /* shown by the banner when it is the key */ }
  loadTimer = setTimeout(pollLoad, document.hidden ? 10000 : 2000);
}

function stat(k, v, unit) {
  return el('div', { class: 'stat' }, el('div', { class: 'v' }, v, unit && v !== '–' ? el('small', { text: unit }) : null), el('div', { class: 'k', text: k }));
}

function latency(ms) {
  if (ms == null) return ['–'];
  if (ms >= 1000) return [(ms / 1000).toFixed(ms >= 10000 ? 1 : 2), 's'];
  return [ms.toFixed(ms < 10 ? 1 : 0), 'ms'];
}

function renderLoad() {
  const load = state.load;
  if (!load) return;
  $('#backends-sub').textContent = `Rates over the last ${load.rate_window_s} s, latency percentiles over the last ${load.latency_window_s} s; the same numbers /metrics exports. Updated ${fmt.time(load.time)}.`;
  const cards = load.backends.map((b) => {
    const status = b.cooldown_s != null
      ? el('span', { class: 'chip bad', text: `cooldown ${b.cooldown_s.toFixed(0)} s` })
      : el('span', { class: 'chip ok', text: 'ready' });
    const params = b.parameters ? ` · ${(b.parameters / 1e6).toFixed(b.parameters < 1e7 ? 1 : 0)}M params` : '';
    return el('div', { class: 'card bcard', 'data-backend': b.name },
      el('div', { class: 'card-head' },
        el('div', { class: 'name-row' }, swatch(b.name), el('span', { class: 'name', text: b.name }), el('span', { class: 'grow' }), status),
        el('div', { class: 'family', text: `${b.family} · ctx ${fmt.num(b.context_length)}${params}${b.trained ? '' : ' · random weights'}` })),
      el('div', { class: 'stats' },
        stat('requests/s', fmt.rate(b.requests_per_s)),
        stat('tokens/s', fmt.rate(b.tokens_per_s)),
        stat('p50', ...latency(b.p50_ms)),
        stat('p99', ...latency(b.p99_ms)),
        stat('queue', b.queue_depth == null ? '–' : fmt.num(b.queue_depth)),
        stat('running', b.running == null ? '–' : fmt.num(b.running)),
        stat('cache hit', fmt.pct(b.cache_hit_rate)),
        stat('requests', fmt.num(b.requests))));
  });
  $('#backend-cards').replaceChildren(...cards);
  const names = load.backends.map((b) => b.name);
  const series = (key) => names.map((n) => ({ name: n, color: colorOf(n), points: (load.series[n] || []).map((p) => [p.t, p[key]]) }));
  // the time axis grows with the history kept, from one minute to five
  const first = Math.min(...names.map((n) => ((load.series[n] || [])[0] || { t: load.time }).t));
  const spanS = Math.min(300, Math.max(60, Math.ceil((load.time - first) / 60) * 60));
  const charts = [['#chart-rps', 'requests_per_s'], ['#chart-tps', 'tokens_per_s'], ['#chart-p99', 'p99_ms'], ['#chart-queue', 'queue_depth']];
  for (const [id, key] of charts) {
    const canvas = $(id);
    const legend = $('.legend', canvas.closest('.chart'));
    legend.replaceChildren(...names.map((n) => el('span', {}, swatch(n), n)));
    Plot.lines(canvas, series(key), { spanS, now: load.time });
  }
}

// ---------------------------------------------------------------------------------------------- playground

async function enterPlayground() {
  if (!state.examples.length) {
    try {
      const got = await api('/dashboard/api/examples');
      state.examples = got.examples;
      const select = $('#example');
      const byTask = {};
      for (const ex of got.examples) (byTask[ex.task] = byTask[ex.task] || []).push(ex);
      select.replaceChildren(el('option', { value: '', text: `Labelled examples (${got.examples.length} from ${new Set(got.examples.map((e) => e.file)).size} files)…` }));
      for (const [task, list] of Object.entries(byTask)) {
        select.append(el('optgroup', { label: task }, list.map((ex) => el('option', { value: `${ex.file}/${ex.index}`, text: `${ex.id} · ${ex.preview}` }))));
      }
    } catch (e) { /* no key yet */ }
  }
  if (!state.policyLoaded) loadPolicy(false);
}

async function pickExample(value) {
  if (!value) return;
  const [file, index] = value.split('/');
  const ex = await api(`/dashboard/api/examples/${encodeURIComponent(file)}/${index}`);
  let messages = ex.messages || [{ role: 'user', content: ex.prompt }];
  const last = messages[messages.length - 1];
  if (last.role === 'user') { state.context = messages.slice(0, -1); $('#prompt').value = last.content; }
  else { state.context = messages; $('#prompt').value = ''; }
  const note = $('#context-note');
  note.hidden = !state.context.length;
  note.textContent = `+ ${state.context.length} earlier message${state.context.length === 1 ? '' : 's'} from the example are sent before this turn.`;
  const label = [`task: ${ex.task}`];
  if (ex.best_backend) label.push(`best backend: ${ex.best_backend}`);
  note.hidden = false;
  note.textContent = (state.context.length ? note.textContent + ' ' : '') + `Labelled ${label.join(', ')}.`;
}

function requestBody(stream) {
  const messages = state.context.concat([{ role: 'user', content: $('#prompt').value }]);
  const body = { model: $('#model').value, messages, max_tokens: Number($('#max-tokens').value) || 48 };
  if (stream) { body.stream = true; body.stream_options = { include_usage: true }; }
  return body;
}

async function route() {
  const btn = $('#route-btn');
  btn.disabled = true;
  try {
    const d = await api('/v1/route', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(requestBody(false)) });
    renderDecision(d);
  } catch (e) {
    $('#decision-empty').hidden = false; $('#decision-body').hidden = true;
    $('#decision-empty').textContent = 'Route failed: ' + e.message;
  } finally { btn.disabled = false; }
}

function renderDecision(d) {
  $('#decision-empty').hidden = true;
  $('#decision-body').hidden = false;
  $('#d-backend').replaceChildren(swatch(d.backend), d.backend);
  $('#d-rule').textContent = 'rule: ' + d.rule;
  $('#d-fallbacks').textContent = d.fallbacks.length ? 'fallbacks: ' + d.fallbacks.join(' → ') : 'no fallbacks';
  $('#d-meta').textContent = `${d.policy} · decided in ${d.decision_ms.toFixed(2)} ms`;
  $('#d-reason').textContent = d.reason;
  const f = d.features;
  const kv = [['prompt tokens', fmt.num(f.prompt_tokens)], ['max tokens', fmt.num(f.max_tokens)], ['task', f.task],
    ['state tracking', f.state_tracking.toFixed(3)], ['turns', f.turns]];
  for (const [k, v] of Object.entries(f.metadata || {})) kv.push(['metadata.' + k, v]);
  $('#d-features').replaceChildren(...kv.map(([k, v]) => el('div', {}, el('div', { class: 'k', text: k }), el('div', { class: 'v', text: v }))));
  const probs = Object.entries(f.task_probs).sort((a, b) => b[1] - a[1]);
  $('#d-probs').replaceChildren(...probs.flatMap(([task, p]) => {
    const fill = el('span'); fill.style.width = (p * 100).toFixed(1) + '%';
    return [el('div', { class: task === f.task ? 'top-task' : '', text: task }), el('div', { class: 'bar' }, fill), el('div', { class: 'num mono', text: p.toFixed(3) })];
  }));
  $('#trace tbody').replaceChildren(...d.trace.map((t, i) => el('tr', { class: t.fired ? 'hit' : '', 'data-rule': t.rule, 'data-fired': String(t.fired) },
    el('td', { class: 'muted', text: String(i + 1) }),
    el('td', { class: 'rule' }, el('b', { text: t.rule })),
    el('td', { class: 'fired' }, t.fired ? el('span', { class: 'tick', text: '✓ fired' }) : el('span', { class: 'cross', text: '– no' })),
    el('td', { class: 'why', text: t.why }))));
  const est = Object.entries(d.estimates);
  const minLat = Math.min(...est.map(([, e]) => e.latency_ms)), minCost = Math.min(...est.map(([, e]) => e.cost));
  $('#estimates tbody').replaceChildren(...est.map(([name, e]) => el('tr', { class: name === d.backend ? 'sel' : '', 'data-backend': name },
    el('td', {}, swatch(name), name),
    el('td', { class: 'num' }, e.latency_ms === minLat ? el('b', { text: fmt.ms(e.latency_ms) }) : fmt.ms(e.latency_ms)),
    el('td', { class: 'num' }, e.cost === minCost ? el('b', { text: fmt.cost(e.cost) }) : fmt.cost(e.cost)),
    el('td', {}, name === d.backend ? el('span', { class: 'chip accent', text: 'chosen' }) : d.fallbacks.includes(name) ? el('span', { class: 'chip', text: 'fallback' }) : null))));
}

async function send() {
  const btn = $('#send-btn'), out = $('#answer'), meta = $('#answer-meta');
  btn.disabled = true;
  out.classList.remove('faint');
  out.textContent = '';
  meta.textContent = 'waiting…';
  route();
  const t0 = performance.now();
  let first = null, usage = null;
  try {
    const res = await fetch('/v1/chat/completions', { method: 'POST', headers: authHeaders({ 'content-type': 'application/json' }), body: JSON.stringify(requestBody(true)) });
    if (!res.ok) {
      const body = await res.json().catch(() => ({}));
      throw new Error((body.error && body.error.message) || res.statusText);
    }
    const backend = res.headers.get('x-archrouter-backend'), rule = res.headers.get('x-archrouter-rule');
    const reader = res.body.getReader(), decoder = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const line = buf.slice(0, cut).replace(/^data: ?/, ''); buf = buf.slice(cut + 2);
        if (line === '[DONE]') continue;
        const chunk = JSON.parse(line);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) usage = chunk.usage;
        const text = chunk.choices && chunk.choices[0] && chunk.choices[0].delta && chunk.choices[0].delta.content;
        if (text) { if (first == null) first = performance.now() - t0; out.textContent += text; out.scrollTop = out.scrollHeight; }
        meta.textContent = `${backend} · ${rule}` + (first != null ? ` · first token ${first.toFixed(0)} ms` : '');
      }
    }
    const total = (performance.now() - t0) / 1000;
    if (usage) meta.textContent += ` · ${usage.completion_tokens} tokens in ${total.toFixed(2)} s`;
  } catch (e) {
    meta.textContent = '';
    out.textContent += (out.textContent ? '\n\n' : '') + '⚠ ' + e.message;
  } finally { btn.disabled = false; }
}

// --- the policy editor

function editorText() { return $('#policy-text').value; }

function renderGutter(errors) {
  const n = editorText().split('\n').length;
  const gutter = $('#gutter');
  const kids = [];
  for (let i = 1; i <= n; i++) {
    const msg = errors && errors.get(i);
    kids.push(el('div', { class: msg ? 'error' : '', 'data-line': String(i), title: msg || null, text: String(i) }));
  }
  gutter.replaceChildren(...kids);
  const layer = $('#hl-layer');
  const lineH = lineHeight();
  layer.replaceChildren(...[...(errors || new Map()).keys()].filter((l) => l >= 1 && l <= n).map((l) => {
    const band = el('div', { 'data-line': String(l) }); band.style.top = (10 + (l - 1) * lineH) + 'px'; return band;
  }));
  syncScroll();
}

function lineHeight() { return parseFloat(getComputedStyle($('#policy-text')).lineHeight) || 20; }

function syncScroll() {
  const ta = $('#policy-text');
  $('#gutter').scrollTop = ta.scrollTop;
  $('#hl-layer').style.transform = `translateY(${-ta.scrollTop}px)`;
}

function setPolicyStatus(text, kind) {
  const s = $('#policy-status');
  s.className = kind === 'ok' ? 'status-ok' : kind === 'bad' ? 'status-bad' : 'muted';
  s.textContent = text;
}

async function loadPolicy(explicit) {
  try {
    const text = await api('/admin/policy');
    $('#policy-text').value = text;
    state.policyLoaded = true;
    renderGutter(null); showIssues([]); $('#diff-result').hidden = true;
    setPolicyStatus(`Loaded the live policy (${state.info ? state.info.policy : ''}). Edit it, validate, diff, then apply.`);
  } catch (e) {
    renderGutter(null);
    if (explicit || e.status === 401 || e.status === 403) {
      setPolicyStatus('Reading the live policy needs the admin key (top right); or paste a policy here to validate and diff it.', e.status ? 'bad' : null);
    }
  }
}

function showIssues(issues) {
  const list = $('#policy-issues');
  list.replaceChildren(...issues.map((i) => {
    const li = el('li', { 'data-line': String(i.line) },
      el('span', { class: 'line', text: i.line ? `line ${i.line}` : 'file' }),
      i.field ? el('span', { class: 'field', text: i.field }) : null,
      el('span', { text: i.message }));
    li.addEventListener('click', () => goToLine(i.line));
    return li;
  }));
  const errors = new Map();
  for (const i of issues) if (i.line) errors.set(i.line, (errors.has(i.line) ? errors.get(i.line) + '\n' : '') + i.message);
  renderGutter(errors);
}

function goToLine(line) {
  const ta = $('#policy-text');
  const lines = ta.value.split('\n');
  let start = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i++) start += lines[i].length + 1;
  ta.focus();
  ta.setSelectionRange(start, start + (lines[line - 1] || '').length);
  ta.scrollTop = Math.max(0, (line - 5) * lineHeight());
  syncScroll();
}

async function validatePolicy() {
  setPolicyStatus('Validating…');
  try {
    const r = await api('/dashboard/api/policy/validate', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text: editorText() }) });
    showIssues(r.issues);
    if (r.ok) setPolicyStatus(`Valid: ${r.policy} · ${r.backends.length} backends, ${r.rules.length} rules.`, 'ok');
    else setPolicyStatus(`${r.issues.length} problem${r.issues.length === 1 ? '' : 's'}: the server would keep the live policy.`, 'bad');
    return r.ok;
  } catch (e) { setPolicyStatus('Validation failed: ' + e.message, 'bad'); return false; }
}

async function diffPolicy() {
  setPolicyStatus('Deciding the labelled sample with both policies…');
  const box = $('#diff-result');
  try {
    const r = await api('/dashboard/api/policy/diff', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text: editorText(), limit: Number($('#diff-limit').value) || 300 }) });
    if (!r.ok) { showIssues(r.issues); box.hidden = true; setPolicyStatus('Fix the problems below first.', 'bad'); return; }
    showIssues([]);
    setPolicyStatus(`${r.changed_count} of ${r.prompts} prompts decide differently (${r.live} → ${r.candidate}).`, r.changed_count ? null : 'ok');
    renderDiff(r);
  } catch (e) { setPolicyStatus('Diff failed: ' + e.message, 'bad'); }
}

function renderDiff(r) {
  const box = $('#diff-result');
  const metric = (k, label, show, better) => {
    const d = r.deltas[k];
    if (!d || d.a == null) return el('div', { class: 'delta' }, el('div', { class: 'k', text: label }), el('div', { class: 'v', text: '–' }), el('div', { class: 'd muted', text: 'no labels' }));
    const sign = d.delta > 0 ? '+' : '';
    const good = d.delta === 0 ? '' : (d.delta > 0) === (better === 'up') ? 'up' : 'down';
    return el('div', { class: 'delta' }, el('div', { class: 'k', text: label }),
      el('div', { class: 'v', text: show(d.b) }),
      el('div', { class: 'd ' + good, text: `${sign}${show(d.delta)} vs live ${show(d.a)}` }));
  };
  const pct = (v) => (v * 100).toFixed(1) + '%';
  const counts = (which) => {
    const c = r.backend_counts[which];
    return el('div', {}, el('div', { class: 'section-title', text: `${which} policy: backends` }),
      el('div', { class: 'bars' }, Object.entries(c).sort((a, b) => b[1] - a[1]).flatMap(([n, k]) => {
        const fill = el('span'); fill.style.width = (100 * k / r.prompts).toFixed(1) + '%'; fill.style.background = colorOf(n);
        return [el('div', {}, swatch(n), n), el('div', { class: 'bar' }, fill), el('div', { class: 'num mono', text: String(k) })];
      })));
  };
  const shown = r.changed.slice(0, 50);
  const table = el('table', { class: 'data', id: 'diff-table' },
    el('thead', {}, el('tr', {}, ['Prompt', 'Task', 'Best', 'Live', '', 'Candidate'].map((h) => el('th', { text: h })))),
    el('tbody', {}, shown.map((c) => el('tr', {},
      el('td', { class: 'mono', text: c.id }), el('td', { text: c.task }), el('td', { text: c.best_backend || '–' }),
      el('td', {}, swatch(c.a.backend), `${c.a.backend} `, el('span', { class: 'chip', text: c.a.rule })),
      el('td', { class: 'arrow', text: '→' }),
      el('td', {}, swatch(c.b.backend), `${c.b.backend} `, el('span', { class: 'chip', text: c.b.rule }))))));
  box.replaceChildren(
    el('div', { class: 'section-title', text: `Diff on ${r.prompts} labelled prompts (${r.sources.join(', ')}; seed ${r.seed})` }),
    el('div', { class: 'deltas' },
      metric('accuracy', 'backend accuracy', pct, 'up'), metric('task_accuracy', 'task accuracy', pct, 'up'),
      metric('cost', 'mean cost', (v) => (v < 0 ? '−' : '') + '$' + Math.abs(v).toExponential(2), 'down'), metric('latency', 'mean latency', (v) => v.toFixed(1) + ' ms', 'down')),
    el('div', { class: 'counts' }, counts('live'), counts('candidate')),
    r.changed_count ? el('div', {}, el('div', { class: 'section-title', text: `Prompts that change (${shown.length} of ${r.changed_count} shown)` }), table)
      : el('p', { class: 'muted', text: 'No prompt in the sample changes backend or rule.' }));
  box.hidden = false;
}

async function applyPolicy() {
  if (!(await validatePolicy())) return;
  if (!window.confirm('Replace the live policy with this one? The server writes it to its policy file.')) return;
  try {
    const r = await api('/admin/policy', { method: 'PUT', headers: { 'content-type': 'application/yaml' }, body: editorText() });
    setPolicyStatus(`Applied: the router now serves ${r.policy}.`, 'ok');
    await loadInfo();
  } catch (e) {
    setPolicyStatus(e.status === 403 || e.status === 401 ? 'Applying needs the admin key (enter it top right).' : 'Apply failed: ' + e.message, 'bad');
  }
}

// ---------------------------------------------------------------------------------------------- capability

async function loadCapability() {
  const body = $('#capability-body');
  let got;
  try { got = await api('/dashboard/api/capability'); } catch (e) { return; }
  const images = got.files.filter((f) => f.kind === 'image'), data = got.files.filter((f) => f.kind === 'data');
  if (!got.files.length) {
    body.replaceChildren(el('div', { class: 'card note' },
      el('h2', { text: 'No capability results yet' }),
      el('p', {}, 'This view shows the heatmaps and cost curves the model zoo\'s evaluation writes to ', el('code', { text: got.folder + '/' }),
        ': accuracy per family and task as the sequence grows, and the cost of reaching it.'),
      el('p', { text: 'Nothing is there on this server yet; the page will list the figures (PNG or SVG) and their data files (JSON, CSV) as soon as they exist.' })));
    return;
  }
  const figs = el('div', { class: 'figs' });
  for (const f of images) {
    const img = el('img', { alt: f.title });
    figs.append(el('figure', { class: 'card' }, img, el('figcaption', { text: f.title })));
    fetch('/dashboard/api/capability/' + encodeURIComponent(f.name), { headers: authHeaders() })
      .then((r) => r.blob()).then((b) => { img.src = URL.createObjectURL(b); });
  }
  const links = data.length ? el('div', { class: 'card mt16' }, el('h2', { text: 'Data' }), el('div', { class: 'card-body row' }, data.map((f) => {
    const a = el('a', { href: '#', text: f.name });
    a.addEventListener('click', async (ev) => {
      ev.preventDefault();
      const blob = await (await fetch('/dashboard/api/capability/' + encodeURIComponent(f.name), { headers: authHeaders() })).blob();
      window.open(URL.createObjectURL(blob), '_blank');
    });
    return a;
  }))) : null;
  body.replaceChildren(figs, links || '');
}

// ---------------------------------------------------------------------------------------------- wiring

function wire() {
  $('#api-key').value = state.key;
  $('#api-key').addEventListener('change', (e) => setKey(e.target.value));
  window.addEventListener('hashchange', () => showView(location.hash.slice(1)));
  $('#f-backend').addEventListener('change', renderRows);
  $('#f-rule').addEventListener('change', renderRows);
  $('#pause').addEventListener('click', () => {
    state.paused = !state.paused;
    $('#pause').textContent = state.paused ? 'Resume' : 'Pause';
    if (!state.paused) { const waiting = state.pending; state.pending = []; for (const r of waiting.reverse()) insertRow(r, true); }
    updateCount();
  });
  $('#clear').addEventListener('click', () => { state.rows = []; state.pending = []; renderRows(); });
  $('#example').addEventListener('change', (e) => pickExample(e.target.value));
  $('#prompt').addEventListener('keydown', (e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) route(); });
  $('#route-btn').addEventListener('click', route);
  $('#send-btn').addEventListener('click', send);
  const ta = $('#policy-text');
  ta.addEventListener('scroll', syncScroll);
  ta.addEventListener('input', () => { if (ta.value.split('\n').length !== $$('#gutter div').length) renderGutter(null); });
  ta.addEventListener('keydown', (e) => {
    if (e.key === 'Tab') { e.preventDefault(); document.execCommand('insertText', false, '  '); }
  });
  $('#policy-load').addEventListener('click', () => loadPolicy(true));
  $('#policy-validate').addEventListener('click', validatePolicy);
  $('#policy-diff').addEventListener('click', diffPolicy);
  $('#policy-apply').addEventListener('click', applyPolicy);
  window.addEventListener('resize', () => { if (state.view === 'backends') renderLoad(); });
}

document.addEventListener('DOMContentLoaded', async () => {
  wire();
  renderGutter(null);
  await loadInfo();
  connectStream();
  showView(location.hash.slice(1) || "live");
  if (state.view !== "backends") pollLoad();
  updateCount();
});
