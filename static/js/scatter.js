// A scatter plot for 100,000+ points: raw WebGL (one draw call, positions in a buffer, the view as
// two uniforms), a 2D-canvas fallback when WebGL is unavailable, a uniform grid index for hover
// picking, and point-in-polygon for lasso selections.

const VERTEX = `
attribute vec2 a_pos;
attribute vec4 a_color;
uniform vec2 u_scale;
uniform vec2 u_offset;
uniform float u_size;
varying vec4 v_color;
void main() {
  gl_Position = vec4(a_pos * u_scale + u_offset, 0.0, 1.0);
  gl_PointSize = u_size;
  v_color = a_color;
}`;
const FRAGMENT = `
precision mediump float;
varying vec4 v_color;
void main() {
  vec2 d = gl_PointCoord - vec2(0.5);
  if (dot(d, d) > 0.25) discard;
  gl_FragColor = v_color;
}`;

function compile(gl, type, source) {
  const shader = gl.createShader(type);
  gl.shaderSource(shader, source);
  gl.compileShader(shader);
  if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(shader) || "shader failed");
  return shader;
}

class WebGLRenderer {
  constructor(canvas) {
    const gl = canvas.getContext("webgl", { antialias: false, alpha: false, premultipliedAlpha: false });
    if (!gl) throw new Error("WebGL is not available");
    this.kind = "webgl";
    this.gl = gl;
    const program = gl.createProgram();
    gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, VERTEX));
    gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT));
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program) || "link failed");
    gl.useProgram(program);
    this.loc = {
      pos: gl.getAttribLocation(program, "a_pos"), color: gl.getAttribLocation(program, "a_color"),
      scale: gl.getUniformLocation(program, "u_scale"), offset: gl.getUniformLocation(program, "u_offset"),
      size: gl.getUniformLocation(program, "u_size"),
    };
    this.posBuffer = gl.createBuffer();
    this.colorBuffer = gl.createBuffer();
    this.count = 0;
    gl.enable(gl.BLEND);
    gl.blendFunc(gl.SRC_ALPHA, gl.ONE_MINUS_SRC_ALPHA);
  }

  setPositions(xy) {
    const gl = this.gl;
    gl.bindBuffer(gl.ARRAY_BUFFER, this.posBuffer);
    gl.bufferData(gl.ARRAY_BUFFER, xy, gl.STATIC_DRAW);
    gl.enableVertexAttribArray(this.loc.pos);
    gl.vertexAttribPointer(this.loc.pos, 2, gl.FLOAT, false, 0, 0);
    this.count = xy.length / 2;
  }

  setColors(rgba) {
    const gl = this.gl;
    gl.bindBuffer(gl.ARRAY_BUFFER, this.colorBuffer);
    gl.bufferData(gl.ARRAY_BUFFER, rgba, gl.DYNAMIC_DRAW);
    gl.enableVertexAttribArray(this.loc.color);
    gl.vertexAttribPointer(this.loc.color, 4, gl.UNSIGNED_BYTE, true, 0, 0);
  }

  draw(width, height, view, size, background) {
    const gl = this.gl;
    gl.viewport(0, 0, width, height);
    gl.clearColor(background[0], background[1], background[2], 1);
    gl.clear(gl.COLOR_BUFFER_BIT);
    // Data -> clip space: x_ndc = (x - cx) * ppu * 2 / W (CSS pixels; the device ratio cancels).
    const sx = (view.ppu * 2) / view.cssWidth, sy = (view.ppu * 2) / view.cssHeight;
    gl.uniform2f(this.loc.scale, sx, sy);
    gl.uniform2f(this.loc.offset, -view.cx * sx, -view.cy * sy);
    gl.uniform1f(this.loc.size, size);
    gl.drawArrays(gl.POINTS, 0, this.count);
  }
}

