// Before/after comparison: one zoom and one pan shared by both images, so the same region of the
// mouth stays side by side. Wheel, drag, the toolbar and the keyboard all change the same state,
// and the same CSS transform is written to both images (CSSOM, which the CSP allows).
(function () {
  "use strict";
  const images = Array.from(document.querySelectorAll(".compare-image"));
  const panes = Array.from(document.querySelectorAll(".compare-pane"));
  const level = document.getElementById("zoom-level");
  const MIN = 1, MAX = 10, STEP = 1.25, PAN = 40;
  const view = { scale: 1, x: 0, y: 0 };

  function apply() {
    const transform = "translate(" + view.x + "px, " + view.y + "px) scale(" + view.scale + ")";
    images.forEach(function (img) { img.style.transform = transform; });
    level.textContent = Math.round(view.scale * 100) + " %";
  }
  function zoom(factor) {
    const next = Math.min(MAX, Math.max(MIN, view.scale * factor));
    // Keep the point at the centre of the panes where it was: the offset scales with the zoom.
    view.x *= next / view.scale;
    view.y *= next / view.scale;
    view.scale = next;
    if (view.scale === MIN) { view.x = 0; view.y = 0; }
    apply();
  }
  function pan(dx, dy) {
    view.x += dx;
    view.y += dy;
    apply();
  }
  function reset() {
    view.scale = 1; view.x = 0; view.y = 0;
    apply();
  }

  document.getElementById("zoom-in").addEventListener("click", function () { zoom(STEP); });
  document.getElementById("zoom-out").addEventListener("click", function () { zoom(1 / STEP); });
  document.getElementById("reset").addEventListener("click", reset);

  let drag = null;
  panes.forEach(function (pane) {
    pane.addEventListener("wheel", function (e) {
      e.preventDefault();
      zoom(e.deltaY < 0 ? 1.1 : 1 / 1.1);
    }, { passive: false });
    pane.addEventListener("pointerdown", function (e) {
      if (e.button !== 0) return;
      drag = { x: e.clientX, y: e.clientY, pane: pane };
      pane.setPointerCapture(e.pointerId);
      pane.classList.add("dragging");
    });
    pane.addEventListener("pointermove", function (e) {
      if (!drag || drag.pane !== pane) return;
      pan(e.clientX - drag.x, e.clientY - drag.y);
      drag.x = e.clientX;
      drag.y = e.clientY;
    });
    const stop = function () {
      if (drag && drag.pane === pane) { drag = null; pane.classList.remove("dragging"); }
    };
    pane.addEventListener("pointerup", stop);
    pane.addEventListener("pointercancel", stop);
  });

  document.addEventListener("keydown", function (e) {
    const tag = e.target.tagName;
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || e.ctrlKey || e.metaKey || e.altKey) return;
    const keys = {
      "+": function () { zoom(STEP); },
      "=": function () { zoom(STEP); },
      "-": function () { zoom(1 / STEP); },
      "0": reset,
      "ArrowLeft": function () { pan(PAN, 0); },
      "ArrowRight": function () { pan(-PAN, 0); },
      "ArrowUp": function () { pan(0, PAN); },
      "ArrowDown": function () { pan(0, -PAN); },
    };
    const action = keys[e.key];
    if (!action) return;
    e.preventDefault();
    action();
  });
  apply();
}());
