// rdg explorer: search an identifier, draw its neighbourhood (edges grouped
// by type, its identity cluster), click a node to expand it. Plain JS, no
// libraries, no other origin: everything comes from this server's /v1 API.
// body[data-state] is "idle" when no request is running (tests wait on it).
'use strict';

const svg = document.getElementById('graph');
const viewport = document.getElementById('viewport');
const edgeLayer = document.getElementById('edges');
const nodeLayer = document.getElementById('nodes');
const panel = document.getElementById('panel');
const legend = document.getElementById('legend');
const NS = 'http://www.w3.org/2000/svg';
const PER_GROUP = 20;        // neighbours per edge type and direction
const MAX_MEMBERS = 30;      // cluster members drawn around a node

const graph = { nodes: new Map(), edges: new Map() };
let selected = null;
let pending = 0;
let view = { x: -400, y: -300, w: 800, h: 600 };

// ---- colours -------------------------------------------------------------
const PALETTE = ['#2563eb', '#16a34a', '#db2777', '#9333ea', '#ea580c', '#0891b2',
  '#65a30d', '#dc2626', '#4f46e5', '#ca8a04', '#0d9488', '#7c3aed'];
// Colours are handed out in order of first use, so no two names collide
// until the palette is used up.
const assigned = new Map();
function colour(name) {
  if (!assigned.has(name)) assigned.set(name, PALETTE[assigned.size % PALETTE.length]);
  return assigned.get(name);
}
function typeOf(id) { const i = id.indexOf(':'); return i < 0 ? '' : id.slice(0, i); }
function idOf(id) { const i = id.indexOf(':'); return i < 0 ? id : id.slice(i + 1); }

// ---- API -----------------------------------------------------------------
function busy(delta) {
  pending += delta;
  document.body.dataset.state = pending > 0 ? 'loading' : 'idle';
}

function showFresh(headers) {
  const commit = headers.get('x-rdg-commit');
  if (commit === null) return;
  const wm = (headers.get('x-rdg-watermark') || '').split(',').filter(Boolean).map((p) => {
    const [d, ms] = p.split('=');
    const t = new Date(Number(ms));
    return d + ' ' + (isNaN(t) ? ms : t.toISOString().replace('.000Z', 'Z'));
  });
  document.getElementById('fresh').textContent =
    'commit ' + commit + (wm.length ? ' · watermark ' + wm.join(', ') : '');
}

async function api(path) {
  const headers = {};
  const token = sessionStorage.getItem('rdg-token');
  if (token) headers.Authorization = 'Bearer ' + token;
  busy(1);
  try {
    const r = await fetch(path, { headers });
    showFresh(r.headers);
    if (r.status === 401) {
      document.getElementById('auth').hidden = false;
      throw new Error('this server needs a bearer token');
    }
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    return body;
  } finally {
    busy(-1);
  }
}

function seg(s) { return encodeURIComponent(s); }

function showError(e) {
  const box = document.getElementById('error');
  box.textContent = String(e.message || e);
  box.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { box.hidden = true; }, 5000);
}

// ---- model ---------------------------------------------------------------
function addNode(id, near) {
  let n = graph.nodes.get(id);
  if (n) return n;
  const a = Math.random() * 2 * Math.PI;
  const r = near ? 60 + Math.random() * 40 : 0;
  n = {
    id, x: (near ? near.x : 0) + r * Math.cos(a), y: (near ? near.y : 0) + r * Math.sin(a),
    vx: 0, vy: 0, expanded: false, data: null,
  };
  graph.nodes.set(id, n);
  return n;
}

function addEdge(from, to, kind) {
  const key = kind + '|' + from + '|' + to;
  if (!graph.edges.has(key)) graph.edges.set(key, { key, from, to, kind });
}

