// Scanpath viewer: plain JavaScript + canvas, no libraries, no network.
// The data (CT slices, scanpaths) is the JSON in <script id="viewer-data">, written by
// ctsearcher_jax/viz/viewer.py, which documents the encoding and the coordinate mapping.
// window.viewerState is a read-only view of what the page shows (for tests and scripting).
(function () {
  'use strict';
  const D = JSON.parse(document.getElementById('viewer-data').textContent);
  const NI = D.shape[0], NJ = D.shape[1], NK = D.shape[2];
  const ENC = D.encoding, H = ENC.height, W = ENC.width;
  const SPEEDS = [0.25, 0.5, 1, 2, 4, 8];
  const WINDOW_CYCLE = ['soft', 'lung', 'bone', 'auto'];
  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- scanpaths
  const paths = D.paths;
  for (const p of paths) {
    p.n = p.t.length;
    p.offset = p.onset.map((o, f) => o + p.t[f]);
    p.end = p.offset[p.n - 1];
    p.visible = true;
  }
  const tMax = Math.max(...paths.map((p) => p.end));
  const allT = paths.flatMap((p) => p.t).sort((a, b) => a - b);
  const tRef = allT[Math.floor(allT.length / 2)] || 1;

  // Index of the fixation under way at time t: the last one whose onset is <= t.
  function currentFixation(p, t) {
    let lo = 0, hi = p.n - 1;
    if (t < p.onset[0]) return -1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (p.onset[mid] <= t) lo = mid; else hi = mid - 1;
    }
    return lo;
  }
  function radius(t) { return Math.min(22, Math.max(2.5, 6 * Math.sqrt(t / tRef))); }

  // ---------------------------------------------------------------- state
  const state = {
    slice: 0, time: 0, playing: false, speed: 1, follow: 0, followOn: true, trail: 5,
    win: { name: D.initial_window.name, width: D.initial_window.width, level: D.initial_window.level },
    drawn: [], trailDrawn: [], markers: [], renderedSlice: -1, renderCount: 0,
    projectionsWindow: null,
  };

  // ---------------------------------------------------------------- slices
  const decoded = new Array(NK).fill(null);
  let decodedCount = 0;
  const pending = new Map();
  function decodeSlice(k) {
    if (decoded[k]) return Promise.resolve(decoded[k]);
    if (pending.has(k)) return pending.get(k);
    const promise = new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => {
        const c = document.createElement('canvas');
        c.width = W; c.height = 2 * H;
        const g = c.getContext('2d', { willReadFrequently: true });
        g.drawImage(img, 0, 0);
        const px = g.getImageData(0, 0, W, 2 * H).data;
        const v = new Uint16Array(W * H);
        const lowStart = 4 * W * H;
        for (let n = 0; n < W * H; n++) v[n] = (px[4 * n] << 8) | px[lowStart + 4 * n];
        decoded[k] = v;
        decodedCount++;
        pending.delete(k);
        resolve(v);
      };
      img.onerror = () => reject(new Error('slice ' + (k + 1) + ' could not be decoded'));
      img.src = 'data:image/png;base64,' + D.slices[k];
    });
    pending.set(k, promise);
    return promise;
  }

  // Lookup table: code v -> grey 0..255 for the current window (same formula as Window.apply).
  let lut = null, lutKey = '';
  function windowLut() {
    const key = state.win.width + ',' + state.win.level;
    if (key === lutKey) return lut;
    lut = new Uint8ClampedArray(ENC.levels);
    const lo = state.win.level - state.win.width / 2;
    for (let v = 0; v < ENC.levels; v++) {
      const x = (ENC.offset + ENC.step * v - lo) / state.win.width;
      lut[v] = Math.floor(Math.min(1, Math.max(0, x)) * 255);
    }
    lutKey = key;
    return lut;
  }

  // ---------------------------------------------------------------- canvases
  const axial = $('axial');
  const sp = D.spacing;
  const aspect = Math.min(5, Math.max(0.2, (NI * sp[0]) / (NJ * sp[1])));
  if (aspect >= 1) { axial.height = 512; axial.width = Math.round(512 / aspect); }
  else { axial.width = 512; axial.height = Math.round(512 * aspect); }
  const sliceCanvas = document.createElement('canvas');
  sliceCanvas.width = W; sliceCanvas.height = H;
  const sliceCtx = sliceCanvas.getContext('2d');
  const ctx = axial.getContext('2d');

  // Voxel (i, j) -> display pixel of the axial canvas (voxel centres at +0.5, as the figures).
  function axialXY(p, f) {
    return [(p.j[f] + 0.5) * axial.width / NJ, (p.i[f] + 0.5) * axial.height / NI];
  }

  function drawMarker(g, x, y, r, colour, alpha, filled, label) {
    g.globalAlpha = alpha;
    g.beginPath();
    g.arc(x, y, r, 0, 2 * Math.PI);
    if (filled) { g.fillStyle = colour; g.fill(); g.strokeStyle = '#fff'; g.lineWidth = 1; g.stroke(); }
    else { g.strokeStyle = colour; g.lineWidth = 1.5; g.stroke(); }
    if (label) {
      g.globalAlpha = Math.min(1, alpha + 0.3);
      g.font = 'bold 10px sans-serif'; g.textAlign = 'center'; g.textBaseline = 'middle';
      g.lineWidth = 3; g.strokeStyle = '#000'; g.strokeText(label, x, y);
      g.fillStyle = '#fff'; g.fillText(label, x, y);
    }
    g.globalAlpha = 1;
  }

  function renderAxial() {
    const k = state.slice;
    const v = decoded[k];
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, axial.width, axial.height);
    if (!v) {
      ctx.fillStyle = '#888'; ctx.font = '14px sans-serif';
      ctx.fillText('decoding slice ' + (k + 1) + '…', 20, 30);
      decodeSlice(k).then(() => { if (state.slice === k) render(); });
      return;
    }
    const table = windowLut();
    const img = sliceCtx.createImageData(W, H);
    const px = img.data;
    for (let n = 0; n < W * H; n++) {
      const g = table[v[n]];
      px[4 * n] = g; px[4 * n + 1] = g; px[4 * n + 2] = g; px[4 * n + 3] = 255;
    }
    sliceCtx.putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(sliceCanvas, 0, 0, axial.width, axial.height);

    const drawn = [], trailDrawn = [], markers = [];
    paths.forEach((p, pi) => {
      if (!p.visible) return;
      const cur = currentFixation(p, state.time);
      // Trail: the last `trail` fixations up to the current one, lines and markers fading with age.
      if (state.trail > 0 && cur >= 0) {
        const first = Math.max(0, cur - state.trail + 1);
        for (let f = first; f <= cur; f++) {
          const age = cur - f;
          const alpha = 0.85 * (1 - age / (state.trail + 1));
          const [x, y] = axialXY(p, f);
          if (f > first) {
            const [x0, y0] = axialXY(p, f - 1);
            ctx.globalAlpha = alpha; ctx.strokeStyle = p.colour; ctx.lineWidth = 1.5;
            ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x, y); ctx.stroke(); ctx.globalAlpha = 1;
          }
          if (p.slice[f] !== k) {
            drawMarker(ctx, x, y, radius(p.t[f]), p.colour, alpha * 0.8, false, String(f + 1));
            trailDrawn.push([pi, f]);
          }
        }
      }
      // Fixations on this slice (their Z rounds to it), whatever the time.
      for (let f = 0; f < p.n; f++) {
        if (p.slice[f] !== k) continue;
        const [x, y] = axialXY(p, f);
        // Beyond the volume (predict's z_extent 512 on a short CT): hollow and dashed.
        if (p.outside[f]) ctx.setLineDash([3, 2]);
        drawMarker(ctx, x, y, radius(p.t[f]), p.colour, 0.6, !p.outside[f], String(f + 1));
        ctx.setLineDash([]);
        if (f === cur) {
          ctx.strokeStyle = '#fff'; ctx.lineWidth = 2.5;
          ctx.beginPath(); ctx.arc(x, y, radius(p.t[f]) + 3, 0, 2 * Math.PI); ctx.stroke();
        }
        drawn.push([pi, f]);
        markers.push({ path: pi, fixation: f, x: x, y: y, r: radius(p.t[f]) });
      }
    });
    ctx.fillStyle = '#ff0'; ctx.font = '12px sans-serif'; ctx.textAlign = 'left';
    ctx.textBaseline = 'alphabetic';
    ctx.fillText('slice ' + (k + 1) + '/' + NK + '  ' + state.win.name + ' W' + state.win.width +
                 '/L' + state.win.level, 6, axial.height - 8);
    state.drawn = drawn; state.trailDrawn = trailDrawn; state.markers = markers;
    state.renderedSlice = k;
    state.renderCount++;
  }

  // ---------------------------------------------------------------- projections
  const coronal = $('coronal'), sagittal = $('sagittal');
  const zExtent = NK * sp[2];
  function sizeProjection(c, widthMm) {
    const a = Math.min(3, Math.max(0.25, zExtent / widthMm));
    c.width = 300; c.height = Math.round(300 * a);
  }
  sizeProjection(coronal, NJ * sp[1]);
  sizeProjection(sagittal, NI * sp[0]);
  let projImages = null;  // {coronal: canvas (W x NK), sagittal: canvas (H x NK)}

  function computeProjections() {
    const table = windowLut();
    const cor = new Float32Array(W * NK), sag = new Float32Array(H * NK);
    for (let k = 0; k < NK; k++) {
      const v = decoded[k];
      for (let r = 0; r < H; r++) {
        let rowSum = 0;
        const base = r * W;
        for (let c = 0; c < W; c++) {
          const g = table[v[base + c]];
          cor[k * W + c] += g;
          rowSum += g;
        }
        sag[k * H + r] = rowSum / W;
      }
      for (let c = 0; c < W; c++) cor[k * W + c] /= H;
    }
    const toCanvas = (arr, w) => {
      const c = document.createElement('canvas');
      c.width = w; c.height = NK;
      const g = c.getContext('2d');
      const img = g.createImageData(w, NK);
      for (let n = 0; n < w * NK; n++) {
        img.data[4 * n] = img.data[4 * n + 1] = img.data[4 * n + 2] = arr[n]; img.data[4 * n + 3] = 255;
      }
      g.putImageData(img, 0, 0);
      return c;
    };
    projImages = { coronal: toCanvas(cor, W), sagittal: toCanvas(sag, H) };
    state.projectionsWindow = state.win.width + ',' + state.win.level;
  }

  function renderProjection(c, which) {
    const g = c.getContext('2d');
    g.fillStyle = '#000'; g.fillRect(0, 0, c.width, c.height);
    if (projImages) {
      g.imageSmoothingEnabled = true;
      g.drawImage(projImages[which], 0, 0, c.width, c.height);
    } else {
      g.fillStyle = '#888'; g.font = '12px sans-serif';
      g.fillText('decoding ' + decodedCount + '/' + NK + ' slices…', 10, 20);
    }
    const hAxis = which === 'coronal' ? 'j' : 'i';
    const hSize = which === 'coronal' ? NJ : NI;
    const xy = (p, f) => [(p[hAxis][f] + 0.5) * c.width / hSize, (p.k[f] + 0.5) * c.height / NK];
    // Current slice.
    const ys = (state.slice + 0.5) * c.height / NK;
    g.strokeStyle = '#ffd54a'; g.setLineDash([4, 3]); g.lineWidth = 1;
    g.beginPath(); g.moveTo(0, ys); g.lineTo(c.width, ys); g.stroke(); g.setLineDash([]);
    paths.forEach((p) => {
      if (!p.visible) return;
      const cur = currentFixation(p, state.time);
      g.globalAlpha = 0.45; g.strokeStyle = p.colour; g.lineWidth = 1;
      g.beginPath();
      for (let f = 0; f < p.n; f++) { const [x, y] = xy(p, f); if (f) g.lineTo(x, y); else g.moveTo(x, y); }
      g.stroke(); g.globalAlpha = 1;
      for (let f = 0; f < p.n; f++) {
        const [x, y] = xy(p, f);
        const onSlice = p.slice[f] === state.slice;
        drawMarker(g, x, y, Math.max(1.5, radius(p.t[f]) * 0.45), p.colour, onSlice ? 0.95 : 0.35,
                   true, null);
      }
      if (cur >= 0) {
        const [x, y] = xy(p, cur);
        g.strokeStyle = '#fff'; g.lineWidth = 2;
        g.beginPath(); g.arc(x, y, Math.max(4, radius(p.t[cur]) * 0.6), 0, 2 * Math.PI); g.stroke();
      }
    });
  }

  // ---------------------------------------------------------------- drilling plot
  const drilling = $('drilling');
  const DP = { left: 44, right: 10, top: 8, bottom: 24 };
  function drillXY(t, slice) {
    const w = drilling.width - DP.left - DP.right, h = drilling.height - DP.top - DP.bottom;
    return [DP.left + (t / tMax) * w, DP.top + ((slice + 0.5) / NK) * h];
  }
  function renderDrilling() {
    const g = drilling.getContext('2d');
    const w = drilling.width, h = drilling.height;
    g.fillStyle = '#15171b'; g.fillRect(0, 0, w, h);
    g.strokeStyle = '#444'; g.lineWidth = 1;
    g.strokeRect(DP.left, DP.top, w - DP.left - DP.right, h - DP.top - DP.bottom);
    g.fillStyle = '#aab'; g.font = '10px sans-serif'; g.textAlign = 'right'; g.textBaseline = 'middle';
    for (const s of [0, Math.floor((NK - 1) / 2), NK - 1]) {
      g.fillText(String(s + 1), DP.left - 4, drillXY(0, s)[1]);
    }
    g.textAlign = 'center'; g.textBaseline = 'top';
    for (let q = 0; q <= 4; q++) {
      const t = tMax * q / 4, label = t.toFixed(1) + ' s';
      // centred under its tick, but kept inside the canvas (the last label ends at the edge)
      const half = g.measureText(label).width / 2;
      const x = Math.min(Math.max(drillXY(t, 0)[0], half + 2), w - half - 2);
      g.fillText(label, x, h - DP.bottom + 4);
    }
    paths.forEach((p) => {
      if (!p.visible) return;
      g.strokeStyle = p.colour; g.lineWidth = 1.3; g.beginPath();
      for (let f = 0; f < p.n; f++) {
        const [x0, y] = drillXY(p.onset[f], p.slice[f]);
        const [x1] = drillXY(p.offset[f], p.slice[f]);
        if (f) g.lineTo(x0, y); else g.moveTo(x0, y);
        g.lineTo(x1, y);
      }
      g.stroke();
    });
    const [xt] = drillXY(state.time, 0);
    g.strokeStyle = '#fff'; g.lineWidth = 1.5;
    g.beginPath(); g.moveTo(xt, DP.top); g.lineTo(xt, h - DP.bottom); g.stroke();
    const ys = drillXY(0, state.slice)[1];
    g.strokeStyle = '#ffd54a'; g.setLineDash([4, 3]); g.lineWidth = 1;
    g.beginPath(); g.moveTo(DP.left, ys); g.lineTo(w - DP.right, ys); g.stroke(); g.setLineDash([]);
  }

  // ---------------------------------------------------------------- controls
  const sliceSlider = $('slice-slider'), timeSlider = $('time-slider');
  sliceSlider.max = String(NK);
  timeSlider.max = String(tMax);

  function render() {
    const key = state.win.width + ',' + state.win.level;
    if (decodedCount === NK && state.projectionsWindow !== key) computeProjections();
    renderAxial();
    renderProjection(coronal, 'coronal');
    renderProjection(sagittal, 'sagittal');
    renderDrilling();
    sliceSlider.value = String(state.slice + 1);
    $('slice-label').textContent = 'slice ' + (state.slice + 1) + ' / ' + NK;
    timeSlider.value = String(state.time);
    const p = paths[state.follow];
    const cur = currentFixation(p, state.time);
    $('time-label').textContent = state.time.toFixed(2) + ' s / ' + tMax.toFixed(2) + ' s — ' +
      p.label + ' fixation ' + (cur + 1) + '/' + p.n + (state.time >= p.end ? ' (finished)' : '');
    $('window-label').textContent = state.win.name + ' W' + state.win.width + '/L' + state.win.level;
    $('window-select').value = state.win.name;
    $('play').textContent = state.playing ? '❚❚ pause' : '▶ play';
    $('play').setAttribute('aria-pressed', String(state.playing));
  }

  function setSlice(k) {
    state.slice = Math.min(NK - 1, Math.max(0, Math.round(k)));
  }
  function setTime(t, follow) {
    state.time = Math.min(tMax, Math.max(0, t));
    if (follow !== false && state.followOn) {
      const p = paths[state.follow];
      const cur = currentFixation(p, state.time);
      if (cur >= 0) setSlice(p.slice[cur]);
    }
  }
  function setWindow(name, width, level) {
    state.win = { name: name, width: width, level: level };
    $('window-wl').value = width + ',' + level;
  }
  function selectWindow(name) {
    if (name === 'custom') { applyCustomWindow(); return; }
    const w = D.windows[name];
    setWindow(name, w.width, w.level);
  }
  function applyCustomWindow() {
    const parts = $('window-wl').value.split(',').map(Number);
    if (parts.length !== 2 || !(parts[0] > 0) || !isFinite(parts[1])) {
      $('status').textContent = 'window: type WIDTH,LEVEL in HU with WIDTH > 0, e.g. 400,40';
      return;
    }
    setWindow('custom', parts[0], parts[1]);
    $('status').textContent = '';
  }

  let lastFrame = null;
  function tick(now) {
    if (!state.playing) { lastFrame = null; return; }
    if (lastFrame !== null) {
      setTime(state.time + (now - lastFrame) / 1000 * state.speed);
      if (state.time >= tMax) state.playing = false;
      render();
    }
    lastFrame = now;
    requestAnimationFrame(tick);
  }
  function setPlaying(on) {
    if (on && state.time >= tMax) setTime(0);
    state.playing = on;
    lastFrame = null;
    if (on) requestAnimationFrame(tick);
    render();
  }
  function setSpeed(s) {
    state.speed = s;
    $('speed').value = String(s);
  }
  function stepFixation(delta) {
    const p = paths[state.follow];
    const cur = currentFixation(p, state.time);
    const next = Math.min(p.n - 1, Math.max(0, cur + delta));
    setTime(p.onset[next]);
  }

  sliceSlider.addEventListener('input', () => { setSlice(Number(sliceSlider.value) - 1); render(); });
  // A range input rounds its value to ~15 digits (0.8089999999999999 reads back as 0.809), so a
  // value within a microsecond of a fixation onset of the followed reader is that onset.
  function snapToOnset(t) {
    const p = paths[state.follow];
    const f = currentFixation(p, t + 1e-6);
    return f >= 0 && Math.abs(p.onset[f] - t) < 1e-6 ? p.onset[f] : t;
  }
  timeSlider.addEventListener('input', () => { setTime(snapToOnset(Number(timeSlider.value))); render(); });
  $('play').addEventListener('click', () => setPlaying(!state.playing));
  $('speed').addEventListener('change', () => { setSpeed(Number($('speed').value)); render(); });
  $('window-select').addEventListener('change', () => { selectWindow($('window-select').value); render(); });
  $('window-wl').addEventListener('change', () => { applyCustomWindow(); render(); });
  $('follow').addEventListener('change', () => { state.followOn = $('follow').checked; setTime(state.time); render(); });
  $('follow-select').addEventListener('change', () => {
    state.follow = Number($('follow-select').value); setTime(state.time); render();
  });
  $('trail-length').addEventListener('change', () => {
    state.trail = Math.min(50, Math.max(0, Math.round(Number($('trail-length').value) || 0)));
    render();
  });
  drilling.addEventListener('click', (e) => {
    const rect = drilling.getBoundingClientRect();
    const x = (e.clientX - rect.left) * drilling.width / rect.width;
    const w = drilling.width - DP.left - DP.right;
    setTime(((x - DP.left) / w) * tMax);
    render();
  });
  for (const c of [coronal, sagittal]) {
    c.addEventListener('click', (e) => {
      const rect = c.getBoundingClientRect();
      const y = (e.clientY - rect.top) * c.height / rect.height;
      setSlice(y / c.height * NK - 0.5);
      render();
    });
  }
  axial.addEventListener('wheel', (e) => {
    e.preventDefault();
    setSlice(state.slice + (e.deltaY > 0 ? 1 : -1));
    render();
  }, { passive: false });

  document.addEventListener('keydown', (e) => {
    const tag = e.target && e.target.tagName;
    if (tag === 'INPUT' || tag === 'SELECT' || tag === 'TEXTAREA') return;
    if (tag === 'BUTTON' && (e.key === ' ' || e.key === 'Enter')) return;
    let handled = true;
    switch (e.key) {
      case 'ArrowUp': setSlice(state.slice - 1); break;
      case 'ArrowDown': setSlice(state.slice + 1); break;
      case 'PageUp': setSlice(state.slice - 10); break;
      case 'PageDown': setSlice(state.slice + 10); break;
      case 'ArrowLeft': stepFixation(-1); break;
      case 'ArrowRight': stepFixation(1); break;
      case ' ': setPlaying(!state.playing); break;
      case '[': setSpeed(SPEEDS[Math.max(0, SPEEDS.indexOf(state.speed) - 1)]); break;
      case ']': setSpeed(SPEEDS[Math.min(SPEEDS.length - 1, SPEEDS.indexOf(state.speed) + 1)]); break;
      case 'w': case 'W': {
        const n = WINDOW_CYCLE.indexOf(state.win.name);
        selectWindow(WINDOW_CYCLE[(n + 1) % WINDOW_CYCLE.length]);
        break;
      }
      case 'Home': setTime(0); break;
      case 'End': setTime(tMax); break;
      default: handled = false;
    }
    if (handled) { e.preventDefault(); render(); }
  });

  // ---------------------------------------------------------------- header and legend
  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
  }
  $('title').textContent = 'CT ' + D.name + ': scanpath viewer';
  const readers = paths.filter((p) => p.kind === 'gt').map((p) => p.subject);
  const preds = paths.filter((p) => p.kind === 'pred').length;
  const sourceLines = Object.entries(D.sources).map(([k, v]) => esc(k) + ': <code>' + esc(v) + '</code>');
  $('meta').innerHTML =
    'volume <code>' + esc(D.volume_path) + '</code> (' + NI + ' × ' + NJ + ' × ' + NK + ' voxels, ' +
    sp.map((s) => s.toFixed(2)).join(' × ') + ' mm) · readers: ' +
    (readers.length ? esc(readers.join(', ')) : 'none') + (preds ? ' · predicted scanpaths: ' + preds : '') +
    '<br>' + sourceLines.join(' · ') + '<br>shown: ' + esc(ENC.description) +
    ' · gaze (X, Y, Z) → voxel as in <code>ctsearcher visualize</code>: j = (X − 0.5)·J/512 − 0.5, ' +
    'i = (Y − 0.5)·I/512 − 0.5, k = Z − 1';

  const METRIC_COLUMNS = [['scanmatch_with_duration', 'ScanMatch (dur) ↑'],
                          ['scanmatch_without_duration', 'ScanMatch ↑'],
                          ['multimatch_mean', 'MultiMatch mean ↑'], ['sed', 'SED ↓']];
  const hasMetrics = paths.some((p) => p.metrics);
  function buildLegend() {
    const t = $('legend');
    // No source column (the header names the dataset and predictions files; a scanpath's file is
    // its name's tooltip) and headers wrap, so the table fits its panel at 1280 px with the metric
    // columns; in a narrower window it scrolls inside the panel.
    let head = '<tr><th>show</th><th>scanpath</th><th>fixations</th><th>total (s)</th><th>slices visited</th>';
    if (hasMetrics) head += METRIC_COLUMNS.map((m) => '<th>' + m[1] + '</th>').join('');
    head += '</tr>';
    const rows = paths.map((p, pi) => {
      let r = '<tr><td><input type="checkbox" id="show-' + pi + '" checked aria-label="show ' + esc(p.label) + '"></td>' +
        '<td class="name" title="from ' + esc(p.source) + '"><span class="swatch" style="background:' +
        p.colour + '"></span> ' + esc(p.label) + '</td>' +
        '<td>' + p.summary.fixations + '</td><td>' + p.summary.total_s.toFixed(2) + '</td><td>' +
        p.summary.slices_visited + '</td>';
      if (hasMetrics) {
        r += METRIC_COLUMNS.map((m) => {
          if (D.reference === pi) return '<td>reference</td>';
          const v = p.metrics ? p.metrics[m[0]] : null;
          return '<td>' + (v === null || v === undefined ? 'n/a' : v.toFixed(m[0] === 'sed' ? 0 : 3)) + '</td>';
        }).join('');
      }
      return r + '</tr>';
    });
    t.innerHTML = head + rows.join('');
    paths.forEach((p, pi) => {
      $('show-' + pi).addEventListener('change', (e) => { p.visible = e.target.checked; render(); });
    });
    if (hasMetrics && D.reference !== null) {
      $('metrics-note').textContent = 'Metrics of each scanpath against ' + paths[D.reference].label +
        ' (ScanMatch 3D, MultiMatch 3D mean of vector/direction/length/position/duration, SED; ' +
        'the project\'s metrics, as `ctsearcher evaluate` computes them).';
    }
    const fs = $('follow-select');
    fs.innerHTML = paths.map((p, pi) => '<option value="' + pi + '">' + esc(p.label) + '</option>').join('');
  }
  buildLegend();

  // ---------------------------------------------------------------- read-only state for tests
  const copy = (a) => a.map((x) => (Array.isArray(x) ? x.slice() : Object.assign({}, x)));
  window.viewerState = Object.freeze({
    get slice() { return state.slice; },                 // 0-based slice shown
    get time() { return state.time; },                   // seconds since the reading began
    get duration() { return tMax; },
    get playing() { return state.playing; },
    get speed() { return state.speed; },
    get window() { return Object.assign({}, state.win); },
    get follow() { return state.follow; },
    get drawn() { return copy(state.drawn); },           // [path, fixation] on the shown slice
    get trail() { return copy(state.trailDrawn); },      // [path, fixation] of the trail, off-slice
    get markers() { return copy(state.markers); },       // on-slice markers in canvas pixels
    get renderedSlice() { return state.renderedSlice; }, // slice of the last full render (-1: none)
    get renderCount() { return state.renderCount; },
    get decoded() { return decodedCount; },
    get projectionsReady() { return projImages !== null; },
    get canvasSize() { return [axial.width, axial.height]; },
    get shape() { return [NI, NJ, NK]; },
    get paths() {
      return paths.map((p) => ({ label: p.label, kind: p.kind, i: p.i.slice(), j: p.j.slice(),
                                 k: p.k.slice(), slice: p.slice.slice(), onset: p.onset.slice(),
                                 visible: p.visible }));
    },
  });

  // ---------------------------------------------------------------- start
  setWindow(state.win.name, state.win.width, state.win.level);
  setTime(0);
  render();
  // Decode every slice in the background (projections need them all), the shown one first.
  (async function decodeAll() {
    await decodeSlice(state.slice);
    render();
    const order = [];
    for (let k = 0; k < NK; k++) order.push(k);
    for (let n = 0; n < order.length; n += 8) {
      await Promise.all(order.slice(n, n + 8).map(decodeSlice));
      $('status').textContent = decodedCount < NK ? 'decoded ' + decodedCount + '/' + NK + ' slices' : '';
    }
    render();
  })();
})();
