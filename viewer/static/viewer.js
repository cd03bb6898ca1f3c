// The clinician's image viewer: a small canvas renderer of our own. The server decodes every
// transfer syntax to native little-endian pixels, so the browser needs no codecs and no WASM, and
// the page runs under the strict CSP (no inline script, no eval). What tests and benchmarks rely
// on (ids, data-* attributes kept current on every redraw, performance marks) is the viewer
// contract of issue 7; change none of it without changing them.
(function () {
  "use strict";

  const root = document.getElementById("viewer");
  if (!root) return;

  const MESSAGES = JSON.parse(document.getElementById("viewer-messages").textContent || "{}");
  const FRAME_ACCEPT =
    'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1';
  const MAX_PARALLEL_FETCHES = 6;
  const PREFETCH_AHEAD = 2;
  const PRESETS = ["auto", "caries", "endo", "perio", "image"];
  const TOOLS = ["window", "pan", "zoom", "length", "angle"];
  const POINTS_NEEDED = { length: 2, angle: 3 };
  const CLICK_SLOP = 4;          // CSS px a click may wander before it counts as a drag
  const ZOOM_MIN = 0.1, ZOOM_MAX = 50;
  const SMOOTH_UP_TO = 2;        // screen px per image px; beyond it pixels are shown as blocks
  const FMX_ROWS = 3, FMX_COLS = 7;

  const el = {
    viewports: document.getElementById("viewports"),
    imageList: document.getElementById("image-list"),
    toolbar: document.getElementById("toolbar"),
    measurements: document.getElementById("measurements"),
    calibration: document.getElementById("calibration"),
    frameInfo: document.getElementById("frame-info"),
    error: document.getElementById("viewer-error"),
    header: document.getElementById("study-header"),
    help: document.getElementById("help-panel"),
    helpToggle: document.getElementById("help-toggle"),
  };

  const app = {
    doc: null,
    images: new Map(),        // id → ImageInfo, the study's images and the priors
    studyImages: [],          // ImageInfo of the study, in document order
    layout: "single",
    viewports: [],
    active: null,
    tool: "window",
    pending: null,            // a measurement being placed: {viewport, kind, placed, cursor, fresh}
    firstViewport: null,      // the viewport whose first pixels the performance marks time
  };

  // -- texts --------------------------------------------------------------------------------------

  /** A message with {name} placeholders filled; the key itself if missing (a visible bug). */
  function t(key, values) {
    const text = MESSAGES[key] || key;
    if (!values) return text;
    return text.replace(/\{(\w+)\}/g, function (whole, name) {
      return name in values ? String(values[name]) : whole;
    });
  }

  function kindLabel(meta) {
    return t("viewer.kind." + (meta.kind || "other"));
  }

  function imageLabel(meta) {
    const kind = kindLabel(meta);
    const teeth = meta.teeth || [];
    return teeth.length ? t("viewer.image.label", { kind: kind, teeth: teeth.join(" ") })
      : t("viewer.image.label_no_teeth", { kind: kind });
  }

  /** Short numbers for captions and data-window: whole values stay whole. */
  function shortNumber(value) {
    return String(Math.round(value * 100) / 100);
  }

  // Each redraw's duration as a performance measure "arkiv:render" (the benchmark's ms per
  // render); the oldest are dropped now and then so a long session does not pile them up.
  let renderMeasures = 0;
  function measureRender(started) {
    if (++renderMeasures % 5000 === 0) performance.clearMeasures("arkiv:render");
    performance.measure("arkiv:render", { start: started, end: performance.now() });
  }

  /** Settles when the first full-resolution image is on screen (or could not be fetched), the
   *  moment the rest of the page's images may start competing for the server. */
  let firstFullDrawn = function () {};
  const firstFullShown = new Promise(function (resolve) { firstFullDrawn = resolve; });

  const marked = new Set();
  function markOnce(name) {
    if (marked.has(name)) return;
    marked.add(name);
    performance.mark(name);
  }

  // -- fetching: at most six at once, the most urgent first ---------------------------------------

  const fetchQueue = { running: 0, waiting: [] };
  const frameCache = new Map();   // "id#n" → {promise, job}; each frame is read once per page

  function pumpFetches() {
    while (fetchQueue.running < MAX_PARALLEL_FETCHES && fetchQueue.waiting.length) {
      let best = 0;
      for (let i = 1; i < fetchQueue.waiting.length; i++) {
        if (fetchQueue.waiting[i].priority < fetchQueue.waiting[best].priority) best = i;
      }
      const job = fetchQueue.waiting.splice(best, 1)[0];
      fetchQueue.running++;
      job.run().finally(function () {
        fetchQueue.running--;
        pumpFetches();
      });
    }
  }

  /** The decoded frame n of an image (a promise, shared by everyone who asks). A lower
   * priority number is fetched sooner; asking again with a more urgent one moves it up. */
  function loadFrame(image, n, priority) {
    const key = image.meta.id + "#" + n;
    const cached = frameCache.get(key);
    if (cached) {
      cached.job.priority = Math.min(cached.job.priority, priority);
      return cached.promise;
    }
    const job = { priority: priority, run: null };
    const promise = new Promise(function (resolve, reject) {
      job.run = function () { return fetchFrame(image.meta, n).then(resolve, reject); };
    });
    promise.catch(function () { /* reported by the viewport that shows it */ });
    frameCache.set(key, { promise: promise, job: job });
    fetchQueue.waiting.push(job);
    pumpFetches();
    return promise;
  }

  /** A multi-frame image's frames share one URL; a stack of single-frame slices (a CBCT sent as
   *  CT images) names each slice's own. */
  function frameUrl(meta, n) {
    return meta.slice_urls ? meta.slice_urls[n - 1] : meta.frames_url + n;
  }

  async function fetchFrame(meta, n) {
    const response = await fetch(frameUrl(meta, n), {
      credentials: "same-origin", headers: { Accept: FRAME_ACCEPT },
    });
    if (!response.ok) throw new Error(await errorReason(response));
    const body = new Uint8Array(await response.arrayBuffer());
    return decodeFrame(meta, multipartBody(body, response.headers.get("Content-Type") || ""));
  }

  /** The server's own words for a refusal: FastAPI's "detail" (a string or an object with a
   * reason), or a top-level "reason"; else the status. */
  async function errorReason(response) {
    try {
      const body = await response.json();
      const detail = body && (body.detail !== undefined ? body.detail : body.reason);
      if (typeof detail === "string" && detail) return detail;
      if (detail && typeof detail === "object") {
        const text = detail.reason || detail.message || detail.detail;
        if (typeof text === "string" && text) return text;
      }
    } catch (ignored) { /* not JSON: fall back to the status */ }
    return t("viewer.error.http", { status: response.status });
  }

  function asciiBytes(text) {
    return Uint8Array.from(text, function (c) { return c.charCodeAt(0); });
  }

  function bytesMatchAt(bytes, pattern, at) {
    for (let j = 0; j < pattern.length; j++) if (bytes[at + j] !== pattern[j]) return false;
    return true;
  }

  function indexOfBytes(bytes, pattern, from) {
    for (let i = from; i <= bytes.length - pattern.length; i++) {
      if (bytesMatchAt(bytes, pattern, i)) return i;
    }
    return -1;
  }

  function lastIndexOfBytes(bytes, pattern) {
    for (let i = bytes.length - pattern.length; i >= 0; i--) {
      if (bytesMatchAt(bytes, pattern, i)) return i;
    }
    return -1;
  }

  /** The one part of a multipart/related answer: after the first boundary's headers, up to the
   * closing delimiter (searched from the end, so pixel bytes can never be mistaken for it). */
  function multipartBody(bytes, contentType) {
    const match = /boundary="?([^";,]+)"?/i.exec(contentType);
    if (!match) throw new Error("no multipart boundary in " + contentType);
    const boundary = "--" + match[1].trim();
    const first = indexOfBytes(bytes, asciiBytes(boundary), 0);
    const headersEnd = first < 0 ? -1 : indexOfBytes(bytes, asciiBytes("\r\n\r\n"), first);
    const end = lastIndexOfBytes(bytes, asciiBytes("\r\n" + boundary));
    if (headersEnd < 0 || end < headersEnd + 4) throw new Error("malformed multipart answer");
    return bytes.subarray(headersEnd + 4, end);
  }

  /** Native pixels → what the renderer indexes its lookup table with: for grey images one
   * unsigned index per pixel (masked to bits_stored, or sign-extended and offset), for RGB the
   * interleaved 8-bit samples. Done once per frame, so every redraw is a plain table lookup. */
  function decodeFrame(meta, bytes) {
    const allocated = meta.bits_allocated;
    const stored = Math.min(meta.bits_stored || allocated, allocated);
    const samples = meta.samples_per_pixel || 1;
    const signed = meta.pixel_representation === 1;
    const count = meta.rows * meta.columns * samples;
    const size = allocated / 8;
    if ((allocated !== 8 && allocated !== 16) || bytes.length < count * size) {
      throw new Error("unexpected pixel data: " + bytes.length + " bytes");
    }
    // Typed arrays need an aligned offset; copy only when the part body starts on an odd byte.
    const aligned = bytes.byteOffset % size === 0 ? bytes : bytes.slice(0, count * size);
    const Raw = allocated === 8 ? (signed ? Int8Array : Uint8Array) : (signed ? Int16Array : Uint16Array);
    const raw = new Raw(aligned.buffer, aligned.byteOffset, count);
    const frame = { rgb: samples === 3, values: raw, lutSize: 1 << stored, offset: 0 };
    if (frame.rgb) {
      frame.lutSize = 256;
      return frame;
    }
    const Index = stored <= 8 ? Uint8Array : Uint16Array;
    if (signed) {
      const shift = 32 - stored;
      const offset = 1 << (stored - 1);
      const values = new Index(count);
      for (let i = 0; i < count; i++) values[i] = ((raw[i] << shift) >> shift) + offset;
      frame.values = values;
      frame.offset = offset;
    } else if (stored < allocated) {
      const mask = (1 << stored) - 1;
      const values = new Index(count);
      for (let i = 0; i < count; i++) values[i] = raw[i] & mask;
      frame.values = values;
    }
    return frame;
  }

  // -- values, windows and lookup tables ----------------------------------------------------------

  function rescale(meta, frame) {
    if (frame.rgb) return { slope: 1, intercept: 0 };
    return { slope: meta.rescale_slope || 1, intercept: meta.rescale_intercept || 0 };
  }

  /** The 1st and 99th percentile and the extremes of the modality values, from a histogram of
   * the table indices (one pass over the pixels, one over the histogram). */
  function frameStats(meta, frame) {
    const histogram = new Uint32Array(frame.lutSize);
    const values = frame.values;
    for (let i = 0; i < values.length; i++) histogram[values[i]]++;
    const total = values.length;
    let sum = 0, lo = -1, hi = -1, min = -1, max = 0;
    for (let i = 0; i < histogram.length; i++) {
      if (!histogram[i]) continue;
      if (min < 0) min = i;
      max = i;
      sum += histogram[i];
      if (lo < 0 && sum >= total * 0.01) lo = i;
      if (hi < 0 && sum >= total * 0.99) hi = i;
    }
    const r = rescale(meta, frame);
    const modality = function (index) { return (index - frame.offset) * r.slope + r.intercept; };
    const pair = function (a, b) {
      const x = modality(a), y = modality(b);
      return x <= y ? [x, y] : [y, x];
    };
    const [pLo, pHi] = pair(lo, hi);
    const [vMin, vMax] = pair(min, max);
    return { lo: pLo, hi: pHi > pLo ? pHi : pLo + 1, min: vMin, max: vMax > vMin ? vMax : vMin + 1 };
  }

  /** The window that maps lo → 0 and hi → 255 under the DICOM linear function. */
  function windowForRange(lo, hi) {
    return { center: (lo + hi) / 2 + 0.5, width: hi - lo + 1 };
  }

  function defaultWindow(image) {
    const windows = image.meta.windows || [];
    if (windows.length) return { center: windows[0].center, width: windows[0].width };
    // Photos keep their colours: the identity window.
    if (image.meta.samples_per_pixel === 3) return { center: 128, width: 256 };
    return image.stats ? windowForRange(image.stats.lo, image.stats.hi) : null;
  }

  /** Dental presets, relative to the image's own 1st..99th percentile range. */
  function presetWindow(image, name) {
    if (name === "image") return (image.meta.windows || []).length ? defaultWindow(image) : null;
    if (!image.stats) return null;
    const lo = image.stats.lo, r = image.stats.hi - image.stats.lo;
    switch (name) {
      case "auto": return windowForRange(image.stats.lo, image.stats.hi);
      case "caries": return { center: lo + 0.62 * r, width: 0.38 * r };
      case "endo": return { center: lo + 0.5 * r, width: 0.7 * r };
      case "perio": return { center: lo + 0.4 * r, width: 0.55 * r };
      default: return null;
    }
  }

  /** Raw value → grey (DICOM PS3.3 C.11.2.1.2, linear), with the inversion folded in. Grey images
   * get packed RGBA words for a Uint32Array view of the ImageData; RGB gets one byte per value. */
  function buildLut(meta, frame, win, inverted) {
    const r = rescale(meta, frame);
    const lut = frame.rgb ? new Uint8Array(frame.lutSize) : new Uint32Array(frame.lutSize);
    const c = win.center, w = Math.max(1, win.width);
    const low = c - 0.5 - (w - 1) / 2, high = c - 0.5 + (w - 1) / 2;
    for (let i = 0; i < lut.length; i++) {
      const v = (i - frame.offset) * r.slope + r.intercept;
      let g = v <= low ? 0 : v > high ? 255 : Math.round(((v - (c - 0.5)) / (w - 1) + 0.5) * 255);
      if (inverted) g = 255 - g;
      lut[i] = frame.rgb ? g : (0xff000000 | (g << 16) | (g << 8) | g);
    }
    return lut;
  }

  /** How many image pixels a side may be averaged into one when the screen shows fewer:
   * a power of two, at most 8, never more than the image pixels per device pixel. */
  function detailLevel(devicePixelsPerImagePixel) {
    let level = 1;
    while (level < 8 && level * 2 * devicePixelsPerImagePixel <= 1) level *= 2;
    return level;
  }

  /** The frame's table indices averaged over level × level blocks (made once per level). */
  function reducedFrame(frame, width, height, level) {
    frame.reduced = frame.reduced || new Map();
    const known = frame.reduced.get(level);
    if (known) return known;
    const w = Math.ceil(width / level), h = Math.ceil(height / level);
    const values = new frame.values.constructor(w * h);
    const sums = new Uint32Array(w);
    for (let oy = 0; oy < h; oy++) {
      sums.fill(0);
      const y0 = oy * level, y1 = Math.min(height, y0 + level);
      for (let y = y0; y < y1; y++) {
        const row = y * width;
        for (let x = 0; x < width; x++) sums[(x / level) | 0] += frame.values[row + x];
      }
      for (let ox = 0; ox < w; ox++) {
        const across = Math.min(width, (ox + 1) * level) - ox * level;
        values[oy * w + ox] = Math.round(sums[ox] / (across * (y1 - y0)));
      }
    }
    const reduced = { rgb: false, values: values };
    frame.reduced.set(level, reduced);
    return reduced;
  }

  function paintFrame(frame, lut, imageData) {
    const out = new Uint32Array(imageData.data.buffer);
    const values = frame.values;
    if (!frame.rgb) {
      for (let i = 0; i < out.length; i++) out[i] = lut[values[i]];
      return;
    }
    for (let i = 0, j = 0; i < out.length; i++, j += 3) {
      out[i] = 0xff000000 | (lut[values[j + 2]] << 16) | (lut[values[j + 1]] << 8) | lut[values[j]];
    }
  }

  // -- geometry -----------------------------------------------------------------------------------

  // x' = a x + c y, y' = b x + d y for 0..3 quarter turns clockwise (screen y points down).
  const QUARTER_TURNS = [[1, 0, 0, 1], [0, 1, -1, 0], [-1, 0, 0, -1], [0, -1, 1, 0]];

  function freshView() {
    return { zoom: 1, panX: 0, panY: 0, rotation: 0, flipH: false, flipV: false };
  }

  function freshDisplay() {
    return { view: freshView(), window: null, invert: false };
  }

  /** Image pixel → CSS pixel of a viewport of cw × ch. Pan is kept as a fraction of the fitted
   * image's size on screen, so two images of different sizes in compare stay lined up. */
  function viewGeometry(meta, view, cw, ch) {
    const w = meta.columns, h = meta.rows;
    const quarter = ((view.rotation % 4) + 4) % 4;
    const turned = quarter % 2 === 1;
    const rw = turned ? h : w, rh = turned ? w : h;
    const fit = Math.min(cw / rw, ch / rh) || 1;
    const scale = fit * view.zoom;
    let [a, b, c, d] = QUARTER_TURNS[quarter];
    if (view.flipH) { a = -a; c = -c; }
    if (view.flipV) { b = -b; d = -d; }
    a *= scale; b *= scale; c *= scale; d *= scale;
    const fittedW = rw * fit, fittedH = rh * fit;
    const tx = cw / 2 + view.panX * fittedW, ty = ch / 2 + view.panY * fittedH;
    return {
      m: [a, b, c, d, tx - (a * w + c * h) / 2, ty - (b * w + d * h) / 2],
      scale: scale, fittedW: fittedW, fittedH: fittedH,
    };
  }

  function toScreen(m, p) {
    return { x: m[0] * p.x + m[2] * p.y + m[4], y: m[1] * p.x + m[3] * p.y + m[5] };
  }

  function toImage(m, x, y) {
    const det = m[0] * m[3] - m[1] * m[2];
    const dx = x - m[4], dy = y - m[5];
    return { x: (m[3] * dx - m[2] * dy) / det, y: (-m[1] * dx + m[0] * dy) / det };
  }

  // -- measurements -------------------------------------------------------------------------------

  function measurementValue(meta, measurement) {
    const s = meta.spacing;
    const sx = s ? s.column_mm : 1, sy = s ? s.row_mm : 1;
    const p = measurement.points;
    if (measurement.kind === "length") {
      const value = Math.hypot((p[1].x - p[0].x) * sx, (p[1].y - p[0].y) * sy);
      if (!s) return { data: "", text: t("viewer.measure.length_px", { value: Math.round(value) }) };
      return { data: value.toFixed(2), text: t("viewer.measure.length_mm", { value: value.toFixed(1) }) };
    }
    // The angle at the second point, in physical space when the pixels are not square.
    const ux = (p[0].x - p[1].x) * sx, uy = (p[0].y - p[1].y) * sy;
    const vx = (p[2].x - p[1].x) * sx, vy = (p[2].y - p[1].y) * sy;
    const cos = (ux * vx + uy * vy) / (Math.hypot(ux, uy) * Math.hypot(vx, vy) || 1);
    const degrees = (Math.acos(Math.max(-1, Math.min(1, cos))) * 180) / Math.PI;
    return { data: degrees.toFixed(1), text: t("viewer.measure.angle", { value: degrees.toFixed(1) }) };
  }

  function measurementsShown(image) {
    return image.measurements.filter(function (m) { return m.frame === image.frame; });
  }

  // -- images -------------------------------------------------------------------------------------

  function makeImageInfo(meta, prior) {
    const thumb = new Image();
    thumb.alt = imageLabel(meta);
    thumb.decoding = "async";
    const info = {
      meta: meta, prior: prior, stats: null, frame: 1, frames: Math.max(1, meta.frames || 1),
      display: freshDisplay(), measurements: [], thumb: thumb, thumbReady: null,
    };
    info.thumbReady = new Promise(function (resolve) {
      thumb.addEventListener("load", function () { resolve(true); }, { once: true });
      thumb.addEventListener("error", function () { resolve(false); }, { once: true });
    });
    return info;
  }

  /** Fetch the thumbnail once: the list's <img> is the one the viewports draw from. */
  function requestThumbnail(image) {
    if (!image.thumb.getAttribute("src")) image.thumb.src = image.meta.thumbnail_url;
    return image.thumbReady;
  }

  /** Frame n of an image, with its statistics computed from the first frame that arrives. */
  function frameOf(image, n, priority) {
    return loadFrame(image, n, priority).then(function (frame) {
      if (!image.stats) image.stats = frameStats(image.meta, frame);
      return frame;
    });
  }

  function prefetchFrames(image) {
    for (let k = 1; k <= PREFETCH_AHEAD; k++) {
      const n = image.frame + k;
      if (n <= image.frames) frameOf(image, n, 2).catch(function () { /* shown when visited */ });
    }
  }

  // -- viewports ----------------------------------------------------------------------------------

  class Viewport {
    constructor(image, display, caption) {
      this.image = image;
      this.display = display;       // shared between the two viewports of compare
      this.captionExtra = caption || "";
      this.frame = null;            // the decoded frame drawn, and its number
      this.frameNumber = 0;
      this.failed = false;
      this.renders = 0;
      this.drawScheduled = false;
      this.painted = new Map();     // detail level → {key, canvas, context, imageData}
      this.pointers = new Map();
      this.gesture = null;
      this.pinch = null;
      this.cssWidth = 0;
      this.cssHeight = 0;
      this.build();
    }

    get meta() { return this.image.meta; }

    build() {
      const div = document.createElement("div");
      div.className = "viewport";
      div.tabIndex = 0;
      div.dataset.imageId = this.meta.id;
      div.dataset.state = "thumbnail";
      div.dataset.frame = "1";
      div.dataset.renders = "0";
      div.dataset.active = "false";
      const canvas = document.createElement("canvas");
      canvas.setAttribute("role", "img");
      canvas.setAttribute("aria-label", imageLabel(this.meta));
      // The focusable frame says which side of compare it is; the canvas names the image.
      div.setAttribute("role", "group");
      div.setAttribute("aria-label", [imageLabel(this.meta), this.captionExtra].filter(Boolean).join(", "));
      const caption = document.createElement("div");
      caption.className = "caption";
      this.corners = {};
      ["tl", "tr", "bl", "br"].forEach(function (corner) {
        const span = document.createElement("span");
        span.className = "corner " + corner;
        caption.appendChild(span);
        this.corners[corner] = span;
      }, this);
      div.append(canvas, caption);
      this.el = div;
      this.canvas = canvas;
      this.ctx = canvas.getContext("2d");
      this.listen();
      this.resizeObserver = new ResizeObserver(() => this.resize());
      this.resizeObserver.observe(div);
    }

    listen() {
      const div = this.el;
      div.addEventListener("pointerdown", (e) => this.onPointerDown(e));
      div.addEventListener("pointermove", (e) => this.onPointerMove(e));
      div.addEventListener("pointerup", (e) => this.onPointerUp(e));
      div.addEventListener("pointercancel", (e) => this.onPointerUp(e));
      div.addEventListener("wheel", (e) => this.onWheel(e), { passive: false });
      div.addEventListener("focus", () => setActive(this));
      div.addEventListener("dblclick", () => {
        if (app.layout === "fmx") showSingle(this.image);
      });
      div.addEventListener("contextmenu", (e) => e.preventDefault());
    }

    destroy() {
      this.destroyed = true;
      this.resizeObserver.disconnect();
    }

    resize() {
      const rect = this.el.getBoundingClientRect();
      const dpr = window.devicePixelRatio || 1;
      this.cssWidth = rect.width;
      this.cssHeight = rect.height;
      this.canvas.width = Math.max(1, Math.round(rect.width * dpr));
      this.canvas.height = Math.max(1, Math.round(rect.height * dpr));
      this.draw();
    }

    geometry() {
      return viewGeometry(this.meta, this.display.view, this.cssWidth, this.cssHeight);
    }

    windowShown() {
      return this.display.window || defaultWindow(this.image);
    }

    /** Thumbnail, then the full frame (its priority decides its place in the queue). The
     *  active viewport's thumbnail is asked for at once; the others' wait until the first full
     *  image is on screen, since rendering eighteen thumbnails on the server would otherwise
     *  hold up the one image the dentist looks at first. */
    start(priority) {
      const thumbnail = priority === 0 ? requestThumbnail(this.image)
        : firstFullShown.then(() => requestThumbnail(this.image));
      thumbnail.then((ok) => {
        if (ok && !this.frame) {
          this.draw();
          if (this === app.firstViewport) markOnce("arkiv:thumbnail-shown");
        }
      });
      // The others' frames wait too: on a server of a few cores, five frames read at once
      // would each take the first one's time.
      if (priority === 0) this.showFrame(this.image.frame, priority);
      else firstFullShown.then(() => this.showFrame(this.image.frame, priority));
    }

    showFrame(n, priority) {
      frameOf(this.image, n, priority).then((frame) => {
        // Scrolling fast: only the frame still wanted is drawn, never an older answer.
        if (this.destroyed || n !== this.image.frame) return;
        this.frame = frame;
        this.frameNumber = n;
        this.failed = false;
        this.draw();
        if (this === app.firstViewport) {
          markOnce("arkiv:thumbnail-shown");   // when the full frame came first
          markOnce("arkiv:first-full");
        }
        firstFullDrawn();
        if (this === app.active) updatePanel();
      }, () => {
        firstFullDrawn();   // a failed frame must not keep the other thumbnails back
        if (this.destroyed || n !== this.image.frame) return;
        this.failed = true;
        this.draw();
      });
    }

    /** Redraw at the next animation frame, at most once per frame however many events come. */
    requestDraw() {
      if (this.drawScheduled || this.destroyed) return;
      this.drawScheduled = true;
      requestAnimationFrame(() => {
        this.drawScheduled = false;
        this.draw();
      });
    }

    /** The full frame rendered through the current window into an image-sized canvas; redone
     * only when the frame, window or inversion changed, so pan and zoom are a single drawImage.
     * A grey image shown smaller than half size is painted from a block-averaged copy with about
     * as many pixels as the screen shows: a window drag on a panoramic then costs a quarter, and
     * the picture is free of the aliasing a bilinear shrink by more than 2 leaves. */
    fullSource(devicePixelsPerImagePixel) {
      const win = this.windowShown();
      if (!win) return null;
      const inverted = (this.meta.photometric === "MONOCHROME1") !== this.display.invert;
      const level = this.frame.rgb ? 1 : detailLevel(devicePixelsPerImagePixel);
      const key = [this.frameNumber, win.center, win.width, inverted].join("|");
      let painted = this.painted.get(level);
      if (!painted) {
        painted = { key: "", canvas: document.createElement("canvas") };
        painted.canvas.width = Math.ceil(this.meta.columns / level);
        painted.canvas.height = Math.ceil(this.meta.rows / level);
        painted.context = painted.canvas.getContext("2d");
        painted.imageData = painted.context.createImageData(painted.canvas.width, painted.canvas.height);
        this.painted.set(level, painted);
      }
      if (painted.key !== key) {
        const source = level === 1 ? this.frame
          : reducedFrame(this.frame, this.meta.columns, this.meta.rows, level);
        paintFrame(source, buildLut(this.meta, this.frame, win, inverted), painted.imageData);
        painted.context.putImageData(painted.imageData, 0, 0);
        painted.key = key;
      }
      return painted.canvas;
    }

    draw() {
      if (this.destroyed || !this.cssWidth || !this.cssHeight) return;
      const started = performance.now();
      const ctx = this.ctx;
      const dpr = this.canvas.width / this.cssWidth;
      const g = this.geometry();
      const m = g.m;
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
      let state = "thumbnail";
      const full = this.frame ? this.fullSource(g.scale * dpr) : null;
      const source = full || (this.image.thumb.complete && this.image.thumb.naturalWidth ? this.image.thumb : null);
      if (source) {
        ctx.setTransform(m[0] * dpr, m[1] * dpr, m[2] * dpr, m[3] * dpr, m[4] * dpr, m[5] * dpr);
        // Smooth when shrinking; show the pixels as they are when the dentist zooms in close.
        ctx.imageSmoothingEnabled = !full || g.scale <= SMOOTH_UP_TO;
        ctx.drawImage(source, 0, 0, this.meta.columns, this.meta.rows);
        if (full) state = "full";
      }
      if (this.failed) state = "error";
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      this.drawMeasurements(ctx, m);
      this.renders++;
      this.updateAttributes(state, m, g.scale);
      measureRender(started);
    }

    drawMeasurements(ctx, m) {
      const drawn = measurementsShown(this.image).map((x) => (
        { kind: x.kind, points: x.points, label: measurementValue(this.meta, x).text }));
      const pending = app.pending;
      if (pending && pending.viewport === this) {
        drawn.push({ kind: pending.kind, points: pending.placed.concat([pending.cursor]), label: "" });
      }
      drawn.forEach(function (shape) { drawShape(ctx, m, shape); });
    }

    updateAttributes(state, m, scale) {
      const data = this.el.dataset;
      const win = this.windowShown();
      data.state = state;
      data.window = win ? shortNumber(win.center) + "," + shortNumber(win.width) : "";
      data.transform = m.join(",");
      data.frame = String(this.frameNumber || this.image.frame);
      data.renders = String(this.renders);
      this.updateCaption(win, scale);
    }

    updateCaption(win, scale) {
      const meta = this.meta;
      const date = this.image.prior ? meta.study_date : (app.doc.study.date || "");
      const top = [imageLabel(meta)];
      if (this.captionExtra) top.push(this.captionExtra);
      const right = this.captionExtra ? [] : [date];   // in compare the date is in captionExtra
      if (this.image.frames > 1) right.push(t("viewer.frame", { n: this.image.frame, total: this.image.frames }));
      if (this.failed) right.push(t("viewer.error.frame"));
      setText(this.corners.tl, top.join(" · "));
      setText(this.corners.tr, right.join(" · "));
      setText(this.corners.bl, win ? t("viewer.caption.window",
        { center: shortNumber(win.center), width: shortNumber(win.width) }) : "");
      setText(this.corners.br, t("viewer.caption.zoom", { zoom: Math.round(scale * 100) }));
    }

    // - pointer: one pointer uses the active tool, two pinch-zoom and pan -------------------------

    localPoint(e) {
      const rect = this.el.getBoundingClientRect();
      return { x: e.clientX - rect.left, y: e.clientY - rect.top };
    }

    onPointerDown(e) {
      if (e.pointerType === "mouse" && e.button !== 0) return;
      setActive(this);
      this.el.focus({ preventScroll: true });
      try {
        this.el.setPointerCapture(e.pointerId);
      } catch (notActive) { /* a synthetic event has no pointer to capture; nothing is lost */ }
      const p = this.localPoint(e);
      this.pointers.set(e.pointerId, p);
      if (this.pointers.size === 2) {
        this.startPinch();
        return;
      }
      if (this.pointers.size > 2) return;
      this.gesture = { tool: app.tool, start: p, last: p, window: this.windowShown(), id: e.pointerId };
      if (POINTS_NEEDED[app.tool]) measureDown(this, p);
      e.preventDefault();
    }

    onPointerMove(e) {
      const p = this.localPoint(e);
      if (this.pointers.has(e.pointerId)) this.pointers.set(e.pointerId, p);
      if (this.pinch) {
        this.movePinch();
        return;
      }
      if (app.pending && app.pending.viewport === this) {
        app.pending.cursor = toImage(this.geometry().m, p.x, p.y);
        this.requestDraw();
      }
      const gesture = this.gesture;
      if (!gesture || gesture.id !== e.pointerId) return;
      const dx = p.x - gesture.last.x, dy = p.y - gesture.last.y;
      gesture.last = p;
      if (gesture.tool === "window") this.dragWindow(gesture, p);
      else if (gesture.tool === "pan") panBy(this, dx, dy);
      else if (gesture.tool === "zoom") zoomAbout(this, Math.exp(-dy * 0.01), gesture.start.x, gesture.start.y);
    }

    onPointerUp(e) {
      const p = this.localPoint(e);
      const gesture = this.gesture;
      if (gesture && gesture.id === e.pointerId && !this.pinch && POINTS_NEEDED[gesture.tool]) {
        measureUp(this, gesture, p);
      }
      this.pointers.delete(e.pointerId);
      if (this.pointers.size < 2) this.pinch = null;
      if (!this.pointers.size || (gesture && gesture.id === e.pointerId)) this.gesture = null;
    }

    /** Horizontal drag → width, vertical → centre; a drag across the whole viewport spans the
     * image's whole value range, whatever its bit depth. */
    dragWindow(gesture, p) {
      const start = gesture.window;
      if (!start) return;
      const range = valueRange(this.image);
      this.display.window = {
        center: start.center + ((p.y - gesture.start.y) / this.cssHeight) * range,
        width: Math.max(1, start.width + ((p.x - gesture.start.x) / this.cssWidth) * range),
      };
      displayChanged(this.display);
    }

    startPinch() {
      // A second finger turns a started one-finger gesture into a pinch: drop what it began.
      if (app.pending && app.pending.viewport === this && app.pending.fresh) cancelPending();
      this.gesture = null;
      this.pinch = this.pinchFacts();
    }

    pinchFacts() {
      const [a, b] = Array.from(this.pointers.values());
      return { distance: Math.hypot(b.x - a.x, b.y - a.y) || 1, x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 };
    }

    movePinch() {
      if (this.pointers.size < 2) return;
      const now = this.pinchFacts();
      panBy(this, now.x - this.pinch.x, now.y - this.pinch.y);
      zoomAbout(this, now.distance / this.pinch.distance, now.x, now.y);
      this.pinch = now;
    }

    onWheel(e) {
      e.preventDefault();
      setActive(this);
      if (this.image.frames > 1 && !e.ctrlKey) {
        stepFrame(this, Math.sign(e.deltaY));
        return;
      }
      const p = this.localPoint(e);
      const lines = e.deltaMode === 1 ? 30 : e.deltaMode === 2 ? 300 : 1;
      zoomAbout(this, Math.exp(-e.deltaY * lines * 0.0015), p.x, p.y);
    }
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function valueRange(image) {
    if (image.stats) return image.stats.max - image.stats.min;
    const win = defaultWindow(image);
    return win ? win.width : 256;
  }

  function drawShape(ctx, m, shape) {
    const points = shape.points.map(function (p) { return toScreen(m, p); });
    ctx.save();
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = "#ffd84d";
    ctx.fillStyle = "#ffd84d";
    ctx.shadowColor = "#000";
    ctx.shadowBlur = 2;
    ctx.beginPath();
    points.forEach(function (p, i) { if (i) ctx.lineTo(p.x, p.y); else ctx.moveTo(p.x, p.y); });
    ctx.stroke();
    points.forEach(function (p) {
      ctx.beginPath();
      ctx.arc(p.x, p.y, 3, 0, 2 * Math.PI);
      ctx.fill();
    });
    if (shape.label) {
      const at = shape.kind === "angle" ? points[1] : points[points.length - 1];
      ctx.font = "bold 13px system-ui, sans-serif";
      ctx.shadowBlur = 0;
      const width = ctx.measureText(shape.label).width;
      ctx.fillStyle = "rgba(0, 0, 0, 0.75)";
      ctx.fillRect(at.x + 6, at.y - 18, width + 8, 18);
      ctx.fillStyle = "#ffd84d";
      ctx.fillText(shape.label, at.x + 10, at.y - 5);
    }
    ctx.restore();
  }

  // -- changing the view --------------------------------------------------------------------------

  /** Every viewport showing this display state redraws (both sides of compare). */
  function displayChanged(display) {
    app.viewports.forEach(function (vp) { if (vp.display === display) vp.requestDraw(); });
    if (app.active && app.active.display === display) updateToolbarState();
  }

  function panBy(vp, dx, dy) {
    const g = vp.geometry();
    vp.display.view.panX += dx / g.fittedW;
    vp.display.view.panY += dy / g.fittedH;
    displayChanged(vp.display);
  }

  /** Zoom keeping the image point under (qx, qy) where it is. */
  function zoomAbout(vp, factor, qx, qy) {
    const view = vp.display.view;
    const g = vp.geometry();
    const zoom = Math.min(ZOOM_MAX, Math.max(ZOOM_MIN, view.zoom * factor));
    const k = zoom / view.zoom;
    const cx = vp.cssWidth / 2, cy = vp.cssHeight / 2;
    const px = view.panX * g.fittedW, py = view.panY * g.fittedH;
    view.panX = (qx - cx - (qx - cx - px) * k) / g.fittedW;
    view.panY = (qy - cy - (qy - cy - py) * k) / g.fittedH;
    view.zoom = zoom;
    displayChanged(vp.display);
  }

  /** 90° clockwise on screen about the viewport's centre: the pan turns with the image. The
   * flips act after the rotation, so with one flip on, a clockwise turn of the picture is a
   * counter-clockwise turn of the image under it. */
  function rotate(vp) {
    const view = vp.display.view;
    const before = vp.geometry();
    const px = view.panX * before.fittedW, py = view.panY * before.fittedH;
    view.rotation = (view.rotation + (view.flipH !== view.flipV ? 3 : 1)) % 4;
    const after = vp.geometry();
    view.panX = -py / after.fittedW;
    view.panY = px / after.fittedH;
    displayChanged(vp.display);
  }

  function flip(vp, horizontal) {
    const view = vp.display.view;
    if (horizontal) { view.flipH = !view.flipH; view.panX = -view.panX; }
    else { view.flipV = !view.flipV; view.panY = -view.panY; }
    displayChanged(vp.display);
  }

  function invert(vp) {
    vp.display.invert = !vp.display.invert;
    displayChanged(vp.display);
  }

  /** Back to fit and the default window; measurements are kept. */
  function reset(vp) {
    Object.assign(vp.display.view, freshView());
    vp.display.window = null;
    vp.display.invert = false;
    displayChanged(vp.display);
  }

  function applyPreset(vp, name) {
    const win = presetWindow(vp.image, name);
    if (!win) return;
    vp.display.window = win;
    displayChanged(vp.display);
  }

  function stepFrame(vp, delta) {
    const image = vp.image;
    const n = Math.min(image.frames, Math.max(1, image.frame + delta));
    if (n === image.frame) return;
    image.frame = n;
    vp.showFrame(n, 0);
    prefetchFrames(image);
    vp.requestDraw();
    updatePanel();
  }

  function toggleFullscreen() {
    if (document.fullscreenElement) {
      document.exitFullscreen().catch(function () { /* already left */ });
      return;
    }
    const target = el.viewports;
    const request = target.requestFullscreen || target.webkitRequestFullscreen;
    if (!request) return;
    const result = request.call(target);
    if (result && result.catch) result.catch(function () { /* refused by the browser */ });
  }

  // -- measuring ----------------------------------------------------------------------------------

  function measureDown(vp, p) {
    const point = toImage(vp.geometry().m, p.x, p.y);
    if (app.pending && app.pending.viewport !== vp) cancelPending();
    if (!app.pending) {
      app.pending = { viewport: vp, kind: app.tool, placed: [point], cursor: point, fresh: true };
    }
    vp.requestDraw();
  }

  /** A drag places the point where it ends; a click places the point clicked. The first
   * click's point was placed on pointerdown already. */
  function measureUp(vp, gesture, p) {
    const pending = app.pending;
    if (!pending || pending.viewport !== vp) return;
    const moved = Math.hypot(p.x - gesture.start.x, p.y - gesture.start.y) > CLICK_SLOP;
    const point = toImage(vp.geometry().m, p.x, p.y);
    if (!pending.fresh || moved) pending.placed.push(point);
    pending.fresh = false;
    pending.cursor = point;
    if (pending.placed.length >= POINTS_NEEDED[pending.kind]) {
      vp.image.measurements.push({ kind: pending.kind, points: pending.placed, frame: vp.image.frame });
      app.pending = null;
      imageChanged(vp.image);
    }
    vp.requestDraw();
  }

  function cancelPending() {
    const pending = app.pending;
    app.pending = null;
    if (pending) pending.viewport.requestDraw();
  }

  function deleteLastMeasurement(vp) {
    if (app.pending) {
      cancelPending();
      return;
    }
    const list = vp.image.measurements;
    if (!list.length) return;
    list.pop();
    imageChanged(vp.image);
  }

  function imageChanged(image) {
    app.viewports.forEach(function (vp) { if (vp.image === image) vp.requestDraw(); });
    updatePanel();
  }

  // -- layouts ------------------------------------------------------------------------------------

  function clearLayout(name) {
    cancelPending();
    app.viewports.forEach(function (vp) { vp.destroy(); });
    app.viewports = [];
    el.viewports.replaceChildren();
    el.viewports.dataset.layout = name;
    app.layout = name;
  }

  function addViewport(image, display, caption) {
    const vp = new Viewport(image, display, caption);
    app.viewports.push(vp);
    el.viewports.appendChild(vp.el);
    return vp;
  }

  /** Full frames of the viewports in order: the active one first, then the others. */
  function startViewports(active) {
    setActive(active);
    active.start(0);
    app.viewports.forEach(function (vp) { if (vp !== active) vp.start(1); });
    app.viewports.forEach(function (vp) { prefetchFrames(vp.image); });
  }

  function showSingle(image) {
    clearLayout("single");
    startViewports(addViewport(image, image.display));
    updateListSelection();
  }

  function slottedImages() {
    const bySlot = new Map();
    app.studyImages.forEach(function (image) {
      if (image.meta.slot && !bySlot.has(image.meta.slot)) bySlot.set(image.meta.slot, image);
    });
    return bySlot;
  }

  /** The 3×7 full-mouth mount; slots without an image are drawn as empty labelled frames. */
  function showFmx() {
    const bySlot = slottedImages();
    if (!bySlot.size) return;
    clearLayout("fmx");
    const slots = (app.doc.slots || []).slice().sort(function (a, b) { return a.row - b.row || a.col - b.col; });
    slots.forEach(function (slot) {
      const image = bySlot.get(slot.slot);
      let node;
      if (image) {
        node = addViewport(image, image.display).el;
      } else {
        node = document.createElement("div");
        node.className = "slot-empty";
        node.textContent = t("viewer.slot.empty", { label: slot.label });
      }
      node.dataset.slot = slot.slot;
      node.style.gridRow = String(Math.min(slot.row, FMX_ROWS - 1) + 1);
      node.style.gridColumn = String(Math.min(slot.col, FMX_COLS - 1) + 1);
      if (!image) el.viewports.appendChild(node);
    });
    // Back from a single image: that image stays the active one.
    const wasActive = app.active && app.active.image;
    startViewports(app.viewports.find(function (vp) { return vp.image === wasActive; }) || app.viewports[0]);
    updateListSelection();
  }

  /** The prior on the left, the current image on the right, sharing one display state. */
  function showCompare(image) {
    const prior = app.images.get(image.meta.prior_id);
    if (!prior) return;
    const shared = freshDisplay();
    shared.window = image.display.window;
    shared.invert = image.display.invert;
    clearLayout("compare");
    addViewport(prior, shared, t("viewer.caption.prior", { date: prior.meta.study_date || "" }));
    const current = addViewport(image, shared, t("viewer.caption.current", { date: app.doc.study.date || "" }));
    startViewports(current);
    updateListSelection();
  }

  function setActive(vp) {
    if (app.active === vp) return;
    app.active = vp;
    app.viewports.forEach(function (other) { other.el.dataset.active = String(other === vp); });
    if (app.pending && app.pending.viewport !== vp) cancelPending();
    updatePanel();
    updateListSelection();
  }

  // -- the panel, the list and the toolbar --------------------------------------------------------

  function updatePanel() {
    const vp = app.active;
    if (!vp) return;
    const image = vp.image;
    el.calibration.textContent = calibrationText(image.meta);
    renderMeasurementList(image);
    el.frameInfo.hidden = image.frames <= 1;
    el.frameInfo.textContent = image.frames > 1 ? t("viewer.frame", { n: image.frame, total: image.frames }) : "";
    updateToolbarState();
  }

  function calibrationText(meta) {
    const s = meta.spacing;
    if (!s) return t("viewer.calibration.none");
    const mm = s.row_mm === s.column_mm ? s.row_mm.toFixed(3) : s.row_mm.toFixed(3) + " × " + s.column_mm.toFixed(3);
    return t("viewer.calibration." + (s.source || "PixelSpacing"), { mm: mm });
  }

  function renderMeasurementList(image) {
    const items = measurementsShown(image).map(function (m) {
      const value = measurementValue(image.meta, m);
      const li = document.createElement("li");
      li.dataset.kind = m.kind;
      li.dataset.value = value.data;
      li.textContent = value.text;
      return li;
    });
    el.measurements.replaceChildren(...items);
  }

  function updateToolbarState() {
    const vp = app.active;
    const image = vp ? vp.image : null;
    TOOLS.forEach(function (tool) {
      document.getElementById("tool-" + tool).setAttribute("aria-pressed", String(tool === app.tool));
    });
    root.dataset.tool = app.tool;
    document.getElementById("invert").setAttribute("aria-pressed", String(!!(vp && vp.display.invert)));
    document.getElementById("layout-fmx").disabled = slottedImages().size === 0;
    document.getElementById("compare-prior").disabled =
      !(image && !image.prior && image.meta.prior_id && app.images.has(image.meta.prior_id));
    el.toolbar.querySelectorAll("button[data-preset]").forEach(function (button) {
      const name = button.dataset.preset;
      // "image" needs the image's own window; the others stretch grey values, not a photo's.
      button.disabled = !image || (name === "image" ? !(image.meta.windows || []).length
        : image.meta.samples_per_pixel === 3);
    });
  }

  function buildImageList() {
    const buttons = app.studyImages.map(function (image) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "thumb";
      button.dataset.imageId = image.meta.id;
      const label = document.createElement("span");
      label.textContent = imageLabel(image.meta);
      button.append(image.thumb, label);
      button.addEventListener("click", function () { showSingle(image); });
      return button;
    });
    el.imageList.replaceChildren(...buttons);
  }

  function updateListSelection() {
    const id = app.active ? app.active.image.meta.id : "";
    el.imageList.querySelectorAll("button.thumb").forEach(function (button) {
      if (button.dataset.imageId === id) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    });
  }

  function setTool(name) {
    if (app.tool === name) return;
    cancelPending();
    app.tool = name;
    updateToolbarState();
  }

  function toggleHelp(show) {
    const visible = show === undefined ? el.help.hidden : show;
    el.help.hidden = !visible;
    el.helpToggle.setAttribute("aria-expanded", String(visible));
  }

  function bindToolbar() {
    TOOLS.forEach(function (tool) {
      document.getElementById("tool-" + tool).addEventListener("click", function () { setTool(tool); });
    });
    const onActive = function (id, action) {
      document.getElementById(id).addEventListener("click", function () { if (app.active) action(app.active); });
    };
    onActive("rotate", rotate);
    onActive("flip-h", function (vp) { flip(vp, true); });
    onActive("flip-v", function (vp) { flip(vp, false); });
    onActive("invert", invert);
    onActive("reset", reset);
    onActive("layout-single", function (vp) { showSingle(vp.image); });
    onActive("compare-prior", function (vp) { showCompare(vp.image); });
    document.getElementById("fullscreen").addEventListener("click", toggleFullscreen);
    document.getElementById("layout-fmx").addEventListener("click", showFmx);
    el.toolbar.querySelectorAll("button[data-preset]").forEach(function (button) {
      button.addEventListener("click", function () { if (app.active) applyPreset(app.active, button.dataset.preset); });
    });
    el.helpToggle.addEventListener("click", function () { toggleHelp(); });
    document.getElementById("help-close").addEventListener("click", function () {
      toggleHelp(false);
      el.helpToggle.focus();
    });
  }

  // -- keyboard -----------------------------------------------------------------------------------

  const TOOL_KEYS = { w: "window", p: "pan", z: "zoom", l: "length", a: "angle" };
  const ACTION_KEYS = {
    r: rotate,
    h: function (vp) { flip(vp, true); },
    v: function (vp) { flip(vp, false); },
    i: invert,
    "0": reset,
    f: toggleFullscreen,
    Delete: deleteLastMeasurement,
    Backspace: deleteLastMeasurement,
  };
  // Only a multi-frame image takes these; otherwise they scroll the page as usual.
  const FRAME_KEYS = { ArrowUp: -1, PageUp: -1, ArrowDown: 1, PageDown: 1 };

  function isFormField(target) {
    return target instanceof HTMLElement &&
      (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
  }

  function onKeyDown(e) {
    if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey || isFormField(e.target)) return;
    if (root.dataset.state !== "ready") return;
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    const vp = app.active;
    if (key === "?") toggleHelp();
    else if (key === "Escape") onEscape(vp);
    else if (TOOL_KEYS[key]) setTool(TOOL_KEYS[key]);
    else if (ACTION_KEYS[key] && vp) ACTION_KEYS[key](vp);
    else if (FRAME_KEYS[key] && vp && vp.image.frames > 1) stepFrame(vp, FRAME_KEYS[key]);
    else if (/^[1-5]$/.test(key) && vp) applyPreset(vp, PRESETS[Number(key) - 1]);
    else return;
    e.preventDefault();
  }

  /** Escape closes what is open first (help, a half-placed measurement), then resets. */
  function onEscape(vp) {
    if (!el.help.hidden) toggleHelp(false);
    else if (app.pending) cancelPending();
    else if (vp) reset(vp);
  }

  // -- loading ------------------------------------------------------------------------------------

  function showError(reason) {
    root.dataset.state = "error";
    el.error.textContent = t("viewer.error.load", { reason: reason });
    el.error.hidden = false;
  }

  function headerText(doc) {
    const parts = [];
    if (doc.patient && doc.patient.name) {
      parts.push(t("viewer.header.patient", { name: doc.patient.name, birth_date: doc.patient.birth_date || "" }));
    }
    const s = doc.study || {};
    parts.push(t("viewer.header.study", { date: s.date || "", time: s.time || "", description: s.description || "" }));
    if (s.county) parts.push(t("viewer.header.county", { county: s.county.charAt(0).toUpperCase() + s.county.slice(1) }));
    return parts.join(" · ");
  }

  function start(doc) {
    app.doc = doc;
    app.studyImages = (doc.images || []).map(function (meta) { return makeImageInfo(meta, false); });
    app.studyImages.forEach(function (image) { app.images.set(image.meta.id, image); });
    (doc.priors || []).forEach(function (meta) { app.images.set(meta.id, makeImageInfo(meta, true)); });
    el.header.textContent = headerText(doc);
    buildImageList();
    bindToolbar();
    document.addEventListener("keydown", onKeyDown);
    if (!app.studyImages.length) {
      const empty = document.createElement("p");
      empty.className = "viewer-empty";
      empty.textContent = t("viewer.no_images");
      el.viewports.replaceChildren(empty);
      updateToolbarState();
      root.dataset.state = "ready";
      return;
    }
    // A link to one image (/studies/…/instances/{sop}) opens that image alone.
    const initial = app.images.get(root.dataset.initialImage || "");
    if (initial && !initial.prior) showSingle(initial);
    else if (doc.layout === "fmx" && slottedImages().size) showFmx();
    else showSingle(app.studyImages[0]);
    app.firstViewport = app.active;
    // The list's thumbnails after the first full image, so that image is not kept waiting.
    firstFullShown.then(function () { app.studyImages.forEach(requestThumbnail); });
    root.dataset.state = "ready";
  }

  async function load() {
    let response;
    try {
      response = await fetch(root.dataset.docUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
    } catch (networkError) {
      showError(t("viewer.error.network"));
      return;
    }
    if (!response.ok) {
      showError(await errorReason(response));
      return;
    }
    try {
      const doc = await response.json();
      markOnce("arkiv:doc-loaded");
      start(doc);
    } catch (failure) {
      showError(failure.message || String(failure));
    }
  }

  load();
})();