async function expand(id) {
  const data = await api('/v1/neighbourhood/' + seg(typeOf(id)) + '/' + seg(idOf(id)) + '?limit=' + PER_GROUP);
  if (!data.record && !data.identity && !data.groups.length) throw new Error('nothing is known about ' + id);
  const centre = addNode(id, null);
  centre.expanded = true;
  centre.data = data;
  data.groups.forEach((g, gi) => {
    const base = (2 * Math.PI * gi) / Math.max(1, data.groups.length);
    g.items.forEach((item, k) => {
      let n = graph.nodes.get(item.node);
      if (!n) {
        const a = base + (k / Math.max(1, g.items.length)) * (2 * Math.PI / Math.max(1, data.groups.length)) * 0.8;
        n = addNode(item.node, centre);
        n.x = centre.x + 120 * Math.cos(a);
        n.y = centre.y + 120 * Math.sin(a);
      }
      if (g.direction === 'out') addEdge(id, item.node, g.edge_type);
      else addEdge(item.node, id, g.edge_type);
    });
  });
  if (data.identity) {
    data.identity.members.filter((m) => m !== id).slice(0, MAX_MEMBERS)
      .forEach((m) => { addNode(m, centre); addEdge(id, m, 'identity'); });
  }
  layout(300);
  fit();
  render();
  select(id);
}

// ---- layout: a small force simulation ------------------------------------
function layout(steps) {
  const nodes = [...graph.nodes.values()];
  const idx = new Map(nodes.map((n, i) => [n.id, i]));
  const springs = [...graph.edges.values()].map((e) => [idx.get(e.from), idx.get(e.to)]);
  for (let s = 0; s < steps; s++) {
    const cool = 1 - s / steps;
    for (let i = 0; i < nodes.length; i++) {
      const a = nodes[i];
      for (let j = i + 1; j < nodes.length; j++) {
        const b = nodes[j];
        let dx = a.x - b.x, dy = a.y - b.y;
        let d2 = dx * dx + dy * dy;
        if (d2 < 1) { dx = Math.random() - 0.5; dy = Math.random() - 0.5; d2 = 1; }
        if (d2 > 250000) continue;
        const f = 1800 / d2;
        a.vx += dx * f; a.vy += dy * f; b.vx -= dx * f; b.vy -= dy * f;
      }
    }
    for (const [i, j] of springs) {
      const a = nodes[i], b = nodes[j];
      const dx = b.x - a.x, dy = b.y - a.y;
      const d = Math.sqrt(dx * dx + dy * dy) || 1;
      const f = (d - 110) * 0.02;
      a.vx += (dx / d) * f; a.vy += (dy / d) * f; b.vx -= (dx / d) * f; b.vy -= (dy / d) * f;
    }
    for (const n of nodes) {
      n.vx -= n.x * 0.002; n.vy -= n.y * 0.002;
      const v = Math.sqrt(n.vx * n.vx + n.vy * n.vy);
      const max = 20 * cool + 1;
      if (v > max) { n.vx *= max / v; n.vy *= max / v; }
      n.x += n.vx; n.y += n.vy; n.vx *= 0.5; n.vy *= 0.5;
    }
  }
}

function fit() {
  const nodes = [...graph.nodes.values()];
  if (!nodes.length) return;
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const n of nodes) { x0 = Math.min(x0, n.x); y0 = Math.min(y0, n.y); x1 = Math.max(x1, n.x); y1 = Math.max(y1, n.y); }
  const pad = 80;
  const box = svg.getBoundingClientRect();
  const aspect = box.width > 0 && box.height > 0 ? box.width / box.height : 4 / 3;
  let w = x1 - x0 + 2 * pad, h = y1 - y0 + 2 * pad;
  if (w / h < aspect) w = h * aspect; else h = w / aspect;
  view = { x: (x0 + x1) / 2 - w / 2, y: (y0 + y1) / 2 - h / 2, w, h };
  applyView();
}

function applyView() {
  svg.setAttribute('viewBox', [view.x, view.y, view.w, view.h].join(' '));
}

