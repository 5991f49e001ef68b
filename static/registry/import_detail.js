// The import page while its batch is received or running: poll its status, show the progress,
// and reload the page (with the result) once the batch has moved on. Loaded with defer; the
// status URL comes from the #import-poll element's data-status-url (no inline script: CSP).
(function () {
  "use strict";
  var holder = document.getElementById("import-poll");
  if (!holder) { return; }
  var url = holder.dataset.statusUrl;
  var waiting = ["received", "running"];
  function poll() {
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) { return response.json(); })
      .then(function (data) {
        document.getElementById("progress").value = data.progress;
        document.getElementById("stage").textContent =
          data.label + (data.stage ? " \u00b7 " + data.stage : "");
        if (waiting.indexOf(data.status) >= 0) { setTimeout(poll, 1000); } else { location.reload(); }
      })
      .catch(function () { setTimeout(poll, 5000); });
  }
  poll();
})();
