// The console's own behaviour beyond htmx (no inline scripts: the page's CSP allows only these files).
"use strict";
document.addEventListener("click", function (ev) {
  var btn = ev.target.closest("[data-copy]");
  if (!btn) return;
  var from = document.querySelector(btn.getAttribute("data-copy"));
  if (!from) return;
  var text = from.value !== undefined ? from.value : from.textContent;
  var done = function () { btn.textContent = "Copied"; };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, function () { select(from); });
  } else {
    select(from);
  }
});
function select(el) {
  var range = document.createRange();
  range.selectNodeContents(el);
  var sel = window.getSelection();
  sel.removeAllRanges();
  sel.addRange(range);
}
// a range input shows its value next to it (the blue-green weight slider)
document.addEventListener("input", function (ev) {
  var out = ev.target.getAttribute && ev.target.getAttribute("data-show");
  if (out) {
    var el = document.querySelector(out);
    if (el) el.textContent = ev.target.value + " / " + (100 - ev.target.value);
  }
});