// ---- drawing --------------------------------------------------------------
function el(name, attrs, parent) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function render() {
  edgeLayer.replaceChildren();
  nodeLayer.replaceChildren();
  const kinds = new Set();
  // Edges between the same two nodes are drawn as separate arcs.
  const pairs = new Map();
  for (const e of graph.edges.values()) {
    const k = e.from < e.to ? e.from + '|' + e.to : e.to + '|' + e.from;
    if (!pairs.has(k)) pairs.set(k, []);
    pairs.get(k).push(e);
  }
  for (const e of graph.edges.values()) {
    const a = graph.nodes.get(e.from), b = graph.nodes.get(e.to);
    const dx = b.x - a.x, dy = b.y - a.y, d = Math.sqrt(dx * dx + dy * dy) || 1;
    const r = 12;
    const same = pairs.get(e.from < e.to ? e.from + '|' + e.to : e.to + '|' + e.from);
    const sign = e.from < e.to ? 1 : -1;
    const bend = (same.indexOf(e) - (same.length - 1) / 2) * 22 * sign;
    const mx = (a.x + b.x) / 2 - (dy / d) * bend, my = (a.y + b.y) / 2 + (dx / d) * bend;
    const ex = b.x - mx, ey = b.y - my, ed = Math.sqrt(ex * ex + ey * ey) || 1;
    const line = el('path', {
      d: 'M ' + a.x + ' ' + a.y + ' Q ' + mx + ' ' + my + ' ' + (b.x - (ex / ed) * r) + ' ' + (b.y - (ey / ed) * r),
      class: 'edge' + (e.kind === 'identity' ? ' identity' : ''),
      'data-kind': e.kind,
    }, edgeLayer);
    if (e.kind !== 'identity') {
      line.setAttribute('stroke', colour(e.kind));
      line.setAttribute('marker-end', 'url(#arrow)');
    }
    kinds.add(e.kind);
  }
  const types = new Set();
  for (const n of graph.nodes.values()) {
    const t = typeOf(n.id);
    types.add(t);
    const g = el('g', {
      class: 'node' + (n.expanded ? ' expanded' : '') + (n.id === selected ? ' selected' : ''),
      'data-id': n.id, transform: 'translate(' + n.x + ',' + n.y + ')',
    }, nodeLayer);
    el('circle', { r: n.expanded ? 11 : 8, fill: colour('node:' + t) }, g);
    const label = el('text', { x: 13, y: 4 }, g);
    label.textContent = n.id.length > 32 ? n.id.slice(0, 31) + '…' : n.id;
    const title = el('title', {}, g);
    title.textContent = n.id + (n.expanded ? '' : ' (click to expand)');
    g.addEventListener('click', (ev) => { ev.stopPropagation(); open(n.id); });
  }
  legend.replaceChildren();
  for (const t of [...types].sort()) {
    const row = document.createElement('div');
    row.innerHTML = '<i class="dot"></i><span></span>';
    row.querySelector('i').style.background = colour('node:' + t);
    row.querySelector('span').textContent = t;
    legend.appendChild(row);
  }
  for (const k of [...kinds].sort()) {
    const row = document.createElement('div');
    row.innerHTML = '<i></i><span></span>';
    row.querySelector('i').style.background = k === 'identity' ? '#b45309' : colour(k);
    row.querySelector('span').textContent = k === 'identity' ? 'same identity cluster' : k;
    legend.appendChild(row);
  }
}

// ---- side panel -----------------------------------------------------------
function fmtTime(ms) {
  const t = new Date(ms);
  return isNaN(t) ? String(ms) : t.toISOString().replace('.000Z', 'Z');
}

function link(id) {
  const a = document.createElement('a');
  a.textContent = id;
  a.dataset.id = id;
  a.addEventListener('click', () => open(id));
  return a;
}

