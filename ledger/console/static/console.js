// The console works without this file; with it, the as-of control shows the
// event it points at while it moves, and loads it when let go (keyboard too).
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("form[data-autosubmit]").forEach(function (form) {
    var range = form.querySelector("input[type=range]");
    var out = form.querySelector("output");
    if (!range) return;
    range.addEventListener("input", function () { if (out) out.value = range.value; });
    range.addEventListener("change", function () { form.requestSubmit(); });
  });
});
