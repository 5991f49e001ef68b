// The language menu switches as soon as a language is chosen (no inline handler: the CSP forbids it).
(function () {
  "use strict";
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
})();