function h(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function select(id) {
  selected = id;
  location.hash = id;
  render();
  const n = graph.nodes.get(id);
  panel.replaceChildren();
  const title = h('h2', id);
  panel.appendChild(title);
  const data = n && n.data;
  if (!data) { panel.appendChild(h('p', 'Click the node to load it.', 'muted')); return; }
  if (data.record) {
    const rec = data.record;
    panel.appendChild(h('h3', 'Record'));
    const table = document.createElement('table');
    const rows = [['first seen', fmtTime(rec.first_seen)], ['last seen', fmtTime(rec.last_seen)]]
      .concat(Object.entries(rec.props).map(([k, v]) => [k, JSON.stringify(v)]));
    for (const [k, v] of rows) {
      const tr = document.createElement('tr');
      tr.appendChild(h('td', k)); tr.appendChild(h('td', v));
      table.appendChild(tr);
    }
    panel.appendChild(table);
  } else {
    panel.appendChild(h('p', 'No node record (only edges or identity links name it).', 'muted'));
  }
  const idn = data.identity;
  const cl = h('h3', 'Identity cluster');
  panel.appendChild(cl);
  const box = document.createElement('div');
  box.id = 'cluster';
  if (!idn) {
    box.appendChild(h('p', 'No identity entry.', 'muted'));
  } else {
    const head = h('p', '');
    head.appendChild(document.createTextNode('cluster '));
    head.appendChild(link(idn.cluster));
    head.appendChild(h('span', idn.members.length + ' members', 'badge'));
    if (idn.hub) head.appendChild(h('span', 'hub', 'badge hub'));
    box.appendChild(head);
    const ul = document.createElement('ul');
    for (const m of idn.members) { const li = document.createElement('li'); li.appendChild(link(m)); ul.appendChild(li); }
    box.appendChild(ul);
  }
  panel.appendChild(box);
  panel.appendChild(h('h3', 'Edges'));
  if (!data.groups.length) panel.appendChild(h('p', 'No edges.', 'muted'));
  for (const g of data.groups) {
    const sec = document.createElement('div');
    sec.className = 'group';
    sec.dataset.edgeType = g.edge_type;
    sec.dataset.direction = g.direction;
    const head = h('p', '');
    const name = h('strong', (g.direction === 'out' ? '→ ' : '← ') + g.edge_type);
    name.style.color = colour(g.edge_type);
    head.appendChild(name);
    head.appendChild(h('span', g.items.length + (g.next_cursor ? '+' : ''), 'badge'));
    sec.appendChild(head);
    const ul = document.createElement('ul');
    for (const it of g.items) {
      const li = document.createElement('li');
      li.appendChild(link(it.node));
      li.appendChild(h('span', ' ×' + it.count + ' · ' + fmtTime(it.last_seen), 'muted'));
      ul.appendChild(li);
    }
    sec.appendChild(ul);
    panel.appendChild(sec);
  }
}

async function open(id) {
  try {
    const n = graph.nodes.get(id);
    if (n && n.expanded) { select(id); return; }
    await expand(id);
  } catch (e) {
    showError(e);
  }
}

// ---- search, pan, zoom ------------------------------------------------------
const q = document.getElementById('q');
let suggestTimer = null;
q.addEventListener('input', () => {
  clearTimeout(suggestTimer);
  const text = q.value.trim();
  if (!text) return;
  suggestTimer = setTimeout(async () => {
    try {
      const r = await api('/v1/search?limit=10&q=' + seg(text));
      const list = document.getElementById('suggestions');
      list.replaceChildren(...r.items.map((i) => { const o = document.createElement('option'); o.value = i; return o; }));
    } catch (e) { /* suggestions are optional */ }
  }, 150);
});

document.getElementById('search').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  let text = q.value.trim();
  if (!text) return;
  try {
    if (!text.includes(':')) {
      const r = await api('/v1/search?limit=1&q=' + seg(text));
      if (!r.items.length) throw new Error('nothing starts with ' + text);
      text = r.items[0];
    }
    await open(text);
  } catch (e) {
    showError(e);
  }
});

document.getElementById('clear').addEventListener('click', () => {
  graph.nodes.clear(); graph.edges.clear(); selected = null;
  render();
  panel.replaceChildren(h('p', 'Nothing selected yet.', 'muted'));
  history.replaceState(null, '', location.pathname);
});

document.getElementById('auth-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  sessionStorage.setItem('rdg-token', document.getElementById('token').value.trim());
  document.getElementById('auth').hidden = true;
  if (location.hash.length > 1) open(decodeURIComponent(location.hash.slice(1)));
});

let drag = null;
svg.addEventListener('mousedown', (ev) => { drag = { x: ev.clientX, y: ev.clientY, view: { ...view } }; });
window.addEventListener('mouseup', () => { drag = null; });
window.addEventListener('mousemove', (ev) => {
  if (!drag) return;
  const box = svg.getBoundingClientRect();
  const s = view.w / box.width;
  view.x = drag.view.x - (ev.clientX - drag.x) * s;
  view.y = drag.view.y - (ev.clientY - drag.y) * s;
  applyView();
});
svg.addEventListener('wheel', (ev) => {
  ev.preventDefault();
  const box = svg.getBoundingClientRect();
  const k = ev.deltaY > 0 ? 1.15 : 1 / 1.15;
  const mx = view.x + ((ev.clientX - box.left) / box.width) * view.w;
  const my = view.y + ((ev.clientY - box.top) / box.height) * view.h;
  view = { x: mx - (mx - view.x) * k, y: my - (my - view.y) * k, w: view.w * k, h: view.h * k };
  applyView();
}, { passive: false });

applyView();
busy(0);
if (location.hash.length > 1) {
  const start = decodeURIComponent(location.hash.slice(1));
  q.value = start;
  open(start);
}
