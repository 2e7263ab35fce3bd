// A small time-series line chart on a <canvas>: several series, a y axis from 0, a time axis ending now.
// Plot.lines(canvas, [{name, color, points: [[unixSeconds, valueOrNull], ...]}], {spanS, format})
'use strict';

(function () {
  const AXIS = '#9aa2b1', GRID = '#eef0f3', TEXT = '#687284';
  const FONT = '11px system-ui, -apple-system, "Segoe UI", Roboto, Arial, "Liberation Sans", sans-serif';

  // a tick step of 1, 2 or 5 x 10^k giving at most 5 intervals, and the axis top it implies
  function niceAxis(v) {
    if (!(v > 0)) return { step: 0.25, top: 1 };
    const raw = v / 4, p = Math.pow(10, Math.floor(Math.log10(raw)));
    let step = 10 * p;
    for (const m of [1, 2, 5]) if (m * p >= raw) { step = m * p; break; }
    return { step, top: Math.ceil(v / step - 1e-9) * step };
  }

  function defaultFormat(v) {
    if (v === 0) return '0';
    if (Math.abs(v) >= 1000) return (v / 1000).toFixed(v % 1000 ? 1 : 0) + 'k';
    if (Math.abs(v) >= 10) return v.toFixed(0);
    if (Math.abs(v) >= 1) return v.toFixed(1).replace(/\.0$/, '');
    return v.toFixed(2).replace(/0+$/, '');
  }

  function lines(canvas, series, opts) {
    opts = opts || {};
    const spanS = opts.spanS || 300;
    const fmt = opts.format || defaultFormat;
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (!w || !h) return;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = FONT;

    const now = opts.now || Date.now() / 1000;
    const t0 = now - spanS;
    let max = 0, any = false;
    for (const s of series) for (const [t, v] of s.points) {
      if (v != null && t >= t0) { any = true; if (v > max) max = v; }
    }
    const { step, top: yMax } = niceAxis(max);
    const pad = { l: 42, r: 8, t: 8, b: 20 };
    const iw = w - pad.l - pad.r, ih = h - pad.t - pad.b;
    const x = (t) => pad.l + ((t - t0) / spanS) * iw;
    const y = (v) => pad.t + ih - (v / yMax) * ih;

    // grid and y labels
    ctx.textAlign = 'right'; ctx.textBaseline = 'middle'; ctx.lineWidth = 1;
    for (let i = 0; i * step <= yMax + 1e-9; i++) {
      const v = i * step, yy = Math.round(y(v)) + 0.5;
      ctx.strokeStyle = i === 0 ? AXIS : GRID;
      ctx.beginPath(); ctx.moveTo(pad.l, yy); ctx.lineTo(w - pad.r, yy); ctx.stroke();
      ctx.fillStyle = TEXT; ctx.fillText(fmt(v), pad.l - 6, yy);
    }
    // time labels: every minute back from now
    ctx.textAlign = 'center'; ctx.textBaseline = 'top';
    const stepS = spanS <= 120 ? 30 : 60;
    for (let back = 0; back <= spanS; back += stepS) {
      const xx = x(now - back);
      ctx.fillStyle = TEXT;
      ctx.fillText(back === 0 ? 'now' : back % 60 ? `-${back}s` : `-${back / 60}m`, Math.min(xx, w - pad.r - 10), h - pad.b + 5);
    }
    if (!any) {
      ctx.textAlign = 'center'; ctx.textBaseline = 'middle'; ctx.fillStyle = '#b4bac6';
      ctx.fillText('no data yet', pad.l + iw / 2, pad.t + ih / 2);
      return;
    }
    // series: a line through consecutive non-null points, a dot on a point with no neighbours
    ctx.save();
    ctx.beginPath(); ctx.rect(pad.l, pad.t - 2, iw, ih + 4); ctx.clip();
    ctx.lineWidth = 1.8; ctx.lineJoin = 'round';
    for (const s of series) {
      ctx.strokeStyle = s.color; ctx.fillStyle = s.color;
      let open = false;
      const pts = s.points.filter(([t]) => t >= t0 - 5);
      ctx.beginPath();
      pts.forEach(([t, v], i) => {
        if (v == null) { open = false; return; }
        const prev = pts[i - 1], next = pts[i + 1];
        if (!open) {
          ctx.moveTo(x(t), y(v)); open = true;
          if ((!prev || prev[1] == null) && (!next || next[1] == null)) {
            ctx.fillRect(x(t) - 1.5, y(v) - 1.5, 3, 3);
          }
        } else {
          ctx.lineTo(x(t), y(v));
        }
      });
      ctx.stroke();
    }
    ctx.restore();
  }

  window.Plot = { lines, niceAxis };
})();