class CanvasRenderer {
  constructor(canvas) {
    this.kind = "2d";
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
  }
  setPositions(xy) { this.xy = xy; }
  setColors(rgba) { this.rgba = rgba; }
  draw(width, height, view, size, background) {
    const image = this.ctx.createImageData(width, height);
    const px = image.data;
    const bg = background.map((c) => Math.round(c * 255));
    for (let i = 0; i < px.length; i += 4) { px[i] = bg[0]; px[i + 1] = bg[1]; px[i + 2] = bg[2]; px[i + 3] = 255; }
    const ratio = width / view.cssWidth;
    const s = Math.max(1, Math.round(size / 1.5));
    const xy = this.xy, rgba = this.rgba;
    for (let i = 0, n = xy.length / 2; i < n; i++) {
      const x = Math.round(((xy[2 * i] - view.cx) * view.ppu + view.cssWidth / 2) * ratio);
      const y = Math.round((view.cssHeight / 2 - (xy[2 * i + 1] - view.cy) * view.ppu) * ratio);
      if (x < 0 || y < 0 || x >= width || y >= height) continue;
      const a = rgba[4 * i + 3] / 255;
      for (let dy = 0; dy < s && y + dy < height; dy++) {
        for (let dx = 0; dx < s && x + dx < width; dx++) {
          const o = ((y + dy) * width + x + dx) * 4;
          px[o] = px[o] * (1 - a) + rgba[4 * i] * a;
          px[o + 1] = px[o + 1] * (1 - a) + rgba[4 * i + 1] * a;
          px[o + 2] = px[o + 2] * (1 - a) + rgba[4 * i + 2] * a;
        }
      }
    }
    this.ctx.putImageData(image, 0, 0);
  }
}

// Uniform grid over the data bounds: cell -> the points in it (CSR arrays), for picking and lasso.
export class GridIndex {
  constructor(xy, bounds, cells = 256) {
    const n = xy.length / 2;
    this.cells = cells;
    this.bounds = bounds;
    this.cw = (bounds.maxX - bounds.minX) / cells || 1;
    this.ch = (bounds.maxY - bounds.minY) / cells || 1;
    const cellOf = new Uint32Array(n);
    const counts = new Uint32Array(cells * cells + 1);
    for (let i = 0; i < n; i++) {
      const c = this.cell(xy[2 * i], xy[2 * i + 1]);
      cellOf[i] = c;
      counts[c + 1]++;
    }
    for (let c = 0; c < cells * cells; c++) counts[c + 1] += counts[c];
    this.start = counts;
    this.items = new Uint32Array(n);
    const fill = counts.slice(0, cells * cells);
    for (let i = 0; i < n; i++) this.items[fill[cellOf[i]]++] = i;
    this.xy = xy;
  }

  col(x) { return Math.min(this.cells - 1, Math.max(0, Math.floor((x - this.bounds.minX) / this.cw))); }
  row(y) { return Math.min(this.cells - 1, Math.max(0, Math.floor((y - this.bounds.minY) / this.ch))); }
  cell(x, y) { return this.row(y) * this.cells + this.col(x); }

  *inBox(x0, y0, x1, y1) {
    const c0 = this.col(x0), c1 = this.col(x1), r0 = this.row(y0), r1 = this.row(y1);
    for (let r = r0; r <= r1; r++) {
      for (let c = c0; c <= c1; c++) {
        const cellId = r * this.cells + c;
        for (let k = this.start[cellId]; k < this.start[cellId + 1]; k++) yield this.items[k];
      }
    }
  }

  nearest(x, y, radius) {
    let best = -1, bestD = radius * radius;
    for (const i of this.inBox(x - radius, y - radius, x + radius, y + radius)) {
      const dx = this.xy[2 * i] - x, dy = this.xy[2 * i + 1] - y;
      const d = dx * dx + dy * dy;
      if (d <= bestD) { bestD = d; best = i; }
    }
    return best;
  }

  inPolygon(poly) {
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const [x, y] of poly) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
    const out = [];
    for (const i of this.inBox(x0, y0, x1, y1)) {
      if (pointInPolygon(this.xy[2 * i], this.xy[2 * i + 1], poly)) out.push(i);
    }
    return out;
  }
}

