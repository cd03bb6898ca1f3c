// One image with window/level and zoom. Window changes ask the server for a new rendering of the
// real pixel data (debounced, so a drag does not become a request per mouse move).
(function () {
  "use strict";
  const img = document.getElementById("image");
  const wc = document.getElementById("wc");
  const ww = document.getElementById("ww");
  const base = img.dataset.src;
  let zoom = 1;
  let timer = null;

  function apply() {
    clearTimeout(timer);
    timer = setTimeout(function () {
      const c = parseFloat(wc.value);
      const w = parseFloat(ww.value);
      img.src = (isFinite(c) && isFinite(w) && w >= 1) ? base + "?window=" + c + "," + w : base;
    }, 150);
  }
  function setZoom(z) {
    zoom = Math.min(8, Math.max(0.25, z));
    img.style.transform = "scale(" + zoom + ")";
  }
  wc.addEventListener("change", apply);
  ww.addEventListener("change", apply);
  document.querySelectorAll("[data-preset]").forEach(function (button) {
    button.addEventListener("click", function () {
      const preset = button.dataset.preset;
      if (preset) { const p = preset.split(","); wc.value = p[0]; ww.value = p[1]; }
      else { wc.value = ""; ww.value = ""; }
      apply();
    });
  });
  document.getElementById("zoom-in").addEventListener("click", function () { setZoom(zoom * 1.25); });
  document.getElementById("zoom-out").addEventListener("click", function () { setZoom(zoom / 1.25); });
  document.getElementById("reset").addEventListener("click", function () {
    wc.value = ""; ww.value = ""; setZoom(1); apply();
  });
  img.addEventListener("wheel", function (e) { e.preventDefault(); setZoom(zoom * (e.deltaY < 0 ? 1.1 : 0.9)); });
  let drag = null;
  img.addEventListener("mousedown", function (e) {
    e.preventDefault();
    drag = { x: e.clientX, y: e.clientY, c: parseFloat(wc.value) || 2048, w: parseFloat(ww.value) || 4096 };
  });
  window.addEventListener("mouseup", function () { drag = null; });
  window.addEventListener("mousemove", function (e) {
    if (!drag) return;
    ww.value = Math.max(1, Math.round(drag.w + (e.clientX - drag.x) * 8));
    wc.value = Math.round(drag.c + (e.clientY - drag.y) * 8);
    apply();
  });
  document.addEventListener("keydown", function (e) {
    if (e.target.tagName === "INPUT") return;
    if (e.key === "+") setZoom(zoom * 1.25);
    if (e.key === "-") setZoom(zoom / 1.25);
    if (e.key === "r") document.getElementById("reset").click();
  });
}());
