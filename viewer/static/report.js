// The patient access report is handed to the patient on paper: a print button, no inline script.
"use strict";
document.querySelectorAll("button.print").forEach(function (button) {
  button.addEventListener("click", function () { window.print(); });
});
