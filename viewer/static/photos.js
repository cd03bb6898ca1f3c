// Photo gallery (pick two photos to compare) and the upload form (drag and drop, one request per
// file so that each shows its own progress and its own refusal). No inline script: the CSRF token
// and the endpoint come from data-attributes.
(function () {
  "use strict";

  // -- gallery: at most two photos ticked; "Sammenlign" opens /photos/compare?a=…&b=… ------------
  const compareForm = document.getElementById("compare-form");
  if (compareForm) {
    const boxes = Array.from(compareForm.querySelectorAll("input[type=checkbox][name=photo]"));
    const button = document.getElementById("compare-button");
    const status = document.getElementById("compare-status");
    const picked = [];
    const refresh = function () {
      boxes.forEach(function (box) {
        box.closest(".photo-card").classList.toggle("selected", box.checked);
        box.disabled = !box.checked && picked.length >= 2;
      });
      button.disabled = picked.length !== 2;
      status.textContent = picked.length === 2 ? "To bilder valgt." :
        "Velg " + (2 - picked.length) + (picked.length ? " bilde til." : " bilder å sammenligne.");
    };
    boxes.forEach(function (box) {
      box.addEventListener("change", function () {
        const at = picked.indexOf(box.value);
        if (box.checked && at < 0) picked.push(box.value);
        if (!box.checked && at >= 0) picked.splice(at, 1);
        refresh();
      });
    });
    compareForm.addEventListener("submit", function (e) {
      e.preventDefault();
      if (picked.length !== 2) return;
      window.location.href = "/photos/compare?a=" + encodeURIComponent(picked[0]) +
        "&b=" + encodeURIComponent(picked[1]);
    });
    boxes.forEach(function (box) { box.checked = false; });
    refresh();
  }

  // -- upload -------------------------------------------------------------------------------------
  const form = document.getElementById("upload-form");
  if (!form) return;
  const input = document.getElementById("files");
  const zone = document.getElementById("drop-zone");
  const list = document.getElementById("upload-list");
  const error = document.getElementById("upload-error");
  const submit = document.getElementById("upload-button");
  const done = document.getElementById("upload-done");
  const galleryLink = document.getElementById("gallery-link");
  const queue = [];
  let busy = false;

  function size(bytes) {
    if (bytes >= 1048576) return (bytes / 1048576).toFixed(1).replace(".", ",") + " MB";
    return Math.max(1, Math.round(bytes / 1024)) + " kB";
  }

  function add(files) {
    Array.from(files).forEach(function (file) {
      const item = document.createElement("li");
      item.className = "upload-item";
      item.dataset.state = "waiting";
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = file.name + " (" + size(file.size) + ")";
      const bar = document.createElement("progress");
      bar.max = 1;
      bar.value = 0;
      bar.setAttribute("aria-label", "Fremdrift for " + file.name);
      const state = document.createElement("span");
      state.className = "status";
      state.textContent = "Venter";
      item.append(name, bar, state);
      list.append(item);
      queue.push({ file: file, item: item, bar: bar, state: state });
    });
    error.hidden = true;
  }

  function show(message) {
    error.textContent = message;
    error.hidden = false;
  }

  function reasonOf(xhr) {
    try {
      const body = JSON.parse(xhr.responseText);
      if (body && body.reason) return body.reason;
    } catch (ignored) { /* not JSON: fall through */ }
    return "Feil " + xhr.status + (xhr.statusText ? " " + xhr.statusText : "");
  }

  function send(entry) {
    return new Promise(function (resolve) {
      const data = new FormData();
      ["patient_id", "category", "teeth", "note", "taken_at"].forEach(function (field) {
        const value = form.elements[field].value.trim();
        if (value) data.append(field, value);
      });
      data.append("file", entry.file, entry.file.name);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", form.dataset.endpoint);
      xhr.setRequestHeader("X-CSRF-Token", form.dataset.csrf);
      xhr.setRequestHeader("Accept", "application/json");
      entry.item.dataset.state = "uploading";
      entry.state.textContent = "Laster opp …";
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) entry.bar.value = e.loaded / e.total;
      });
      xhr.addEventListener("load", function () {
        if (xhr.status >= 200 && xhr.status < 300) {
          entry.bar.value = 1;
          entry.item.dataset.state = "done";
          let photo = null;
          try { photo = JSON.parse(xhr.responseText).photos[0]; } catch (ignored) { photo = null; }
          entry.state.textContent = photo && photo.duplicate ? "Var allerede lagret" : "Lagret";
          if (photo && photo.patient_key !== undefined) {
            galleryLink.href = "/patients/" + encodeURIComponent(photo.patient_key) + "/photos";
            done.hidden = false;
          }
        } else {
          entry.item.dataset.state = "failed";
          entry.state.textContent = reasonOf(xhr);
        }
        resolve();
      });
      xhr.addEventListener("error", function () {
        entry.item.dataset.state = "failed";
        entry.state.textContent = "Nettverksfeil: filen ble ikke lastet opp.";
        resolve();
      });
      xhr.send(data);
    });
  }

  async function uploadAll() {
    const waiting = queue.filter(function (e) { return e.item.dataset.state === "waiting"; });
    if (!waiting.length) { show("Velg minst én fil."); return; }
    busy = true;
    submit.disabled = true;
    for (const entry of waiting) {
      await send(entry);  // one at a time: a clinic's uplink is shared
    }
    busy = false;
    submit.disabled = false;
  }

  input.addEventListener("change", function () {
    add(input.files);
    input.value = "";
  });
  ["dragenter", "dragover"].forEach(function (type) {
    zone.addEventListener(type, function (e) { e.preventDefault(); zone.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (type) {
    zone.addEventListener(type, function () { zone.classList.remove("over"); });
  });
  zone.addEventListener("drop", function (e) {
    e.preventDefault();
    if (e.dataTransfer && e.dataTransfer.files.length) add(e.dataTransfer.files);
  });
  form.addEventListener("submit", function (e) {
    e.preventDefault();
    if (busy) return;
    if (!form.reportValidity()) return;
    uploadAll();
  });
}());