export function pointInPolygon(x, y, poly) {
  let inside = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const [xi, yi] = poly[i], [xj, yj] = poly[j];
    if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

export class Scatter {
  constructor(canvas, { forceFallback = false, background = [0.06, 0.08, 0.125] } = {}) {
    this.canvas = canvas;
    this.background = background;
    this.renderer = null;
    if (!forceFallback) {
      try { this.renderer = new WebGLRenderer(canvas); } catch (_) { this.renderer = null; }
    }
    if (!this.renderer) this.renderer = new CanvasRenderer(canvas);
    this.view = { cx: 0, cy: 0, ppu: 1, cssWidth: 1, cssHeight: 1 };
    this.frames = 0;
    this.dirty = false;
  }

  get kind() { return this.renderer.kind; }

  setPoints(xy) {
    this.xy = xy;
    let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    for (let i = 0; i < xy.length; i += 2) {
      minX = Math.min(minX, xy[i]); maxX = Math.max(maxX, xy[i]);
      minY = Math.min(minY, xy[i + 1]); maxY = Math.max(maxY, xy[i + 1]);
    }
    if (!Number.isFinite(minX)) { minX = minY = -1; maxX = maxY = 1; }
    this.bounds = { minX, minY, maxX, maxY };
    this.index = new GridIndex(xy, this.bounds);
    this.renderer.setPositions(xy);
    this.resetView();
  }

  setColors(rgba) {
    this.renderer.setColors(rgba);
    this.requestDraw();
  }

  resize() {
    const dpr = window.devicePixelRatio || 1;
    const w = this.canvas.clientWidth, h = this.canvas.clientHeight;
    this.view.cssWidth = w || 1;
    this.view.cssHeight = h || 1;
    this.canvas.width = Math.max(1, Math.round(w * dpr));
    this.canvas.height = Math.max(1, Math.round(h * dpr));
    this.requestDraw();
  }

  resetView() {
    const b = this.bounds;
    this.view.cx = (b.minX + b.maxX) / 2;
    this.view.cy = (b.minY + b.maxY) / 2;
    const span = Math.max((b.maxX - b.minX) / this.view.cssWidth, (b.maxY - b.minY) / this.view.cssHeight) || 1;
    this.view.ppu = 0.92 / span;
    this.basePpu = this.view.ppu;
    this.requestDraw();
  }

  toScreen(x, y) {
    const v = this.view;
    return [(x - v.cx) * v.ppu + v.cssWidth / 2, v.cssHeight / 2 - (y - v.cy) * v.ppu];
  }

  toData(px, py) {
    const v = this.view;
    return [v.cx + (px - v.cssWidth / 2) / v.ppu, v.cy - (py - v.cssHeight / 2) / v.ppu];
  }

  // The viewport relative to the whole-map view: centre in data units and zoom factor (1 = everything).
  getViewport() {
    return { cx: this.view.cx, cy: this.view.cy, zoom: this.view.ppu / (this.basePpu || 1) };
  }

  setViewport({ cx, cy, zoom }) {
    if (![cx, cy, zoom].every(Number.isFinite) || zoom <= 0) return false;
    this.view.cx = cx;
    this.view.cy = cy;
    this.view.ppu = Math.min(2000, Math.max(0.2, zoom)) * this.basePpu;
    this.requestDraw();
    return true;
  }

  panBy(dx, dy) {
    this.view.cx -= dx / this.view.ppu;
    this.view.cy += dy / this.view.ppu;
    this.requestDraw();
  }

  zoomAt(px, py, factor) {
    const [x, y] = this.toData(px, py);
    this.view.ppu = Math.min(this.basePpu * 2000, Math.max(this.basePpu * 0.2, this.view.ppu * factor));
    this.view.cx = x - (px - this.view.cssWidth / 2) / this.view.ppu;
    this.view.cy = y + (py - this.view.cssHeight / 2) / this.view.ppu;
    this.requestDraw();
  }

  pointSize() {
    const dpr = window.devicePixelRatio || 1;
    const zoom = Math.log2(this.view.ppu / (this.basePpu || 1));
    // Points grow with the zoom (x2 per 4x), so a zoomed-in cluster shows separate, visible points.
    return Math.min(28, Math.max(2.5, 3 * Math.pow(2, zoom / 2))) * dpr;
  }

  requestDraw() {
    if (this.onViewChange) this.onViewChange();
    if (this.dirty) return;
    this.dirty = true;
    requestAnimationFrame(() => {
      this.dirty = false;
      if (!this.xy) return;
      this.renderer.draw(this.canvas.width, this.canvas.height, this.view, this.pointSize(), this.background);
      this.frames += 1;
    });
  }
}
